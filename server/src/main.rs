//! `shoal`: the broker binary. (Being written.)

fn main() {}
