//! How keys and values travel in JSON: UTF-8 text (the default), hex or base64.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The encoding of a key or value in a request or response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8 text, taken as is. The default.
    #[default]
    Utf8,
    /// Hexadecimal, either case, even length.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Why a string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The string is not valid hex.
    #[error("not valid hex: {0}")]
    Hex(String),
    /// The string is not valid base64.
    #[error("not valid base64: {0}")]
    Base64(String),
}

impl Encoding {
    /// Decodes `text` into bytes.
    pub fn decode(self, text: &str) -> Result<Vec<u8>, DecodeError> {
        match self {
            Encoding::Utf8 => Ok(text.as_bytes().to_vec()),
            Encoding::Hex => hex::decode(text).map_err(|e| DecodeError::Hex(e.to_string())),
            Encoding::Base64 => STANDARD
                .decode(text)
                .map_err(|e| DecodeError::Base64(e.to_string())),
        }
    }

    /// Encodes `bytes` as text. Bytes that are not UTF-8 cannot be returned as `utf8`; they come
    /// back as base64 and the returned encoding says so.
    pub fn encode(self, bytes: &[u8]) -> (String, Encoding) {
        match self {
            Encoding::Utf8 => match std::str::from_utf8(bytes) {
                Ok(text) => (text.to_owned(), Encoding::Utf8),
                Err(_) => (STANDARD.encode(bytes), Encoding::Base64),
            },
            Encoding::Hex => (hex::encode(bytes), Encoding::Hex),
            Encoding::Base64 => (STANDARD.encode(bytes), Encoding::Base64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let bytes = [0u8, 1, 2, 0xff, b'a'];
        for e in [Encoding::Hex, Encoding::Base64] {
            let (text, used) = e.encode(&bytes);
            assert_eq!(used, e);
            assert_eq!(e.decode(&text).expect("own output decodes"), bytes);
        }
        assert_eq!(
            Encoding::Utf8.decode("héllo").expect("utf8"),
            "héllo".as_bytes()
        );
    }

    #[test]
    fn non_utf8_comes_back_as_base64() {
        let (text, used) = Encoding::Utf8.encode(&[0xff, 0xfe]);
        assert_eq!(used, Encoding::Base64);
        assert_eq!(text, "//4=");
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(
            Encoding::Hex.decode("abc"),
            Err(DecodeError::Hex(_))
        ));
        assert!(matches!(
            Encoding::Hex.decode("zz"),
            Err(DecodeError::Hex(_))
        ));
        assert!(matches!(
            Encoding::Base64.decode("***"),
            Err(DecodeError::Base64(_))
        ));
    }
}
