//! When each message a delayed exchange holds is due. Memory knows it only coarsely: a
//! hierarchy of time buckets (a timing wheel, five levels from about a second to about 200
//! days wide) whose entries are written to spill files once there are a few thousand of them,
//! plus a window of the messages due in the next second or two, ordered exactly. A bucket is
//! opened shortly before its start: a finest one pours its entries into the window, a coarser
//! one spreads them over finer buckets. Memory grows with the number of buckets (a few hundred
//! at most) and the window, not with the number of messages held. Knows nothing of AMQP,
//! routing or tasks: the owner tells it the time.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use store::{MessageId, Position, SpillDir, SpillEntry};

use crate::message::Message;

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// The finest buckets are 2^10 ms (about a second) wide.
const LEVEL0_WIDTH_SHIFT: u32 = 10;
/// Each level's buckets are 2^6 times wider than the level below.
const LEVEL_SHIFT: u32 = 6;
/// 1 s, 65 s, 70 min, 75 h, 199 days; the widest level also takes anything later.
const LEVELS: usize = 5;
/// Logged entries kept in bucket memory before they go to their spill files.
const SPILL_PENDING_ENTRIES: usize = 8192;
/// Entries read back from a spill file at once when a bucket opens.
const READ_CHUNK_ENTRIES: usize = 16384;

fn width(level: usize) -> Millis {
    1 << (LEVEL0_WIDTH_SHIFT + LEVEL_SHIFT * level as u32)
}

/// How long before its start a bucket of `level` opens. Each level leads the one below by at
/// least one of that level's buckets, so a coarse bucket is spread before the finer buckets
/// its entries go to must open.
fn lead(level: usize) -> Millis {
    if level == 0 {
        width(0)
    } else {
        2 * width(level - 1)
    }
}

/// The start of the first bucket of `level` not yet open at `now`.
fn frontier(level: usize, now: Millis) -> Millis {
    let w = width(level);
    (now.saturating_add(lead(level)) / w + 1).saturating_mul(w)
}

/// Where a held message is.
#[derive(Clone, Debug)]
pub enum Held {
    /// Only in memory (no data directory, or the log could not take it).
    Memory(Arc<Message>),
    /// In the exchange's log.
    Logged { id: MessageId, position: Position },
}

/// One held message: due at `due`; `seq` keeps messages due at the same time in the order
/// they were held.
#[derive(Clone, Debug)]
pub struct Entry {
    pub due: Millis,
    pub seq: u64,
    pub held: Held,
}

impl Entry {
    fn is_logged(&self) -> bool {
        matches!(self.held, Held::Logged { .. })
    }
}

/// An entry in the window, ordered by (due, seq).
struct Windowed(Entry);

impl PartialEq for Windowed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Windowed {}

impl PartialOrd for Windowed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Windowed {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0.due, self.0.seq).cmp(&(other.0.due, other.0.seq))
    }
}

/// Buckets sort by the time they open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct BucketKey {
    opens_at: Millis,
    level: usize,
    index: u64,
}

impl BucketKey {
    fn file_name(&self) -> String {
        format!("{}-{:016x}.idx", self.level, self.index)
    }
}

#[derive(Default)]
struct Bucket {
    pending: Vec<Entry>,
    /// Entries in its spill file.
    spilled: u64,
}

pub struct Schedule {
    buckets: BTreeMap<BucketKey, Bucket>,
    window: BinaryHeap<Reverse<Windowed>>,
    /// Where bucket entries go when there are many; `None` keeps them all in memory.
    spill: Option<SpillDir>,
    /// Logged entries in bucket memory (those a spill would write).
    pending_logged: usize,
    /// Spill again when `pending_logged` reaches this (raised after a failed spill).
    spill_at: usize,
    len: u64,
}

impl Schedule {
    pub fn new(spill: Option<SpillDir>) -> Schedule {
        Schedule {
            buckets: BTreeMap::new(),
            window: BinaryHeap::new(),
            spill,
            pending_logged: 0,
            spill_at: SPILL_PENDING_ENTRIES,
            len: 0,
        }
    }

    /// Messages held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Entries in memory (window and bucket memory), for tests of the memory bound.
    #[cfg(test)]
    fn entries_in_memory(&self) -> usize {
        self.window.len()
            + self
                .buckets
                .values()
                .map(|b| b.pending.len())
                .sum::<usize>()
    }

    pub fn insert(&mut self, entry: Entry, now: Millis) {
        self.len += 1;
        self.place(entry, now);
        self.spill_if_due();
    }

    fn place(&mut self, entry: Entry, now: Millis) {
        if entry.due < frontier(0, now) {
            self.window.push(Reverse(Windowed(entry)));
            return;
        }
        // The finest level whose next-coarser bucket around `due` is already open; its own
        // bucket there is not (see the module documentation).
        let level = (0..LEVELS)
            .find(|&level| level + 1 == LEVELS || entry.due < frontier(level + 1, now))
            .unwrap_or(LEVELS - 1);
        let w = width(level);
        let index = entry.due / w;
        let key = BucketKey {
            opens_at: (index * w).saturating_sub(lead(level)),
            level,
            index,
        };
        if entry.is_logged() {
            self.pending_logged += 1;
        }
        self.buckets.entry(key).or_default().pending.push(entry);
    }

    /// Writes the logged entries of bucket memory to their buckets' spill files once there
    /// are enough of them. A failure keeps them in memory (they are also in the log).
    fn spill_if_due(&mut self) {
        if self.pending_logged < self.spill_at {
            return;
        }
        let Some(spill) = self.spill.as_mut() else {
            return;
        };
        let mut spilled_entries = Vec::new();
        for (key, bucket) in self.buckets.iter_mut() {
            spilled_entries.clear();
            spilled_entries.extend(bucket.pending.iter().filter_map(|e| match e.held {
                Held::Logged { id, position } => Some(SpillEntry {
                    key: e.due,
                    id,
                    position,
                }),
                Held::Memory(_) => None,
            }));
            if spilled_entries.is_empty() {
                continue;
            }
            if let Err(error) = spill.append(&key.file_name(), &spilled_entries) {
                tracing::error!(%error, "cannot write delayed messages' index to disk; it stays in memory");
                self.spill_at = self.pending_logged.saturating_mul(2);
                return;
            }
            bucket.spilled += spilled_entries.len() as u64;
            bucket.pending.retain(|e| !e.is_logged());
            self.pending_logged -= spilled_entries.len();
        }
        self.spill_at = SPILL_PENDING_ENTRIES;
    }

    /// Opens every bucket whose time has come at `now`.
    pub fn advance(&mut self, now: Millis) {
        while let Some(first) = self.buckets.first_entry() {
            if first.key().opens_at > now {
                break;
            }
            let (key, bucket) = first.remove_entry();
            self.open(key, bucket, now);
        }
        self.spill_if_due();
    }

    fn open(&mut self, key: BucketKey, bucket: Bucket, now: Millis) {
        self.pending_logged -= bucket.pending.iter().filter(|e| e.is_logged()).count();
        for entry in bucket.pending {
            self.place(entry, now);
        }
        if bucket.spilled == 0 {
            return;
        }
        let name = key.file_name();
        let mut chunk = Vec::with_capacity(READ_CHUNK_ENTRIES);
        let mut read = 0u64;
        while read < bucket.spilled {
            chunk.clear();
            let Some(spill) = self.spill.as_ref() else {
                break;
            };
            match spill.read(&name, read, READ_CHUNK_ENTRIES, &mut chunk) {
                Ok(0) => break,
                Ok(n) => read += n as u64,
                Err(error) => {
                    // They stay in the log and come back at the next start.
                    tracing::error!(%error, "cannot read delayed messages' index back");
                    break;
                }
            }
            for spilled in chunk.drain(..) {
                let entry = Entry {
                    due: spilled.key,
                    seq: spilled.id,
                    held: Held::Logged {
                        id: spilled.id,
                        position: spilled.position,
                    },
                };
                self.place(entry, now);
            }
            self.spill_if_due();
        }
        if read < bucket.spilled {
            self.len -= bucket.spilled - read;
        }
        if let Some(spill) = self.spill.as_ref() {
            if let Err(error) = spill.remove(&name) {
                tracing::warn!(%error, "cannot remove a spent index file of delayed messages");
            }
        }
    }

    /// Moves up to `max` messages due at `now` into `out`, earliest first.
    pub fn pop_due(&mut self, now: Millis, max: usize, out: &mut Vec<Entry>) {
        while out.len() < max {
            match self.window.peek() {
                Some(Reverse(Windowed(entry))) if entry.due <= now => {}
                _ => break,
            }
            if let Some(Reverse(Windowed(entry))) = self.window.pop() {
                self.len -= 1;
                out.push(entry);
            }
        }
    }

    /// When something is next to do: a message falls due or a bucket opens.
    pub fn next_wakeup(&self) -> Option<Millis> {
        let due = self.window.peek().map(|Reverse(Windowed(e))| e.due);
        let opens = self.buckets.keys().next().map(|k| k.opens_at);
        match (due, opens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The spill directory, for removing it with the exchange.
    pub fn take_spill(&mut self) -> Option<SpillDir> {
        self.spill.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use store::{MemStorage, Storage};

    const NOW: Millis = 1_700_000_000_000;

    /// Positions are opaque to the schedule: the default one round-trips like any other.
    fn logged(due: Millis, id: u64) -> Entry {
        Entry {
            due,
            seq: id,
            held: Held::Logged {
                id,
                position: Position::default(),
            },
        }
    }

    fn spilling() -> (Schedule, MemStorage) {
        let storage = MemStorage::new();
        let shared: Arc<dyn Storage> = Arc::new(storage.clone());
        let spill = SpillDir::create(shared, Path::new("/data/index")).unwrap();
        (Schedule::new(Some(spill)), storage)
    }

    /// Runs the clock from `from` to `to` in `step`s, collecting what falls due.
    fn run(
        schedule: &mut Schedule,
        from: Millis,
        to: Millis,
        step: Millis,
    ) -> Vec<(Millis, u64, Millis)> {
        let mut delivered = Vec::new();
        let mut now = from;
        while now <= to {
            schedule.advance(now);
            let mut out = Vec::new();
            schedule.pop_due(now, usize::MAX, &mut out);
            delivered.extend(out.into_iter().map(|e| (e.due, e.seq, now)));
            now += step;
        }
        delivered
    }

    #[test]
    fn messages_come_out_in_due_order_and_never_early() {
        let (mut schedule, _) = spilling();
        // Delays from 1 ms to 3 days, inserted out of order, some due at the same time.
        let delays: Vec<Millis> = vec![
            5,
            1,
            250_000,
            2_000,
            70_000,
            3 * 86_400_000,
            5_000_000,
            2_000,
            40_000_000,
            999,
            1_024,
            65_536,
        ];
        for (seq, delay) in delays.iter().enumerate() {
            schedule.insert(logged(NOW + delay, seq as u64), NOW);
        }
        assert_eq!(schedule.len(), delays.len() as u64);
        let delivered = run(&mut schedule, NOW, NOW + 3 * 86_400_000 + 10, 7);
        assert_eq!(delivered.len(), delays.len());
        let mut expected: Vec<(Millis, u64)> = delays
            .iter()
            .enumerate()
            .map(|(seq, d)| (NOW + d, seq as u64))
            .collect();
        expected.sort();
        let got: Vec<(Millis, u64)> = delivered.iter().map(|(d, s, _)| (*d, *s)).collect();
        assert_eq!(got, expected, "due order, ties in the order held");
        for (due, _, at) in &delivered {
            assert!(at >= due, "never before its time");
            assert!(at - due < 7, "as soon as the clock passes it");
        }
        assert_eq!(schedule.len(), 0);
        assert_eq!(schedule.next_wakeup(), None);
    }

    #[test]
    fn many_messages_are_held_with_little_memory() {
        let (mut schedule, storage) = spilling();
        // 200k messages due over the next 10 hours.
        let count = 200_000u64;
        for i in 0..count {
            let due = NOW + 10_000 + (i * 7919) % 36_000_000;
            schedule.insert(logged(due, i), NOW);
            assert!(schedule.entries_in_memory() <= SPILL_PENDING_ENTRIES + 1);
        }
        assert!(
            schedule.buckets.len() < 400,
            "{} buckets",
            schedule.buckets.len()
        );
        let spilled = count - schedule.entries_in_memory() as u64;
        assert!(spilled > count / 2);
        assert_eq!(storage.bytes_under(Path::new("/data/index")), spilled * 28);
        // Walk through the ten hours: memory stays at the window plus unspilled entries.
        let mut now = NOW;
        let mut delivered = 0u64;
        let mut last = (0, 0);
        while now <= NOW + 36_020_000 {
            schedule.advance(now);
            let mut out = Vec::new();
            schedule.pop_due(now, usize::MAX, &mut out);
            for e in &out {
                assert!((e.due, e.seq) > last, "order");
                assert!(e.due <= now);
                last = (e.due, e.seq);
            }
            delivered += out.len() as u64;
            assert!(
                schedule.entries_in_memory() < SPILL_PENDING_ENTRIES + 2_000,
                "{} entries in memory at {}",
                schedule.entries_in_memory(),
                now - NOW
            );
            now += 500;
        }
        assert_eq!(delivered, count);
        assert_eq!(
            storage.bytes_under(Path::new("/data/index")),
            0,
            "spent files removed"
        );
    }

    #[test]
    fn without_a_spill_directory_everything_stays_in_memory() {
        let mut schedule = Schedule::new(None);
        let message = Arc::new(Message::new(
            amqp::ShortStr::from_static("x"),
            amqp::ShortStr::from_static("k"),
            bytes::Bytes::new(),
            bytes::Bytes::from_static(b"b"),
        ));
        for i in 0..20_000u64 {
            let entry = Entry {
                due: NOW + 100_000 + i,
                seq: i,
                held: Held::Memory(message.clone()),
            };
            schedule.insert(entry, NOW);
        }
        assert_eq!(schedule.entries_in_memory(), 20_000);
        let delivered = run(&mut schedule, NOW, NOW + 130_000, 100);
        assert_eq!(delivered.len(), 20_000);
    }

    #[test]
    fn late_arrivals_and_overdue_messages_go_straight_to_the_window() {
        let mut schedule = Schedule::new(None);
        schedule.insert(logged(NOW - 5_000, 1), NOW);
        schedule.insert(logged(NOW + 100, 2), NOW);
        assert_eq!(schedule.next_wakeup(), Some(NOW - 5_000));
        let mut out = Vec::new();
        schedule.pop_due(NOW, 10, &mut out);
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(schedule.next_wakeup(), Some(NOW + 100));
    }
}
