//! AMQP strings: `ShortStr` (UTF-8, at most 255 bytes) and `LongStr` (binary). Both share the
//! frame's buffer when decoded. Knows nothing of frames or methods.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;

use crate::error::DecodeError;

/// Longest shortstr the wire format can carry (its length is one octet).
pub const SHORT_STR_MAX: usize = 255;

/// An AMQP shortstr: at most 255 bytes of UTF-8, validated once when built or decoded.
#[derive(Clone, Default)]
pub struct ShortStr(Bytes);

impl ShortStr {
    pub fn new(s: impl Into<String>) -> Result<ShortStr, DecodeError> {
        let s: String = s.into();
        if s.len() > SHORT_STR_MAX {
            return Err(DecodeError::StringTooLong);
        }
        Ok(ShortStr(Bytes::from(s)))
    }

    /// For constant names only: panics if `s` is longer than 255 bytes.
    pub const fn from_static(s: &'static str) -> ShortStr {
        assert!(s.len() <= SHORT_STR_MAX, "shortstr longer than 255 bytes");
        ShortStr(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps bytes after checking length and UTF-8; no copy.
    pub fn from_bytes(bytes: Bytes) -> Result<ShortStr, DecodeError> {
        if bytes.len() > SHORT_STR_MAX {
            return Err(DecodeError::StringTooLong);
        }
        if std::str::from_utf8(&bytes).is_err() {
            return Err(DecodeError::InvalidUtf8);
        }
        Ok(ShortStr(bytes))
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks that the bytes are UTF-8 and the field is private.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The shared buffer behind the string (cloning it is a refcount increment).
    pub fn as_shared_bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<&str> for ShortStr {
    type Error = DecodeError;
    fn try_from(s: &str) -> Result<Self, DecodeError> {
        ShortStr::new(s)
    }
}

impl TryFrom<String> for ShortStr {
    type Error = DecodeError;
    fn try_from(s: String) -> Result<Self, DecodeError> {
        ShortStr::new(s)
    }
}

impl Deref for ShortStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ShortStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

// Hash, Eq and Ord follow `str` so that `Borrow<str>` lookups in maps agree with the key.
impl Borrow<str> for ShortStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for ShortStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq for ShortStr {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for ShortStr {}

impl PartialOrd for ShortStr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ShortStr {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<ShortStr> for str {
    fn eq(&self, other: &ShortStr) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<ShortStr> for &str {
    fn eq(&self, other: &ShortStr) -> bool {
        *self == other.as_str()
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<ShortStr> for String {
    fn from(s: ShortStr) -> String {
        s.as_str().to_owned()
    }
}

/// An AMQP longstr: any bytes, no UTF-8 requirement.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LongStr(pub Bytes);

impl LongStr {
    pub const fn from_static(s: &'static str) -> LongStr {
        LongStr(Bytes::from_static(s.as_bytes()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The contents as text, when they are UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Bytes> for LongStr {
    fn from(b: Bytes) -> Self {
        LongStr(b)
    }
}

impl From<&str> for LongStr {
    fn from(s: &str) -> Self {
        LongStr(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for LongStr {
    fn from(s: String) -> Self {
        LongStr(Bytes::from(s))
    }
}

impl From<Vec<u8>> for LongStr {
    fn from(v: Vec<u8>) -> Self {
        LongStr(Bytes::from(v))
    }
}

impl From<ShortStr> for LongStr {
    fn from(s: ShortStr) -> Self {
        LongStr(s.0)
    }
}

impl fmt::Debug for LongStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(&self.0), f)
    }
}
