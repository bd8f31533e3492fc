//! Inputs shared by Shoal's criterion benches (see `benches/`).
