//! `TopicFilter` and `$share/{group}/{filter}` parsing. (Placeholder: being written.)

use super::TopicError;

/// A validated topic filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(String);

impl TopicFilter {
    /// Validates a filter.
    ///
    /// # Errors
    /// The rule broken.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        if s.is_empty() {
            return Err(TopicError::Empty);
        }
        Ok(Self(s.to_owned()))
    }

    /// The filter text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A shared subscription's group and filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedFilter {
    /// Share name.
    pub group: String,
    /// The filter.
    pub filter: TopicFilter,
}

/// What a SUBSCRIBE filter string asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subscription {
    /// An ordinary subscription.
    Plain(TopicFilter),
    /// `$share/{group}/{filter}`.
    Shared(SharedFilter),
}
