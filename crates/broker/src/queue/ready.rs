//! A queue's ready messages in delivery order: one FIFO list, or, for a queue with
//! `x-max-priority`, one FIFO list per priority with the highest served first (RabbitMQ's
//! classic priority queues). Knows nothing of consumers, limits or time.

use std::collections::VecDeque;

use super::state::StoredMessage;
use crate::message::Message;

/// A priority level: a message's `priority` property capped at the queue's maximum.
pub type Level = u8;

pub enum ReadyMessages {
    Fifo(VecDeque<StoredMessage>),
    Prioritised {
        /// Indexed by level.
        levels: Vec<VecDeque<StoredMessage>>,
        len: usize,
        /// No level above this one holds a message.
        top: usize,
    },
}

impl Default for ReadyMessages {
    fn default() -> Self {
        ReadyMessages::Fifo(VecDeque::new())
    }
}

impl ReadyMessages {
    /// Levels 0 to `max_priority`; a message of higher priority counts as `max_priority`.
    pub fn with_max_priority(max_priority: Level) -> Self {
        ReadyMessages::Prioritised {
            levels: (0..=max_priority).map(|_| VecDeque::new()).collect(),
            len: 0,
            top: 0,
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
            ReadyMessages::Fifo(queue) => queue.len(),
            ReadyMessages::Prioritised { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message delivered next.
    pub fn front(&self) -> Option<&StoredMessage> {
        match self {
            ReadyMessages::Fifo(queue) => queue.front(),
            ReadyMessages::Prioritised { levels, top, .. } => {
                levels[..=*top].iter().rev().find_map(VecDeque::front)
            }
        }
    }

    /// Adds a message behind those of its level.
    pub fn push_back(&mut self, message: StoredMessage, level: Level) {
        match self {
            ReadyMessages::Fifo(queue) => queue.push_back(message),
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
            ReadyMessages::Fifo(queue) => queue.pop_front().map(|m| (m, 0)),
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
        let queue = match self {
            ReadyMessages::Fifo(queue) => queue,
            ReadyMessages::Prioritised { levels, len, top } => {
                let level = usize::from(level).min(levels.len() - 1);
                *len += 1;
                *top = (*top).max(level);
                &mut levels[level]
            }
        };
        let at = queue.partition_point(|m| m.id < message.id);
        queue.insert(at, message);
    }

    /// The messages in delivery order.
    pub fn iter(&self) -> impl Iterator<Item = &StoredMessage> {
        let (fifo, levels): (Option<&VecDeque<StoredMessage>>, &[VecDeque<StoredMessage>]) =
            match self {
                ReadyMessages::Fifo(queue) => (Some(queue), &[]),
                ReadyMessages::Prioritised { levels, .. } => (None, levels),
            };
        fifo.into_iter()
            .flatten()
            .chain(levels.iter().rev().flatten())
    }

    /// Empties the list, handing back what it held.
    pub fn take_all(&mut self) -> Vec<StoredMessage> {
        match self {
            ReadyMessages::Fifo(queue) => std::mem::take(queue).into(),
            ReadyMessages::Prioritised { levels, len, top } => {
                *len = 0;
                *top = 0;
                levels.iter_mut().flat_map(std::mem::take).collect()
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
        assert_eq!(ready.take_all().len(), 4);
        assert!(ready.is_empty() && ready.iter().next().is_none());
        let mut fifo = ReadyMessages::default();
        fifo.push_back(stored(0), 7);
        fifo.push_back(stored(2), 0);
        fifo.insert_in_order(stored(1), 3);
        let order: Vec<_> = fifo.iter().map(|m| m.id).collect();
        assert_eq!(order, [0, 1, 2]);
    }
}
