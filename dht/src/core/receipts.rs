//! The receipts this node was given for its puts, remembered so that a replica that later
//! denies one is caught (see [`crate::receipt`]).

use std::collections::{HashMap, VecDeque};

use super::Peer;

/// Receipts remembered at most; when full, the receipts of the key noted longest ago are
/// forgotten first (a denial they would catch goes unnoticed; nothing else changes). Recent puts
/// are the ones a denial is likeliest to matter for.
pub const MAX_RECEIPTS: usize = 16_384;

/// How long after a record's expiry a replica may still be asked for it without denying its
/// receipt: clocks differ.
const EXPIRY_SLACK_SECS: u64 = 120;

#[derive(Debug, Clone, Copy)]
struct Held<T> {
    peer: T,
    seq: u64,
    expires_at: u64,
}

/// Receipts by key: which replica signed for which sequence, and when the record expires.
pub(super) struct ReceiptBook<T> {
    by_key: HashMap<Vec<u8>, Vec<Held<T>>>,
    /// Keys in the order their first receipt was noted (keys forgotten since stay until they
    /// come up, or the queue is compacted at twice the bound).
    order: VecDeque<Vec<u8>>,
    len: usize,
}

impl<T: Peer> ReceiptBook<T> {
    pub(super) fn new() -> Self {
        Self {
            by_key: HashMap::new(),
            order: VecDeque::new(),
            len: 0,
        }
    }

    /// `peer` signed a receipt for sequence `seq` of `key`, whose record expires at
    /// `expires_at` (Unix seconds); `unix` is now.
    pub(super) fn note(&mut self, peer: T, key: &[u8], seq: u64, expires_at: u64) {
        if let Some(held) = self
            .by_key
            .get_mut(key)
            .and_then(|h| h.iter_mut().find(|h| h.peer == peer))
        {
            if seq >= held.seq {
                (held.seq, held.expires_at) = (seq, expires_at);
            }
            return;
        }
        while self.len >= MAX_RECEIPTS {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(held) = self.by_key.remove(&oldest) {
                self.len -= held.len();
            }
        }
        if !self.by_key.contains_key(key) {
            self.order.push_back(key.to_vec());
            if self.order.len() > 2 * MAX_RECEIPTS {
                let by_key = &self.by_key;
                self.order.retain(|k| by_key.contains_key(k));
            }
        }
        self.by_key.entry(key.to_vec()).or_default().push(Held {
            peer,
            seq,
            expires_at,
        });
        self.len += 1;
    }

    /// `peer` answered for `key` with the sequence `answered` (`None`: no record). Whether that
    /// denies a receipt it signed for a later sequence of a record still alive at `unix`; a
    /// denied receipt is forgotten, so it is counted once.
    pub(super) fn denies(&mut self, unix: u64, peer: T, key: &[u8], answered: Option<u64>) -> bool {
        let Some(held) = self.by_key.get_mut(key) else {
            return false;
        };
        let Some(i) = held.iter().position(|h| h.peer == peer) else {
            return false;
        };
        let h = held[i];
        let alive = h.expires_at > unix.saturating_add(EXPIRY_SLACK_SECS);
        if !alive || answered.is_some_and(|seq| seq >= h.seq) {
            return false;
        }
        held.swap_remove(i);
        if held.is_empty() {
            self.by_key.remove(key);
        }
        self.len -= 1;
        true
    }

    /// Forgets the receipts of records expired by `unix`.
    pub(super) fn expire(&mut self, unix: u64) {
        let mut len = 0;
        self.by_key.retain(|_, held| {
            held.retain(|h| h.expires_at > unix);
            len += held.len();
            !held.is_empty()
        });
        self.len = len;
    }

    /// Receipts remembered.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimPeer;

    #[test]
    fn a_replica_denies_a_receipt_by_answering_without_the_record_or_older() {
        let mut book = ReceiptBook::new();
        let (a, b, c) = (SimPeer(1), SimPeer(2), SimPeer(3));
        book.note(a, b"k", 5, 10_000);
        book.note(b, b"k", 5, 10_000);
        book.note(c, b"k", 5, 1_100);
        assert_eq!(book.len(), 3);
        // The same or a newer sequence keeps the receipt; another key is not its business.
        assert!(!book.denies(2_000, a, b"k", Some(5)));
        assert!(!book.denies(2_000, a, b"k", Some(6)));
        assert!(!book.denies(2_000, a, b"other", None));
        // Nothing, or older, denies it, once.
        assert!(book.denies(2_000, a, b"k", None));
        assert!(!book.denies(2_000, a, b"k", None));
        assert!(book.denies(2_000, b, b"k", Some(4)));
        // A record past its expiry may be gone.
        assert!(!book.denies(2_000, c, b"k", None));
        book.expire(2_000);
        assert_eq!(book.len(), 0);
    }

    #[test]
    fn the_book_is_bounded() {
        let mut book = ReceiptBook::new();
        for i in 0..(MAX_RECEIPTS + 10) as u32 {
            book.note(SimPeer(i % 3), &i.to_be_bytes(), 1, 10_000);
        }
        // Full: the oldest keys made room, the newest are held.
        assert_eq!(book.len(), MAX_RECEIPTS);
        assert!(!book.denies(2_000, SimPeer(0), &0u32.to_be_bytes(), None));
        let last = MAX_RECEIPTS as u32 + 9;
        assert!(book.denies(2_000, SimPeer(last % 3), &last.to_be_bytes(), None));
        assert!(book.order.len() <= 2 * MAX_RECEIPTS);
        book.expire(20_000);
        assert_eq!(book.len(), 0);
    }
}
