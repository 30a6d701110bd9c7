//! The Bloom filter of anti-entropy pulls. Its layout and hashing are part of the wire format.
//!
//! A filter is `m = 8 · len` bits in a byte string: bit `j` is bit `j mod 8` (least significant
//! first) of byte `j / 8`. A notice id is hashed once with SHA-256 over the publisher bytes
//! followed by the sequence number as 8 big-endian bytes; `h1` and `h2` are the first and the
//! second 8 bytes of the digest read as big-endian integers, `h2` with its lowest bit set (so
//! that it is odd and the probes differ). The `k` bit indices are `(h1 + i · h2) mod m` for
//! `i` in `0..k`, with wrapping 64-bit arithmetic (Kirsch and Mitzenmacher's double hashing).
//! An empty filter contains nothing.
//!
//! Senders size filters at [`BITS_PER_ITEM`] bits per notice with [`HASHES`] hash functions,
//! about a 1 % false positive rate; a false positive only means that one notice the puller
//! lacks is not sent by that pull.

use sha2::{Digest, Sha256};

use crate::message::NoticeId;

/// Bits per notice of the filters this crate sends.
pub const BITS_PER_ITEM: usize = 10;
/// Hash functions of the filters this crate sends (optimal for ten bits per item).
pub const HASHES: u8 = 7;

/// The two 64-bit hashes of a notice id, computed once and kept with the id.
pub fn hash_id(id: &NoticeId) -> [u64; 2] {
    let mut h = Sha256::new();
    h.update(&id.publisher);
    h.update(id.seq.to_be_bytes());
    let d = h.finalize();
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&d[0..8]);
    b.copy_from_slice(&d[8..16]);
    [u64::from_be_bytes(a), u64::from_be_bytes(b) | 1]
}

/// A Bloom filter over notice ids. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    bits: Vec<u8>,
    hashes: u8,
}

impl Bloom {
    /// An empty filter sized for `items` at [`BITS_PER_ITEM`] bits each, at least 8 and at most
    /// `max_bytes` bytes, with [`HASHES`] hash functions.
    pub fn for_items(items: usize, max_bytes: usize) -> Self {
        let bytes = (items * BITS_PER_ITEM)
            .div_ceil(8)
            .clamp(8, max_bytes.max(8));
        Self {
            bits: vec![0; bytes],
            hashes: HASHES,
        }
    }

    /// The filter of a received message (bounds were checked by the decoder).
    pub fn from_parts(bits: Vec<u8>, hashes: u8) -> Self {
        Self { bits, hashes }
    }

    /// Its bits and hash count, for a message.
    pub fn into_parts(self) -> (Vec<u8>, u8) {
        (self.bits, self.hashes)
    }

    /// Adds the id whose [`hash_id`] is `h`.
    pub fn insert(&mut self, h: [u64; 2]) {
        let m = self.bits.len() as u64 * 8;
        if m == 0 {
            return;
        }
        for i in 0..u64::from(self.hashes) {
            let j = h[0].wrapping_add(i.wrapping_mul(h[1])) % m;
            self.bits[(j / 8) as usize] |= 1 << (j % 8);
        }
    }

    /// Whether the id whose [`hash_id`] is `h` may have been added (always false for an empty
    /// filter).
    pub fn contains(&self, h: [u64; 2]) -> bool {
        let m = self.bits.len() as u64 * 8;
        if m == 0 {
            return false;
        }
        (0..u64::from(self.hashes)).all(|i| {
            let j = h[0].wrapping_add(i.wrapping_mul(h[1])) % m;
            self.bits[(j / 8) as usize] & (1 << (j % 8)) != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(p: u8, seq: u64) -> NoticeId {
        NoticeId {
            publisher: vec![p; 32],
            seq,
        }
    }

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut b = Bloom::for_items(1000, 1 << 20);
        for s in 1..=1000 {
            b.insert(hash_id(&id(1, s)));
        }
        assert!((1..=1000).all(|s| b.contains(hash_id(&id(1, s)))));
        let fp = (1..=10_000)
            .filter(|&s| b.contains(hash_id(&id(2, s))))
            .count();
        // Ten bits per item and seven hashes: about 0.8 %.
        assert!(fp < 200, "{fp} false positives in 10,000");
    }

    #[test]
    fn known_vector() {
        // Pins the hashing, which is part of the wire format.
        let h = hash_id(&NoticeId {
            publisher: b"shoal".to_vec(),
            seq: 1,
        });
        let mut d = Sha256::new();
        d.update(b"shoal\0\0\0\0\0\0\0\x01");
        let d = d.finalize();
        assert_eq!(h[0], u64::from_be_bytes(d[0..8].try_into().unwrap()));
        assert_eq!(h[1], u64::from_be_bytes(d[8..16].try_into().unwrap()) | 1);
        let mut b = Bloom::from_parts(vec![0; 8], 2);
        b.insert([3, 5]);
        // Bits 3 and 8: byte 0 bit 3, byte 1 bit 0.
        assert_eq!(b.into_parts().0, vec![0b1000, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn empty_filter_contains_nothing() {
        let b = Bloom::from_parts(Vec::new(), 7);
        assert!(!b.contains(hash_id(&id(1, 1))));
        let mut b = b;
        b.insert(hash_id(&id(1, 1)));
        assert!(!b.contains(hash_id(&id(1, 1))));
    }
}
