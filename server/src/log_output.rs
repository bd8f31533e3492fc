//! Where the `shoal` binary's log lines go: standard error, written once per worker
//! event-loop iteration instead of once per line.
//!
//! A broker logs a line per connect and per disconnect (an operator's audit trail), and
//! at tens of thousands of connects a second a `write(2)` per line is a measurable share
//! of the connect path (docs/PERFORMANCE.md, "connects"). A worker thread therefore
//! holds its lines in a thread-local buffer (`hold`) and writes them with one call at
//! the end of each event-loop iteration (`flush`), before it may sleep in `poll`: a
//! line is never held longer than the iteration that logged it. Threads that do not
//! hold (main, admin, store) write each line at once. A held buffer is written when its
//! `Held` guard drops, so lines logged during shutdown or before a panic unwinds are
//! not lost.
//!
//! Each write goes through the process-wide standard error lock, whole lines only, so
//! lines from different threads never interleave within a line. Lines of one worker
//! stay in order; between workers, a line may reach the file up to one iteration after
//! a later-stamped line of another worker.
//!
//! The logger itself (filtering by `RUST_LOG`, the line format) is `env_logger`,
//! set up in `main.rs`; the library only calls `hold` and `flush`, which cost
//! nothing when no line was logged.

use std::cell::RefCell;
use std::io::{self, Write};

/// A held buffer beyond this is written before the iteration ends, so a burst of
/// lines cannot grow it without bound.
const MAX_HELD_BYTES: usize = 64 * 1024;

thread_local! {
    /// This thread's held lines; `None` on threads that write each line at once.
    static HELD: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The log's writer: into this thread's held buffer if it holds one, else straight to
/// standard error.
#[derive(Debug, Default)]
pub struct LogOutput;

impl Write for LogOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        append(buf, || io::stderr().lock())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Called after every line: held lines wait for the end of the iteration.
        Ok(())
    }
}

/// Holds this thread's log lines until [`flush`] (or until the guard drops).
#[must_use = "lines are held only while the guard lives"]
pub(crate) fn hold() -> Held {
    HELD.with(|h| {
        if let Ok(mut h) = h.try_borrow_mut() {
            h.get_or_insert_with(Vec::new);
        }
    });
    Held(())
}

/// Writes this thread's held lines, if any, to standard error with one call.
pub(crate) fn flush() {
    // A log that cannot be written is not a reason to stop serving clients.
    let _ = flush_into(|| io::stderr().lock());
}

/// Appends `buf` to this thread's held lines (writing them to `out` once over
/// [`MAX_HELD_BYTES`]), or writes it to `out` at once on a thread that does not hold.
fn append<W: Write>(buf: &[u8], out: impl FnOnce() -> W) -> io::Result<()> {
    let held = HELD.with(|h| match h.try_borrow_mut().as_deref_mut() {
        Ok(Some(held)) => {
            held.extend_from_slice(buf);
            Some(held.len() > MAX_HELD_BYTES)
        }
        _ => None,
    });
    match held {
        Some(true) => flush_into(out),
        Some(false) => Ok(()),
        None => out().write_all(buf),
    }
}

/// Writes this thread's held lines, if any, to `out` with one call.
fn flush_into<W: Write>(out: impl FnOnce() -> W) -> io::Result<()> {
    HELD.with(|h| {
        let Ok(mut h) = h.try_borrow_mut() else { return Ok(()) };
        let Some(held) = h.as_mut().filter(|b| !b.is_empty()) else { return Ok(()) };
        let written = out().write_all(held);
        held.clear();
        if held.capacity() > MAX_HELD_BYTES {
            *held = Vec::new();
        }
        written
    })
}

/// Ends holding on this thread when dropped, writing what is held.
#[derive(Debug)]
pub(crate) struct Held(());

impl Drop for Held {
    fn drop(&mut self) {
        flush();
        HELD.with(|h| {
            if let Ok(mut h) = h.try_borrow_mut() {
                *h = None;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_len() -> Option<usize> {
        HELD.with(|h| h.borrow().as_ref().map(Vec::len))
    }

    #[test]
    fn lines_wait_in_a_holding_thread_until_flushed() {
        let mut out = Vec::new();
        let guard = hold();
        append(b"a line\n", || &mut out).unwrap();
        LogOutput.flush().unwrap();
        assert_eq!((held_len(), out.len()), (Some(7), 0), "held after the logger's own flush");
        flush_into(|| &mut out).unwrap();
        assert_eq!((held_len(), &out[..]), (Some(0), &b"a line\n"[..]), "written by the flush");
        drop(guard);
        assert_eq!(held_len(), None, "the guard stops holding");
    }

    #[test]
    fn a_thread_that_does_not_hold_writes_at_once() {
        let mut out = Vec::new();
        append(b"now\n", || &mut out).unwrap();
        assert_eq!((held_len(), &out[..]), (None, &b"now\n"[..]));
    }

    #[test]
    fn a_burst_is_written_before_the_buffer_grows_past_its_bound() {
        let mut out = Vec::new();
        let _guard = hold();
        let line = [b'x'; 1024];
        for _ in 0..(MAX_HELD_BYTES / line.len() + 2) {
            append(&line, || &mut out).unwrap();
        }
        assert!(held_len().is_some_and(|n| n <= MAX_HELD_BYTES), "{:?}", held_len());
        assert!(out.len() > MAX_HELD_BYTES, "written: {}", out.len());
        // The rest goes to `out` too, not to the test's stderr when the guard drops.
        flush_into(|| &mut out).unwrap();
    }
}
