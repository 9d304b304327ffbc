//! A queue's ready messages in delivery order: one FIFO list, or, for a queue with
//! `x-max-priority`, one FIFO list per priority with the highest served first (RabbitMQ's
//! classic priority queues). A list whose messages are paged out keeps only a window of them
//! as `StoredMessage`s and the rest in the compact form of `paged`. Knows nothing of
//! consumers, limits or time.

use std::collections::VecDeque;

use super::paged::PagedTail;
use super::state::StoredMessage;
use crate::message::Message;

/// A priority level: a message's `priority` property capped at the queue's maximum.
pub type Level = u8;

/// Messages a list with a paged tail keeps in memory at its head, ready to be delivered; also
/// how long the head must be before paged-out messages go to the tail instead.
const HEAD_WINDOW: usize = 256;

/// One FIFO list: an in-memory head (what is delivered next, and requeued messages, which
/// always sort before the tail), then the paged-out rest in a compact form. Every id in the
/// head is below every id in the tail, and the head is empty only when the tail is.
#[derive(Default)]
pub struct FifoList {
    head: VecDeque<StoredMessage>,
    tail: PagedTail,
}

impl FifoList {
    fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    fn front(&self) -> Option<&StoredMessage> {
        self.head.front()
    }

    /// Once the tail holds messages every later one joins it, so that order is kept; a
    /// paged-out message starts it once the head is long enough. A short in-memory list only
    /// ever uses its head.
    fn push_back(&mut self, message: StoredMessage) {
        if !self.tail.is_empty() || (message.message.is_none() && self.head.len() >= HEAD_WINDOW) {
            self.tail.push_back(message);
        } else {
            self.head.push_back(message);
        }
    }

    fn pop_front(&mut self) -> Option<StoredMessage> {
        let message = self.head.pop_front()?;
        if self.head.is_empty() && !self.tail.is_empty() {
            self.tail.move_front_to(&mut self.head, HEAD_WINDOW);
        }
        Some(message)
    }

    /// Requeued messages were delivered from the head, so they go back into it.
    fn insert_in_order(&mut self, message: StoredMessage) {
        let at = self.head.partition_point(|m| m.id < message.id);
        self.head.insert(at, message);
    }

    fn iter(&self) -> impl Iterator<Item = StoredMessage> + '_ {
        self.head.iter().cloned().chain(self.tail.iter())
    }

    fn is_paging(&self) -> bool {
        !self.tail.is_empty()
    }

    fn take(&mut self) -> Taken {
        Taken {
            head: std::mem::take(&mut self.head).into(),
            tail: std::mem::take(&mut self.tail),
        }
    }

    fn heap_bytes(&self) -> usize {
        self.head.capacity() * std::mem::size_of::<StoredMessage>() + self.tail.heap_bytes()
    }
}

/// What a list held when it was emptied: the head's messages, then the paged tail's, which
/// are made up only as they are read.
pub struct Taken {
    pub head: Vec<StoredMessage>,
    pub tail: PagedTail,
}

pub enum ReadyMessages {
    Fifo(FifoList),
    Prioritised {
        /// Indexed by level.
        levels: Vec<FifoList>,
        len: usize,
        /// No level above this one holds a message.
        top: usize,
    },
}

impl Default for ReadyMessages {
    fn default() -> Self {
        ReadyMessages::Fifo(FifoList::default())
    }
}

impl ReadyMessages {
    /// Levels 0 to `max_priority`; a message of higher priority counts as `max_priority`.
    pub fn with_max_priority(max_priority: Level) -> Self {
        ReadyMessages::Prioritised {
            levels: (0..=max_priority).map(|_| FifoList::default()).collect(),
            len: 0,
            top: 0,
        }
    }

    /// No messages, the same levels.
    pub fn emptied(&self) -> Self {
        match self {
            ReadyMessages::Fifo(_) => ReadyMessages::default(),
            ReadyMessages::Prioritised { levels, .. } => {
                Self::with_max_priority((levels.len() - 1) as Level)
            }
        }
    }

    pub fn is_prioritised(&self) -> bool {
        matches!(self, ReadyMessages::Prioritised { .. })
    }

    /// The level a message is kept at. A FIFO queue never reads the property.
    pub fn level_of(&self, message: &Message) -> Level {
        match self {
            ReadyMessages::Fifo(_) => 0,
            ReadyMessages::Prioritised { .. } => self.cap(message.priority()),
        }
    }

    /// A priority capped at this queue's maximum (0 without priorities).
    pub fn cap(&self, priority: u8) -> Level {
        match self {
            ReadyMessages::Fifo(_) => 0,
            ReadyMessages::Prioritised { levels, .. } => priority.min((levels.len() - 1) as Level),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ReadyMessages::Fifo(list) => list.len(),
            ReadyMessages::Prioritised { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message delivered next.
    pub fn front(&self) -> Option<&StoredMessage> {
        match self {
            ReadyMessages::Fifo(list) => list.front(),
            ReadyMessages::Prioritised { levels, top, .. } => {
                levels[..=*top].iter().rev().find_map(FifoList::front)
            }
        }
    }

    /// Whether a message added at `level` now joins a paged tail: it must then be paged out
    /// too (it is, if it is logged).
    pub fn is_paging(&self, level: Level) -> bool {
        match self {
            ReadyMessages::Fifo(list) => list.is_paging(),
            ReadyMessages::Prioritised { levels, .. } => {
                levels[usize::from(level).min(levels.len() - 1)].is_paging()
            }
        }
    }

    /// Whether some list has a paged tail: new messages are best logged and paged out, so
    /// that they join it compactly.
    pub fn has_paged(&self) -> bool {
        match self {
            ReadyMessages::Fifo(list) => list.is_paging(),
            ReadyMessages::Prioritised { levels, top, .. } => {
                levels[..=*top].iter().any(FifoList::is_paging)
            }
        }
    }

    /// Adds a message behind those of its level.
    pub fn push_back(&mut self, message: StoredMessage, level: Level) {
        match self {
            ReadyMessages::Fifo(list) => list.push_back(message),
            ReadyMessages::Prioritised { levels, len, top } => {
                let level = usize::from(level).min(levels.len() - 1);
                levels[level].push_back(message);
                *len += 1;
                *top = (*top).max(level);
            }
        }
    }

    /// Takes the message delivered next, with its level.
    pub fn pop_front(&mut self) -> Option<(StoredMessage, Level)> {
        match self {
            ReadyMessages::Fifo(list) => list.pop_front().map(|m| (m, 0)),
            ReadyMessages::Prioritised { levels, len, top } => loop {
                if let Some(message) = levels[*top].pop_front() {
                    *len -= 1;
                    return Some((message, *top as Level));
                }
                if *top == 0 {
                    return None;
                }
                *top -= 1;
            },
        }
    }

    /// Puts a message back at its place among those of its level: ids only grow, so id order
    /// is publish order.
    pub fn insert_in_order(&mut self, message: StoredMessage, level: Level) {
        match self {
            ReadyMessages::Fifo(list) => list.insert_in_order(message),
            ReadyMessages::Prioritised { levels, len, top } => {
                let level = usize::from(level).min(levels.len() - 1);
                *len += 1;
                *top = (*top).max(level);
                levels[level].insert_in_order(message);
            }
        }
    }

    /// The messages in delivery order (paged-out ones made up from their compact form).
    pub fn iter(&self) -> impl Iterator<Item = StoredMessage> + '_ {
        let lists: &[FifoList] = match self {
            ReadyMessages::Fifo(list) => std::slice::from_ref(list),
            ReadyMessages::Prioritised { levels, .. } => levels,
        };
        lists.iter().rev().flat_map(FifoList::iter)
    }

    /// Empties the list, handing back what it held, list by list.
    pub fn take_all(&mut self) -> Vec<Taken> {
        match self {
            ReadyMessages::Fifo(list) => vec![list.take()],
            ReadyMessages::Prioritised { levels, len, top } => {
                *len = 0;
                *top = 0;
                levels.iter_mut().rev().map(FifoList::take).collect()
            }
        }
    }

    /// Heap bytes the lists take (capacities), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        match self {
            ReadyMessages::Fifo(list) => list.heap_bytes(),
            ReadyMessages::Prioritised { levels, .. } => {
                levels.iter().map(FifoList::heap_bytes).sum::<usize>()
                    + levels.capacity() * std::mem::size_of::<FifoList>()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::MessageId;
    use std::sync::Arc;

    fn stored(id: MessageId) -> StoredMessage {
        let message = Message::new(
            amqp::ShortStr::default(),
            amqp::ShortStr::default(),
            bytes::Bytes::new(),
            bytes::Bytes::new(),
        );
        StoredMessage::new(id, Arc::new(message), None)
    }

    #[test]
    fn higher_levels_go_first_and_each_level_is_fifo() {
        let mut ready = ReadyMessages::with_max_priority(5);
        for (id, level) in [(0, 1), (1, 5), (2, 3), (3, 5), (4, 0)] {
            ready.push_back(stored(id), level);
        }
        assert_eq!(ready.len(), 5);
        let order: Vec<_> = ready.iter().map(|m| m.id).collect();
        assert_eq!(order, [1, 3, 2, 0, 4]);
        assert_eq!(ready.front().map(|m| m.id), Some(1));
        let (first, level) = ready.pop_front().unwrap();
        assert_eq!((first.id, level), (1, 5));
        ready.insert_in_order(first, 5);
        let popped: Vec<_> = std::iter::from_fn(|| ready.pop_front())
            .map(|(m, level)| (m.id, level))
            .collect();
        assert_eq!(popped, [(1, 5), (3, 5), (2, 3), (0, 1), (4, 0)]);
        assert!(ready.is_empty() && ready.front().is_none());
    }

    #[test]
    fn priorities_above_the_maximum_count_as_the_maximum() {
        let ready = ReadyMessages::with_max_priority(3);
        assert_eq!(ready.cap(9), 3);
        assert_eq!(ReadyMessages::default().cap(9), 0);
    }

    #[test]
    fn a_requeued_message_goes_back_to_its_place_in_its_level() {
        let mut ready = ReadyMessages::with_max_priority(2);
        ready.push_back(stored(0), 2);
        ready.push_back(stored(2), 2);
        ready.push_back(stored(3), 1);
        ready.insert_in_order(stored(1), 2);
        let order: Vec<_> = ready.iter().map(|m| m.id).collect();
        assert_eq!(order, [0, 1, 2, 3]);
        let taken: usize = ready
            .take_all()
            .iter()
            .map(|t| t.head.len() + t.tail.len())
            .sum();
        assert_eq!(taken, 4);
        assert!(ready.is_empty() && ready.iter().next().is_none());
        let mut fifo = ReadyMessages::default();
        fifo.push_back(stored(0), 7);
        fifo.push_back(stored(2), 0);
        fifo.insert_in_order(stored(1), 3);
        let order: Vec<_> = fifo.iter().map(|m| m.id).collect();
        assert_eq!(order, [0, 1, 2]);
    }
}
