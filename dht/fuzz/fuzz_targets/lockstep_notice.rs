//! Fuzzes the lockstep notice decoder and validator, and the notice book that keeps them.
//!
//! The first byte picks what the rest is:
//! - 0: a notice envelope, decoded and validated as received from a peer;
//! - 1: a notice body, sealed in a validly signed envelope so the body decoder and the stamp
//!   parser behind the signature are reached;
//! - otherwise: fields of a notice made with `SignedNotice::create` (real stamp, a feed position
//!   or none), which must be accepted once and kept, then one bit of it is flipped.
//!
//! A notice with a feed position is also checked as the broadcast layer does: under its own
//! position it passes or fails only on its stamp, under any other it is refused.
//!
//! Nothing may panic; whatever decodes keeps its exact bytes.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use shoal_dht::lockstep::{
    FeedPos, LockstepError, MAX_NOTICE_LEN, NoticeBook, NoticeBookConfig, SignedNotice,
    value_hash,
};
use shoal_dht::record::MAX_KEY_LEN;
use shoal_pow::{StampChecker, StampError, StampPolicy};

use common::{Input, seal};

/// The notice envelope's signature domain (`shoal_dht::lockstep`).
const DOMAIN: &[u8] = b"shoal-lockstep-v1";
const NOW: u64 = 1_795_435_200;

fn checker() -> StampChecker {
    StampChecker::new(StampPolicy::testnet()).expect("valid policy")
}

/// Decodes and validates `bytes` every way a node does, returning the decoded notice.
fn check(bytes: &[u8]) -> Option<SignedNotice> {
    // `validate` starts with `decode`: called only once that succeeds, to keep ed25519
    // verifications (the cost of each run) down.
    let signed = SignedNotice::decode(bytes).ok()?;
    let _ = SignedNotice::validate(bytes, NOW, &mut checker());
    assert_eq!(
        signed.as_bytes(),
        bytes,
        "a decoded notice keeps its exact bytes"
    );
    assert!(bytes.len() <= MAX_NOTICE_LEN);
    let n = signed.notice();
    assert!(n.key.len() <= MAX_KEY_LEN);
    // At its own creation time the validity window holds, so the whole stamp check is reached.
    let _ = SignedNotice::validate(bytes, n.created_at, &mut checker());
    let _ = signed.check_kept(NOW, &checker());
    let _ = signed.check_kept(n.created_at, &checker());
    if let Some((feed, seq)) = signed.feed_id() {
        assert_eq!(feed.len(), shoal_dht::lockstep::FEED_ID_LEN);
        match SignedNotice::verify_broadcast(&feed, seq, bytes, NOW, &checker()) {
            Ok(back) => assert_eq!(back, signed),
            Err(e) => assert!(matches!(e, LockstepError::Stamp(_)), "{e}"),
        }
        assert_eq!(
            SignedNotice::verify_broadcast(&feed, seq.wrapping_add(1), bytes, NOW, &checker()),
            Err(LockstepError::FeedMismatch)
        );
    }
    let mut book = NoticeBook::new(NoticeBookConfig::default());
    book.insert(signed.clone())
        .expect("an empty book keeps any notice");
    assert_eq!(book.get(&n.key, &n.publisher), Some(&signed));
    assert!(matches!(
        book.insert(signed.clone()),
        Err(LockstepError::Stale { .. })
    ));
    Some(signed)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            check(rest);
        }
        1 => {
            check(&seal(DOMAIN, rest));
        }
        _ => {
            let mut input = Input(rest);
            let created_at = input.date();
            let seq = input.u64();
            let flip = input.u64();
            let feed = Some(FeedPos {
                epoch: input.u64(),
                seq: input.u64(),
            })
            .filter(|_| flip & 1 == 1);
            let key = input.bytes(MAX_KEY_LEN + 8).to_vec();
            let value = input.rest();
            let policy = StampPolicy::testnet();
            let signed =
                match SignedNotice::create(common::key(), &key, value, seq, created_at, feed, &policy) {
                    Ok(signed) => signed,
                    Err(LockstepError::KeyTooLarge(len)) => {
                        assert!(len > MAX_KEY_LEN);
                        return;
                    }
                    Err(e) => panic!("creating a notice failed: {e}"),
                };
            assert_eq!(signed.notice().value_hash, value_hash(&key, value));
            let kept_feed = feed.filter(|f| f.epoch > 0 && f.seq > 0);
            assert_eq!(signed.notice().feed, kept_feed);
            let back = check(signed.as_bytes()).expect("a created notice decodes");
            assert_eq!(back, signed);
            let mut stamps = checker();
            let valid = SignedNotice::validate(signed.as_bytes(), created_at, &mut stamps);
            assert_eq!(valid, Ok(signed.clone()));
            assert_eq!(
                SignedNotice::validate(signed.as_bytes(), created_at, &mut stamps),
                Err(LockstepError::Stamp(StampError::Replayed))
            );
            signed
                .check_kept(NOW.max(created_at), &stamps)
                .expect("a kept notice checks");
            let mut bytes = signed.as_bytes().to_vec();
            let at = (flip % bytes.len() as u64) as usize;
            bytes[at] ^= 1 << (flip >> 61);
            // No other bytes pass for the same notice: the envelope is not malleable.
            let flipped = SignedNotice::validate(&bytes, created_at, &mut checker());
            assert!(
                flipped.is_err(),
                "flipping bit {} of byte {at} went unnoticed",
                flip >> 61
            );
        }
    }
});
