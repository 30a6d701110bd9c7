//! Instants stored in half the space: nanoseconds since the core's first instant.
//!
//! An [`Instant`] takes 16 bytes and 8-byte alignment. The structures that hold an entry per
//! member on a mass failure (running suspicions, tombstones) keep a [`Ticks`] instead: the
//! nanoseconds elapsed since an epoch, the instant the core was created, as two 32-bit halves so
//! that it needs only 4-byte alignment and packs with a 4-byte identity without padding.
//!
//! The conversion is exact: a [`Ticks`] converts back to the very [`Instant`] it came from, so a
//! deadline fires at the same instant as if the [`Instant`] had been kept, and a seeded run
//! takes the same course. Coarser units would save 4 more bytes, but rounding a deadline moves
//! the moment a core wakes up, which changes the order of everything after it in a simulation.
//!
//! The range is about 584 years after the epoch. Instants before the epoch (the core never
//! sees them: time passed in never goes backwards) saturate to the epoch, and instants past the
//! range saturate to its end; saturation keeps the order of instants (it never reorders two of
//! them, it can only make them equal).

use std::cmp::Ordering;
use std::time::{Duration, Instant};

/// Nanoseconds since an epoch, low half first. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Ticks([u32; 2]);

impl Ticks {
    /// The instant `t`, counted from `epoch`.
    pub(super) fn new(epoch: Instant, t: Instant) -> Self {
        let nanos = t.saturating_duration_since(epoch).as_nanos();
        Self::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Back to an [`Instant`], given the same epoch.
    pub(super) fn instant(self, epoch: Instant) -> Instant {
        epoch + Duration::from_nanos(self.nanos())
    }

    /// `d` earlier, saturating at the epoch.
    pub(super) fn saturating_sub(self, d: Duration) -> Self {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self::from_nanos(self.nanos().saturating_sub(d))
    }

    fn from_nanos(nanos: u64) -> Self {
        // The halves are stored apart so that the type needs only 4-byte alignment.
        Self([nanos as u32, (nanos >> 32) as u32])
    }

    fn nanos(self) -> u64 {
        u64::from(self.0[0]) | (u64::from(self.0[1]) << 32)
    }
}

// Not derived: the derived order of the array would compare the low half first.
impl Ord for Ticks {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos().cmp(&other.nanos())
    }
}

impl PartialOrd for Ticks {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly_and_keeps_order() {
        let epoch = Instant::now();
        let offsets = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(1_234),
            Duration::from_nanos(u32::MAX as u64),
            Duration::from_nanos(u32::MAX as u64 + 1),
            Duration::from_secs(86_400 * 365 * 100) + Duration::from_nanos(7),
        ];
        let mut last = None;
        for d in offsets {
            let t = epoch + d;
            let ticks = Ticks::new(epoch, t);
            assert_eq!(ticks.instant(epoch), t, "{d:?}");
            if let Some(last) = last {
                assert!(ticks > last, "{d:?}");
            }
            last = Some(ticks);
        }
        assert_eq!(std::mem::size_of::<Ticks>(), 8);
        assert_eq!(std::mem::align_of::<Ticks>(), 4);
    }

    #[test]
    fn saturates_without_reordering() {
        let epoch = Instant::now() + Duration::from_secs(10);
        let before = Ticks::new(epoch, epoch - Duration::from_secs(5));
        assert_eq!(before, Ticks::new(epoch, epoch));
        assert_eq!(before.instant(epoch), epoch);
        let max = Ticks::from_nanos(u64::MAX);
        assert!(Ticks::from_nanos(u64::MAX - 1) < max);
        // Past the range (an `Instant` may not reach it on every platform: then nothing to test).
        if let Some(far) =
            epoch.checked_add(Duration::from_nanos(u64::MAX) + Duration::from_secs(1))
        {
            assert_eq!(Ticks::new(epoch, far), max);
            assert!(Ticks::new(epoch, epoch + Duration::from_secs(1)) < max);
        }
    }
}
