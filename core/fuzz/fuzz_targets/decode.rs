//! Fuzz target: arbitrary bytes through the packet decoder under every protocol
//! version; whatever decodes must re-encode and decode to the same packet. The oracle is
//! `shoal_core::fuzz_support::decode::run`; the seed corpus is `corpus/decode/`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shoal_core::fuzz_support::decode::run(data);
});
