//! Messages between workers, and the rule that gives every client id a home worker.
//!
//! Each worker has one bounded channel and one `mio::Waker`. Publishes travel in
//! batches (one channel message and one wake-up per batch per loop iteration); a
//! connection whose CONNECT landed on the wrong worker travels as a [`Handoff`].
//! Full-channel policy: the sender never blocks; it keeps the batch, stops reading its
//! own sockets and retries next iteration (see `worker/mod.rs`).

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::BytesMut;
use crossbeam_channel::Sender;
use mio::net::TcpStream;
use shoal_core::codec::Connect;
use shoal_core::session::Message;

/// Batches a worker's channel holds before senders back off.
pub(crate) const CHANNEL_BATCHES: usize = 256;
/// A batch for another worker is sent once it holds this many publishes, without
/// waiting for the end of the iteration. With [`CHANNEL_BATCHES`] this bounds the
/// publishes queued towards one worker to about 64k (a batch can exceed it by one read
/// budget's worth of frames).
pub(crate) const OUTBOX_BATCH_MESSAGES: usize = 256;

/// What one worker sends another.
pub(crate) enum WorkerMsg {
    /// Publishes to match against the receiver's trie, in publish order.
    Publish(Vec<Arc<Message>>),
    /// Connections whose client ids live on the receiver, in the order they were read.
    Handoff(Vec<Handoff>),
    /// Shared-subscription membership and deliveries (`worker/shared.rs`), in order.
    Share(Vec<crate::worker::ShareMsg>),
    /// Durable store: worker `from` asks to be told (through `DurableShared`) once
    /// everything the receiver wrote for `from`'s publish batches before this mark is
    /// committed, and what the group messages it forwarded for them made their
    /// members' workers write (a publish mark, see `worker/durable.rs`).
    Mark {
        /// The sender.
        from: usize,
        /// Its mark number (increasing).
        mark: u64,
    },
}

/// A connection moving to its client id's home worker after CONNECT was decoded.
pub(crate) struct Handoff {
    pub(crate) stream: TcpStream,
    pub(crate) addr: SocketAddr,
    /// The connection's TLS / WebSocket state, which moves with its socket.
    pub(crate) layer: Option<Box<crate::worker::Layer>>,
    /// The listener that accepted it.
    pub(crate) listener: u16,
    pub(crate) connect: Box<Connect>,
    /// Bytes read after the CONNECT frame.
    pub(crate) rest: BytesMut,
    pub(crate) accepted_at: Instant,
    /// Bytes read from it so far.
    pub(crate) bytes_in: u64,
}

/// How to reach a worker.
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) tx: Sender<WorkerMsg>,
    pub(crate) waker: Arc<mio::Waker>,
    /// The worker itself, for `serve_peer`; empty until the broker has wrapped every
    /// worker for its thread (and in handles taken before that).
    pub(crate) cell: Weak<parking_lot::Mutex<crate::worker::Worker>>,
}

/// The home worker of `client_id`: FNV-1a of its bytes, mixed, modulo the worker count.
/// Deterministic across threads and runs (unlike `RandomState`).
///
/// FNV-1a's low bits depend only on the low bits of the input bytes (its parity is the
/// parity of the number of odd bytes), so without the final mix `sensor-p1` and
/// `sensor-s1` always landed on different workers of two, and ids differing in one
/// even-valued character always on the same one.
pub(crate) fn home_worker(client_id: &str, workers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in client_id.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // A 64-bit finalizer (xor-shift, multiply, xor-shift): every input bit reaches the
    // low bits.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    usize::try_from(h % u64::try_from(workers.max(1)).unwrap_or(1)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_worker_is_stable_and_in_range() {
        for n in 1..8 {
            let w = home_worker("client-42", n);
            assert!(w < n);
            assert_eq!(w, home_worker("client-42", n));
        }
    }

    #[test]
    fn ids_that_differ_in_one_character_are_not_tied_together() {
        // Raw FNV-1a put every `p{i}` / `s{i}` pair on different workers of two.
        let together = (0..200)
            .filter(|i| home_worker(&format!("lg-p{i}"), 2) == home_worker(&format!("lg-s{i}"), 2))
            .count();
        assert!((60..=140).contains(&together), "{together} of 200 pairs share a worker");
    }

    #[test]
    fn client_ids_spread_evenly() {
        for workers in [2, 3, 4, 8] {
            let mut per = vec![0usize; workers];
            for i in 0..8000 {
                per[home_worker(&format!("sensor-{i:05}"), workers)] += 1;
            }
            let even = 8000 / workers;
            for n in &per {
                assert!(n.abs_diff(even) * 100 < even * 15, "{workers} workers: {per:?}");
            }
        }
    }
}
