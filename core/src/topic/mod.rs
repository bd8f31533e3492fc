//! Topic names, topic filters, the subscription trie and the retained-message tree.
//!
//! A [`TopicName`] is what a PUBLISH is sent to; a [`TopicFilter`] is what a SUBSCRIBE
//! asks for (it may hold `+` and `#`), and a [`Subscription`] is a filter string with its
//! `$share/{group}/` prefix understood. All are validated once, at construction; holding
//! one means it is valid.
//!
//! [`SubscriptionTrie`] maps filters to subscribers and answers "who gets this publish";
//! [`MatchSet`] collects those answers one entry per subscriber. [`RetainedTree`] maps
//! topics to retained messages and answers "what does this new subscription receive".
//! Both are single-threaded data owned by one thread; the locking and ownership around
//! them is the server's (`server/src/shard.rs`).

mod arena;
mod filter;
mod level_map;
mod match_set;
mod name;
mod retained;
mod trie;

/// The name this type had before `Subscription` was re-exported directly.
pub use filter::Subscription as FilterSubscription;
pub use filter::{SharedFilter, Subscription, TopicFilter};
pub use match_set::{MatchSet, MergeSubscription};
pub use name::TopicName;
pub use retained::RetainedTree;
pub use trie::{Iter as SubscriptionIter, SubscriptionTrie};

/// Why a topic name or filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Topic names and filters are at least one character long [MQTT-4.7.3-1].
    #[error("topic is empty")]
    Empty,
    /// Longer than the 65,535 bytes a UTF-8 string can hold.
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    /// Not valid UTF-8 [MQTT-1.5.4-1].
    #[error("topic is not valid UTF-8")]
    InvalidUtf8,
    /// Contains U+0000 [MQTT-4.7.3-2].
    #[error("topic contains the null character")]
    NullCharacter,
    /// A topic name contains `+` or `#` [MQTT-3.3.2-2].
    #[error("topic name contains a wildcard")]
    WildcardInName,
    /// `+` or `#` does not occupy a whole level, or `#` is not last [MQTT-4.7.1-1, -2].
    #[error("wildcard misplaced in topic filter")]
    MisplacedWildcard,
    /// `$share/{group}/{filter}` with an empty or wildcard group, or no filter [MQTT-4.8.2-1, -2].
    #[error("malformed shared subscription")]
    InvalidShare,
    /// More levels than the configured maximum.
    #[error("too many topic levels")]
    TooManyLevels,
}
