//! Shoal's benchmark support: the instruction-count cases run by `shoal-icount` and
//! `.ci/bench-gate`. The criterion benches themselves are in `benches/`.

pub mod icount;
pub mod slow;
