//! `TopicName`: the validated topic of a PUBLISH.

use std::fmt;

use bytes::{Bytes, BytesMut};

use super::TopicError;

/// Longest string MQTT can encode (a two-byte length prefix).
const MAX_TOPIC_BYTES: usize = u16::MAX as usize;

/// A topic name a message is published to.
///
/// Backed by `Bytes` so that a decoded PUBLISH shares the read buffer.
///
/// # Invariants
/// Valid UTF-8, no U+0000, no `+` or `#`, at most 65,535 bytes. Non-empty, except the
/// value from [`TopicName::empty`], which only an MQTT 5 PUBLISH carrying a Topic Alias
/// may hold.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Bytes);

impl TopicName {
    /// Validates `bytes` as a topic name.
    ///
    /// # Errors
    /// The [`TopicError`] naming the first rule broken.
    pub fn parse(bytes: Bytes) -> Result<Self, TopicError> {
        if bytes.is_empty() {
            return Err(TopicError::Empty);
        }
        Self::check(&bytes)?;
        Ok(Self(bytes))
    }

    /// Validates a topic name from a string slice (copies it).
    ///
    /// # Errors
    /// As [`TopicName::parse`].
    pub fn try_from_str(s: &str) -> Result<Self, TopicError> {
        Self::parse(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// A topic name from a static string, for constants such as `$SYS` topics.
    ///
    /// # Errors
    /// As [`TopicName::parse`].
    pub fn from_static(s: &'static str) -> Result<Self, TopicError> {
        Self::parse(Bytes::from_static(s.as_bytes()))
    }

    /// The empty topic of an MQTT 5 PUBLISH that names its topic by alias only.
    pub const fn empty() -> Self {
        Self(Bytes::new())
    }

    /// A copy in an allocation of its own. A decoded topic is a view into the read
    /// buffer and keeps all of it alive; anything that keeps a topic for long (a cache
    /// key, a stored message) keeps a copy.
    pub fn detached(&self) -> Self {
        Self(Bytes::copy_from_slice(&self.0))
    }

    /// This topic and `payload` copied into one allocation of their own, for a
    /// message or will kept for long (see [`Self::detached`]).
    pub(crate) fn detached_with(&self, payload: &[u8]) -> (Self, Bytes) {
        let mut buf = BytesMut::with_capacity(self.0.len() + payload.len());
        buf.extend_from_slice(&self.0);
        buf.extend_from_slice(payload);
        let mut topic = buf.freeze();
        let payload = topic.split_off(self.0.len());
        (Self(topic), payload)
    }

    fn check(bytes: &[u8]) -> Result<(), TopicError> {
        if bytes.len() > MAX_TOPIC_BYTES {
            return Err(TopicError::TooLong);
        }
        // [MQTT-3.3.2-2] no wildcards; [MQTT-4.7.3-2] no U+0000. `memchr3` scans a word
        // at a time; this check is on every decoded PUBLISH.
        if let Some(i) = memchr::memchr3(b'+', b'#', 0, bytes) {
            return Err(match bytes.get(i) {
                Some(0) => TopicError::NullCharacter,
                _ => TopicError::WildcardInName,
            });
        }
        std::str::from_utf8(bytes).map_err(|_| TopicError::InvalidUtf8)?;
        Ok(())
    }

    /// The topic as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The topic as a string slice.
    pub fn as_str(&self) -> &str {
        // The invariant guarantees UTF-8; the fallback is unreachable.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The shared buffer behind this topic.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True only for [`TopicName::empty`].
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Topics starting with `$` are not matched by a first-level wildcard [MQTT-4.7.2-1].
    pub fn is_dollar(&self) -> bool {
        self.0.first() == Some(&b'$')
    }

    /// The levels of the topic, split at `/` (an empty level is a level).
    pub fn levels(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.0.split(|&b| b == b'/')
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for TopicName {
    type Error = TopicError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::try_from_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_odd_but_legal_names() {
        for ok in ["a", "a/b/c", "/", "//", "$SYS/broker", "sport/tennis player1", "ü/€"] {
            assert!(TopicName::try_from_str(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn rejects_wildcards_null_and_empty() {
        assert_eq!(TopicName::try_from_str(""), Err(TopicError::Empty));
        assert_eq!(TopicName::try_from_str("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::try_from_str("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::try_from_str("a\0b"), Err(TopicError::NullCharacter));
        assert_eq!(
            TopicName::parse(Bytes::from_static(&[b'a', 0xff])),
            Err(TopicError::InvalidUtf8)
        );
    }

    #[test]
    fn levels_keep_empty_levels() {
        let t = TopicName::try_from_str("/a//b").unwrap();
        let levels: Vec<&[u8]> = t.levels().collect();
        assert_eq!(levels, vec![&b""[..], b"a", b"", b"b"]);
    }
}
