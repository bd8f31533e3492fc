//! `LevelMap`: the exact-level children of one node, keyed by the level's bytes.
//!
//! Shared by the subscription trie (`trie.rs`) and the retained tree (`retained.rs`).
//! Most nodes have a handful of children, so those keep a small vector searched
//! linearly (no hashing, one allocation); a node that grows past [`SMALL_MAX`] children
//! (`device/{id}` with a million ids) switches to a `HashMap`. The map uses std's
//! randomly keyed SipHash: level names come from the network, and a fixed-key hash would
//! let a client pile colliding levels into one bucket.

use std::collections::HashMap;

/// Most children kept in the linear vector before switching to a hash map.
const SMALL_MAX: usize = 8;

/// A large map shrinks back to a vector at this size, not at [`SMALL_MAX`], so a node
/// hovering around the threshold does not convert on every insert/remove.
const SHRINK_AT: usize = SMALL_MAX / 2;

/// Children of a node keyed by level bytes. `T` is the owning tree's node id.
#[derive(Debug, Clone)]
pub(super) enum LevelMap<T> {
    Small(Vec<(Box<[u8]>, T)>),
    /// Boxed so that the common small case keeps the enum at a vector's size.
    #[allow(clippy::box_collection)]
    Large(Box<HashMap<Box<[u8]>, T>>),
}

impl<T> Default for LevelMap<T> {
    fn default() -> Self {
        Self::Small(Vec::new())
    }
}

impl<T: Copy> LevelMap<T> {
    pub(super) fn get(&self, level: &[u8]) -> Option<T> {
        match self {
            Self::Small(entries) => {
                entries.iter().find(|(key, _)| **key == *level).map(|&(_, id)| id)
            }
            Self::Large(map) => map.get(level).copied(),
        }
    }

    /// Adds a child; the caller has checked `level` is absent.
    pub(super) fn insert(&mut self, level: &[u8], id: T) {
        debug_assert!(self.get(level).is_none());
        match self {
            Self::Small(entries) if entries.len() < SMALL_MAX => {
                entries.push((level.into(), id));
            }
            Self::Small(entries) => {
                let mut map: HashMap<Box<[u8]>, T> = entries.drain(..).collect();
                map.insert(level.into(), id);
                *self = Self::Large(Box::new(map));
            }
            Self::Large(map) => {
                map.insert(level.into(), id);
            }
        }
    }

    pub(super) fn remove(&mut self, level: &[u8]) -> Option<T> {
        match self {
            Self::Small(entries) => {
                let at = entries.iter().position(|(key, _)| **key == *level)?;
                let (_, id) = entries.swap_remove(at);
                if entries.is_empty() {
                    // Leaf nodes are the majority; give their buffer back.
                    *entries = Vec::new();
                }
                Some(id)
            }
            Self::Large(map) => {
                let id = map.remove(level)?;
                if map.len() <= SHRINK_AT {
                    *self = Self::Small(map.drain().collect());
                }
                Some(id)
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Self::Small(entries) => entries.len(),
            Self::Large(map) => map.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every (level, child); order unspecified.
    pub(super) fn for_each(&self, mut f: impl FnMut(&[u8], T)) {
        match self {
            Self::Small(entries) => entries.iter().for_each(|(key, id)| f(key, *id)),
            Self::Large(map) => map.iter().for_each(|(key, id)| f(key, *id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_into_a_map_and_shrinks_back() {
        let mut map = LevelMap::default();
        for i in 0..100u32 {
            map.insert(i.to_string().as_bytes(), i);
        }
        assert!(matches!(map, LevelMap::Large(_)));
        assert_eq!(map.len(), 100);
        assert_eq!(map.get(b"42"), Some(42));
        assert_eq!(map.get(b"100"), None);
        for i in 0..98u32 {
            assert_eq!(map.remove(i.to_string().as_bytes()), Some(i));
        }
        assert!(matches!(map, LevelMap::Small(_)));
        assert_eq!(map.get(b"99"), Some(99));
        assert_eq!(map.remove(b"0"), None);
        let mut seen = Vec::new();
        map.for_each(|k, v| seen.push((k.to_vec(), v)));
        seen.sort();
        assert_eq!(seen, vec![(b"98".to_vec(), 98), (b"99".to_vec(), 99)]);
    }
}
