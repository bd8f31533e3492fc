//! `shoal-icount`: fixed-iteration runs of the hot paths, for instruction counting.
//!
//! Criterion's wall-clock figures drift by tens of percent on the small, shared CI
//! machines, so CI gates on instructions instead: `.ci/bench-gate` runs each case here
//! under Callgrind with collection switched on only inside [`icount_measured`], divides
//! by [`Case::iterations`] and compares with `benches/icount-baseline.txt`.
//!
//! Each case builds its input first (not counted), then runs the operation a fixed number
//! of times inside `icount_measured`. Inputs are deterministic so the count is too.

use std::hint::black_box;
use std::process::ExitCode;

use shoal_benches::icount::{cases, Case};

/// The counted section. Callgrind toggles collection on entry and exit of this
/// function (matched by name), so it must never be inlined.
#[inline(never)]
fn icount_measured(run: &mut dyn FnMut()) {
    run();
}

fn find(name: &str) -> Option<Case> {
    cases().into_iter().find(|c| c.name == name)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("list"), None) => {
            for case in cases() {
                println!("{}", case.name);
            }
            ExitCode::SUCCESS
        }
        (Some("iterations"), Some(name)) => match find(name) {
            Some(case) => {
                println!("{}", case.iterations);
                ExitCode::SUCCESS
            }
            None => unknown(name),
        },
        (Some("run"), Some(name)) => match find(name) {
            Some(case) => {
                let mut run = (case.prepare)(case.iterations);
                icount_measured(&mut *run);
                black_box(&run);
                ExitCode::SUCCESS
            }
            None => unknown(name),
        },
        _ => {
            eprintln!("usage: shoal-icount list | iterations CASE | run CASE");
            ExitCode::from(2)
        }
    }
}

fn unknown(name: &str) -> ExitCode {
    eprintln!("shoal-icount: no case named {name:?} (see `shoal-icount list`)");
    ExitCode::from(2)
}
