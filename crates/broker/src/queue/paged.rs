//! The paged-out tail of one FIFO list of ready messages, in a few bytes per message: messages
//! logged back to back with consecutive ids are kept as runs (where the first one is, then
//! each one's record length and body size, or one of each while they are all alike), so a
//! backlog far larger than RAM costs six bytes a message at most. Knows nothing of consumers,
//! limits, time or the log itself.

use std::collections::VecDeque;

use store::Position;

use super::state::{MessageId, StoredMessage};

/// Messages one run holds at most: a run's entries are one allocation, kept to a size whose
/// growth (doubling) wastes little and whose removal by a purge is one bounded batch.
const RUN_MAX_ENTRIES: usize = 1 << 16;

/// Record length minus body size that one entry can hold; the top bit of the stored field is
/// the redelivered flag.
const MAX_OVERHEAD: u32 = 0x7fff;
const REDELIVERED_FLAG: u16 = 0x8000;

/// One message of a run: its record length (two halves) and its record length minus its body
/// size, with the redelivered flag in the top bit. Six bytes.
type Entry = [u16; 3];

fn entry_of(message: &StoredMessage, position: Position) -> Option<Entry> {
    let len = position.len();
    let overhead = u64::from(len).checked_sub(message.body_size())?;
    let overhead = u16::try_from(overhead)
        .ok()
        .filter(|o| u32::from(*o) <= MAX_OVERHEAD)?;
    let flag = if message.redelivered() {
        REDELIVERED_FLAG
    } else {
        0
    };
    Some([len as u16, (len >> 16) as u16, overhead | flag])
}

fn len_of(entry: &Entry) -> u32 {
    u32::from(entry[0]) | (u32::from(entry[1]) << 16)
}

/// The entries of a run: while every message of the run has the same one (messages of one
/// size, published alike), only that one and the count; else one per message.
enum Entries {
    Same { entry: Entry, count: usize },
    Each(Vec<Entry>),
}

impl Entries {
    fn count(&self) -> usize {
        match self {
            Entries::Same { count, .. } => *count,
            Entries::Each(entries) => entries.len(),
        }
    }

    fn get(&self, index: usize) -> Entry {
        match self {
            Entries::Same { entry, .. } => *entry,
            Entries::Each(entries) => entries[index],
        }
    }

    fn push(&mut self, new: Entry) {
        match self {
            Entries::Same { entry, count } if *entry == new => *count += 1,
            Entries::Same { entry, count } => {
                let mut entries = Vec::with_capacity((*count + 1).next_power_of_two());
                entries.resize(*count, *entry);
                entries.push(new);
                *self = Entries::Each(entries);
            }
            Entries::Each(entries) => entries.push(new),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Entries::Same { .. } => 0,
            Entries::Each(entries) => entries.capacity() * std::mem::size_of::<Entry>(),
        }
    }
}

/// Messages logged back to back in one segment, with consecutive ids.
struct PagedRun {
    /// Id of the first message not yet taken (`entries[taken]`).
    next_id: MessageId,
    segment: u32,
    /// Where the first message not yet taken starts in its segment.
    next_offset: u32,
    /// Where a message logged right after the run's last one starts.
    end_offset: u32,
    /// Entries before this one were taken.
    taken: usize,
    entries: Entries,
}

impl PagedRun {
    fn start(message: &StoredMessage) -> Option<PagedRun> {
        let position = message.position()?;
        let entry = entry_of(message, position)?;
        let end_offset = position.offset().checked_add(position.len())?;
        let entries = Entries::Same { entry, count: 1 };
        Some(PagedRun {
            next_id: message.id,
            segment: position.segment(),
            next_offset: position.offset(),
            end_offset,
            taken: 0,
            entries,
        })
    }

    fn len(&self) -> usize {
        self.entries.count() - self.taken
    }

    /// Adds a message if it was logged right after the run's last one.
    fn try_extend(&mut self, message: &StoredMessage) -> bool {
        if self.entries.count() >= RUN_MAX_ENTRIES
            || message.id != self.next_id + self.len() as u64
            || message.message.is_some()
        {
            return false;
        }
        let Some(position) = message.position() else {
            return false;
        };
        if position.segment() != self.segment || position.offset() != self.end_offset {
            return false;
        }
        let (Some(entry), Some(end_offset)) = (
            entry_of(message, position),
            position.offset().checked_add(position.len()),
        ) else {
            return false;
        };
        self.entries.push(entry);
        self.end_offset = end_offset;
        true
    }

    /// A run no longer grows: its spare capacity goes back.
    fn seal(&mut self) {
        if let Entries::Each(entries) = &mut self.entries {
            entries.shrink_to_fit();
        }
    }

    /// The message at `index` among those not yet taken, and where the next one starts.
    fn message_at(&self, index: usize, offset: u32) -> (StoredMessage, u32) {
        let entry = &self.entries.get(self.taken + index);
        let len = len_of(entry);
        let overhead = u64::from(entry[2] & !REDELIVERED_FLAG);
        let redelivered = entry[2] & REDELIVERED_FLAG != 0;
        let position = Position::new(self.segment, offset, len);
        let message = StoredMessage::paged(
            self.next_id + index as u64,
            position,
            u64::from(len) - overhead,
            redelivered,
        );
        (message, offset.wrapping_add(len))
    }

    fn pop_front(&mut self) -> Option<StoredMessage> {
        if self.len() == 0 {
            return None;
        }
        let (message, next_offset) = self.message_at(0, self.next_offset);
        self.taken += 1;
        self.next_id += 1;
        self.next_offset = next_offset;
        Some(message)
    }

    fn iter(&self) -> impl Iterator<Item = StoredMessage> + '_ {
        let mut offset = self.next_offset;
        (0..self.len()).map(move |index| {
            let (message, next) = self.message_at(index, offset);
            offset = next;
            message
        })
    }
}

enum Chunk {
    /// Boxed: a run is long, a lone message is not, and each is one slot of the deque.
    Run(Box<PagedRun>),
    /// A message that fits no run (not logged, or logged elsewhere than right after the one
    /// before it).
    One(StoredMessage),
}

/// Messages in id order behind a list's in-memory head. Empty, it allocates nothing.
#[derive(Default)]
pub struct PagedTail {
    chunks: VecDeque<Chunk>,
    len: usize,
}

impl PagedTail {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a message behind the others: to the last run if it was logged right after that
    /// run's last message, else as the start of a new run, or alone.
    pub fn push_back(&mut self, message: StoredMessage) {
        self.len += 1;
        if let Some(last) = self.chunks.back_mut() {
            if let Chunk::Run(run) = last {
                if run.try_extend(&message) {
                    return;
                }
                run.seal();
                // A run of one costs more than the message itself.
                if run.len() == 1 {
                    if let Some(alone) = run.pop_front() {
                        *last = Chunk::One(alone);
                    }
                }
            }
        }
        let chunk = match message.message {
            None => PagedRun::start(&message)
                .map_or(Chunk::One(message), |run| Chunk::Run(Box::new(run))),
            Some(_) => Chunk::One(message),
        };
        self.chunks.push_back(chunk);
    }

    pub fn pop_front(&mut self) -> Option<StoredMessage> {
        let message = match self.chunks.front_mut()? {
            Chunk::Run(run) => {
                let message = run.pop_front();
                if run.len() == 0 {
                    self.chunks.pop_front();
                }
                message
            }
            Chunk::One(_) => match self.chunks.pop_front() {
                Some(Chunk::One(message)) => Some(message),
                _ => None,
            },
        };
        if message.is_some() {
            self.len -= 1;
        }
        message
    }

    /// Moves up to `count` messages from the front to the back of `head`.
    pub fn move_front_to(&mut self, head: &mut VecDeque<StoredMessage>, count: usize) {
        for _ in 0..count {
            match self.pop_front() {
                Some(message) => head.push_back(message),
                None => break,
            }
        }
    }

    /// The messages in order, made up from the runs as they go (nothing is loaded).
    pub fn iter(&self) -> impl Iterator<Item = StoredMessage> + '_ {
        self.chunks.iter().flat_map(|chunk| {
            let (run, one) = match chunk {
                Chunk::Run(run) => (Some(run.iter()), None),
                Chunk::One(message) => (None, Some(message.clone())),
            };
            run.into_iter().flatten().chain(one)
        })
    }

    /// The ids of the messages, in order, without making up the messages.
    pub fn ids(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.chunks.iter().flat_map(|chunk| {
            let (first, count) = match chunk {
                Chunk::Run(run) => (run.next_id, run.len() as u64),
                Chunk::One(message) => (message.id, 1),
            };
            first..first + count
        })
    }

    /// Heap bytes the tail takes (capacities, not lengths), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        let runs: usize = self
            .chunks
            .iter()
            .map(|chunk| match chunk {
                Chunk::Run(run) => std::mem::size_of::<PagedRun>() + run.entries.heap_bytes(),
                Chunk::One(_) => 0,
            })
            .sum();
        runs + self.chunks.capacity() * std::mem::size_of::<Chunk>()
    }

    #[cfg(test)]
    fn chunk_lens(&self) -> Vec<usize> {
        self.chunks
            .iter()
            .map(|chunk| match chunk {
                Chunk::Run(run) => run.len(),
                Chunk::One(_) => 1,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use std::sync::Arc;

    /// Record lengths that vary, like those of real messages.
    fn record_len(id: MessageId) -> u32 {
        120 + (id % 7) as u32
    }

    fn body_size(id: MessageId) -> u64 {
        u64::from(record_len(id)) - 40
    }

    /// `count` messages logged back to back from id `first`, in segments of `per_segment`.
    fn logged(first: MessageId, count: u64, per_segment: u64) -> Vec<StoredMessage> {
        let mut offset = 20;
        (first..first + count)
            .map(|id| {
                if id % per_segment == 0 {
                    offset = 20;
                }
                let len = record_len(id);
                let position = Position::new((id / per_segment) as u32, offset, len);
                offset += len;
                StoredMessage::paged(id, position, body_size(id), false)
            })
            .collect()
    }

    fn same(a: &StoredMessage, b: &StoredMessage) -> bool {
        (a.id, a.position(), a.body_size(), a.redelivered())
            == (b.id, b.position(), b.body_size(), b.redelivered())
    }

    #[test]
    fn a_million_paged_messages_come_back_in_order_with_their_ids_and_positions() {
        let count = 1_000_000;
        let expected = logged(0, count, 300_000);
        let mut tail = PagedTail::default();
        for message in &expected {
            tail.push_back(message.clone());
        }
        assert_eq!(tail.len(), count as usize);
        assert!(
            tail.chunks.len() < 30,
            "runs break only at segments and at their size limit: {:?}",
            tail.chunk_lens()
        );
        assert!(tail.iter().zip(&expected).all(|(a, b)| same(&a, b)));
        assert!(tail.ids().eq(expected.iter().map(|m| m.id)));
        for (n, want) in expected.iter().enumerate() {
            let got = tail.pop_front().expect("a message");
            assert!(same(&got, want), "message {n}: {got:?} != {want:?}");
            assert!(got.message.is_none());
        }
        assert!(tail.is_empty() && tail.pop_front().is_none());
    }

    #[test]
    fn a_message_that_fits_no_run_costs_little_more_than_in_a_plain_list() {
        assert!(std::mem::size_of::<Chunk>() <= 40);
    }

    #[test]
    fn a_paged_backlog_takes_a_few_bytes_per_message() {
        let count = 1_000_000;
        let mut tail = PagedTail::default();
        for message in logged(0, count, 400_000) {
            tail.push_back(message);
        }
        let per_message = tail.heap_bytes() as f64 / count as f64;
        assert!(
            per_message <= 7.0,
            "{per_message:.2} bytes per paged message"
        );
    }

    #[test]
    fn messages_alike_take_next_to_nothing_until_one_differs() {
        let count = 200_000u64;
        let mut offset = 20;
        let mut alike = |id: MessageId, len: u32| {
            let message = StoredMessage::paged(id, Position::new(0, offset, len), 100, false);
            offset += len;
            message
        };
        let mut tail = PagedTail::default();
        let mut expected = vec![];
        for id in 0..count {
            expected.push(alike(id, 150));
        }
        for message in &expected {
            tail.push_back(message.clone());
        }
        assert!(tail.heap_bytes() < 2_000, "{} bytes", tail.heap_bytes());
        // One of another size, in the middle of a run: that run lists each one from then on.
        expected.push(alike(count, 151));
        expected.push(alike(count + 1, 150));
        tail.push_back(expected[count as usize].clone());
        tail.push_back(expected[count as usize + 1].clone());
        assert!(tail.iter().zip(&expected).all(|(a, b)| same(&a, b)));
        assert_eq!(tail.iter().count(), expected.len());
        let got: Vec<_> = std::iter::from_fn(|| tail.pop_front()).collect();
        assert!(got.iter().zip(&expected).all(|(a, b)| same(a, b)));
        assert_eq!(got.len(), expected.len());
    }

    #[test]
    fn messages_that_fit_no_run_keep_their_place() {
        let in_memory = StoredMessage::new(
            3,
            Arc::new(Message::new(
                amqp::ShortStr::default(),
                amqp::ShortStr::default(),
                bytes::Bytes::new(),
                bytes::Bytes::from_static(b"abc"),
            )),
            None,
        );
        let mut messages = logged(0, 3, 100);
        messages.push(in_memory);
        let mut later = logged(4, 3, 100);
        // Logged again after a crash, delivered before it: redelivered.
        let p = later[0].position().unwrap();
        later[0] = StoredMessage::paged(4, p, later[0].body_size(), true);
        // A gap in the ids (a message that went elsewhere) starts a new run.
        later.remove(1);
        messages.extend(later);
        let mut tail = PagedTail::default();
        for message in &messages {
            tail.push_back(message.clone());
        }
        assert_eq!(tail.chunk_lens(), [3, 1, 1, 1]);
        assert!(tail.iter().zip(&messages).all(|(a, b)| same(&a, b)));
        assert!(tail.ids().eq(messages.iter().map(|m| m.id)));
        let mut head = VecDeque::new();
        tail.move_front_to(&mut head, 4);
        assert_eq!(head.len(), 4);
        assert!(head[3].message.is_some(), "an in-memory message stays so");
        let rest: Vec<_> = std::iter::from_fn(|| tail.pop_front()).collect();
        assert!(rest.iter().zip(&messages[4..]).all(|(a, b)| same(a, b)));
        assert!(rest[0].redelivered() && !rest[1].redelivered());
    }
}
