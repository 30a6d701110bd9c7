//! Hashcash version-1 stamps: `1:bits:date:resource:ext:rand:counter`, SHA-256.
//!
//! A stamp is worth `bits` when the SHA-256 of its text starts with at least `bits` zero bits.
//! Shoal's resource is a [`Resource`] digest binding sender, target, method and payload, written
//! as 64 lowercase hex characters, so a stamp cannot be moved to another message. The counter is
//! lowercase hex without leading zeros; `date` is `YYMMDDhhmmss` UTC; `rand` is 1 to 24 base64
//! characters; `ext` is empty or up to 64 printable characters without `:`. Parsing is strict and
//! canonical: one stamp has exactly one text.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::date;
use crate::puzzle::leading_zero_bits;

/// Longest stamp text accepted, in bytes. Longer input is refused before any parsing.
pub const MAX_STAMP_LEN: usize = 256;
/// Longest `ext` field.
pub const MAX_EXT_LEN: usize = 64;
/// Longest `rand` field.
pub const MAX_RAND_LEN: usize = 24;

/// What is wrong with a stamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StampError {
    /// The text is not a well-formed canonical version-1 stamp. Nothing was recorded.
    #[error("malformed stamp: {0}")]
    Malformed(&'static str),
    /// The stamp claims, or its hash has, fewer bits than required. Nothing was recorded.
    #[error("stamp has {got} bits, {required} required")]
    TooFewBits {
        /// Bits required for this message class.
        required: u8,
        /// Bits the stamp claims or, if fewer, its hash has.
        got: u8,
    },
    /// The stamp was made for another message (sender, target, method or payload differ).
    /// Nothing was recorded.
    #[error("stamp resource does not match this message")]
    WrongResource,
    /// The stamp's date is older than the validity window. Nothing was recorded.
    #[error("stamp expired: dated {date}, valid until {valid_until} (now {now}, Unix seconds)")]
    Expired {
        /// The stamp's date.
        date: u64,
        /// The end of its validity window.
        valid_until: u64,
        /// The checker's time.
        now: u64,
    },
    /// The stamp is dated further in the future than the allowed skew. Nothing was recorded.
    #[error("stamp dated {date}, more than {skew} s after now ({now}, Unix seconds)")]
    FromTheFuture {
        /// The stamp's date.
        date: u64,
        /// The allowed skew in seconds.
        skew: u64,
        /// The checker's time.
        now: u64,
    },
    /// The same stamp was accepted before within its validity window.
    #[error("stamp replayed")]
    Replayed,
    /// The replay cache is full of unexpired stamps, so this stamp cannot be remembered and is
    /// refused to stay safe. Nothing was recorded; retry later.
    #[error("replay cache full; stamp refused, retry later")]
    ReplayCacheFull,
}

/// The digest a stamp is bound to: sender, target (key or peer), method and payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resource(pub [u8; 32]);

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Resource({})", hex::encode(self.0))
    }
}

impl Resource {
    /// Binds a stamp to one message. Each field is length-prefixed so no two different messages
    /// share a resource.
    pub fn new(sender: &[u8], target: &[u8], method: &str, payload: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"shoal-stamp-v1");
        for field in [sender, target, method.as_bytes()] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field);
        }
        h.update(Sha256::digest(payload));
        Self(h.finalize().into())
    }
}

/// A parsed hashcash version-1 stamp.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// Claimed value in leading zero bits.
    pub bits: u8,
    /// Creation date, Unix seconds (second precision, 2000 to 2099).
    pub date: u64,
    /// The message digest it is bound to.
    pub resource: Resource,
    /// Extension field: empty or up to [`MAX_EXT_LEN`] printable characters without `:`.
    pub ext: String,
    /// Random salt: 1 to [`MAX_RAND_LEN`] base64 characters.
    pub rand: String,
    /// The counter that makes the hash small.
    pub counter: u64,
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:x}", self.prefix(), self.counter)
    }
}

impl Stamp {
    /// Mints a stamp worth `bits` for `resource`, dated `date` (Unix seconds, 2000 to 2099).
    ///
    /// Expected cost: `2^bits` SHA-256 evaluations.
    pub fn mint(bits: u8, date: u64, resource: Resource) -> Result<Self, StampError> {
        Self::mint_with(bits, date, resource, &mut rand::thread_rng())
    }

    /// Mints as [`Stamp::mint`] does, with the salt drawn from `rng` (a seeded generator makes
    /// the stamp a function of the seed, as a deterministic simulation needs).
    pub fn mint_with(
        bits: u8,
        date: u64,
        resource: Resource,
        rng: &mut impl RngCore,
    ) -> Result<Self, StampError> {
        let mut salt = [0u8; 12];
        rng.fill_bytes(&mut salt);
        let rand = base64_encode(&salt);
        let mut stamp = Self {
            bits,
            date,
            resource,
            ext: String::new(),
            rand,
            counter: 0,
        };
        if date::format(date).is_none() {
            return Err(StampError::Malformed("date outside 2000..=2099"));
        }
        let prefix = stamp.prefix();
        let mut base = Sha256::new();
        base.update(prefix.as_bytes());
        let mut buf = [0u8; 16];
        loop {
            let digits = hex_digits(stamp.counter, &mut buf);
            let hash = base.clone().chain_update(digits).finalize();
            if leading_zero_bits(&hash) >= bits {
                return Ok(stamp);
            }
            stamp.counter = stamp.counter.checked_add(1).ok_or(StampError::Malformed(
                "counter space exhausted; mint with a new rand",
            ))?;
        }
    }

    /// Parses a stamp from bytes received from a peer. Never panics; bounded by
    /// [`MAX_STAMP_LEN`].
    pub fn parse(input: &[u8]) -> Result<Self, StampError> {
        use StampError::Malformed;
        if input.len() > MAX_STAMP_LEN {
            return Err(Malformed("longer than 256 bytes"));
        }
        let text = std::str::from_utf8(input).map_err(|_| Malformed("not UTF-8"))?;
        if !text.is_ascii() {
            return Err(Malformed("not ASCII"));
        }
        let mut fields = text.split(':');
        let mut next = || fields.next().ok_or(Malformed("fewer than 7 fields"));
        let (ver, bits, date, resource, ext, rand, counter) = (
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
        );
        if fields.next().is_some() {
            return Err(Malformed("more than 7 fields"));
        }
        if ver != "1" {
            return Err(Malformed("version is not 1"));
        }
        let bits = parse_decimal_u8(bits).ok_or(Malformed("bits is not 0..=255"))?;
        let date = date::parse(date).ok_or(Malformed("date is not YYMMDDhhmmss"))?;
        let resource = parse_resource(resource).ok_or(Malformed("resource is not 64 hex"))?;
        if ext.len() > MAX_EXT_LEN || !ext.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Malformed("ext too long or not printable"));
        }
        if rand.is_empty()
            || rand.len() > MAX_RAND_LEN
            || !rand
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        {
            return Err(Malformed("rand is not 1 to 24 base64 characters"));
        }
        let counter = parse_hex_u64(counter).ok_or(Malformed("counter is not canonical hex"))?;
        Ok(Self {
            bits,
            date,
            resource,
            ext: ext.to_owned(),
            rand: rand.to_owned(),
            counter,
        })
    }

    /// The SHA-256 of the stamp's text.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.to_string().as_bytes()).into()
    }

    /// Leading zero bits of [`Stamp::hash`]: what the stamp is really worth.
    pub fn value(&self) -> u8 {
        leading_zero_bits(&self.hash())
    }

    fn prefix(&self) -> String {
        // A date outside the representable range formats as an invalid field; `mint` refuses it
        // and `parse` can never produce one.
        let date = date::format(self.date).unwrap_or_else(|| "invalid-date".into());
        format!(
            "1:{}:{}:{}:{}:{}:",
            self.bits,
            date,
            hex::encode(self.resource.0),
            self.ext,
            self.rand
        )
    }
}

fn parse_decimal_u8(s: &str) -> Option<u8> {
    let canonical = !s.is_empty() && s.len() <= 3 && (s == "0" || !s.starts_with('0'));
    if !canonical || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_hex_u64(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && s.len() <= 16 && (s == "0" || !s.starts_with('0'));
    if !canonical || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn parse_resource(s: &str) -> Option<Resource> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(Resource(out))
}

/// Writes `n` as lowercase hex without leading zeros into `buf`, returning the digits.
fn hex_digits(mut n: u64, buf: &mut [u8; 16]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn base64_encode(bytes: &[u8; 12]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(16);
    for chunk in bytes.chunks(3) {
        let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(char::from(ALPHABET[(n >> shift & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: u64 = 1_795_435_200;

    fn resource() -> Resource {
        Resource::new(b"sender", b"key", "put", b"value")
    }

    #[test]
    fn minted_stamp_has_its_bits_and_round_trips() {
        let stamp = Stamp::mint(12, NOW, resource()).unwrap();
        assert!(stamp.value() >= 12);
        let text = stamp.to_string();
        assert!(text.starts_with("1:12:261123120000:"), "{text}");
        assert_eq!(Stamp::parse(text.as_bytes()).unwrap(), stamp);
    }

    #[test]
    fn resource_binds_every_field() {
        let base = resource();
        assert_ne!(base, Resource::new(b"sendes", b"key", "put", b"value"));
        assert_ne!(base, Resource::new(b"sender", b"kez", "put", b"value"));
        assert_ne!(base, Resource::new(b"sender", b"key", "pus", b"value"));
        assert_ne!(base, Resource::new(b"sender", b"key", "put", b"valuf"));
        // Length prefixes keep field boundaries apart.
        assert_ne!(
            Resource::new(b"ab", b"c", "m", b""),
            Resource::new(b"a", b"bc", "m", b"")
        );
    }

    #[test]
    fn non_canonical_text_is_refused() {
        let text = Stamp::mint(4, NOW, resource()).unwrap().to_string();
        let r = hex::encode(resource().0);
        for bad in [
            format!("1:04:261123120000:{r}::abcd:1"),
            format!("1:4:261123120000:{r}::abcd:01"),
            format!("1:4:261123120000:{}::abcd:1", r.to_uppercase()),
            format!("2:4:261123120000:{r}::abcd:1"),
            format!("1:4:261123120000:{r}::abcd:1:"),
            format!("1:4:261123120000:{r}::abcd"),
            format!("1:4:261123120000:{r}:::1"),
            format!("1:4:261123120000:{r}::ab cd:1"),
            format!("1:256:261123120000:{r}::abcd:1"),
            format!("1:4:261123120000:{r}::abcd:10000000000000000"),
        ] {
            assert!(
                matches!(Stamp::parse(bad.as_bytes()), Err(StampError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(Stamp::parse(text.as_bytes()).is_ok());
        assert!(Stamp::parse(&[b'1'; MAX_STAMP_LEN + 1]).is_err());
    }

    #[test]
    fn hex_digits_are_canonical() {
        let mut buf = [0u8; 16];
        assert_eq!(hex_digits(0, &mut buf), b"0");
        assert_eq!(hex_digits(0xabc, &mut buf), b"abc");
        assert_eq!(hex_digits(u64::MAX, &mut buf), b"ffffffffffffffff");
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Stamp::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_stamp_like_text(
            s in "1:[0-9]{0,4}:[0-9]{10,13}:[0-9a-f]{60,66}:[ -~]{0,3}:[A-Za-z0-9+/=]{0,26}:[0-9a-g]{0,18}"
        ) {
            if let Ok(stamp) = Stamp::parse(s.as_bytes()) {
                // Anything accepted is canonical: it prints back to the same text.
                prop_assert_eq!(stamp.to_string(), s);
            }
        }

        #[test]
        fn mint_parse_round_trip(bits in 0u8..10, date in crate::date::MIN_UNIX..=crate::date::MAX_UNIX,
                                 payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let stamp = Stamp::mint(bits, date, Resource::new(b"s", b"t", "m", &payload)).unwrap();
            prop_assert!(stamp.value() >= bits);
            prop_assert_eq!(Stamp::parse(stamp.to_string().as_bytes()).unwrap(), stamp);
        }
    }
}
