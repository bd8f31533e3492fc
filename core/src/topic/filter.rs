//! `TopicFilter`, the validated filter of a SUBSCRIBE, and `$share/{group}/{filter}`
//! parsing into a [`Subscription`].
//!
//! [`TopicFilter::matches`] is the reference matching rule: short, obviously right, and
//! linear in the filter. The subscription trie (`trie.rs`) and the retained tree
//! (`retained.rs`) implement the same rule for many filters or topics at once and are
//! tested against it.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use super::{TopicError, TopicName};

/// Longest string MQTT can encode (a two-byte length prefix).
const MAX_FILTER_BYTES: usize = u16::MAX as usize;

/// The prefix that marks a shared subscription [MQTT-4.8.2-1].
const SHARE_PREFIX: &str = "$share/";

/// A topic filter a client subscribes with; may hold `+` and `#`.
///
/// # Invariants
/// Non-empty, at most 65,535 bytes, no U+0000; every `+` and `#` occupies a whole level
/// and `#` is the last level [MQTT-4.7.1-1, -2]. A filter beginning with `$share/` is an
/// ordinary filter here; [`Subscription::parse`] is what gives `$share` its meaning.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(String);

impl TopicFilter {
    /// Validates `s` as a topic filter, with no limit on the number of levels.
    ///
    /// # Errors
    /// The [`TopicError`] naming the first rule broken.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        Self::parse_with_max_levels(s, usize::MAX)
    }

    /// Validates `s` as a topic filter of at most `max_levels` levels.
    ///
    /// The server passes `Limits::max_topic_levels` here: the trie's matching recursion
    /// is as deep as the deepest filter it holds, so this is also its stack bound.
    ///
    /// # Errors
    /// The [`TopicError`] naming the first rule broken; [`TopicError::TooManyLevels`] when
    /// the filter has more than `max_levels` levels.
    pub fn parse_with_max_levels(s: &str, max_levels: usize) -> Result<Self, TopicError> {
        Self::check(s, max_levels)?;
        Ok(Self(s.to_owned()))
    }

    /// Validates raw bytes (for example a filter straight off the wire) as a filter.
    ///
    /// # Errors
    /// [`TopicError::InvalidUtf8`], or as [`TopicFilter::parse_with_max_levels`].
    pub fn parse_bytes(bytes: &[u8], max_levels: usize) -> Result<Self, TopicError> {
        let s = std::str::from_utf8(bytes).map_err(|_| TopicError::InvalidUtf8)?;
        Self::parse_with_max_levels(s, max_levels)
    }

    fn check(s: &str, max_levels: usize) -> Result<(), TopicError> {
        if s.is_empty() {
            return Err(TopicError::Empty); // [MQTT-4.7.3-1]
        }
        if s.len() > MAX_FILTER_BYTES {
            return Err(TopicError::TooLong);
        }
        if memchr::memchr(0, s.as_bytes()).is_some() {
            return Err(TopicError::NullCharacter); // [MQTT-4.7.3-2]
        }
        let mut count = 0usize;
        let mut levels = s.split('/').peekable();
        while let Some(level) = levels.next() {
            count += 1;
            if count > max_levels {
                return Err(TopicError::TooManyLevels);
            }
            let has_wildcard = level.bytes().any(|b| b == b'+' || b == b'#');
            // [MQTT-4.7.1-2] `+` fills its level; [MQTT-4.7.1-1] so does `#`, and it is last.
            if has_wildcard && (level.len() != 1 || (level == "#" && levels.peek().is_some())) {
                return Err(TopicError::MisplacedWildcard);
            }
        }
        Ok(())
    }

    /// Wraps a string already known to be a valid filter (rebuilt from trie paths).
    pub(super) fn from_valid(s: String) -> Self {
        debug_assert!(Self::check(&s, usize::MAX).is_ok(), "invalid filter {s:?}");
        Self(s)
    }

    /// The filter text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The filter text as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a filter has at least one character. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The levels of the filter, split at `/`; `+` and `#` appear as themselves and an
    /// empty level is a level.
    pub fn levels(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.split('/')
    }

    /// Number of levels.
    pub fn level_count(&self) -> usize {
        self.0.bytes().filter(|&b| b == b'/').count() + 1
    }

    /// Whether the filter holds `+` or `#` (otherwise it matches exactly one topic).
    pub fn has_wildcards(&self) -> bool {
        // Validation made every `+`/`#` a whole level, so a byte scan is enough.
        self.0.bytes().any(|b| b == b'+' || b == b'#')
    }

    /// Whether the filter starts with `$` (it can then only match `$` topics).
    pub fn is_dollar(&self) -> bool {
        self.0.starts_with('$')
    }

    /// Whether `topic` matches this filter; the reference semantics of matching.
    ///
    /// `+` matches exactly one level, which may be empty; `#` matches the level it stands
    /// on and every level below, including none, so `a/#` matches `a` [MQTT-4.7.1-1]. A
    /// filter starting with a wildcard never matches a topic starting with `$`
    /// [MQTT-4.7.2-1]. The empty topic of an alias-only PUBLISH matches nothing.
    pub fn matches(&self, topic: &TopicName) -> bool {
        if topic.is_empty() {
            return false;
        }
        let mut filter_levels = self.levels();
        let mut topic_levels = topic.levels();
        if topic.is_dollar() && (self.0.starts_with('+') || self.0.starts_with('#')) {
            return false;
        }
        loop {
            match (filter_levels.next(), topic_levels.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(f), Some(t)) if f.as_bytes() == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets a `HashMap<TopicFilter, _>` be looked up by `&str`; hashing and ordering are the
/// string's.
impl Borrow<str> for TopicFilter {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for TopicFilter {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for TopicFilter {
    type Error = TopicError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TopicFilter {
    type Error = TopicError;
    /// Validates without copying.
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::check(&s, usize::MAX)?;
        Ok(Self(s))
    }
}

/// A shared subscription: `$share/{group}/{filter}` [MQTT-4.8.2].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedFilter {
    /// The share name: non-empty, without `/`, `+` or `#` [MQTT-4.8.2-1].
    pub group: String,
    /// The filter the group's members share; matching uses this alone.
    pub filter: TopicFilter,
}

impl fmt::Display for SharedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHARE_PREFIX}{}/{}", self.group, self.filter)
    }
}

/// What one filter string of a SUBSCRIBE or UNSUBSCRIBE asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subscription {
    /// An ordinary subscription.
    Plain(TopicFilter),
    /// `$share/{group}/{filter}`: each message goes to one member of the group.
    Shared(SharedFilter),
}

impl Subscription {
    /// Parses a filter string, recognising `$share/{group}/{filter}`.
    ///
    /// # Errors
    /// As [`Subscription::parse_with_max_levels`].
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        Self::parse_with_max_levels(s, usize::MAX)
    }

    /// Parses a filter string, recognising `$share/{group}/{filter}`; `max_levels` bounds
    /// the levels of the filter (the `$share/{group}/` prefix does not count).
    ///
    /// `$share` without a following `/` (`$share`, `$shared/x`) is an ordinary filter.
    ///
    /// # Errors
    /// [`TopicError::InvalidShare`] when the group is empty or holds `+` or `#`, or no
    /// filter follows it [MQTT-4.8.2-1, -2]; otherwise the error of the filter itself.
    pub fn parse_with_max_levels(s: &str, max_levels: usize) -> Result<Self, TopicError> {
        let Some(rest) = s.strip_prefix(SHARE_PREFIX) else {
            return TopicFilter::parse_with_max_levels(s, max_levels).map(Self::Plain);
        };
        let Some((group, filter)) = rest.split_once('/') else {
            return Err(TopicError::InvalidShare); // no filter after the group
        };
        if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
            return Err(TopicError::InvalidShare);
        }
        if s.len() > MAX_FILTER_BYTES {
            return Err(TopicError::TooLong);
        }
        if group.contains('\0') {
            return Err(TopicError::NullCharacter);
        }
        let filter = TopicFilter::parse_with_max_levels(filter, max_levels)?;
        Ok(Self::Shared(SharedFilter { group: group.to_owned(), filter }))
    }

    /// The filter messages are matched against (for a shared subscription, the part
    /// after the group).
    pub fn filter(&self) -> &TopicFilter {
        match self {
            Self::Plain(filter) => filter,
            Self::Shared(shared) => &shared.filter,
        }
    }

    /// The share group, for a shared subscription.
    pub fn group(&self) -> Option<&str> {
        match self {
            Self::Plain(_) => None,
            Self::Shared(shared) => Some(&shared.group),
        }
    }

    /// Whether this is a `$share` subscription.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Shared(_))
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(filter) => fmt::Display::fmt(filter, f),
            Self::Shared(shared) => fmt::Display::fmt(shared, f),
        }
    }
}

impl FromStr for Subscription {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
    }

    fn topic(s: &str) -> TopicName {
        TopicName::try_from_str(s).unwrap()
    }

    #[test]
    fn validation_table() {
        use TopicError::*;
        let long = "a".repeat(MAX_FILTER_BYTES + 1);
        let longest = "a".repeat(MAX_FILTER_BYTES);
        let cases: &[(&str, Result<(), TopicError>)] = &[
            ("a", Ok(())),
            ("a/b/c", Ok(())),
            ("/", Ok(())),
            ("//", Ok(())),
            ("+", Ok(())),
            ("#", Ok(())),
            ("+/+", Ok(())),
            ("/+", Ok(())),
            ("+/", Ok(())),
            ("sport/tennis/player1/#", Ok(())),
            ("sport/+/player1", Ok(())),
            ("+/tennis/#", Ok(())),
            ("$SYS/#", Ok(())),
            ("a//#", Ok(())),
            ("ü/€/+", Ok(())),
            ("sport tennis", Ok(())),
            (&longest, Ok(())),
            ("", Err(Empty)),
            (&long, Err(TooLong)),
            ("a/\0", Err(NullCharacter)),
            ("sport/tennis#", Err(MisplacedWildcard)),
            ("sport/tennis/#/ranking", Err(MisplacedWildcard)),
            ("#/", Err(MisplacedWildcard)),
            ("##", Err(MisplacedWildcard)),
            ("sport+", Err(MisplacedWildcard)),
            ("sport/+tennis", Err(MisplacedWildcard)),
            ("++", Err(MisplacedWildcard)),
            ("+#", Err(MisplacedWildcard)),
            ("a/b#/c", Err(MisplacedWildcard)),
        ];
        for (input, want) in cases {
            let got = TopicFilter::parse(input).map(|_| ());
            assert_eq!(got, *want, "{:?}", &input[..input.len().min(20)]);
        }
    }

    #[test]
    fn level_limit_counts_every_level_including_empty_ones() {
        assert!(TopicFilter::parse_with_max_levels("a/b/c", 3).is_ok());
        assert!(TopicFilter::parse_with_max_levels("//", 3).is_ok());
        assert_eq!(TopicFilter::parse_with_max_levels("a/b/c/", 3), Err(TopicError::TooManyLevels));
        assert_eq!(
            TopicFilter::parse_with_max_levels("a/b/c/#", 3),
            Err(TopicError::TooManyLevels)
        );
    }

    #[test]
    fn rejects_invalid_utf8_bytes() {
        assert_eq!(TopicFilter::parse_bytes(&[b'a', 0xc3], 8), Err(TopicError::InvalidUtf8));
        assert_eq!(TopicFilter::parse_bytes(b"a/+", 8).unwrap().as_str(), "a/+");
    }

    #[test]
    fn accessors() {
        let f = filter("a//+/#");
        assert_eq!(f.levels().collect::<Vec<_>>(), ["a", "", "+", "#"]);
        assert_eq!(f.level_count(), 4);
        assert!(f.has_wildcards());
        assert!(!filter("a/b").has_wildcards());
        assert!(filter("$SYS/#").is_dollar());
        assert_eq!(f.to_string(), "a//+/#");
        assert_eq!(format!("{f:?}"), "\"a//+/#\"");
        assert_eq!(TopicFilter::try_from(String::from("x/#")).unwrap(), filter("x/#"));
        assert_eq!("#/".parse::<TopicFilter>(), Err(TopicError::MisplacedWildcard));
    }

    /// The non-normative examples of MQTT 5.0 section 4.7.1 and 4.7.2.
    #[test]
    fn spec_matching_examples() {
        let cases: &[(&str, &str, bool)] = &[
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            ("sport/tennis/player1/#", "sport/tennis/player1/ranking", true),
            ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true),
            ("sport/tennis/player1/#", "sport/tennis/player2", false),
            ("sport/#", "sport", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player2", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("+", "finance", true),
            ("#", "sport/tennis", true),
            ("#", "/", true),
            ("#", "$SYS/monitor/Clients", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/#", "$SYS", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("$SYS", "$SYS", true),
            ("+", "$SYS", false),
            ("a/#", "a/", true),
            ("a/#", "ab", false),
            ("a/+/c", "a//c", true),
            ("a/b", "a/b/", false),
            ("a/b/", "a/b", false),
            ("x/$y/+", "x/$y/z", true),
            ("+/$y", "x/$y", true),
        ];
        for (f, t, want) in cases {
            assert_eq!(filter(f).matches(&topic(t)), *want, "{f} vs {t}");
        }
    }

    #[test]
    fn empty_alias_topic_matches_nothing() {
        assert!(!filter("#").matches(&TopicName::empty()));
        assert!(!filter("+").matches(&TopicName::empty()));
    }

    #[test]
    fn parses_shared_subscriptions() {
        let s = Subscription::parse("$share/group1/sport/+/player1").unwrap();
        assert_eq!(
            s,
            Subscription::Shared(SharedFilter {
                group: "group1".into(),
                filter: filter("sport/+/player1")
            })
        );
        assert_eq!(s.group(), Some("group1"));
        assert_eq!(s.filter().as_str(), "sport/+/player1");
        assert_eq!(s.to_string(), "$share/group1/sport/+/player1");
        assert!(s.is_shared());

        let s = Subscription::parse("$share/g/#").unwrap();
        assert_eq!(s.filter().as_str(), "#");
        // The filter after the group may itself start with `/` or be a single empty level.
        assert_eq!(Subscription::parse("$share/g//a").unwrap().filter().as_str(), "/a");
    }

    #[test]
    fn share_lookalikes_are_plain_filters() {
        for s in ["$share", "$shared/g/a", "$SHARE/g/a", "a/$share/g/b"] {
            let sub = Subscription::parse(s).unwrap();
            assert_eq!(sub, Subscription::Plain(filter(s)), "{s}");
            assert_eq!(sub.group(), None);
        }
    }

    #[test]
    fn rejects_malformed_shares() {
        use TopicError::*;
        let cases: &[(&str, TopicError)] = &[
            ("$share/", InvalidShare),
            ("$share//a", InvalidShare),
            ("$share/group", InvalidShare),
            ("$share/group/", InvalidShare),
            ("$share/gr+oup/a", InvalidShare),
            ("$share/+/a", InvalidShare),
            ("$share/#/a", InvalidShare),
            ("$share/g#/a", InvalidShare),
            ("$share/g\0/a", NullCharacter),
            ("$share/g/a/#/b", MisplacedWildcard),
            ("$share/g/a+", MisplacedWildcard),
        ];
        for (input, want) in cases {
            assert_eq!(Subscription::parse(input), Err(*want), "{input}");
        }
    }

    #[test]
    fn share_level_limit_applies_to_the_filter_only() {
        assert!(Subscription::parse_with_max_levels("$share/g/a/b", 2).is_ok());
        assert_eq!(
            Subscription::parse_with_max_levels("$share/g/a/b/c", 2),
            Err(TopicError::TooManyLevels)
        );
    }
}
