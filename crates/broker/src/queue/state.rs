//! A queue's messages and consumers as a plain struct: ready messages in order, unacknowledged
//! deliveries, round-robin dispatch to consumers that have credit. No tasks, no I/O: the owner
//! task in `queue::task` drives it, and tests drive it directly.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use amqp::ShortStr;
use store::Position;

use crate::consumer::Consumer;
use crate::message::Message;

/// A message's position in its queue; ids only grow, so ready messages sorted by id are in
/// publish order and a requeued message can go back to its original place.
pub type MessageId = u64;

/// A message handed out by a queue (delivery, basic.get), loaded in memory.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub id: MessageId,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// Where the queue's log holds it, if it does.
    pub position: Option<Position>,
}

const REDELIVERED_BIT: u32 = 1 << 31;

/// A message as a queue keeps it: 32 bytes, plus the message itself only while it is in
/// memory. A paged-out message is only its id, log position and body size.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub id: MessageId,
    /// `None` when paged out: the queue's owner reads it back from its log at `position`.
    pub message: Option<Arc<Message>>,
    /// Where the queue's log holds it; empty when it is not logged.
    position: Position,
    /// Body size (bodies are far below 2 GiB) and the redelivered flag in the top bit.
    size_and_redelivered: u32,
}

impl StoredMessage {
    pub fn new(id: MessageId, message: Arc<Message>, position: Option<Position>) -> Self {
        StoredMessage {
            id,
            size_and_redelivered: Self::size_bits(message.body_size()),
            message: Some(message),
            position: position.unwrap_or_default(),
        }
    }

    /// A message known only by its place in the log (recovered, or paged out).
    pub fn paged(id: MessageId, position: Position, body_size: u64, redelivered: bool) -> Self {
        let mut stored = StoredMessage {
            id,
            message: None,
            position,
            size_and_redelivered: Self::size_bits(body_size),
        };
        if redelivered {
            stored.size_and_redelivered |= REDELIVERED_BIT;
        }
        stored
    }

    fn size_bits(body_size: u64) -> u32 {
        body_size.min(u64::from(REDELIVERED_BIT - 1)) as u32
    }

    pub fn redelivered(&self) -> bool {
        self.size_and_redelivered & REDELIVERED_BIT != 0
    }

    fn mark_redelivered(&mut self) {
        self.size_and_redelivered |= REDELIVERED_BIT;
    }

    pub fn body_size(&self) -> u64 {
        u64::from(self.size_and_redelivered & !REDELIVERED_BIT)
    }

    pub fn position(&self) -> Option<Position> {
        (!self.position.is_empty()).then_some(self.position)
    }

    /// Drops the in-memory copy of a logged message; the log has it.
    fn page_out(&mut self) {
        if self.position().is_some() {
            self.message = None;
        }
    }

    /// The loaded form, given the message (read from the log if it was paged out).
    pub fn loaded(&self, message: Arc<Message>) -> QueuedMessage {
        QueuedMessage {
            id: self.id,
            message,
            redelivered: self.redelivered(),
            position: self.position(),
        }
    }
}

/// What the owner task must send out: one message for one consumer.
pub struct Delivery<'a> {
    pub consumer: &'a Consumer,
    pub message: StoredMessage,
}

/// What a queue keeps in memory before it pages messages out to its log: bodies plus an
/// estimate of each message's own overhead.
pub const IN_MEMORY_BUDGET_BYTES: u64 = 32 * 1024 * 1024;
const MESSAGE_OVERHEAD_BYTES: u64 = 256;

/// What a queue does when a publish would take it past its length limit (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    #[default]
    DropHead,
    RejectPublish,
    RejectPublishDlx,
}

/// Length limits on ready messages (`x-max-length`, `x-max-length-bytes`); unacknowledged
/// messages do not count, as in RabbitMQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueLimits {
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
}

impl QueueLimits {
    fn is_full(&self, count: usize, bytes: u64) -> bool {
        self.max_length.is_some_and(|max| count as u64 >= max)
            || self.max_length_bytes.is_some_and(|max| bytes >= max)
    }

    fn is_over(&self, count: usize, bytes: u64) -> bool {
        self.max_length.is_some_and(|max| count as u64 > max)
            || self.max_length_bytes.is_some_and(|max| bytes > max)
    }

    /// Whether a publish may be refused, so that its confirm must wait for the queue.
    pub fn may_reject(&self) -> bool {
        self.overflow != Overflow::DropHead
            && (self.max_length.is_some() || self.max_length_bytes.is_some())
    }
}

/// The result of offering a message to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    Accepted(MessageId),
    /// Refused by `x-overflow = reject-publish`: the publisher gets basic.nack.
    Rejected,
}

#[derive(Default)]
pub struct QueueState {
    limits: QueueLimits,
    ready: VecDeque<StoredMessage>,
    /// Body bytes of the ready messages, for `x-max-length-bytes`.
    ready_bytes: u64,
    /// Bytes the ready messages held in memory take (see `IN_MEMORY_BUDGET_BYTES`).
    in_memory_bytes: u64,
    unacked: HashMap<MessageId, StoredMessage>,
    consumers: Vec<Consumer>,
    /// Index of the consumer after the one that got the last delivery (round robin).
    next_consumer: usize,
    next_id: MessageId,
    /// Whether a consumer was ever added; an auto-delete queue is deleted only after that.
    had_consumers: bool,
    /// Logged messages that left the queue since the owner last took this list, so that the
    /// owner records their removal in the log.
    removed: Vec<(MessageId, Position)>,
}

impl QueueState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_limits(limits: QueueLimits) -> Self {
        QueueState {
            limits,
            ..Self::default()
        }
    }

    /// Whether a new message should go to the log instead of memory.
    pub fn over_memory_budget(&self) -> bool {
        self.in_memory_bytes >= IN_MEMORY_BUDGET_BYTES
    }

    fn memory_cost(message: &StoredMessage) -> u64 {
        match message.message {
            Some(_) => message.body_size() + MESSAGE_OVERHEAD_BYTES,
            None => 0,
        }
    }

    /// Adds a message at the tail, applying the length limits: the oldest ready messages are
    /// dropped (drop-head), or the new one is refused (reject-publish). `persist` writes an
    /// admitted message to the log (given its id) and says where; an error refuses it. When
    /// the queue is over its memory budget, a logged message is kept only in the log.
    pub fn publish<E>(
        &mut self,
        message: Arc<Message>,
        persist: impl FnOnce(MessageId, &Message) -> Result<Option<Position>, E>,
    ) -> Publish {
        if self.limits.overflow != Overflow::DropHead
            && self.limits.is_full(self.ready.len(), self.ready_bytes)
        {
            return Publish::Rejected;
        }
        let id = self.next_id;
        let Ok(position) = persist(id, &message) else {
            return Publish::Rejected;
        };
        self.next_id += 1;
        let mut stored = StoredMessage::new(id, message, position);
        if self.over_memory_budget() {
            stored.page_out();
        }
        self.push_ready(stored);
        while self.limits.is_over(self.ready.len(), self.ready_bytes) {
            match self.pop_ready() {
                Some(dropped) => self.forget(dropped),
                None => break,
            }
        }
        Publish::Accepted(id)
    }

    /// Puts back a message recovered from the log, behind those restored before it.
    pub fn restore(&mut self, message: StoredMessage) {
        self.next_id = self.next_id.max(message.id + 1);
        self.push_ready(message);
    }

    /// Ids from here on are free (the log may know of higher ones than were restored).
    pub fn reserve_ids_below(&mut self, next_id: MessageId) {
        self.next_id = self.next_id.max(next_id);
    }

    fn forget(&mut self, message: StoredMessage) {
        if let Some(position) = message.position() {
            self.removed.push((message.id, position));
        }
    }

    /// Logged messages removed since the last call (acked, discarded, purged, dropped).
    pub fn take_removed(&mut self) -> Vec<(MessageId, Position)> {
        std::mem::take(&mut self.removed)
    }

    pub fn has_removed(&self) -> bool {
        !self.removed.is_empty()
    }

    fn push_ready(&mut self, message: StoredMessage) {
        self.ready_bytes += message.body_size();
        self.in_memory_bytes += Self::memory_cost(&message);
        self.ready.push_back(message);
    }

    fn pop_ready(&mut self) -> Option<StoredMessage> {
        let message = self.ready.pop_front()?;
        self.ready_bytes -= message.body_size();
        self.in_memory_bytes -= Self::memory_cost(&message);
        Some(message)
    }

    fn insert_ready(&mut self, message: StoredMessage) {
        self.ready_bytes += message.body_size();
        self.in_memory_bytes += Self::memory_cost(&message);
        let at = self.ready.partition_point(|m| m.id < message.id);
        self.ready.insert(at, message);
    }

    /// Holds a handed-out message until it is settled; a logged one is not kept in memory.
    fn hold_unacked(&mut self, mut message: StoredMessage) {
        message.page_out();
        self.unacked.insert(message.id, message);
    }

    pub fn limits(&self) -> &QueueLimits {
        &self.limits
    }

    pub fn message_count(&self) -> u32 {
        self.ready.len() as u32
    }

    /// Body bytes of the ready messages.
    pub fn ready_bytes(&self) -> u64 {
        self.ready_bytes
    }

    pub fn unacked_count(&self) -> u32 {
        self.unacked.len() as u32
    }

    pub fn consumer_count(&self) -> u32 {
        self.consumers.len() as u32
    }

    pub fn had_consumers(&self) -> bool {
        self.had_consumers
    }

    pub fn consumers(&self) -> &[Consumer] {
        &self.consumers
    }

    pub fn has_exclusive_consumer(&self) -> bool {
        self.consumers.iter().any(|c| c.exclusive)
    }

    pub fn add_consumer(&mut self, consumer: Consumer) {
        self.had_consumers = true;
        self.consumers.push(consumer);
    }

    /// Removes the consumer `consumer_tag` of channel (`connection_id`, `channel_id`).
    pub fn remove_consumer(
        &mut self,
        connection_id: u64,
        channel_id: u16,
        consumer_tag: &str,
    ) -> Option<Consumer> {
        let index = self.consumers.iter().position(|c| {
            c.connection_id == connection_id
                && c.channel_id == channel_id
                && c.consumer_tag.as_str() == consumer_tag
        })?;
        if index < self.next_consumer {
            self.next_consumer -= 1;
        }
        Some(self.consumers.remove(index))
    }

    pub fn take_consumers(&mut self) -> Vec<Consumer> {
        self.next_consumer = 0;
        std::mem::take(&mut self.consumers)
    }

    /// Picks the next consumer in round-robin order among those of the highest priority that
    /// have credit, and hands it the oldest ready message. `None` when nothing can be delivered.
    pub fn next_delivery(&mut self) -> Option<Delivery<'_>> {
        if self.ready.is_empty() || self.consumers.is_empty() {
            return None;
        }
        let index = self.pick_consumer()?;
        self.next_consumer = (index + 1) % self.consumers.len();
        let message = self.pop_ready()?;
        if self.consumers[index].no_ack {
            self.forget(message.clone());
        } else {
            self.hold_unacked(message.clone());
        }
        let consumer = &self.consumers[index];
        Some(Delivery { consumer, message })
    }

    fn pick_consumer(&self) -> Option<usize> {
        let n = self.consumers.len();
        let mut best: Option<(usize, i32)> = None;
        for offset in 0..n {
            let index = (self.next_consumer + offset) % n;
            let consumer = &self.consumers[index];
            if best.is_some_and(|(_, priority)| consumer.priority <= priority) {
                continue;
            }
            if consumer.try_acquire_credit() {
                if let Some((previous, _)) = best {
                    self.consumers[previous].release_credit();
                }
                best = Some((index, consumer.priority));
            }
        }
        best.map(|(index, _)| index)
    }

    /// basic.get: the oldest ready message, and how many remain after it.
    pub fn get(&mut self, no_ack: bool) -> Option<(StoredMessage, u32)> {
        let message = self.pop_ready()?;
        if no_ack {
            self.forget(message.clone());
        } else {
            self.hold_unacked(message.clone());
        }
        Some((message, self.ready.len() as u32))
    }

    /// Forgets acknowledged messages. Unknown ids are ignored: the channel validates tags.
    pub fn ack(&mut self, ids: &[MessageId]) {
        for id in ids {
            if let Some(message) = self.unacked.remove(id) {
                self.forget(message);
            }
        }
    }

    /// Puts unacknowledged messages back at their original positions. `redelivered` is false
    /// only for messages that never reached the client (a consumer cancelled in between).
    pub fn requeue(&mut self, ids: &[MessageId], redelivered: bool) {
        for id in ids {
            if let Some(mut message) = self.unacked.remove(id) {
                if redelivered {
                    message.mark_redelivered();
                }
                self.insert_ready(message);
            }
        }
    }

    /// Drops the ready messages; unacknowledged ones stay, as in RabbitMQ.
    pub fn purge(&mut self) -> u32 {
        let n = self.ready.len() as u32;
        for message in std::mem::take(&mut self.ready) {
            self.forget(message);
        }
        self.ready_bytes = 0;
        self.in_memory_bytes = 0;
        n
    }

    pub fn consumer_tag_in_use(&self, connection_id: u64, channel_id: u16, tag: &ShortStr) -> bool {
        self.consumers.iter().any(|c| {
            c.connection_id == connection_id && c.channel_id == channel_id && &c.consumer_tag == tag
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::tests::test_consumer;
    use bytes::Bytes;
    use std::collections::VecDeque as Model;

    pub(super) fn msg(n: u8) -> Arc<Message> {
        Arc::new(Message {
            exchange: ShortStr::default(),
            routing_key: ShortStr::default(),
            properties: Bytes::new(),
            body: Bytes::from(vec![n]),
            persistent: false,
        })
    }

    fn no_log(_: MessageId, _: &Message) -> Result<Option<Position>, ()> {
        Ok(None)
    }

    fn accepted(p: Publish) -> MessageId {
        match p {
            Publish::Accepted(id) => id,
            Publish::Rejected => panic!("rejected"),
        }
    }

    #[test]
    fn drop_head_keeps_the_newest_within_max_length() {
        let mut q = QueueState::with_limits(QueueLimits {
            max_length: Some(2),
            ..QueueLimits::default()
        });
        for i in 0..4 {
            accepted(q.publish(msg(i), no_log));
        }
        let bodies: Vec<u8> = std::iter::from_fn(|| q.get(true))
            .map(|(m, _)| body(&m))
            .collect();
        assert_eq!(bodies, vec![2, 3]);
    }

    #[test]
    fn reject_publish_refuses_when_full_by_count_or_bytes() {
        let mut q = QueueState::with_limits(QueueLimits {
            max_length: Some(1),
            overflow: Overflow::RejectPublish,
            ..QueueLimits::default()
        });
        accepted(q.publish(msg(1), no_log));
        assert_eq!(q.publish(msg(2), no_log), Publish::Rejected);
        let mut q = QueueState::with_limits(QueueLimits {
            max_length_bytes: Some(2),
            overflow: Overflow::RejectPublish,
            ..QueueLimits::default()
        });
        accepted(q.publish(msg(1), no_log));
        accepted(q.publish(msg(2), no_log));
        assert_eq!(
            q.publish(msg(3), no_log),
            Publish::Rejected,
            "2 bytes of bodies fill it"
        );
        q.get(true);
        accepted(q.publish(msg(4), no_log));
    }

    fn body(m: &StoredMessage) -> u8 {
        m.message.as_ref().expect("in memory").body[0]
    }

    #[test]
    fn round_robin_among_consumers_with_credit() {
        let mut q = QueueState::new();
        let (a, _) = test_consumer("a", 0, false);
        let (b, _) = test_consumer("b", 0, false);
        q.add_consumer(a);
        q.add_consumer(b);
        for i in 0..4 {
            q.publish(msg(i), no_log);
        }
        let mut tags = vec![];
        while let Some(d) = q.next_delivery() {
            tags.push(d.consumer.consumer_tag.to_string());
        }
        assert_eq!(tags, ["a", "b", "a", "b"]);
        assert_eq!(q.unacked_count(), 4);
    }

    #[test]
    fn prefetch_limits_deliveries_until_ack() {
        let mut q = QueueState::new();
        let (a, credit) = test_consumer("a", 1, false);
        q.add_consumer(a);
        let Publish::Accepted(first) = q.publish(msg(1), no_log) else {
            panic!()
        };
        q.publish(msg(2), no_log);
        assert!(q.next_delivery().is_some());
        assert!(q.next_delivery().is_none(), "prefetch 1 holds the second");
        q.ack(&[first]);
        credit.release(1);
        assert_eq!(q.next_delivery().map(|d| body(&d.message)), Some(2));
    }

    #[test]
    fn higher_priority_consumer_served_first_while_it_has_credit() {
        let mut q = QueueState::new();
        let (mut low, _) = test_consumer("low", 0, false);
        low.priority = 0;
        let (mut high, _) = test_consumer("high", 1, false);
        high.priority = 5;
        q.add_consumer(low);
        q.add_consumer(high);
        q.publish(msg(1), no_log);
        q.publish(msg(2), no_log);
        let first = q
            .next_delivery()
            .map(|d| d.consumer.consumer_tag.to_string());
        let second = q
            .next_delivery()
            .map(|d| d.consumer.consumer_tag.to_string());
        assert_eq!(first.as_deref(), Some("high"));
        assert_eq!(second.as_deref(), Some("low"), "high has no credit left");
    }

    #[test]
    fn requeue_restores_original_order_with_redelivered() {
        let mut q = QueueState::new();
        let ids: Vec<_> = (0..3)
            .map(|i| accepted(q.publish(msg(i), no_log)))
            .collect();
        let (m0, _) = q.get(false).unwrap();
        let (m1, _) = q.get(false).unwrap();
        q.requeue(&[m1.id, m0.id], true);
        let order: Vec<_> = std::iter::from_fn(|| q.get(true))
            .map(|(m, _)| (m.id, m.redelivered()))
            .collect();
        assert_eq!(order, vec![(ids[0], true), (ids[1], true), (ids[2], false)]);
    }

    proptest::proptest! {
        /// Random get/ack/requeue/publish/purge sequences against a VecDeque model of the ready list.
        #[test]
        fn matches_model(ops in proptest::collection::vec(0u8..5, 1..200)) {
            let mut q = QueueState::new();
            let mut ready: Model<MessageId> = Model::new();
            let mut unacked: Vec<MessageId> = vec![];
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    0 => { ready.push_back(accepted(q.publish(msg(n as u8), no_log))); }
                    1 => {
                        let got = q.get(false).map(|(m, left)| (m.id, left));
                        let expected = ready.pop_front().map(|id| (id, ready.len() as u32));
                        proptest::prop_assert_eq!(got, expected);
                        if let Some((id, _)) = got { unacked.push(id); }
                    }
                    2 => if let Some(id) = unacked.pop() { q.ack(&[id]); },
                    3 => if let Some(id) = unacked.pop() {
                        q.requeue(&[id], true);
                        let at = ready.partition_point(|&r| r < id);
                        ready.insert(at, id);
                    },
                    _ => { proptest::prop_assert_eq!(q.purge(), ready.len() as u32); ready.clear(); }
                }
                proptest::prop_assert_eq!(q.message_count(), ready.len() as u32);
                proptest::prop_assert_eq!(q.unacked_count(), unacked.len() as u32);
            }
        }
    }
}

#[cfg(test)]
mod global_credit_tests {
    use super::tests::msg;
    use super::*;
    use crate::consumer::tests::test_consumer;
    use crate::credit::Credit;

    #[test]
    fn a_channel_wide_window_limits_consumers_without_their_own() {
        let mut q = QueueState::new();
        let (mut c, _) = test_consumer("c", 0, false);
        c.channel_credit = Arc::new(Credit::new(3));
        q.add_consumer(c);
        for _ in 0..5 {
            q.publish(msg(0), |_, _| Ok::<_, ()>(None));
        }
        let mut n = 0;
        while q.next_delivery().is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn a_no_ack_consumer_gets_at_most_its_window_until_the_connection_writes() {
        let mut q = QueueState::new();
        let (c, window) = test_consumer("c", 2, true);
        q.add_consumer(c);
        for _ in 0..5 {
            q.publish(msg(0), |_, _| Ok::<_, ()>(None));
        }
        let mut n = 0;
        while q.next_delivery().is_some() {
            n += 1;
        }
        assert_eq!(n, 2, "the window holds the rest back");
        assert!(window.release(2), "the queue noted it went without");
        assert!(q.next_delivery().is_some());
        assert_eq!(q.unacked_count(), 0, "no-ack deliveries are not held");
    }
}
