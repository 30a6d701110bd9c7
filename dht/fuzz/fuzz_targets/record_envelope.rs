//! Fuzzes the record envelope decoder and validator.
//!
//! The first byte picks what the rest is:
//! - 0: an envelope, decoded and validated as received from a peer;
//! - 1: a record body, sealed in a validly signed envelope so the body decoder and the stamp
//!   parser behind the signature are reached;
//! - otherwise: fields of a record made with `SignedRecord::create` (real stamp), which must
//!   validate when its times allow, then one byte of it is flipped.
//!
//! Nothing may panic; whatever decodes keeps its exact bytes.

#![no_main]

mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shoal_dht::record::{
    MAX_KEY_LEN, MAX_VALUE_LEN, NewRecord, RecordError, RecordRules, SignedRecord,
};
use shoal_pow::{StampChecker, StampPolicy};

use common::{Input, seal};

/// The record envelope's signature domain (`shoal_dht::record`).
const DOMAIN: &[u8] = b"shoal-record-v1";
const NOW: u64 = 1_795_435_200;

fn stamps() -> &'static StampChecker {
    static CHECKER: OnceLock<StampChecker> = OnceLock::new();
    CHECKER.get_or_init(|| StampChecker::new(StampPolicy::testnet()).expect("valid policy"))
}

/// Decodes and validates `bytes` every way a node does, returning the decoded record.
fn check(bytes: &[u8], key: Option<&[u8]>) -> Option<SignedRecord> {
    // `validate` starts with `decode`: called only once that succeeds, to keep ed25519
    // verifications (the cost of each run) down.
    let signed = SignedRecord::decode(bytes).ok()?;
    let rules = RecordRules::default();
    let _ = SignedRecord::validate(bytes, key, NOW, &rules, stamps());
    assert_eq!(
        signed.as_bytes(),
        bytes,
        "a decoded record keeps its exact bytes"
    );
    let r = signed.record();
    assert!(r.key.len() <= MAX_KEY_LEN && r.value.len() <= MAX_VALUE_LEN);
    assert_eq!(r.expires_at(), r.created_at.saturating_add(r.ttl));
    assert!(!signed.supersedes(&signed));
    // At its own creation time the time checks pass, so the stamp check is reached.
    let key = r.key.clone();
    let _ = SignedRecord::validate(bytes, Some(&key), r.created_at, &rules, stamps());
    Some(signed)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            check(rest, Some(b"k"));
        }
        1 => {
            check(&seal(DOMAIN, rest), None);
        }
        _ => {
            let mut input = Input(rest);
            let created_at = input.date();
            let seq = input.u64();
            let ttl = input.u64() % (8 * 86_400);
            let flip = input.u64();
            let key = input.bytes(MAX_KEY_LEN + 8).to_vec();
            let value = input.rest().to_vec();
            let new = NewRecord {
                key: key.clone(),
                value,
                seq,
                ttl,
            };
            let signed =
                match SignedRecord::create(common::key(), new, created_at, &StampPolicy::testnet())
                {
                    Ok(signed) => signed,
                    Err(RecordError::TooLarge { .. }) => {
                        assert!(key.len() > MAX_KEY_LEN || rest.len() > MAX_VALUE_LEN);
                        return;
                    }
                    Err(e) => panic!("creating a record failed: {e}"),
                };
            let back = check(signed.as_bytes(), Some(&key)).expect("a created record decodes");
            assert_eq!(back, signed);
            let rules = RecordRules::default();
            let valid =
                SignedRecord::validate(signed.as_bytes(), Some(&key), created_at, &rules, stamps());
            if ttl == 0 || ttl > rules.max_ttl {
                assert!(
                    matches!(valid, Err(RecordError::BadTtl { .. })),
                    "{valid:?}"
                );
            } else {
                assert_eq!(valid, Ok(signed.clone()));
            }
            let mut bytes = signed.into_bytes();
            let at = (flip % bytes.len() as u64) as usize;
            bytes[at] ^= 1 << (flip >> 61);
            // No other bytes pass for the same record: the envelope is not malleable.
            let flipped = SignedRecord::validate(&bytes, Some(&key), created_at, &rules, stamps());
            assert!(
                flipped.is_err(),
                "flipping bit {} of byte {at} went unnoticed",
                flip >> 61
            );
        }
    }
});
