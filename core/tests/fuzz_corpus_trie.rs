//! Replays the `trie_ops` fuzz seed corpus on stable Rust, so every CI run exercises the
//! trie oracle in `shoal_core::fuzz_support::trie` on each seed (cargo-fuzz needs nightly).

use std::fs;
use std::path::Path;

#[test]
fn trie_ops_seed_corpus_agrees_with_brute_force() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/trie_ops");
    let mut replayed = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| shoal_core::fuzz_support::trie::run(&data));
        assert!(outcome.is_ok(), "seed {} failed", path.display());
        replayed += 1;
    }
    assert!(replayed >= 12, "only {replayed} seeds in {}", dir.display());
}
