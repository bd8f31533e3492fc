//! Entry points shared by the cargo-fuzz targets in `core/fuzz/` and the tests that
//! replay their seed corpus on stable Rust. Not part of the supported API.

pub mod decode;
pub mod trie;
