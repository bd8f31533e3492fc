//! Where sessions and retained messages are kept, behind traits so that a durable
//! store can replace the in-memory ones without touching the event loops.
//!
//! - [`RetainedStore`] is shared by all workers (`Send + Sync`); the in-memory one is a
//!   `RetainedTree` under a `parking_lot::RwLock`, taken only by retained publishes and
//!   by subscribes, never by ordinary publishes.
//! - [`SessionStore`] is owned by one worker (the home worker of its client ids) and
//!   needs no lock. Keys are stable while a session exists, so the subscription trie can
//!   hold them.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use shoal_core::session::{Message, Session};
use shoal_core::topic::RetainedTree;
use shoal_core::{TopicFilter, TopicName};
use slab::Slab;

/// Handle to a session in a [`SessionStore`]; valid until the session is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub usize);

/// Retained messages, one per topic.
pub trait RetainedStore: Send + Sync {
    /// Stores `message` for its topic, replacing what was there.
    fn set(&self, message: Arc<Message>);
    /// Deletes the retained message of `topic`, if any.
    fn remove(&self, topic: &TopicName);
    /// Calls `f` with every retained message whose topic matches `filter`.
    fn for_each_matching(&self, filter: &TopicFilter, f: &mut dyn FnMut(&Arc<Message>));
    /// Number of retained messages.
    fn len(&self) -> usize;
    /// True when nothing is retained.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The in-memory retained store.
#[derive(Debug, Default)]
pub struct MemoryRetainedStore {
    tree: RwLock<RetainedTree<Arc<Message>>>,
}

impl RetainedStore for MemoryRetainedStore {
    fn set(&self, message: Arc<Message>) {
        let topic = message.topic.clone();
        self.tree.write().insert(&topic, message);
    }

    fn remove(&self, topic: &TopicName) {
        self.tree.write().remove(topic);
    }

    fn for_each_matching(&self, filter: &TopicFilter, f: &mut dyn FnMut(&Arc<Message>)) {
        self.tree.read().for_each_matching(filter, |_, m| f(m));
    }

    fn len(&self) -> usize {
        self.tree.read().len()
    }
}

/// The sessions of one worker's client ids, online and offline.
pub trait SessionStore {
    /// The key of `client_id`'s session, if it has one.
    fn find(&self, client_id: &str) -> Option<SessionKey>;
    /// The session under `key`.
    fn get(&self, key: SessionKey) -> Option<&SessionSlot>;
    /// The session under `key`, mutably.
    fn get_mut(&mut self, key: SessionKey) -> Option<&mut SessionSlot>;
    /// Adds a session (its client id must not have one yet) and returns its key.
    fn insert(&mut self, slot: SessionSlot) -> SessionKey;
    /// Removes and returns the session under `key`.
    fn remove(&mut self, key: SessionKey) -> Option<SessionSlot>;
    /// Keys of every stored session (for expiry sweeps).
    fn keys(&self) -> Vec<SessionKey>;
    /// Number of sessions.
    fn len(&self) -> usize;
    /// True when no session is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session and the connection it is attached to.
#[derive(Debug)]
pub struct SessionSlot {
    /// The protocol state.
    pub session: Session,
    /// The worker-local connection index while online.
    pub conn: Option<usize>,
}

/// The in-memory session store: a slab plus a client-id index.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    slots: Slab<SessionSlot>,
    by_id: HashMap<Arc<str>, SessionKey>,
}

impl SessionStore for MemorySessionStore {
    fn find(&self, client_id: &str) -> Option<SessionKey> {
        self.by_id.get(client_id).copied()
    }

    fn get(&self, key: SessionKey) -> Option<&SessionSlot> {
        self.slots.get(key.0)
    }

    fn get_mut(&mut self, key: SessionKey) -> Option<&mut SessionSlot> {
        self.slots.get_mut(key.0)
    }

    fn insert(&mut self, slot: SessionSlot) -> SessionKey {
        let id = slot.session.client_id().clone();
        let key = SessionKey(self.slots.insert(slot));
        self.by_id.insert(id, key);
        key
    }

    fn remove(&mut self, key: SessionKey) -> Option<SessionSlot> {
        let slot = self.slots.try_remove(key.0)?;
        if self.by_id.get(slot.session.client_id().as_ref()) == Some(&key) {
            self.by_id.remove(slot.session.client_id().as_ref());
        }
        Some(slot)
    }

    fn keys(&self) -> Vec<SessionKey> {
        self.slots.iter().map(|(k, _)| SessionKey(k)).collect()
    }

    fn len(&self) -> usize {
        self.slots.len()
    }
}
