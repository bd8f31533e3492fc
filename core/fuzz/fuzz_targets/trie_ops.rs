//! Fuzz target: random insert/remove/match sequences on the subscription trie and the
//! retained tree, checked against a brute-force model. The input format and the oracle
//! are in `shoal_core::fuzz_support::trie`; the seed corpus is `corpus/trie_ops/`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shoal_core::fuzz_support::trie::run(data);
});
