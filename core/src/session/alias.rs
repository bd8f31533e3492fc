//! MQTT 5 topic aliases of one connection, both directions [MQTT 3.3.2.3.4].
//!
//! - [`InboundAliases`]: aliases the client set up for the topics it publishes to, at
//!   most our Topic Alias Maximum.
//! - [`OutboundAliases`]: aliases the broker sets up for the topics it sends, at most
//!   the client's Topic Alias Maximum. A topic sent before goes out with its alias and
//!   an empty topic name; once every alias is taken, the least recently assigned one is
//!   re-assigned to the new topic (sent with the topic name, which re-maps it).
//!
//! Both live in the connection's `Link`: aliases never outlive a network connection
//! [MQTT-3.3.2-7].

use std::collections::HashMap;

use crate::protocol::ReasonCode;
use crate::topic::TopicName;

/// A copy of `topic` in its own allocation: a decoded topic shares the read buffer it
/// came in, which an alias table would otherwise keep alive for the connection's life.
fn owned(topic: &TopicName) -> TopicName {
    TopicName::try_from_str(topic.as_str()).unwrap_or_else(|_| topic.clone())
}

/// Both directions' aliases of one connection.
#[derive(Debug, Default)]
pub(crate) struct Aliases {
    /// Set up by the client.
    pub(crate) inbound: InboundAliases,
    /// Set up by the broker; `None` when the client takes none.
    pub(crate) outbound: Option<OutboundAliases>,
}

/// Aliases set up by the client.
#[derive(Debug, Default)]
pub(crate) struct InboundAliases {
    /// Topic of alias `i + 1`; grows up to the maximum as aliases are used.
    topics: Vec<Option<TopicName>>,
}

impl InboundAliases {
    /// Resolves the topic of an incoming PUBLISH with `alias` and `topic` (empty when
    /// the client relies on the alias), recording a new mapping when both are set.
    ///
    /// # Errors
    /// 0x94 Topic Alias Invalid for alias 0 or one above `max` [MQTT-3.3.2-8, -9];
    /// 0x82 Protocol Error for an empty topic with no alias, or with an alias the
    /// client never set up.
    pub(crate) fn resolve(
        &mut self,
        max: u16,
        alias: Option<u16>,
        topic: TopicName,
    ) -> Result<TopicName, ReasonCode> {
        let Some(alias) = alias else {
            return if topic.is_empty() { Err(ReasonCode::ProtocolError) } else { Ok(topic) };
        };
        if alias == 0 || alias > max {
            return Err(ReasonCode::TopicAliasInvalid);
        }
        let i = usize::from(alias - 1);
        if topic.is_empty() {
            return self.topics.get(i).cloned().flatten().ok_or(ReasonCode::ProtocolError);
        }
        if self.topics.len() <= i {
            self.topics.resize(i + 1, None);
        }
        if let Some(slot) = self.topics.get_mut(i) {
            *slot = Some(owned(&topic));
        }
        Ok(topic)
    }
}

/// Aliases the broker sets up towards the client.
#[derive(Debug)]
pub(crate) struct OutboundAliases {
    max: u16,
    by_topic: HashMap<TopicName, u16>,
    /// Topic of alias `i + 1`, in assignment order of the slots.
    topics: Vec<TopicName>,
    /// The alias to re-assign next once all are taken (the oldest assignment).
    next_reuse: u16,
}

impl OutboundAliases {
    /// Aliases up to the client's Topic Alias Maximum `max` (> 0).
    pub(crate) fn new(max: u16) -> Self {
        Self { max, by_topic: HashMap::new(), topics: Vec::new(), next_reuse: 1 }
    }

    /// The alias for `topic` and whether the topic name must be sent with it.
    pub(crate) fn assign(&mut self, topic: &TopicName) -> (u16, bool) {
        if let Some(&a) = self.by_topic.get(topic) {
            return (a, false);
        }
        if self.topics.len() < usize::from(self.max) {
            let topic = owned(topic);
            self.topics.push(topic.clone());
            let a = u16::try_from(self.topics.len()).unwrap_or(self.max);
            self.by_topic.insert(topic, a);
            return (a, true);
        }
        let a = self.next_reuse;
        self.next_reuse = if a >= self.max { 1 } else { a + 1 };
        let topic = owned(topic);
        if let Some(old) = self.topics.get_mut(usize::from(a.saturating_sub(1))) {
            self.by_topic.remove(old);
            *old = topic.clone();
        }
        self.by_topic.insert(topic, a);
        (a, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TopicName {
        TopicName::try_from_str(s).unwrap()
    }

    #[test]
    fn inbound_alias_is_set_then_used_and_checked() {
        let mut a = InboundAliases::default();
        assert_eq!(a.resolve(2, Some(2), t("x/y")), Ok(t("x/y")));
        assert_eq!(a.resolve(2, Some(2), TopicName::empty()), Ok(t("x/y")));
        // Re-mapping an alias.
        assert_eq!(a.resolve(2, Some(2), t("z")), Ok(t("z")));
        assert_eq!(a.resolve(2, Some(2), TopicName::empty()), Ok(t("z")));
        assert_eq!(a.resolve(2, Some(1), TopicName::empty()), Err(ReasonCode::ProtocolError));
        assert_eq!(a.resolve(2, Some(3), t("q")), Err(ReasonCode::TopicAliasInvalid));
        assert_eq!(a.resolve(2, Some(0), t("q")), Err(ReasonCode::TopicAliasInvalid));
        assert_eq!(a.resolve(0, Some(1), t("q")), Err(ReasonCode::TopicAliasInvalid));
        assert_eq!(a.resolve(2, None, TopicName::empty()), Err(ReasonCode::ProtocolError));
    }

    #[test]
    fn outbound_aliases_are_reused_then_reassigned_oldest_first() {
        let mut a = OutboundAliases::new(2);
        assert_eq!(a.assign(&t("a")), (1, true));
        assert_eq!(a.assign(&t("b")), (2, true));
        assert_eq!(a.assign(&t("a")), (1, false));
        // Full: the oldest slot (1, "a") is re-assigned to "c".
        assert_eq!(a.assign(&t("c")), (1, true));
        assert_eq!(a.assign(&t("c")), (1, false));
        assert_eq!(a.assign(&t("b")), (2, false));
        assert_eq!(a.assign(&t("a")), (2, true));
        assert_eq!(a.assign(&t("c")), (1, false));
    }
}
