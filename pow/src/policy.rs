//! Which stamps are good enough: bits per message class, validity window, future skew, replays.

use std::num::NonZeroUsize;
use std::time::Duration;

use crate::replay::{Insert, ReplayCache};
use crate::stamp::{Resource, Stamp, StampError};

/// The kinds of message that carry a stamp, each with its own price in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageClass {
    /// A record stored in the DHT.
    RecordPut,
    /// A lockstep notice announcing a key and the hash of its value.
    LockstepNotice,
    /// A message relayed on behalf of another node.
    Gossip,
}

impl MessageClass {
    /// The method name bound into the stamp's [`Resource`] for this class.
    pub fn method(self) -> &'static str {
        match self {
            Self::RecordPut => "record-put",
            Self::LockstepNotice => "lockstep-notice",
            Self::Gossip => "gossip",
        }
    }
}

/// What a stamp must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampPolicy {
    /// Bits for [`MessageClass::RecordPut`]. Default 20 (about a million SHA-256 to mint; mint
    /// times per bit count are in docs/benchmarks.md, "Proofs of work").
    pub record_put_bits: u8,
    /// Bits for [`MessageClass::LockstepNotice`]. Default 18 (a quarter of a put's work).
    pub lockstep_notice_bits: u8,
    /// Bits for [`MessageClass::Gossip`]. Default 12 (4,096 SHA-256 on average).
    pub gossip_bits: u8,
    /// How long after its date a stamp is accepted. Default 1 hour; at most 7 days.
    pub validity: Duration,
    /// How far in the future a stamp's date may be, for clock skew. Default 2 minutes.
    pub future_skew: Duration,
    /// Stamps remembered against replay; see the memory note in the replay module (about 80 bytes
    /// an entry). Default 65,536 (about 5 MiB).
    pub replay_capacity: NonZeroUsize,
}

impl Default for StampPolicy {
    fn default() -> Self {
        Self {
            record_put_bits: 20,
            lockstep_notice_bits: 18,
            gossip_bits: 12,
            validity: Duration::from_secs(3600),
            future_skew: Duration::from_secs(120),
            replay_capacity: NonZeroUsize::new(65_536).expect("non-zero"),
        }
    }
}

/// Errors in a [`StampPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A class asks for more than 40 bits (days of hashing per message).
    #[error("{0:?} asks for more than 40 bits")]
    TooManyBits(MessageClass),
    /// The validity window is zero or longer than 7 days.
    #[error("validity must be between 1 second and 7 days")]
    BadValidity,
}

impl StampPolicy {
    /// Cheap stamps for tests and local testnets: 8, 8 and 4 bits.
    pub fn testnet() -> Self {
        Self {
            record_put_bits: 8,
            lockstep_notice_bits: 8,
            gossip_bits: 4,
            ..Self::default()
        }
    }

    /// Bits required for `class`.
    pub fn bits(&self, class: MessageClass) -> u8 {
        match class {
            MessageClass::RecordPut => self.record_put_bits,
            MessageClass::LockstepNotice => self.lockstep_notice_bits,
            MessageClass::Gossip => self.gossip_bits,
        }
    }

    /// Checks the limits.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for class in [
            MessageClass::RecordPut,
            MessageClass::LockstepNotice,
            MessageClass::Gossip,
        ] {
            if self.bits(class) > 40 {
                return Err(PolicyError::TooManyBits(class));
            }
        }
        if self.validity.is_zero() || self.validity > Duration::from_secs(7 * 86_400) {
            return Err(PolicyError::BadValidity);
        }
        Ok(())
    }

    /// Mints a stamp that this policy accepts for a message of `class` from `sender` to `target`
    /// with `payload`, dated `now` (Unix seconds).
    pub fn mint(
        &self,
        class: MessageClass,
        now: u64,
        sender: &[u8],
        target: &[u8],
        payload: &[u8],
    ) -> Result<Stamp, StampError> {
        self.mint_with(class, now, sender, target, payload, &mut rand::thread_rng())
    }

    /// Mints as [`StampPolicy::mint`] does, with the stamp's salt drawn from `rng`.
    pub fn mint_with(
        &self,
        class: MessageClass,
        now: u64,
        sender: &[u8],
        target: &[u8],
        payload: &[u8],
        rng: &mut impl rand::RngCore,
    ) -> Result<Stamp, StampError> {
        let resource = Resource::new(sender, target, class.method(), payload);
        Stamp::mint_with(self.bits(class), now, resource, rng)
    }
}

/// Checks stamps against a [`StampPolicy`] and remembers them against replay.
#[derive(Debug)]
pub struct StampChecker {
    policy: StampPolicy,
    replays: ReplayCache,
}

impl StampChecker {
    /// A checker enforcing `policy`.
    pub fn new(policy: StampPolicy) -> Result<Self, PolicyError> {
        policy.validate()?;
        let replays = ReplayCache::new(policy.replay_capacity);
        Ok(Self { policy, replays })
    }

    /// The policy enforced.
    pub fn policy(&self) -> &StampPolicy {
        &self.policy
    }

    /// Stamps remembered against replay now.
    pub fn remembered(&self) -> usize {
        self.replays.len()
    }

    /// Parses `text` and checks it as [`StampChecker::check`] does.
    pub fn check_text(
        &mut self,
        now: u64,
        text: &[u8],
        class: MessageClass,
        sender: &[u8],
        target: &[u8],
        payload: &[u8],
    ) -> Result<Stamp, StampError> {
        let stamp = Stamp::parse(text)?;
        self.check(now, &stamp, class, sender, target, payload)?;
        Ok(stamp)
    }

    /// Checks that `stamp` pays for this message at `now` (Unix seconds): right resource, enough
    /// bits, inside its validity window, never seen before. On success the stamp is remembered
    /// until its window ends; on any error nothing is remembered. One SHA-256 evaluation.
    pub fn check(
        &mut self,
        now: u64,
        stamp: &Stamp,
        class: MessageClass,
        sender: &[u8],
        target: &[u8],
        payload: &[u8],
    ) -> Result<(), StampError> {
        self.check_stateless(now, stamp, class, sender, target, payload)?;
        let expires = stamp.date.saturating_add(self.policy.validity.as_secs());
        match self.replays.insert(now, &stamp.hash(), expires) {
            Insert::Fresh => Ok(()),
            Insert::Replayed => Err(StampError::Replayed),
            Insert::Full => Err(StampError::ReplayCacheFull),
        }
    }

    /// Every check but the replay cache: for stamps seen again legitimately, such as a stored
    /// record's stamp re-validated on a get.
    pub fn check_stateless(
        &self,
        now: u64,
        stamp: &Stamp,
        class: MessageClass,
        sender: &[u8],
        target: &[u8],
        payload: &[u8],
    ) -> Result<(), StampError> {
        if stamp.resource != Resource::new(sender, target, class.method(), payload) {
            return Err(StampError::WrongResource);
        }
        let required = self.policy.bits(class);
        if stamp.bits < required {
            return Err(StampError::TooFewBits {
                required,
                got: stamp.bits,
            });
        }
        let skew = self.policy.future_skew.as_secs();
        if stamp.date > now.saturating_add(skew) {
            return Err(StampError::FromTheFuture {
                date: stamp.date,
                skew,
                now,
            });
        }
        let valid_until = stamp.date.saturating_add(self.policy.validity.as_secs());
        if now > valid_until {
            return Err(StampError::Expired {
                date: stamp.date,
                valid_until,
                now,
            });
        }
        let value = stamp.value();
        if value < stamp.bits {
            return Err(StampError::TooFewBits {
                required: stamp.bits,
                got: value,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: u64 = 1_795_435_200;
    const CLASS: MessageClass = MessageClass::RecordPut;

    fn checker() -> StampChecker {
        StampChecker::new(StampPolicy::testnet()).unwrap()
    }

    fn stamp() -> Stamp {
        StampPolicy::testnet()
            .mint(CLASS, NOW, b"alice", b"key", b"value")
            .unwrap()
    }

    #[test]
    fn accepts_once_then_refuses_the_replay() {
        let mut c = checker();
        let s = stamp();
        c.check(NOW, &s, CLASS, b"alice", b"key", b"value").unwrap();
        assert_eq!(
            c.check(NOW + 1, &s, CLASS, b"alice", b"key", b"value"),
            Err(StampError::Replayed)
        );
        assert_eq!(c.remembered(), 1);
    }

    #[test]
    fn refuses_another_message() {
        let mut c = checker();
        let s = stamp();
        for (sender, target, payload) in [
            (&b"mallory"[..], &b"key"[..], &b"value"[..]),
            (b"alice", b"other", b"value"),
            (b"alice", b"key", b"valuE"),
        ] {
            assert_eq!(
                c.check(NOW, &s, CLASS, sender, target, payload),
                Err(StampError::WrongResource)
            );
        }
        assert_eq!(
            c.check(NOW, &s, MessageClass::Gossip, b"alice", b"key", b"value"),
            Err(StampError::WrongResource)
        );
        // A refused stamp is not remembered, so the real message still goes through.
        assert_eq!(c.remembered(), 0);
        c.check(NOW, &s, CLASS, b"alice", b"key", b"value").unwrap();
    }

    #[test]
    fn refuses_expired_and_future_stamps() {
        let mut c = checker();
        let s = stamp();
        let validity = c.policy().validity.as_secs();
        let skew = c.policy().future_skew.as_secs();
        assert!(matches!(
            c.check(NOW + validity + 1, &s, CLASS, b"alice", b"key", b"value"),
            Err(StampError::Expired { .. })
        ));
        assert!(matches!(
            c.check(NOW - skew - 1, &s, CLASS, b"alice", b"key", b"value"),
            Err(StampError::FromTheFuture { .. })
        ));
        // The edges of the window are inside it.
        c.check_stateless(NOW + validity, &s, CLASS, b"alice", b"key", b"value")
            .unwrap();
        c.check_stateless(NOW - skew, &s, CLASS, b"alice", b"key", b"value")
            .unwrap();
    }

    #[test]
    fn refuses_too_few_bits() {
        let mut c = checker();
        let cheap = Stamp::mint(
            2,
            NOW,
            Resource::new(b"alice", b"key", CLASS.method(), b"value"),
        )
        .unwrap();
        assert_eq!(
            c.check(NOW, &cheap, CLASS, b"alice", b"key", b"value"),
            Err(StampError::TooFewBits {
                required: 8,
                got: 2
            })
        );
        // Claiming bits the hash does not have is caught too.
        let mut liar = stamp();
        while liar.value() >= 30 {
            liar.counter += 1;
        }
        liar.bits = 30;
        assert!(matches!(
            c.check(NOW, &liar, CLASS, b"alice", b"key", b"value"),
            Err(StampError::TooFewBits { required: 30, .. })
        ));
    }

    #[test]
    fn full_replay_cache_refuses_rather_than_forgets() {
        let mut c = StampChecker::new(StampPolicy {
            replay_capacity: NonZeroUsize::new(1).unwrap(),
            ..StampPolicy::testnet()
        })
        .unwrap();
        let (a, b) = (stamp(), stamp());
        c.check(NOW, &a, CLASS, b"alice", b"key", b"value").unwrap();
        assert_eq!(
            c.check(NOW, &b, CLASS, b"alice", b"key", b"value"),
            Err(StampError::ReplayCacheFull)
        );
        // Once `a` expires its slot is free again.
        let later = NOW + c.policy().validity.as_secs() + 1;
        let fresh = StampPolicy::testnet()
            .mint(CLASS, later, b"alice", b"key", b"value")
            .unwrap();
        c.check(later, &fresh, CLASS, b"alice", b"key", b"value")
            .unwrap();
    }

    #[test]
    fn policy_limits() {
        StampPolicy::default().validate().unwrap();
        let bad = StampPolicy {
            gossip_bits: 41,
            ..StampPolicy::default()
        };
        assert_eq!(
            bad.validate(),
            Err(PolicyError::TooManyBits(MessageClass::Gossip))
        );
        let bad = StampPolicy {
            validity: Duration::ZERO,
            ..StampPolicy::default()
        };
        assert_eq!(bad.validate(), Err(PolicyError::BadValidity));
    }

    /// One field of a stamp's text, changed.
    #[derive(Debug, Clone)]
    enum Change {
        Bits(u8),
        Date(i64),
        Resource(usize, u8),
        Ext(String),
        Rand(String),
        Counter(u64),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (0u8..=255).prop_map(Change::Bits),
            (-3600i64..3600).prop_map(Change::Date),
            (0usize..32, 1u8..=255).prop_map(|(i, x)| Change::Resource(i, x)),
            "[a-z=;]{1,8}".prop_map(Change::Ext),
            "[A-Za-z0-9+/]{1,24}".prop_map(Change::Rand),
            (1u64..u64::MAX).prop_map(Change::Counter),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Changing any field makes a stamp fail, unless the change happens to produce another
        /// genuinely valid stamp for the same message (a hash with enough zero bits: odds of
        /// 2^-bits), which the test recognises by recomputing the hash.
        #[test]
        fn changing_any_field_breaks_the_stamp(change in change()) {
            static ORIGINAL: std::sync::OnceLock<Stamp> = std::sync::OnceLock::new();
            let policy = StampPolicy { record_put_bits: 16, ..StampPolicy::testnet() };
            let original = ORIGINAL
                .get_or_init(|| policy.mint(CLASS, NOW, b"alice", b"key", b"value").unwrap());
            let mut s = original.clone();
            let binds_message = matches!(change, Change::Resource(..));
            match change {
                Change::Bits(b) => s.bits = b,
                Change::Date(d) => s.date = NOW.saturating_add_signed(d),
                Change::Resource(i, x) => s.resource.0[i] ^= x,
                Change::Ext(e) => s.ext = e,
                Change::Rand(r) => s.rand = r,
                Change::Counter(c) => s.counter ^= c,
            }
            prop_assume!(&s != original);
            let c = StampChecker::new(policy).unwrap();
            let result = c.check_stateless(NOW, &s, CLASS, b"alice", b"key", b"value");
            if binds_message {
                prop_assert_eq!(result, Err(StampError::WrongResource));
            } else if result.is_ok() {
                prop_assert!(s.bits >= 16 && s.value() >= s.bits);
            }
        }
    }
}
