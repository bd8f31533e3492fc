//! What a load-test payload carries, and how a subscriber checks the sequence it sees.
//!
//! Every published payload starts with a [`Stamp`]: which publisher sent it, its
//! sequence number on that publisher, and when it was sent (nanoseconds since the run's
//! shared clock origin). Each publisher publishes on exactly one topic, so "per
//! publisher" is also "per (publisher, topic)". A subscriber keeps one [`SeqTracker`]
//! per publisher it expects and classifies every arrival. Once the run has drained,
//! `crate::engine` compares them with what each publisher says it sent: numbers missing
//! below the highest one seen are *lost*; numbers above it are *undelivered* (still
//! queued in the broker when the drain limit hit).

/// Bytes the stamp takes at the front of every payload; `--payload` must be at least this.
pub const STAMP_BYTES: usize = 24;

/// Marks a payload as ours, so a stray message on the topic is counted, not misread.
const MAGIC: u32 = 0x5348_4C47; // "SHLG"

/// The header of a load-test payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publisher index within the run.
    pub publisher: u32,
    /// Sequence number on that publisher, from 0.
    pub seq: u64,
    /// Send time, nanoseconds since the run's clock origin.
    pub sent_ns: u64,
}

impl Stamp {
    /// Writes the stamp into the first [`STAMP_BYTES`] of `out`; does nothing if `out`
    /// is shorter (the CLI refuses such payload sizes).
    pub fn write(&self, out: &mut [u8]) {
        let Some(head) = out.get_mut(..STAMP_BYTES) else {
            return;
        };
        head[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        head[4..8].copy_from_slice(&self.publisher.to_be_bytes());
        head[8..16].copy_from_slice(&self.seq.to_be_bytes());
        head[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads a stamp from the front of a payload; `None` if it is not one of ours.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let head: &[u8; STAMP_BYTES] = payload.get(..STAMP_BYTES)?.try_into().ok()?;
        let word = |r: std::ops::Range<usize>| -> [u8; 8] {
            let mut w = [0u8; 8];
            w.copy_from_slice(&head[r]);
            w
        };
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&head[0..4]);
        if u32::from_be_bytes(magic) != MAGIC {
            return None;
        }
        let mut publisher = [0u8; 4];
        publisher.copy_from_slice(&head[4..8]);
        Some(Self {
            publisher: u32::from_be_bytes(publisher),
            seq: u64::from_be_bytes(word(8..16)),
            sent_ns: u64::from_be_bytes(word(16..24)),
        })
    }
}

/// How one arrival relates to what this tracker has seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next sequence number.
    InOrder,
    /// Ahead of the next expected number: this many numbers were skipped (they may
    /// still arrive, as `Reordered`).
    Gap(u64),
    /// Below the highest seen and not seen before.
    Reordered,
    /// Seen before.
    Duplicate,
    /// So far below the highest seen that the window no longer remembers it: reordered
    /// or duplicated, cannot tell which.
    Late,
}

/// How many sequence numbers below the highest one a tracker remembers exactly.
pub const WINDOW: u64 = 128;

/// Loss, duplicate and reorder detection for the messages of one publisher.
///
/// # Invariants
/// Bit `i` of `window` is set when `next - 1 - i` has been seen (`i < WINDOW`); `next`
/// is one past the highest number seen (0 before the first arrival).
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    next: u64,
    window: u128,
    /// Arrivals, including duplicates.
    pub received: u64,
    /// Arrivals already seen.
    pub duplicates: u64,
    /// Arrivals below the highest seen, not seen before.
    pub reordered: u64,
    /// Arrivals too far behind to classify (counted as distinct).
    pub late: u64,
}

impl SeqTracker {
    /// Records the arrival of `seq` and classifies it.
    pub fn record(&mut self, seq: u64) -> Arrival {
        self.received += 1;
        if seq >= self.next {
            let skipped = seq - self.next;
            let shift = skipped + 1;
            self.window = if shift >= WINDOW { 0 } else { self.window << shift };
            self.window |= 1;
            self.next = seq + 1;
            return if skipped == 0 { Arrival::InOrder } else { Arrival::Gap(skipped) };
        }
        let behind = self.next - 1 - seq;
        if behind >= WINDOW {
            self.late += 1;
            return Arrival::Late;
        }
        let bit = 1u128 << behind;
        if self.window & bit != 0 {
            self.duplicates += 1;
            Arrival::Duplicate
        } else {
            self.window |= bit;
            self.reordered += 1;
            Arrival::Reordered
        }
    }

    /// Distinct messages seen.
    pub fn distinct(&self) -> u64 {
        self.received - self.duplicates
    }

    /// Messages missing below the highest one seen: a later message arrived, these
    /// never did. For an ordered broker this is loss, not delay.
    pub fn gaps(&self) -> u64 {
        self.next.saturating_sub(self.distinct())
    }

    /// Messages after the highest one seen, out of `sent`: still on their way (queued in
    /// the broker) when the run stopped, or lost at the end.
    pub fn undelivered(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.next)
    }

    /// One past the highest sequence number seen.
    pub fn next(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything not seen out of `sent`.
    fn missing(t: &SeqTracker, sent: u64) -> u64 {
        t.gaps() + t.undelivered(sent)
    }

    #[test]
    fn stamp_round_trips_and_rejects_foreign_payloads() {
        let stamp = Stamp { publisher: 7, seq: 1 << 40, sent_ns: 123_456_789 };
        let mut buf = [0u8; 64];
        stamp.write(&mut buf);
        assert_eq!(Stamp::read(&buf), Some(stamp));
        assert_eq!(Stamp::read(b"hello world, this is not a stamp"), None);
        assert_eq!(Stamp::read(&buf[..STAMP_BYTES - 1]), None);
    }

    #[test]
    fn in_order_sequence_has_no_loss_dup_or_reorder() {
        let mut t = SeqTracker::default();
        for seq in 0..1000 {
            assert_eq!(t.record(seq), Arrival::InOrder);
        }
        assert_eq!((t.received, t.duplicates, t.reordered, t.late), (1000, 0, 0, 0));
        assert_eq!(missing(&t, 1000), 0);
    }

    #[test]
    fn gap_is_counted_as_lost_until_it_arrives() {
        let mut t = SeqTracker::default();
        t.record(0);
        t.record(1);
        assert_eq!(t.record(5), Arrival::Gap(3));
        assert_eq!(missing(&t, 6), 3);
        assert_eq!(t.record(3), Arrival::Reordered);
        assert_eq!(missing(&t, 6), 2);
        assert_eq!(t.reordered, 1);
        // 2 and 4 are missing under the highest seen; 6 was sent but not seen.
        assert_eq!((t.gaps(), t.undelivered(7)), (2, 1));
    }

    #[test]
    fn first_message_missing_is_a_gap() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(2), Arrival::Gap(2));
        assert_eq!(missing(&t, 3), 2);
    }

    #[test]
    fn repeat_is_a_duplicate_whether_latest_or_older() {
        let mut t = SeqTracker::default();
        for seq in 0..10 {
            t.record(seq);
        }
        assert_eq!(t.record(9), Arrival::Duplicate);
        assert_eq!(t.record(4), Arrival::Duplicate);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.distinct(), 10);
        assert_eq!(missing(&t, 10), 0);
    }

    #[test]
    fn duplicate_of_a_reordered_message_is_caught() {
        let mut t = SeqTracker::default();
        t.record(0);
        t.record(2);
        assert_eq!(t.record(1), Arrival::Reordered);
        assert_eq!(t.record(1), Arrival::Duplicate);
    }

    #[test]
    fn arrivals_beyond_the_window_are_late() {
        let mut t = SeqTracker::default();
        t.record(0);
        t.record(WINDOW + 10);
        assert_eq!(t.record(5), Arrival::Late);
        assert_eq!(t.late, 1);
        // Exactly at the edge of the window is still remembered.
        let mut t = SeqTracker::default();
        t.record(WINDOW - 1);
        assert_eq!(t.record(0), Arrival::Reordered);
    }

    #[test]
    fn large_jump_clears_the_window() {
        let mut t = SeqTracker::default();
        for seq in 0..5 {
            t.record(seq);
        }
        assert_eq!(t.record(1_000_000), Arrival::Gap(1_000_000 - 5));
        assert_eq!(t.record(1_000_000 - 1), Arrival::Reordered);
        assert_eq!(missing(&t, 1_000_001), 1_000_001 - 7);
    }
}
