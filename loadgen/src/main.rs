//! `shoal-loadgen`. (Being written.)

fn main() {}
