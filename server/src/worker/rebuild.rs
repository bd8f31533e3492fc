//! Messages rebuilt from the durable store at recovery, kept compact: a million queued
//! messages come back as a million `Message`s, so what each costs is what recovery
//! costs. The store's reading and the sessions' restoring are in `persist/` and
//! `durable.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use shoal_core::session::Message;
use shoal_core::TopicName;

use super::durable::recovered_message;
use crate::persist::StoredMessage;

/// Turns stored bodies into routed messages, one per body however many queues and
/// windows refer to it.
///
/// Each stored body comes with its own copy of the topic and payload. A body only one
/// reference holds (the usual case: one offline session) is taken apart, its payload
/// moved into the message rather than shared (sharing a `Bytes` adds a counter
/// allocation to each); equal topics are kept once.
#[derive(Debug)]
pub(crate) struct Rebuild {
    now: Instant,
    now_unix: u64,
    /// Bodies that several references hold, by id; the others are never looked up again.
    shared: HashMap<u64, Arc<Message>>,
    /// Each distinct topic, once.
    topics: HashSet<TopicName>,
}

impl Rebuild {
    /// Starts a rebuild at the present moment (for expiry).
    pub(crate) fn new() -> Self {
        let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self { now: Instant::now(), now_unix, shared: HashMap::new(), topics: HashSet::new() }
    }

    /// The moment the rebuild counts from.
    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    /// The message of one reference to a stored body.
    pub(crate) fn message(&mut self, stored: Arc<StoredMessage>) -> Arc<Message> {
        let id = stored.id.0;
        if let Some(m) = self.shared.get(&id) {
            return m.clone();
        }
        let (msg, sole) = match Arc::try_unwrap(stored) {
            Ok(mut stored) => {
                // The only reference: take the topic and payload over. Sharing them
                // instead would add a counter allocation to each (`Bytes::clone`).
                let topic = std::mem::replace(&mut stored.topic, TopicName::empty());
                let payload = std::mem::take(&mut stored.payload);
                let mut msg = recovered_message(&stored, self.now, self.now_unix);
                msg.topic = self.topic(topic);
                msg.payload = payload;
                (msg, true)
            }
            Err(stored) => {
                let mut msg = recovered_message(&stored, self.now, self.now_unix);
                msg.topic = self.topic(msg.topic);
                (msg, false)
            }
        };
        let msg = Arc::new(msg);
        if !sole {
            self.shared.insert(id, msg.clone());
        }
        msg
    }

    fn topic(&mut self, topic: TopicName) -> TopicName {
        if let Some(t) = self.topics.get(&topic) {
            return t.clone();
        }
        self.topics.insert(topic.clone());
        topic
    }
}
