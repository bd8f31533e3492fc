//! Fuzz entry point for trie operations. (Being written.)

/// Interprets `data` as a sequence of trie operations; must never panic.
pub fn run(data: &[u8]) {
    let _ = data;
}
