//! Fuzz entry point for the decoder. (Being written.)

/// Feeds `data` to the decoder; must never panic.
pub fn run(data: &[u8]) {
    let _ = data;
}
