//! A per-run range of free loopback ports, so parallel networks cannot collide.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::net::{Ipv4Addr, TcpListener};

/// Lowest port handed out.
const LOW: u16 = 20_000;
/// One past the highest port handed out.
const HIGH: u16 = 60_000;

/// Finds `count` consecutive ports, all free on 127.0.0.1 right now, starting at a random
/// offset. Returns `None` after `tries` unlucky draws.
pub(crate) fn free_range(count: u16, tries: u32) -> Option<u16> {
    for _ in 0..tries {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let span = u64::from(HIGH - LOW - count);
        // Invariant: the value is below `span` < 40_000, so it fits in a u16.
        let base = LOW + u16::try_from(hasher.finish() % span).expect("below 40_000");
        let all_free =
            (base..base + count).all(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok());
        if all_free {
            return Some(base);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_free_and_in_bounds() {
        let base = free_range(16, 20).expect("some free range on loopback");
        assert!(base >= LOW && base + 16 <= HIGH);
        let _held = TcpListener::bind((Ipv4Addr::LOCALHOST, base)).expect("port was free");
    }
}
