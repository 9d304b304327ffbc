//! A queue's messages and consumers as a plain struct: ready messages in order (by priority
//! first, with `x-max-priority`), unacknowledged deliveries, round-robin dispatch to
//! consumers that have credit (or to the single active one), message expiry from the head,
//! length limits, delivery limits and the messages that die of them. No tasks, no I/O, no
//! clock of its own: the owner task in `queue` drives it and tells it the time, and tests
//! drive it directly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use amqp::ShortStr;
use store::Position;
use tokio::time::Instant;

use super::paged::PagedTail;
use super::ready::{Level, ReadyMessages};
use crate::consumer::Consumer;
use crate::dead_letter::DeathReason;
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
    /// How often the message came back before (`x-delivery-count`).
    pub returns: u64,
}

/// What a queue keeps in memory before it pages messages out to its log: bodies plus an
/// estimate of each message's own overhead.
pub const IN_MEMORY_BUDGET_BYTES: u64 = 32 * 1024 * 1024;
const MESSAGE_OVERHEAD_BYTES: u64 = 256;
/// Most removals handed to the log at once when a paged-out backlog is purged.
const REMOVAL_BATCH: usize = 4096;

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

/// How long messages and the queue itself live (`x-message-ttl`, `x-expires`) and how often
/// a message may come back (`x-delivery-limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetimes {
    pub message_ttl: Option<Duration>,
    /// A queue unused this long (no consumers, no basic.get, no redeclaration) is deleted.
    pub queue_expires: Option<Duration>,
    /// Returns a message may have; one more and it dies (`delivery_limit`).
    pub delivery_limit: Option<u64>,
}

/// The result of offering a message to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    Accepted(MessageId),
    /// Refused by `x-overflow = reject-publish` or `reject-publish-dlx`: the publisher gets
    /// basic.nack (and with `reject-publish-dlx` the message is dead-lettered).
    Rejected,
    /// Its log write failed: the publisher gets basic.nack.
    NotStored,
}

pub struct QueueState {
    limits: QueueLimits,
    lifetimes: Lifetimes,
    /// Whether dying messages are kept for the owner to dead-letter (the queue has a
    /// dead-letter exchange) rather than dropped.
    dead_lettering: bool,
    ready: ReadyMessages,
    /// Body bytes of the ready messages, for `x-max-length-bytes`.
    ready_bytes: u64,
    /// Bytes the ready messages held in memory take (see `IN_MEMORY_BUDGET_BYTES`).
    in_memory_bytes: u64,
    unacked: HashMap<MessageId, StoredMessage>,
    /// The priority level of each unacknowledged message of a priority queue, so that a
    /// requeued one goes back to its level. Empty in a queue without priorities.
    unacked_levels: HashMap<MessageId, Level>,
    /// In registration order.
    consumers: Vec<Consumer>,
    /// Index of the consumer after the one that got the last delivery (round robin).
    next_consumer: usize,
    /// `x-single-active-consumer`: only `active` gets messages.
    single_active: bool,
    /// Index of the single active consumer, once one was chosen.
    active: Option<usize>,
    next_id: MessageId,
    /// Whether a consumer was ever added; an auto-delete queue is deleted only after that.
    had_consumers: bool,
    /// Logged messages that left the queue since the owner last took this list, so that the
    /// owner records their removal in the log.
    removed: Vec<(MessageId, Position)>,
    /// Paged-out messages removed in bulk (a purge), recorded in the log a batch at a time.
    removed_paged: Vec<PagedTail>,
    /// When each message that has a TTL expires, ready or unacknowledged (a requeued message
    /// keeps its expiry). Only messages with a TTL are here: a queue without pays nothing.
    expiries: HashMap<MessageId, Instant>,
    /// How often each returned message came back, kept only with a delivery limit.
    returns: HashMap<MessageId, u64>,
    /// Messages that died and wait for the owner to dead-letter them; still in the log.
    dead: Vec<(StoredMessage, DeathReason)>,
    /// The time as the owner last said (`set_now`).
    now: Instant,
    /// Since when the queue is unused, for `x-expires`.
    unused_since: Instant,
}

impl Default for QueueState {
    fn default() -> Self {
        let now = Instant::now();
        QueueState {
            limits: QueueLimits::default(),
            lifetimes: Lifetimes::default(),
            dead_lettering: false,
            ready: ReadyMessages::default(),
            ready_bytes: 0,
            in_memory_bytes: 0,
            unacked: HashMap::new(),
            unacked_levels: HashMap::new(),
            consumers: Vec::new(),
            next_consumer: 0,
            single_active: false,
            active: None,
            next_id: 0,
            had_consumers: false,
            removed: Vec::new(),
            removed_paged: Vec::new(),
            expiries: HashMap::new(),
            returns: HashMap::new(),
            dead: Vec::new(),
            now,
            unused_since: now,
        }
    }
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

    pub fn with_lifetimes(mut self, lifetimes: Lifetimes) -> Self {
        self.lifetimes = lifetimes;
        self
    }

    /// The same settings, nothing held: what stands in while this state is away (recovery
    /// fills it on a blocking thread).
    pub fn emptied(&self) -> QueueState {
        QueueState {
            limits: self.limits,
            lifetimes: self.lifetimes,
            dead_lettering: self.dead_lettering,
            ready: self.ready.emptied(),
            single_active: self.single_active,
            ..Self::default()
        }
    }

    /// Dying messages are handed to the owner (`take_dead`) instead of being dropped.
    pub fn with_dead_lettering(mut self) -> Self {
        self.dead_lettering = true;
        self
    }

    /// Messages are delivered by priority (`x-max-priority`), highest first; set before the
    /// first message comes in.
    pub fn with_max_priority(mut self, max_priority: Level) -> Self {
        debug_assert!(self.ready.is_empty());
        self.ready = ReadyMessages::with_max_priority(max_priority);
        self
    }

    /// Only one consumer gets messages at a time (`x-single-active-consumer`).
    pub fn with_single_active_consumer(mut self) -> Self {
        self.single_active = true;
        self
    }

    /// New effective settings (a policy came, changed or went). A lower drop-head limit drops
    /// the oldest ready messages at once, as in RabbitMQ; messages already in keep the expiry
    /// they were published with; a new `x-expires` counts from now.
    pub fn reconfigure(&mut self, limits: QueueLimits, lifetimes: Lifetimes, dead_lettering: bool) {
        if lifetimes.queue_expires != self.lifetimes.queue_expires {
            self.touch();
        }
        self.limits = limits;
        self.lifetimes = lifetimes;
        self.dead_lettering = dead_lettering;
        if limits.overflow == Overflow::DropHead {
            self.drop_over_limit();
        }
        self.expire();
    }

    /// Drop-head: the oldest ready messages die until the queue is within its limits.
    fn drop_over_limit(&mut self) {
        while self.limits.is_over(self.ready.len(), self.ready_bytes) {
            match self.pop_ready() {
                Some((dropped, _)) => self.die(dropped, DeathReason::MaxLen),
                None => break,
            }
        }
    }

    /// The time from now on, until the owner says otherwise: expiries are measured by it.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// When a message published now expires: the lower of the queue's TTL and its own.
    fn expiry_of(&self, message: &Message) -> Option<Instant> {
        let own = message.ttl_ms().map(Duration::from_millis);
        let ttl = match (self.lifetimes.message_ttl, own) {
            (Some(queue), Some(own)) => queue.min(own),
            (queue, own) => queue.or(own)?,
        };
        // A TTL too long to represent never runs out.
        self.now.checked_add(ttl)
    }

    fn is_expired(&self, id: MessageId) -> bool {
        self.expiries.get(&id).is_some_and(|at| *at <= self.now)
    }

    /// Drops (or hands over for dead-lettering) expired messages at the head, as RabbitMQ's
    /// classic queues do: a message behind an unexpired one waits until it reaches the head.
    pub fn expire(&mut self) {
        if self.expiries.is_empty() {
            return;
        }
        while self.ready.front().is_some_and(|m| self.is_expired(m.id)) {
            if let Some((message, _)) = self.pop_ready() {
                self.die(message, DeathReason::Expired);
            }
        }
    }

    /// When the queue has something to do without being asked: the head message expires, or
    /// the unused queue does.
    pub fn next_deadline(&self) -> Option<Instant> {
        let head = match self.ready.front() {
            Some(m) if !self.expiries.is_empty() => self.expiries.get(&m.id).copied(),
            _ => None,
        };
        match (head, self.expires_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the queue, unused since `unused_since`, is to be deleted (`x-expires`).
    fn expires_at(&self) -> Option<Instant> {
        let after = self.lifetimes.queue_expires?;
        if !self.consumers.is_empty() {
            return None;
        }
        self.unused_since.checked_add(after)
    }

    /// Whether the queue has been unused for its `x-expires`.
    pub fn is_unused_too_long(&self) -> bool {
        self.expires_at().is_some_and(|at| at <= self.now)
    }

    /// The queue was used (basic.get, redeclaration): its `x-expires` starts over.
    pub fn touch(&mut self) {
        self.unused_since = self.now;
    }

    /// A message leaves for good for `reason`: dropped, or kept for the owner to dead-letter.
    fn die(&mut self, message: StoredMessage, reason: DeathReason) {
        if self.dead_lettering {
            self.forget_lifetime(message.id);
            self.dead.push((message, reason));
        } else {
            self.forget(message);
        }
    }

    /// Messages that died since the last call, for the owner to dead-letter; it hands each
    /// back with `discard` once it has read it.
    pub fn take_dead(&mut self) -> Vec<(StoredMessage, DeathReason)> {
        std::mem::take(&mut self.dead)
    }

    pub fn has_dead(&self) -> bool {
        !self.dead.is_empty()
    }

    /// A dead message was dead-lettered (or given up on): it leaves the log too.
    pub fn discard(&mut self, message: StoredMessage) {
        self.forget(message);
    }

    fn forget_lifetime(&mut self, id: MessageId) {
        if !self.expiries.is_empty() {
            self.expiries.remove(&id);
        }
        if !self.unacked_levels.is_empty() {
            self.unacked_levels.remove(&id);
        }
        if !self.returns.is_empty() {
            self.returns.remove(&id);
        }
    }

    /// How often a message came back to the queue (only counted with a delivery limit).
    pub fn returns_of(&self, id: MessageId) -> u64 {
        if self.returns.is_empty() {
            return 0;
        }
        self.returns.get(&id).copied().unwrap_or(0)
    }

    pub fn lifetimes(&self) -> &Lifetimes {
        &self.lifetimes
    }

    /// Whether a new message should go to the log instead of memory: the queue is over its
    /// budget, or has a paged-out tail that the message joins (compactly only if logged).
    pub fn over_memory_budget(&self) -> bool {
        self.in_memory_bytes >= IN_MEMORY_BUDGET_BYTES || self.ready.has_paged()
    }

    fn memory_cost(message: &StoredMessage) -> u64 {
        match message.message {
            Some(_) => message.body_size() + MESSAGE_OVERHEAD_BYTES,
            None => 0,
        }
    }

    /// Adds a message at the tail, applying the length limits: the oldest ready messages are
    /// dropped (drop-head), or the new one is refused (reject-publish). `persist` writes an
    /// admitted message to the log (given its id and expiry) and says where; an error refuses
    /// it. When the queue is over its memory budget, a logged message is kept only in the log.
    /// A message already expired on arrival (a TTL of 0) stays only if a consumer can take it
    /// at once, as in RabbitMQ; else it dies straight away.
    pub fn publish<E>(
        &mut self,
        message: Arc<Message>,
        persist: impl FnOnce(MessageId, &Message, Option<Instant>) -> Result<Option<Position>, E>,
    ) -> Publish {
        if self.limits.overflow != Overflow::DropHead
            && self.limits.is_full(self.ready.len(), self.ready_bytes)
        {
            return Publish::Rejected;
        }
        let id = self.next_id;
        let expiry = self.expiry_of(&message);
        let expired_on_arrival = expiry.is_some_and(|at| at <= self.now);
        if expired_on_arrival && !self.can_deliver_at_once() {
            self.next_id += 1;
            self.die(StoredMessage::new(id, message, None), DeathReason::Expired);
            return Publish::Accepted(id);
        }
        // One expired on arrival goes out in this very batch: neither logged nor timed.
        let (position, expiry) = if expired_on_arrival {
            (None, None)
        } else {
            match persist(id, &message, expiry) {
                Ok(position) => (position, expiry),
                Err(_) => return Publish::NotStored,
            }
        };
        self.next_id += 1;
        let level = self.ready.level_of(&message);
        let mut stored = StoredMessage::new(id, message, position);
        if self.over_memory_budget() {
            stored.page_out();
        }
        if let Some(at) = expiry {
            self.expiries.insert(id, at);
        }
        self.push_ready(stored, level);
        self.drop_over_limit();
        self.expire();
        Publish::Accepted(id)
    }

    /// Whether a message published now would go straight to a consumer: nothing is waiting
    /// before it and some consumer has credit.
    fn can_deliver_at_once(&self) -> bool {
        let has_credit = |c: &Consumer| {
            let free = c.try_acquire_credit();
            if free {
                c.release_credit();
            }
            free
        };
        if !self.ready.is_empty() {
            return false;
        }
        if self.single_active {
            return self
                .single_active_recipient()
                .is_some_and(|index| has_credit(&self.consumers[index]));
        }
        self.consumers.iter().any(has_credit)
    }

    /// Puts back a message recovered from the log, behind those restored before it, with the
    /// expiry and the `priority` property it was logged with.
    pub fn restore(&mut self, message: StoredMessage, expiry: Option<Instant>, priority: u8) {
        self.next_id = self.next_id.max(message.id + 1);
        if let Some(at) = expiry {
            self.expiries.insert(message.id, at);
        }
        let level = self.ready.cap(priority);
        self.push_ready(message, level);
    }

    /// Whether messages are delivered by priority (their priority is worth reading back from
    /// the log at recovery).
    pub fn has_priorities(&self) -> bool {
        self.ready.is_prioritised()
    }

    /// Ids from here on are free (the log may know of higher ones than were restored).
    pub fn reserve_ids_below(&mut self, next_id: MessageId) {
        self.next_id = self.next_id.max(next_id);
    }

    fn forget(&mut self, message: StoredMessage) {
        self.forget_lifetime(message.id);
        if let Some(position) = message.position() {
            self.removed.push((message.id, position));
        }
    }

    /// Hands the logged messages removed since the last call (acked, discarded, purged,
    /// dropped) to `record`, in batches of bounded size: a purged backlog is never listed
    /// whole.
    pub fn drain_removed(&mut self, mut record: impl FnMut(&[(MessageId, Position)])) {
        if !self.removed.is_empty() {
            record(&self.removed);
            self.removed.clear();
        }
        for tail in std::mem::take(&mut self.removed_paged) {
            let mut batch = Vec::with_capacity(REMOVAL_BATCH.min(tail.len()));
            for message in tail.iter() {
                let Some(position) = message.position() else {
                    continue;
                };
                batch.push((message.id, position));
                if batch.len() == REMOVAL_BATCH {
                    record(&batch);
                    batch.clear();
                }
            }
            if !batch.is_empty() {
                record(&batch);
            }
        }
    }

    pub fn has_removed(&self) -> bool {
        !self.removed.is_empty() || !self.removed_paged.is_empty()
    }

    /// Heap bytes the ready messages' bookkeeping takes (not the messages held in memory).
    pub fn ready_heap_bytes(&self) -> usize {
        self.ready.heap_bytes()
    }

    fn push_ready(&mut self, mut message: StoredMessage, level: Level) {
        if self.ready.is_paging(level) {
            message.page_out();
        }
        self.ready_bytes += message.body_size();
        self.in_memory_bytes += Self::memory_cost(&message);
        self.ready.push_back(message, level);
    }

    fn pop_ready(&mut self) -> Option<(StoredMessage, Level)> {
        let (message, level) = self.ready.pop_front()?;
        self.ready_bytes -= message.body_size();
        self.in_memory_bytes -= Self::memory_cost(&message);
        Some((message, level))
    }

    fn insert_ready(&mut self, message: StoredMessage, level: Level) {
        self.ready_bytes += message.body_size();
        self.in_memory_bytes += Self::memory_cost(&message);
        self.ready.insert_in_order(message, level);
    }

    /// Holds a handed-out message until it is settled; a logged one is not kept in memory.
    fn hold_unacked(&mut self, mut message: StoredMessage, level: Level) {
        message.page_out();
        if self.ready.is_prioritised() {
            self.unacked_levels.insert(message.id, level);
        }
        self.unacked.insert(message.id, message);
    }

    /// The first `count` ready messages in delivery order, left where they are (expired ones,
    /// which will never be delivered, left out), each with how often it came back.
    pub fn peek(&self, count: usize) -> Vec<(StoredMessage, u64)> {
        self.ready
            .iter()
            .filter(|m| !self.is_expired(m.id))
            .take(count)
            .map(|m| {
                let returns = self.returns_of(m.id);
                (m, returns)
            })
            .collect()
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
        self.active = match self.active {
            Some(active) if active == index => None,
            Some(active) if active > index => Some(active - 1),
            unchanged => unchanged,
        };
        let removed = self.consumers.remove(index);
        if self.consumers.is_empty() {
            self.touch();
        }
        Some(removed)
    }

    pub fn take_consumers(&mut self) -> Vec<Consumer> {
        self.next_consumer = 0;
        self.active = None;
        self.touch();
        std::mem::take(&mut self.consumers)
    }

    /// Picks the next consumer in round-robin order among those of the highest priority that
    /// have credit, and hands it the oldest ready message. `None` when nothing can be delivered.
    pub fn next_delivery(&mut self) -> Option<Delivery<'_>> {
        if self.ready.is_empty() || self.consumers.is_empty() {
            return None;
        }
        self.expire();
        if self.ready.is_empty() {
            return None;
        }
        let index = if self.single_active {
            self.pick_single_active()?
        } else {
            self.pick_consumer()?
        };
        self.next_consumer = (index + 1) % self.consumers.len();
        let Some((message, level)) = self.pop_ready() else {
            self.consumers[index].release_credit();
            return None;
        };
        if self.consumers[index].no_ack {
            self.forget(message.clone());
        } else {
            self.hold_unacked(message.clone(), level);
        }
        let returns = self.returns_of(message.id);
        let consumer = &self.consumers[index];
        Some(Delivery {
            consumer,
            message,
            returns,
        })
    }

    fn pick_consumer(&self) -> Option<usize> {
        let n = self.consumers.len();
        let mut best: Option<(usize, i32)> = None;
        for offset in 0..n {
            let index = (self.next_consumer + offset) % n;
            let consumer = &self.consumers[index];
            // A closed window is a consumer being cancelled: its cancel is on the way.
            if best.is_some_and(|(_, priority)| consumer.priority <= priority)
                || consumer.credit.is_closed()
            {
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

    /// The single active consumer, when it has credit. Becoming active takes the place of
    /// the one that was.
    fn pick_single_active(&mut self) -> Option<usize> {
        let index = self.single_active_recipient()?;
        self.active = Some(index);
        self.consumers[index].try_acquire_credit().then_some(index)
    }

    /// Who of a single-active-consumer queue's consumers gets the next message, credit aside:
    /// the active one; the consumer of highest priority (the first registered among equals)
    /// when none is; and, as in RabbitMQ 4, one of higher priority than the active one as
    /// soon as the active one has no delivery left unsettled (until then, nobody). A consumer
    /// whose window is closed is being cancelled: nobody gets anything before its cancel (and
    /// its channel's requeues) arrive, so that its messages go to the next one first.
    fn single_active_recipient(&self) -> Option<usize> {
        let best = self
            .consumers
            .iter()
            .enumerate()
            .rev()
            .max_by_key(|(_, c)| c.priority)
            .map(|(index, _)| index)?;
        let Some(active) = self.active else {
            return Some(best);
        };
        let current = &self.consumers[active];
        if current.credit.is_closed() {
            return None;
        }
        if self.consumers[best].priority <= current.priority {
            return Some(active);
        }
        let settled = current.no_ack || current.credit.in_flight() == 0;
        settled.then_some(best)
    }

    /// The consumer that is (or is about to be) the single active one, for listings
    /// (RabbitMQ's `single_active_consumer_tag`).
    pub fn single_active_consumer(&self) -> Option<&Consumer> {
        if !self.single_active {
            return None;
        }
        self.active
            .or_else(|| self.single_active_recipient())
            .map(|index| &self.consumers[index])
    }

    pub fn is_single_active_consumer(&self) -> bool {
        self.single_active
    }

    /// basic.get: the oldest ready message, and how many remain after it (expired ones
    /// behind it gone first, as in RabbitMQ). A get counts as using the queue.
    pub fn get(&mut self, no_ack: bool) -> Option<(StoredMessage, u32)> {
        self.touch();
        self.expire();
        let (message, level) = self.pop_ready()?;
        if no_ack {
            self.forget(message.clone());
        } else {
            self.hold_unacked(message.clone(), level);
        }
        self.expire();
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

    /// Puts unacknowledged messages back at their original positions, with their original
    /// expiry. `redelivered` is false only for messages that never reached the client (a
    /// consumer cancelled in between); the others count against the delivery limit, and one
    /// over it dies instead.
    pub fn requeue(&mut self, ids: &[MessageId], redelivered: bool) {
        for id in ids {
            let Some(mut message) = self.unacked.remove(id) else {
                continue;
            };
            let level = if self.unacked_levels.is_empty() {
                0
            } else {
                self.unacked_levels.remove(id).unwrap_or(0)
            };
            if redelivered {
                message.mark_redelivered();
                if let Some(limit) = self.lifetimes.delivery_limit {
                    let returns = self.returns.entry(*id).or_insert(0);
                    *returns += 1;
                    if *returns > limit {
                        self.die(message, DeathReason::DeliveryLimit);
                        continue;
                    }
                }
            }
            self.insert_ready(message, level);
        }
        self.expire();
    }

    /// basic.reject / basic.nack without requeue: the messages die (`rejected`).
    pub fn reject(&mut self, ids: &[MessageId]) {
        for id in ids {
            if let Some(message) = self.unacked.remove(id) {
                self.die(message, DeathReason::Rejected);
            }
        }
    }

    /// Drops the ready messages; unacknowledged ones stay, as in RabbitMQ.
    pub fn purge(&mut self) -> u32 {
        let n = self.ready.len() as u32;
        for taken in self.ready.take_all() {
            for message in taken.head {
                self.forget(message);
            }
            if taken.tail.is_empty() {
                continue;
            }
            if !self.expiries.is_empty() || !self.returns.is_empty() {
                for id in taken.tail.ids() {
                    self.forget_lifetime(id);
                }
            }
            self.removed_paged.push(taken.tail);
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
            annotations: None,
        })
    }

    fn no_log(_: MessageId, _: &Message, _: Option<Instant>) -> Result<Option<Position>, ()> {
        Ok(None)
    }

    fn accepted(p: Publish) -> MessageId {
        match p {
            Publish::Accepted(id) => id,
            Publish::Rejected | Publish::NotStored => panic!("refused"),
        }
    }

    #[test]
    fn a_stored_message_takes_32_bytes() {
        assert_eq!(std::mem::size_of::<StoredMessage>(), 32);
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
            q.publish(msg(0), |_, _, _| Ok::<_, ()>(None));
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
            q.publish(msg(0), |_, _, _| Ok::<_, ()>(None));
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

#[cfg(test)]
mod lifetime_tests {
    use super::tests::msg;
    use super::*;
    use crate::consumer::tests::test_consumer;
    use amqp::BasicProperties;
    use bytes::{Bytes, BytesMut};

    fn no_log(_: MessageId, _: &Message, _: Option<Instant>) -> Result<Option<Position>, ()> {
        Ok(None)
    }

    fn expiring(n: u8, expiration_ms: &str) -> Arc<Message> {
        let mut properties = BytesMut::new();
        BasicProperties {
            expiration: Some(ShortStr::new(expiration_ms).unwrap()),
            ..Default::default()
        }
        .encode(&mut properties);
        Arc::new(Message::new(
            ShortStr::default(),
            ShortStr::default(),
            properties.freeze(),
            Bytes::from(vec![n]),
        ))
    }

    fn ttl(ms: u64) -> Lifetimes {
        Lifetimes {
            message_ttl: Some(Duration::from_millis(ms)),
            ..Lifetimes::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn reasons(q: &mut QueueState) -> Vec<(u8, DeathReason)> {
        q.take_dead()
            .into_iter()
            .map(|(m, reason)| {
                let body = m.message.as_ref().expect("in memory").body[0];
                q.discard(m);
                (body, reason)
            })
            .collect()
    }

    #[test]
    fn messages_expire_at_the_head_when_their_time_comes() {
        let mut q = QueueState::new().with_lifetimes(ttl(100));
        let start = q.now();
        q.publish(msg(1), no_log);
        q.set_now(start + ms(50));
        q.publish(msg(2), no_log);
        assert_eq!(q.next_deadline(), Some(start + ms(100)));
        q.set_now(start + ms(100));
        q.expire();
        assert_eq!(q.message_count(), 1);
        assert_eq!(q.next_deadline(), Some(start + ms(150)));
        q.set_now(start + ms(150));
        q.expire();
        assert_eq!(q.message_count(), 0);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn the_lower_ttl_applies_and_only_the_head_expires() {
        let mut q = QueueState::new().with_lifetimes(ttl(1_000));
        let start = q.now();
        q.publish(expiring(1, "5000"), no_log);
        q.publish(expiring(2, "10"), no_log);
        q.set_now(start + ms(500));
        q.expire();
        assert_eq!(
            q.message_count(),
            2,
            "the expired second waits behind the head"
        );
        let (head, remaining) = q.get(true).unwrap();
        assert_eq!(head.message.unwrap().body[0], 1);
        assert_eq!(remaining, 0, "the new head had expired");
    }

    #[test]
    fn ttl_zero_reaches_a_consumer_with_credit_or_dies() {
        let mut q = QueueState::new()
            .with_lifetimes(ttl(0))
            .with_dead_lettering();
        q.publish(msg(1), no_log);
        assert_eq!(q.message_count(), 0);
        assert_eq!(reasons(&mut q), vec![(1, DeathReason::Expired)]);
        let (consumer, _) = test_consumer("c", 1, false);
        q.add_consumer(consumer);
        q.publish(msg(2), no_log);
        assert_eq!(q.next_delivery().map(|d| d.message.id), Some(1));
        q.publish(msg(3), no_log);
        assert_eq!(q.message_count(), 0, "no credit left for it");
        assert_eq!(reasons(&mut q), vec![(3, DeathReason::Expired)]);
    }

    #[test]
    fn a_requeued_message_keeps_its_expiry() {
        let mut q = QueueState::new()
            .with_lifetimes(ttl(100))
            .with_dead_lettering();
        let start = q.now();
        q.publish(msg(1), no_log);
        let (held, _) = q.get(false).unwrap();
        q.set_now(start + ms(100));
        q.requeue(&[held.id], true);
        assert_eq!(q.message_count(), 0);
        assert_eq!(reasons(&mut q), vec![(1, DeathReason::Expired)]);
    }

    #[test]
    fn overflow_rejection_and_the_delivery_limit_kill_with_their_reasons() {
        let mut q = QueueState::with_limits(QueueLimits {
            max_length: Some(1),
            ..QueueLimits::default()
        })
        .with_lifetimes(Lifetimes {
            delivery_limit: Some(1),
            ..Lifetimes::default()
        })
        .with_dead_lettering();
        q.publish(msg(1), no_log);
        q.publish(msg(2), no_log);
        assert_eq!(reasons(&mut q), vec![(1, DeathReason::MaxLen)]);
        let (m, _) = q.get(false).unwrap();
        q.requeue(&[m.id], true);
        let (m, _) = q.get(false).unwrap();
        assert_eq!(q.returns_of(m.id), 1);
        q.requeue(&[m.id], false);
        let (m, _) = q.get(false).unwrap();
        assert_eq!(
            q.returns_of(m.id),
            1,
            "a message that never left does not count"
        );
        q.requeue(&[m.id], true);
        assert_eq!(reasons(&mut q), vec![(2, DeathReason::DeliveryLimit)]);
        q.publish(msg(3), no_log);
        let (m, _) = q.get(false).unwrap();
        q.reject(&[m.id]);
        assert_eq!(reasons(&mut q), vec![(3, DeathReason::Rejected)]);
        assert_eq!((q.message_count(), q.unacked_count()), (0, 0));
    }

    #[test]
    fn without_dead_lettering_dead_messages_are_just_dropped() {
        let mut q = QueueState::new().with_lifetimes(ttl(0));
        q.publish(msg(1), no_log);
        assert!(!q.has_dead());
        assert_eq!(q.message_count(), 0);
    }

    #[test]
    fn an_unused_queue_expires_and_use_renews_it() {
        let mut q = QueueState::new().with_lifetimes(Lifetimes {
            queue_expires: Some(ms(1_000)),
            ..Lifetimes::default()
        });
        let start = q.now();
        assert_eq!(q.next_deadline(), Some(start + ms(1_000)));
        q.set_now(start + ms(600));
        q.get(true);
        q.set_now(start + ms(1_500));
        assert!(!q.is_unused_too_long(), "the get renewed it");
        let (consumer, _) = test_consumer("c", 0, true);
        q.add_consumer(consumer);
        q.set_now(start + ms(5_000));
        assert!(!q.is_unused_too_long(), "a queue with a consumer is in use");
        q.remove_consumer(1, 1, "c");
        assert!(!q.is_unused_too_long());
        q.set_now(start + ms(6_000));
        assert!(q.is_unused_too_long());
    }
}

#[cfg(test)]
mod priority_tests {
    use super::*;
    use amqp::BasicProperties;
    use bytes::{Bytes, BytesMut};

    fn no_log(_: MessageId, _: &Message, _: Option<Instant>) -> Result<Option<Position>, ()> {
        Ok(None)
    }

    /// A message whose body is `n` and whose `priority` property is `priority`.
    fn prioritised(n: u8, priority: Option<u8>) -> Arc<Message> {
        let mut properties = BytesMut::new();
        BasicProperties {
            priority,
            ..Default::default()
        }
        .encode(&mut properties);
        Arc::new(Message::new(
            ShortStr::default(),
            ShortStr::default(),
            properties.freeze(),
            Bytes::from(vec![n]),
        ))
    }

    fn body(m: &StoredMessage) -> u8 {
        m.message.as_ref().expect("in memory").body[0]
    }

    fn drain(q: &mut QueueState) -> Vec<u8> {
        std::iter::from_fn(|| q.get(true))
            .map(|(m, _)| body(&m))
            .collect()
    }

    #[test]
    fn higher_priorities_first_capped_at_the_maximum_and_fifo_within_one() {
        let mut q = QueueState::new().with_max_priority(5);
        for (n, priority) in [
            (0, None),
            (1, Some(1)),
            (2, Some(9)),
            (3, Some(5)),
            (4, Some(0)),
        ] {
            q.publish(prioritised(n, priority), no_log);
        }
        assert_eq!(q.message_count(), 5);
        assert_eq!(drain(&mut q), [2, 3, 1, 0, 4], "9 counts as 5, none as 0");
        let mut fifo = QueueState::new();
        fifo.publish(prioritised(0, Some(1)), no_log);
        fifo.publish(prioritised(1, Some(9)), no_log);
        assert_eq!(
            drain(&mut fifo),
            [0, 1],
            "without x-max-priority, publish order"
        );
    }

    #[test]
    fn a_requeued_message_goes_back_to_its_place_in_its_priority() {
        let mut q = QueueState::new().with_max_priority(5);
        for (n, priority) in [(0, 1), (1, 5), (2, 3), (3, 5)] {
            q.publish(prioritised(n, Some(priority)), no_log);
        }
        let (first, _) = q.get(false).unwrap();
        let (second, _) = q.get(false).unwrap();
        assert_eq!((body(&first), body(&second)), (1, 3));
        q.requeue(&[first.id], true);
        let order: Vec<_> = std::iter::from_fn(|| q.get(true))
            .map(|(m, _)| (m.id, m.redelivered()))
            .collect();
        assert_eq!(order, [(first.id, true), (2, false), (0, false)]);
        q.requeue(&[second.id], true);
        assert_eq!(q.get(true).map(|(m, _)| m.id), Some(second.id));
    }

    #[test]
    fn drop_head_drops_the_message_delivered_next_as_rabbitmq_does() {
        let mut q = QueueState::with_limits(QueueLimits {
            max_length: Some(3),
            ..QueueLimits::default()
        })
        .with_max_priority(5)
        .with_dead_lettering();
        for (n, priority) in [(0, 1), (1, 5), (2, 3), (3, 1), (4, 5)] {
            q.publish(prioritised(n, Some(priority)), no_log);
        }
        let dead: Vec<u8> = q
            .take_dead()
            .into_iter()
            .map(|(m, reason)| {
                assert_eq!(reason, DeathReason::MaxLen);
                body(&m)
            })
            .collect();
        assert_eq!(dead, [1, 4]);
        assert_eq!(drain(&mut q), [2, 0, 3]);
    }

    #[test]
    fn only_the_head_in_delivery_order_expires() {
        let mut q = QueueState::new()
            .with_max_priority(5)
            .with_lifetimes(Lifetimes {
                message_ttl: Some(Duration::from_millis(100)),
                ..Lifetimes::default()
            });
        let start = q.now();
        q.publish(prioritised(0, Some(1)), no_log);
        q.set_now(start + Duration::from_millis(50));
        q.publish(prioritised(1, Some(5)), no_log);
        assert_eq!(
            q.next_deadline(),
            Some(start + Duration::from_millis(150)),
            "the head is the high-priority message"
        );
        q.set_now(start + Duration::from_millis(120));
        q.expire();
        assert_eq!(
            q.message_count(),
            2,
            "the expired one waits behind the head"
        );
        q.set_now(start + Duration::from_millis(150));
        q.expire();
        assert_eq!(q.message_count(), 0);
    }

    #[test]
    fn restored_messages_keep_their_priority() {
        let mut q = QueueState::new().with_max_priority(3);
        for (id, priority) in [(0, 0), (1, 7), (2, 2)] {
            let stored = StoredMessage::new(id, prioritised(id as u8, None), None);
            q.restore(stored, None, priority);
        }
        assert_eq!(drain(&mut q), [1, 2, 0]);
    }

    #[test]
    fn peek_reads_in_delivery_order_and_changes_nothing() {
        let mut q = QueueState::new()
            .with_max_priority(2)
            .with_lifetimes(Lifetimes {
                delivery_limit: Some(5),
                ..Lifetimes::default()
            });
        for (n, priority) in [(0, 0), (1, 2), (2, 1)] {
            q.publish(prioritised(n, Some(priority)), no_log);
        }
        let (taken, _) = q.get(false).unwrap();
        q.requeue(&[taken.id], true);
        let before = q.unused_since;
        let peeked: Vec<_> = q
            .peek(2)
            .into_iter()
            .map(|(m, returns)| (body(&m), m.redelivered(), returns))
            .collect();
        assert_eq!(peeked, [(1, true, 1), (2, false, 0)]);
        assert_eq!((q.message_count(), q.unacked_count()), (3, 0));
        assert_eq!(q.unused_since, before, "a peek does not count as use");
        assert_eq!(q.peek(10).len(), 3);
        assert_eq!(drain(&mut q), [1, 2, 0]);
    }

    proptest::proptest! {
        /// Random publish/get/requeue/ack sequences against a model: ready messages sorted by
        /// priority (capped at the maximum), then by id.
        #[test]
        fn matches_a_sorted_model(ops in proptest::collection::vec((0u8..4, 0u8..8), 1..200)) {
            let mut q = QueueState::new().with_max_priority(4);
            let mut ready: Vec<(u8, MessageId)> = vec![];
            let mut unacked: Vec<(u8, MessageId)> = vec![];
            let order = |ready: &mut Vec<(u8, MessageId)>| {
                ready.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            };
            for (op, priority) in ops {
                match op {
                    0 => {
                        let Publish::Accepted(id) = q.publish(prioritised(0, Some(priority)), no_log) else {
                            panic!("refused")
                        };
                        ready.push((priority.min(4), id));
                        order(&mut ready);
                    }
                    1 => {
                        let got = q.get(false).map(|(m, _)| m.id);
                        let expected = (!ready.is_empty()).then(|| ready.remove(0));
                        proptest::prop_assert_eq!(got, expected.map(|e| e.1));
                        unacked.extend(expected);
                    }
                    2 => if let Some((level, id)) = unacked.pop() {
                        q.requeue(&[id], true);
                        ready.push((level, id));
                        order(&mut ready);
                    },
                    _ => if let Some((_, id)) = unacked.pop() { q.ack(&[id]); },
                }
                let peeked: Vec<MessageId> = q.peek(usize::MAX).into_iter().map(|(m, _)| m.id).collect();
                let expected: Vec<MessageId> = ready.iter().map(|e| e.1).collect();
                proptest::prop_assert_eq!(peeked, expected);
                proptest::prop_assert_eq!(q.unacked_count(), unacked.len() as u32);
            }
        }
    }
}

#[cfg(test)]
mod single_active_consumer_tests {
    use super::tests::msg;
    use super::*;
    use crate::consumer::tests::test_consumer;

    fn no_log(_: MessageId, _: &Message, _: Option<Instant>) -> Result<Option<Position>, ()> {
        Ok(None)
    }

    fn consumer(tag: &str, prefetch: u32, priority: i32) -> (Consumer, Arc<crate::credit::Credit>) {
        let (mut consumer, credit) = test_consumer(tag, prefetch, false);
        consumer.priority = priority;
        (consumer, credit)
    }

    fn deliveries(q: &mut QueueState) -> Vec<(String, MessageId)> {
        std::iter::from_fn(|| {
            q.next_delivery()
                .map(|d| (d.consumer.consumer_tag.to_string(), d.message.id))
        })
        .collect()
    }

    #[test]
    fn only_the_first_registered_gets_messages_until_it_goes() {
        let mut q = QueueState::new().with_single_active_consumer();
        let (a, a_credit) = consumer("a", 2, 0);
        let (b, _) = consumer("b", 0, 0);
        q.add_consumer(a);
        q.add_consumer(b);
        for i in 0..4 {
            q.publish(msg(i), no_log);
        }
        assert_eq!(deliveries(&mut q), [("a".into(), 0), ("a".into(), 1)]);
        assert_eq!(q.consumer_count(), 2, "every registered consumer counts");
        assert_eq!(
            q.single_active_consumer().map(|c| c.consumer_tag.as_str()),
            Some("a")
        );
        // The channel of a closes: its window closes, its messages come back, then it goes.
        a_credit.close();
        q.requeue(&[0, 1], true);
        assert!(
            deliveries(&mut q).is_empty(),
            "nothing moves before a is gone"
        );
        q.remove_consumer(1, 1, "a");
        assert_eq!(
            deliveries(&mut q),
            [
                ("b".into(), 0),
                ("b".into(), 1),
                ("b".into(), 2),
                ("b".into(), 3)
            ]
        );
    }

    #[test]
    fn a_higher_priority_consumer_takes_over_once_the_active_one_settled() {
        let mut q = QueueState::new().with_single_active_consumer();
        let (low, low_credit) = consumer("low", 1, 0);
        q.add_consumer(low);
        for i in 0..3 {
            q.publish(msg(i), no_log);
        }
        assert_eq!(deliveries(&mut q), [("low".into(), 0)]);
        let (high, _) = consumer("high", 0, 5);
        q.add_consumer(high);
        assert!(
            deliveries(&mut q).is_empty(),
            "low still has a delivery unsettled"
        );
        low_credit.release(1);
        q.ack(&[0]);
        assert_eq!(deliveries(&mut q), [("high".into(), 1), ("high".into(), 2)]);
        q.remove_consumer(1, 1, "high");
        q.publish(msg(3), no_log);
        assert_eq!(deliveries(&mut q), [("low".into(), 3)]);
    }

    #[test]
    fn among_equal_priorities_the_first_registered_becomes_active() {
        let mut q = QueueState::new().with_single_active_consumer();
        for tag in ["a", "b", "c"] {
            let (c, _) = consumer(tag, 0, 1);
            q.add_consumer(c);
        }
        let (low, _) = consumer("low", 0, 0);
        q.add_consumer(low);
        q.remove_consumer(1, 1, "a");
        q.publish(msg(0), no_log);
        q.publish(msg(1), no_log);
        assert_eq!(deliveries(&mut q), [("b".into(), 0), ("b".into(), 1)]);
    }
}

#[cfg(test)]
mod reconfigure_tests {
    use super::tests::msg;
    use super::*;

    fn no_log(_: MessageId, _: &Message, _: Option<Instant>) -> Result<Option<Position>, ()> {
        Ok(None)
    }

    fn max_length(max: u64, overflow: Overflow) -> QueueLimits {
        QueueLimits {
            max_length: Some(max),
            overflow,
            ..QueueLimits::default()
        }
    }

    #[test]
    fn a_lower_drop_head_limit_trims_at_once_and_a_lifted_one_lets_the_queue_grow() {
        let mut q = QueueState::new();
        for i in 0..5 {
            q.publish(msg(i), no_log);
        }
        q.reconfigure(
            max_length(2, Overflow::RejectPublish),
            Lifetimes::default(),
            false,
        );
        assert_eq!(
            q.message_count(),
            5,
            "reject-publish refuses new ones, drops none"
        );
        q.reconfigure(
            max_length(2, Overflow::DropHead),
            Lifetimes::default(),
            true,
        );
        assert_eq!(q.message_count(), 2);
        let dead: Vec<_> = q.take_dead().into_iter().map(|(m, r)| (m.id, r)).collect();
        assert_eq!(
            dead,
            [
                (0, DeathReason::MaxLen),
                (1, DeathReason::MaxLen),
                (2, DeathReason::MaxLen)
            ]
        );
        q.reconfigure(QueueLimits::default(), Lifetimes::default(), false);
        for i in 0..3 {
            q.publish(msg(i), no_log);
        }
        assert_eq!(q.message_count(), 5);
    }

    #[test]
    fn a_new_message_ttl_applies_to_new_messages_and_a_new_expires_counts_from_now() {
        let mut q = QueueState::new();
        let start = q.now();
        q.publish(msg(0), no_log);
        q.set_now(start + Duration::from_secs(10));
        q.reconfigure(
            QueueLimits::default(),
            Lifetimes {
                message_ttl: Some(Duration::from_millis(100)),
                queue_expires: Some(Duration::from_secs(5)),
                ..Lifetimes::default()
            },
            false,
        );
        assert!(!q.is_unused_too_long(), "x-expires starts when it is set");
        q.publish(msg(1), no_log);
        q.set_now(start + Duration::from_secs(11));
        q.expire();
        assert_eq!(
            q.message_count(),
            2,
            "the old head has no expiry, as in RabbitMQ"
        );
        assert_eq!(q.get(true).map(|(m, _)| m.id), Some(0));
        assert_eq!(q.message_count(), 0, "the new one had expired behind it");
        q.set_now(start + Duration::from_secs(16));
        assert!(q.is_unused_too_long());
    }
}

#[cfg(test)]
mod paged_tests {
    use super::tests::msg;
    use super::*;
    use std::collections::{HashSet, VecDeque};

    /// A log that writes nothing: messages are laid back to back in one segment.
    #[derive(Default)]
    struct FakeLog {
        offset: u32,
    }

    impl FakeLog {
        fn next(&mut self, body_size: u64) -> Position {
            let len = body_size as u32 + 40;
            let position = Position::new(1, 20 + self.offset, len);
            self.offset += len;
            position
        }
    }

    /// A queue recovered with `count` paged-out messages (ids 0 to count - 1).
    fn recovered(count: u64, log: &mut FakeLog) -> QueueState {
        let mut q = QueueState::new();
        for id in 0..count {
            let position = log.next(60);
            q.restore(StoredMessage::paged(id, position, 60, false), None, 0);
        }
        q
    }

    fn removals(q: &mut QueueState) -> Vec<(MessageId, Position)> {
        let mut all = vec![];
        q.drain_removed(|batch| all.extend_from_slice(batch));
        all
    }

    #[test]
    fn a_recovered_backlog_costs_a_few_bytes_a_message_and_comes_back_in_order() {
        let count = 300_000;
        let mut log = FakeLog::default();
        let mut q = recovered(count, &mut log);
        assert_eq!(q.message_count(), count as u32);
        assert_eq!(q.ready_bytes(), count * 60);
        let per_message = q.ready_heap_bytes() as f64 / count as f64;
        assert!(per_message <= 8.0, "{per_message:.2} bytes per message");
        let mut expected = FakeLog::default();
        for id in 0..count {
            let (m, left) = q.get(true).expect("a message");
            assert_eq!(
                (m.id, m.position(), left),
                (id, Some(expected.next(60)), (count - id - 1) as u32)
            );
            assert!(m.message.is_none());
        }
        assert_eq!(q.ready_bytes(), 0);
        assert_eq!(removals(&mut q).len(), count as usize);
    }

    #[test]
    fn a_purged_backlog_is_removed_from_the_log_in_batches_each_message_once() {
        let count = 20_000;
        let mut log = FakeLog::default();
        let mut q = recovered(count, &mut log);
        let (got, _) = q.get(false).unwrap();
        assert_eq!(q.purge(), count as u32 - 1);
        let mut ids = vec![];
        q.drain_removed(|batch| {
            assert!(batch.len() <= REMOVAL_BATCH);
            ids.extend(batch.iter().map(|(id, _)| *id));
        });
        assert_eq!(ids, (1..count).collect::<Vec<_>>());
        assert_eq!((q.message_count(), q.ready_bytes()), (0, 0));
        q.ack(&[got.id]);
        assert_eq!(removals(&mut q), [(0, got.position().unwrap())]);
    }

    #[test]
    fn a_message_published_behind_a_paged_tail_is_paged_out_too() {
        let mut log = FakeLog::default();
        let mut q = recovered(1_000, &mut log);
        assert!(q.over_memory_budget(), "new messages go to the log");
        let Publish::Accepted(id) =
            q.publish(msg(7), |_, m, _| Ok::<_, ()>(Some(log.next(m.body_size()))))
        else {
            panic!("refused")
        };
        assert_eq!(id, 1_000);
        assert_eq!(q.in_memory_bytes, 0);
        let last = std::iter::from_fn(|| q.get(true)).last().unwrap().0;
        assert_eq!((last.id, last.body_size()), (1_000, 1));
        assert!(!q.over_memory_budget());
    }

    proptest::proptest! {
        /// Random publish/get/ack/requeue/purge sequences on a queue with a paged tail, against
        /// a model: order, counts, bytes, and each logged message removed exactly once.
        #[test]
        fn a_paged_queue_matches_a_model(
            restored in 0u64..700,
            ops in proptest::collection::vec(0u8..6, 1..400),
        ) {
            let mut log = FakeLog::default();
            let mut q = recovered(restored, &mut log);
            let mut sizes: HashMap<MessageId, u64> = (0..restored).map(|id| (id, 60)).collect();
            let mut ready: VecDeque<MessageId> = (0..restored).collect();
            let mut unacked: Vec<MessageId> = vec![];
            let mut removed: HashSet<MessageId> = HashSet::new();
            let mut logged: HashSet<MessageId> = (0..restored).collect();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    0 | 1 => {
                        let mut position = None;
                        let Publish::Accepted(id) = q.publish(msg(n as u8), |_, m, _| {
                            // Logged only when the queue pages, as the owner does.
                            let p = (op == 0).then(|| log.next(m.body_size()));
                            position = p;
                            Ok::<_, ()>(p)
                        }) else { panic!("refused") };
                        if position.is_some() { logged.insert(id); }
                        sizes.insert(id, 1);
                        ready.push_back(id);
                    }
                    2 => {
                        let got = q.get(false).map(|(m, left)| (m.id, left));
                        let expected = ready.pop_front().map(|id| (id, ready.len() as u32));
                        proptest::prop_assert_eq!(got, expected);
                        if let Some((id, _)) = got { unacked.push(id); }
                    }
                    3 => if let Some(id) = unacked.pop() { q.ack(&[id]); },
                    4 => if let Some(id) = unacked.pop() {
                        q.requeue(&[id], true);
                        let at = ready.partition_point(|&r| r < id);
                        ready.insert(at, id);
                    },
                    _ => if n % 7 == 0 {
                        proptest::prop_assert_eq!(q.purge(), ready.len() as u32);
                        ready.clear();
                    },
                }
                for (id, _) in removals(&mut q) {
                    proptest::prop_assert!(removed.insert(id), "{} removed twice", id);
                }
                let peeked: Vec<MessageId> = q.peek(usize::MAX).into_iter().map(|(m, _)| m.id).collect();
                proptest::prop_assert_eq!(&peeked, &ready.iter().copied().collect::<Vec<_>>());
                proptest::prop_assert_eq!(q.message_count(), ready.len() as u32);
                proptest::prop_assert_eq!(q.ready_bytes(), ready.iter().map(|id| sizes[id]).sum::<u64>());
            }
            let gone: HashSet<MessageId> = sizes.keys().copied()
                .filter(|id| !ready.contains(id) && !unacked.contains(id))
                .filter(|id| logged.contains(id))
                .collect();
            proptest::prop_assert_eq!(removed, gone);
        }
    }
}
