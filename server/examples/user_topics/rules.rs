//! The rules of the `user_topics` example, in their own file so the integration tests
//! (`tests/src/suites/hooks.rs`) run exactly this code against a real broker.
//!
//! - `/users/<name>/...` may be published to only by the client logged in as `<name>`;
//! - `/public/...` may be published to by every client, logged in or not;
//! - both trees may be read by everyone; anything else is refused.

use shoal_core::{QoS, ReasonCode, TopicFilter, TopicName};
use shoal_server::auth::{ClientInfo, Hooks, PublishDecision, SubscribeDecision};

/// Per-user write areas plus a public area.
#[derive(Debug, Default)]
pub struct UserTopics;

impl UserTopics {
    fn may_write(client: &ClientInfo, topic: &str) -> bool {
        if topic.starts_with("/public/") {
            return true;
        }
        let Some(rest) = topic.strip_prefix("/users/") else { return false };
        let owner = rest.split('/').next().unwrap_or_default();
        client.identity.username.as_deref() == Some(owner)
    }

    fn may_read(filter: &str) -> bool {
        filter.starts_with("/public/") || filter.starts_with("/users/")
    }
}

impl Hooks for UserTopics {
    fn on_subscribe(&self, _: &ClientInfo, filter: &TopicFilter, qos: QoS) -> SubscribeDecision {
        if Self::may_read(filter.as_str()) {
            SubscribeDecision::Grant(qos)
        } else {
            SubscribeDecision::Refuse(ReasonCode::NotAuthorized)
        }
    }

    fn on_publish(&self, c: &ClientInfo, topic: &TopicName, _: QoS, _: bool) -> PublishDecision {
        if Self::may_write(c, topic.as_str()) {
            PublishDecision::Allow
        } else {
            PublishDecision::Drop(ReasonCode::NotAuthorized)
        }
    }
}
