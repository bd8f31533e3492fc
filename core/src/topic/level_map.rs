//! `LevelMap`: the exact-level children of one node, keyed by the level's bytes.
//!
//! Shared by the subscription trie (`trie.rs`) and the retained tree (`retained.rs`).
//! Most nodes have a handful of children, so those keep a small vector searched
//! linearly (no hashing, one allocation); a node that grows past [`SMALL_MAX`] children
//! (`device/{id}` with a million ids) switches to a `HashMap`. The map uses std's
//! randomly keyed SipHash: level names come from the network, and a fixed-key hash would
//! let a client pile colliding levels into one bucket.
//!
//! Small entries carry a [`Fingerprint`] of their key, so a scan compares integers
//! inline and follows a key's heap pointer only for the entry that matches (and not even
//! then for keys of up to seven bytes, which the fingerprint holds whole). On a trie of
//! a million filters those pointer chases are cache misses, and they dominate matching.

use std::collections::HashMap;

/// Most children kept in the linear vector before switching to a hash map.
const SMALL_MAX: usize = 8;

/// A large map shrinks back to a vector at this size, not at [`SMALL_MAX`], so a node
/// hovering around the threshold does not convert on every insert/remove.
const SHRINK_AT: usize = SMALL_MAX / 2;

/// Children of a node keyed by level bytes. `T` is the owning tree's node id.
#[derive(Debug, Clone)]
pub(super) enum LevelMap<T> {
    Small(Vec<(Fingerprint, Box<[u8]>, T)>),
    /// Boxed so that the common small case keeps the enum at a vector's size.
    #[allow(clippy::box_collection)]
    Large(Box<HashMap<Box<[u8]>, T>>),
}

impl<T> Default for LevelMap<T> {
    fn default() -> Self {
        Self::Small(Vec::new())
    }
}

/// A level's length and first seven bytes packed into a word: equal levels have equal
/// fingerprints, and for levels of up to seven bytes equal fingerprints mean equal levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint(u64);

impl Fingerprint {
    const INLINE_BYTES: usize = 7;

    fn of(level: &[u8]) -> Self {
        let mut word = [0u8; 8];
        let head = level.len().min(Self::INLINE_BYTES);
        word[..head].copy_from_slice(&level[..head]);
        word[7] = level.len().min(usize::from(u8::MAX)) as u8;
        Self(u64::from_le_bytes(word))
    }

    /// Whether `key`, whose fingerprint is `self`, equals `level`, whose fingerprint is
    /// `other`.
    fn confirms(self, other: Self, key: &[u8], level: &[u8]) -> bool {
        self == other && (level.len() <= Self::INLINE_BYTES || key == level)
    }
}

impl<T: Copy> LevelMap<T> {
    pub(super) fn get(&self, level: &[u8]) -> Option<T> {
        match self {
            Self::Small(entries) => {
                let print = Fingerprint::of(level);
                entries.iter().find(|(p, key, _)| p.confirms(print, key, level)).map(|e| e.2)
            }
            Self::Large(map) => map.get(level).copied(),
        }
    }

    /// Adds a child; the caller has checked `level` is absent.
    pub(super) fn insert(&mut self, level: &[u8], id: T) {
        debug_assert!(self.get(level).is_none());
        match self {
            Self::Small(entries) if entries.len() < SMALL_MAX => {
                entries.push((Fingerprint::of(level), level.into(), id));
            }
            Self::Small(entries) => {
                let mut map: HashMap<Box<[u8]>, T> =
                    entries.drain(..).map(|(_, key, id)| (key, id)).collect();
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
                let print = Fingerprint::of(level);
                let at = entries.iter().position(|(p, key, _)| p.confirms(print, key, level))?;
                let (_, _, id) = entries.swap_remove(at);
                if entries.is_empty() {
                    // Leaf nodes are the majority; give their buffer back.
                    *entries = Vec::new();
                }
                Some(id)
            }
            Self::Large(map) => {
                let id = map.remove(level)?;
                if map.len() <= SHRINK_AT {
                    let entries = map.drain().map(|(key, id)| (Fingerprint::of(&key), key, id));
                    *self = Self::Small(entries.collect());
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
            Self::Small(entries) => entries.iter().for_each(|(_, key, id)| f(key, *id)),
            Self::Large(map) => map.iter().for_each(|(key, id)| f(key, *id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_short_levels_apart_and_confirm_long_ones() {
        let mut map = LevelMap::default();
        let levels: [&[u8]; 7] =
            [b"", b"a", b"a\0", b"abcdefg", b"abcdefgh", b"abcdefgX", b"abcdefgh\0"];
        for (i, level) in levels.iter().enumerate() {
            map.insert(level, i);
        }
        for (i, level) in levels.iter().enumerate() {
            assert_eq!(map.get(level), Some(i), "{level:?}");
        }
        assert_eq!(map.get(b"abcdefgY"), None);
        assert_eq!(map.get(b"b"), None);
    }

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
