//! Queues: the handle others hold, the commands they send, and the owner task that is the only
//! place a queue's state changes (one owner per queue, as in RabbitMQ).

mod paged;
mod ready;
mod state;

pub use state::{
    Delivery, Lifetimes, MessageId, Overflow, Publish, QueueLimits, QueueState, QueuedMessage,
    StoredMessage, IN_MEMORY_BUDGET_BYTES,
};

use std::sync::{Arc, Weak};

use amqp::{FieldTable, ShortStr};
use bytes::Bytes;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use store::{Payload, QueueLog, Recovered, RecoveredMessage};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::confirm::ConfirmToken;
use crate::consumer::{ConnectionEvent, Consumer, DeliveryEvent};
use crate::dead_letter::{self, DeadLetterTarget, DeathReason};
use crate::durability::Durability;
use crate::error::{AmqpException, AmqpResult};
use crate::message::{Annotations, Message};
use crate::policies::Policy;
use crate::vhost::VHost;

pub type QueueRef = Arc<QueueHandle>;

/// A queue's properties as declared; fixed for its lifetime.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueConfig {
    pub durable: bool,
    /// The connection that declared an exclusive queue.
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    /// As declared: what a redeclaration is compared with and definitions keep (a policy
    /// changes the queue's `QueueSettings`, never these).
    pub arguments: FieldTable,
    /// `x-max-priority`, read from `arguments` once (no policy sets it).
    pub max_priority: Option<u8>,
    /// `x-single-active-consumer`, read from `arguments` once (no policy sets it).
    pub single_active_consumer: bool,
}

/// What a queue's arguments, merged with the policy that applies to it, make of it. Changes
/// when that policy does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueSettings {
    pub limits: QueueLimits,
    pub lifetimes: Lifetimes,
    /// Where dead messages go (`x-dead-letter-exchange`); without, they are dropped.
    pub dead_letter: Option<DeadLetterTarget>,
}

/// The policy that applies to a queue and the settings it makes of the queue's arguments.
#[derive(Debug)]
struct Effective {
    policy: Option<Arc<Policy>>,
    settings: QueueSettings,
}

/// What everyone but the owner task holds: the queue's name and properties, and its inbox.
#[derive(Debug)]
pub struct QueueHandle {
    pub name: ShortStr,
    pub config: QueueConfig,
    /// Whether persistent messages are written to a log (a durable, non-exclusive queue of
    /// a broker with a data directory): their confirms then wait for the fsync.
    pub logged: bool,
    effective: RwLock<Effective>,
    /// `QueueLimits::may_reject` of the effective settings, read on every publish.
    may_reject: AtomicBool,
    /// Publishes and the commands that must see every publish before them (get, stats,
    /// purge, delete, shutdown), in order.
    ordered: mpsc::UnboundedSender<QueueCommand>,
    /// Acks, requeues, consumer changes: served before waiting publishes, so a busy queue's
    /// consumers are never starved of their own acks.
    control: mpsc::UnboundedSender<QueueCommand>,
    /// Flow control: publishes sent but not yet taken in by the owner.
    backlog: AtomicUsize,
    /// Signalled when `backlog` falls back below `BACKLOG_LOW`.
    drained: Notify,
}

/// Publishes a queue may have waiting before publishers are held back (RabbitMQ's credit
/// flow does the same: a fast publisher cannot bury a queue's acks or its memory).
pub const BACKLOG_HIGH: usize = 20_000;
const BACKLOG_LOW: usize = BACKLOG_HIGH / 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    pub message_count: u32,
    pub consumer_count: u32,
    pub unacked_count: u32,
    pub totals: MessageTotals,
}

/// What went through a queue since it started (RabbitMQ's queue `message_stats` counts), for
/// the management API to turn into rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageTotals {
    /// Messages the queue took in.
    pub publish: u64,
    /// Messages handed to consumers or to basic.get.
    pub deliver_get: u64,
    /// Of those, the ones delivered again (redelivered flag set).
    pub redeliver: u64,
    /// Deliveries acknowledged by their consumers.
    pub ack: u64,
}

/// A published message and, when its publisher waits for this queue, the token to answer.
pub type Published = (Arc<Message>, Option<ConfirmToken>);

pub enum QueueCommand {
    Publish {
        message: Arc<Message>,
        /// Present when the publisher waits for this queue's answer (confirm mode and the
        /// queue may refuse the message).
        confirm: Option<ConfirmToken>,
    },
    /// The publishes a connection read in one go, in order: one command for many.
    Publishes(Vec<Published>),
    Consume {
        consumer: Consumer,
        reply: oneshot::Sender<AmqpResult<()>>,
    },
    Cancel {
        connection_id: u64,
        channel_id: u16,
        consumer_tag: ShortStr,
    },
    Get {
        no_ack: bool,
        reply: oneshot::Sender<Option<(QueuedMessage, u32)>>,
    },
    Ack(Vec<MessageId>),
    Requeue {
        ids: Vec<MessageId>,
        redelivered: bool,
    },
    /// Rejected without requeue: the messages die (`rejected`).
    Discard(Vec<MessageId>),
    /// The queue's effective settings changed (a policy came, changed or went).
    Reconfigure(QueueSettings),
    /// The first ready messages, left in place (`QueueHandle::peek`).
    Peek {
        count: usize,
        reply: oneshot::Sender<Vec<QueuedMessage>>,
    },
    /// The queue was declared again: it counts as used (`x-expires`).
    Touch,
    /// Some consumer's channel got credit back; try delivering again.
    CreditAvailable,
    Stats(oneshot::Sender<QueueStats>),
    Purge(oneshot::Sender<u32>),
    Delete {
        if_unused: bool,
        if_empty: bool,
        reply: oneshot::Sender<AmqpResult<u32>>,
    },
    /// The broker is stopping: close the log cleanly and stop.
    Shutdown(oneshot::Sender<()>),
}

impl QueueCommand {
    /// How many messages the command publishes.
    fn publishes(&self) -> usize {
        match self {
            QueueCommand::Publish { .. } => 1,
            QueueCommand::Publishes(batch) => batch.len(),
            _ => 0,
        }
    }
}

impl std::fmt::Debug for QueueCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueCommand")
    }
}

impl QueueHandle {
    /// Starts the owner task of a new queue and returns its handle. With `durability`, a
    /// durable non-exclusive queue keeps its persistent messages in a log, recovering what
    /// the log already holds before it serves any command.
    /// `settings` are what its arguments merged with `policy` make of it.
    pub fn spawn(
        name: ShortStr,
        config: QueueConfig,
        settings: QueueSettings,
        policy: Option<Arc<Policy>>,
        vhost: Weak<VHost>,
        durability: Option<Arc<Durability>>,
    ) -> QueueRef {
        let (ordered, ordered_inbox) = mpsc::unbounded_channel();
        let (control, control_inbox) = mpsc::unbounded_channel();
        let durable_log =
            durability.is_some() && config.durable && config.exclusive_owner.is_none();
        let mut state = QueueState::with_limits(settings.limits).with_lifetimes(settings.lifetimes);
        if settings.dead_letter.is_some() {
            state = state.with_dead_lettering();
        }
        if let Some(max_priority) = config.max_priority {
            state = state.with_max_priority(max_priority);
        }
        if config.single_active_consumer {
            state = state.with_single_active_consumer();
        }
        let dead_letter = settings.dead_letter.clone();
        let handle = Arc::new(QueueHandle {
            name,
            logged: durable_log,
            config,
            may_reject: AtomicBool::new(settings.limits.may_reject()),
            effective: RwLock::new(Effective { policy, settings }),
            ordered,
            control,
            backlog: AtomicUsize::new(0),
            drained: Notify::new(),
        });
        let task = QueueTask {
            state,
            dead_letter,
            handle: Arc::downgrade(&handle),
            vhost,
            durability,
            log: None,
            log_is_durable: false,
            awaiting_commit: Vec::new(),
            log_dirty: false,
            outgoing: Vec::new(),
            totals: MessageTotals::default(),
        };
        let vhost_name = task.vhost_name();
        let queue_name = handle.name.to_string();
        tokio::spawn(async move {
            let mut task = task;
            if durable_log {
                task.open_log(&vhost_name, &queue_name).await;
            }
            task.run(ordered_inbox, control_inbox).await
        });
        handle
    }

    /// Whether this queue must answer before a publish of `message` is confirmed.
    pub fn confirms_wait_for(&self, message: &Message) -> bool {
        self.may_reject.load(Ordering::Acquire) || (self.logged && message.persistent)
    }

    /// queue.declare found the queue: it counts as used (`x-expires` starts over).
    pub fn declared_again(&self) {
        if self.settings().lifetimes.queue_expires.is_some() {
            self.send(QueueCommand::Touch);
        }
    }

    /// The queue's effective settings: its arguments merged with its policy.
    pub fn settings(&self) -> QueueSettings {
        self.effective.read().settings.clone()
    }

    /// The policy that applies to the queue (RabbitMQ's `policy` and
    /// `effective_policy_definition`), if any.
    pub fn policy(&self) -> Option<Arc<Policy>> {
        self.effective.read().policy.clone()
    }

    /// Whether `policy` is the one that applies now (the same policy, not an equal one).
    pub(crate) fn has_policy(&self, policy: Option<&Arc<Policy>>) -> bool {
        match (&self.effective.read().policy, policy) {
            (Some(current), Some(policy)) => Arc::ptr_eq(current, policy),
            (current, policy) => current.is_none() && policy.is_none(),
        }
    }

    /// Another policy applies now, making `settings` of the queue's arguments; the owner task
    /// applies them to what the queue holds. Sent under the lock, so that of two changes the
    /// task sees them in the order they were made.
    pub(crate) fn set_policy(&self, policy: Option<Arc<Policy>>, settings: QueueSettings) {
        let mut effective = self.effective.write();
        effective.policy = policy;
        if effective.settings != settings {
            self.may_reject
                .store(settings.limits.may_reject(), Ordering::Release);
            effective.settings = settings.clone();
            self.send(QueueCommand::Reconfigure(settings));
        }
    }

    /// Whether publishers should wait before sending more (see `BACKLOG_HIGH`).
    pub fn is_congested(&self) -> bool {
        self.backlog.load(Ordering::Acquire) >= BACKLOG_HIGH
    }

    /// Waits until the queue has taken in enough of its waiting publishes.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.backlog.load(Ordering::Acquire) < BACKLOG_LOW {
                return;
            }
            notified.await;
        }
    }

    fn took_in(&self, publishes: usize) {
        if publishes == 0 {
            return;
        }
        let before = self.backlog.fetch_sub(publishes, Ordering::AcqRel);
        if before >= BACKLOG_LOW && before - publishes < BACKLOG_LOW {
            self.drained.notify_waiters();
        }
    }

    /// Stops the queue at broker shutdown, its log closed cleanly.
    pub async fn shutdown(&self) {
        let _ = self.request(QueueCommand::Shutdown).await;
    }

    /// Sends a command; a queue that is gone silently drops it, like a deleted RabbitMQ queue.
    pub fn send(&self, command: QueueCommand) {
        let inbox = match command {
            QueueCommand::Publish { .. } | QueueCommand::Publishes(_) => {
                self.backlog
                    .fetch_add(command.publishes(), Ordering::AcqRel);
                &self.ordered
            }
            QueueCommand::Get { .. }
            | QueueCommand::Peek { .. }
            | QueueCommand::Touch
            | QueueCommand::Stats(_)
            | QueueCommand::Purge(_)
            | QueueCommand::Delete { .. }
            | QueueCommand::Shutdown(_) => &self.ordered,
            QueueCommand::Consume { .. }
            | QueueCommand::Cancel { .. }
            | QueueCommand::Ack(_)
            | QueueCommand::Requeue { .. }
            | QueueCommand::Discard(_)
            | QueueCommand::Reconfigure(_)
            | QueueCommand::CreditAvailable => &self.control,
        };
        let _ = inbox.send(command);
    }

    pub fn is_exclusive(&self) -> bool {
        self.config.exclusive_owner.is_some()
    }

    /// Whether the queue outlives a restart: durable and not exclusive (RabbitMQ deletes
    /// exclusive queues with their connection, so never recovers them).
    pub fn is_persistent_definition(&self) -> bool {
        self.config.durable && self.config.exclusive_owner.is_none()
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> QueueCommand,
    ) -> AmqpResult<T> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx));
        rx.await.map_err(|_| self.gone())
    }

    fn gone(&self) -> AmqpException {
        AmqpException::not_found(format!("queue '{}' was deleted", self.name))
    }

    pub async fn stats(&self) -> AmqpResult<QueueStats> {
        self.request(QueueCommand::Stats).await
    }

    pub async fn purge(&self) -> AmqpResult<u32> {
        self.request(QueueCommand::Purge).await
    }

    pub async fn get(&self, no_ack: bool) -> AmqpResult<Option<(QueuedMessage, u32)>> {
        self.request(|reply| QueueCommand::Get { no_ack, reply })
            .await
    }

    /// The first `count` ready messages in the order they would be delivered, as a consumer
    /// would get them (properties, redelivered flag), left where they are: nothing is marked
    /// delivered, no count changes, the queue does not count as used. Paged-out messages are
    /// read from the log.
    pub async fn peek(&self, count: usize) -> AmqpResult<Vec<QueuedMessage>> {
        self.request(|reply| QueueCommand::Peek { count, reply })
            .await
    }

    pub async fn consume(&self, consumer: Consumer) -> AmqpResult<()> {
        self.request(|reply| QueueCommand::Consume { consumer, reply })
            .await?
    }

    pub async fn delete(&self, if_unused: bool, if_empty: bool) -> AmqpResult<u32> {
        self.request(|reply| QueueCommand::Delete {
            if_unused,
            if_empty,
            reply,
        })
        .await?
    }
}

struct QueueTask {
    state: QueueState,
    /// The effective dead-letter target (`QueueSettings::dead_letter`).
    dead_letter: Option<DeadLetterTarget>,
    handle: Weak<QueueHandle>,
    vhost: Weak<VHost>,
    durability: Option<Arc<Durability>>,
    /// The durable log of a durable queue, or a paging log (deleted with the queue) that a
    /// queue opens when its messages no longer fit its memory budget.
    log: Option<QueueLog>,
    log_is_durable: bool,
    /// Confirms of persistent publishes appended in this batch: answered after the fsync.
    awaiting_commit: Vec<ConfirmToken>,
    /// Appends or acks since the last flush: written to the OS at the end of the batch, so a
    /// process kill loses nothing that was taken in.
    log_dirty: bool,
    /// Deliveries of a batch, sent only after their delivered marks are written.
    outgoing: Vec<(crate::consumer::ConnectionSink, ConnectionEvent)>,
    totals: MessageTotals,
}

enum Flow {
    Continue,
    Stop,
}

/// Why the owner task ends.
enum Stop {
    Deleted,
    Shutdown(oneshot::Sender<()>),
}

const COMMAND_BATCH: usize = 256;
/// Ready messages beyond which a queue with consumers counts them as falling behind.
const CONSUMERS_BEHIND_READY: u32 = 50_000;
/// Ready body bytes beyond which a queue with consumers counts them as falling behind: well
/// under `IN_MEMORY_BUDGET_BYTES`, so that a queue whose consumers are merely slower than its
/// publishers holds them back before it pages messages out to its log.
const CONSUMERS_BEHIND_READY_BYTES: u64 = 8 * 1024 * 1024;
/// The most a falling-behind queue may take in at once on deliveries earned earlier.
const MAX_EARNED_INTAKE: i64 = 4 * COMMAND_BATCH as i64;
/// How often a queue whose consumers stalled still takes in a batch of ordered commands.
const STALLED_INTAKE_PERIOD: std::time::Duration = std::time::Duration::from_millis(10);

/// The parts a message is logged as; recovery reads them back in this order. The
/// annotations part is there only for messages that have annotations.
const PART_EXCHANGE: usize = 0;
const PART_ROUTING_KEY: usize = 1;
const PART_PROPERTIES: usize = 2;
const PART_BODY: usize = 3;
const PART_ANNOTATIONS: usize = 4;

fn message_from_payload(payload: &Payload) -> Option<Message> {
    let part = |i| payload.part(i);
    let annotations = match part(PART_ANNOTATIONS) {
        Some(bytes) => Some(Box::new(Annotations::decode(&bytes)?)),
        None => None,
    };
    Some(Message {
        exchange: ShortStr::from_bytes(part(PART_EXCHANGE)?).ok()?,
        routing_key: ShortStr::from_bytes(part(PART_ROUTING_KEY)?).ok()?,
        properties: part(PART_PROPERTIES)?,
        body: part(PART_BODY).unwrap_or_else(Bytes::new),
        persistent: payload.persistent(),
        annotations,
    })
}

/// A message as handed out after `returns` returns: from the first redelivery on, with an
/// `x-delivery-count` header as RabbitMQ's quorum queues set it.
fn with_delivery_count(message: Arc<Message>, returns: u64) -> Arc<Message> {
    if returns == 0 {
        return message;
    }
    match message.with_delivery_count(returns) {
        Some(counted) => Arc::new(counted),
        None => message,
    }
}

/// `QueueLog::open` for a priority queue: the messages recovered, in the order they were
/// appended, with each one's `priority` property read from its logged properties (so a
/// recovered message goes back to its level; the store does not know priorities).
fn open_reading_priorities(
    storage: Arc<dyn store::Storage>,
    dir: std::path::PathBuf,
    syncer: store::SyncerHandle,
    config: store::LogConfig,
) -> Result<(QueueLog, Recovered, Vec<u8>), store::StoreError> {
    let mut visited = Vec::new();
    let (log, mut recovered) =
        QueueLog::open_visiting(storage, dir, syncer, config, |m, payload| {
            let priority = payload
                .part(PART_PROPERTIES)
                .and_then(|properties| crate::message::priority(&properties))
                .unwrap_or(0);
            visited.push((m, priority));
        })?;
    visited.sort_by_key(|(m, _)| m.id);
    let (messages, priorities) = visited.into_iter().unzip();
    recovered.messages = messages;
    Ok((log, recovered, priorities))
}

/// A logged expiry is wall-clock time (milliseconds since the Unix epoch): the queue's clock
/// does not outlive the process. These two convert between them.
fn wall_clock_ms(at: Instant, now: Instant) -> u64 {
    let wall_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let wall = if at >= now {
        wall_now.saturating_add(at - now)
    } else {
        wall_now.saturating_sub(now - at)
    };
    u64::try_from(wall.as_millis()).unwrap_or(u64::MAX)
}

/// The queue's clock and the wall clock read at one moment, to map many logged expiries onto
/// the queue's clock however long the mapping takes.
#[derive(Clone, Copy)]
struct WallClock {
    now: Instant,
    wall_now: std::time::Duration,
}

impl WallClock {
    fn now(now: Instant) -> WallClock {
        let wall_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        WallClock { now, wall_now }
    }

    fn instant_of(&self, ms: u64) -> Instant {
        let (now, wall_now) = (self.now, self.wall_now);
        let at = std::time::Duration::from_millis(ms);
        if at >= wall_now {
            now.checked_add(at - wall_now).unwrap_or(now)
        } else {
            now.checked_sub(wall_now - at).unwrap_or(now)
        }
    }
}

impl QueueTask {
    /// Opens (and recovers) the queue's durable log. A log that cannot be opened leaves the
    /// queue running in memory, loudly: losing one queue's durability beats losing the broker.
    async fn open_log(&mut self, vhost: &str, queue: &str) {
        let Some(durability) = self.durability.clone() else {
            return;
        };
        let storage = durability.storage.clone();
        let dir = durability.queue_dir(vhost, queue);
        let syncer = durability.syncer();
        let config = durability.log_config.clone();
        let with_priorities = self.state.has_priorities();
        // Recovery puts the messages straight into the queue, in their compact form, on the
        // blocking thread: no list of every recovered message is ever held. Logged expiries
        // are mapped onto the clock as it is now.
        let stand_in = self.state.emptied();
        let mut state = std::mem::replace(&mut self.state, stand_in);
        let clock = WallClock::now(Instant::now());
        let opened = tokio::task::spawn_blocking(move || {
            state.set_now(clock.now);
            let mut restore = |m: &RecoveredMessage, priority: u8| {
                // The body size is not read back at startup: the record length stands in for
                // it (it only feeds x-max-length-bytes), and the message stays paged out until
                // it is delivered.
                let size = u64::from(m.position.len());
                let expiry = m.expires_at.map(|ms| clock.instant_of(ms));
                state.restore(
                    StoredMessage::paged(m.id, m.position, size, m.redelivered),
                    expiry,
                    priority,
                );
            };
            let opened = if with_priorities {
                open_reading_priorities(storage, dir, syncer, config).map(
                    |(log, recovered, priorities)| {
                        for (m, priority) in recovered.messages.iter().zip(priorities) {
                            restore(m, priority);
                        }
                        (log, recovered.next_id)
                    },
                )
            } else {
                QueueLog::open_each(storage, dir, syncer, config, |m| restore(&m, 0))
                    .map(|(log, recovered)| (log, recovered.next_id))
            };
            (state, opened)
        })
        .await;
        match opened {
            Ok((state, Ok((log, next_id)))) => {
                self.state = state;
                self.state.set_now(Instant::now());
                self.state.reserve_ids_below(next_id);
                let count = self.state.message_count();
                if count > 0 {
                    tracing::info!(vhost, queue, messages = count, "recovered queue");
                }
                self.log = Some(log);
                self.log_is_durable = true;
            }
            Ok((_, Err(error))) => {
                tracing::error!(vhost, queue, %error, "cannot open the queue's log; it is not durable now")
            }
            Err(error) => tracing::error!(vhost, queue, %error, "log recovery task failed"),
        }
    }

    /// Opens a log for paging out transient messages of a queue that has none. Its directory
    /// is thrown away with the queue, and at every start.
    async fn open_paging_log(&mut self) {
        let Some(durability) = self.durability.clone() else {
            return;
        };
        let storage = durability.storage.clone();
        let dir = durability.paging_dir();
        let syncer = durability.syncer();
        let config = durability.log_config.clone();
        let opened =
            tokio::task::spawn_blocking(move || QueueLog::open(storage, dir, syncer, config)).await;
        match opened {
            Ok(Ok((log, _))) => self.log = Some(log),
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot open a paging log; the queue stays in memory")
            }
            Err(error) => tracing::error!(%error, "paging log task failed"),
        }
    }

    /// The message itself: in memory, or read back from the log. A message the log cannot
    /// give back (damaged since it was written) is dropped, loudly.
    fn load(&mut self, stored: &StoredMessage) -> Option<QueuedMessage> {
        Self::load_from(&mut self.log, stored)
    }

    fn load_from(log: &mut Option<QueueLog>, stored: &StoredMessage) -> Option<QueuedMessage> {
        if let Some(message) = &stored.message {
            return Some(stored.loaded(message.clone()));
        }
        let position = stored.position()?;
        let log = log.as_mut()?;
        let loaded = log
            .read(position)
            .ok()
            .and_then(|payload| message_from_payload(&payload));
        match loaded {
            Some(message) => Some(stored.loaded(Arc::new(message))),
            None => {
                tracing::error!(
                    id = stored.id,
                    "a paged-out message cannot be read back; dropping it"
                );
                None
            }
        }
    }

    async fn run(
        mut self,
        mut ordered: mpsc::UnboundedReceiver<QueueCommand>,
        mut control: mpsc::UnboundedReceiver<QueueCommand>,
    ) {
        let mut batch = Vec::with_capacity(COMMAND_BATCH);
        // Ordered commands (mostly publishes) the queue may take in while its consumers are
        // behind: earned by deliveries, so intake follows consumption (see `behind`).
        // May go below zero: a batch of publishes is taken whole, and the debt is paid off by
        // later deliveries.
        let mut allowance: i64 = 0;
        loop {
            let behind = self.consumers_behind();
            allowance = if behind {
                allowance.min(MAX_EARNED_INTAKE)
            } else {
                i64::MAX
            };
            // A trickle, so that a get or a delete behind the waiting publishes of a queue
            // whose consumers stalled is still served.
            let trickle_at = (allowance <= 0).then(|| Instant::now() + STALLED_INTAKE_PERIOD);
            // The head message's expiry, or the unused queue's.
            let deadline = self.state.next_deadline();
            let wake_at = match (trickle_at, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timer = tokio::time::sleep_until(wake_at.unwrap_or_else(Instant::now));
            tokio::select! {
                biased;
                Some(command) = control.recv() => batch.push(command),
                Some(command) = ordered.recv(), if allowance > 0 => {
                    allowance = allowance.saturating_sub(command.publishes().max(1) as i64);
                    batch.push(command);
                }
                _ = timer, if wake_at.is_some() => {
                    if trickle_at.is_some_and(|at| at <= Instant::now()) {
                        allowance = COMMAND_BATCH as i64;
                    }
                }
                else => return,
            }
            self.state.set_now(Instant::now());
            // Before any command looks: what expired meanwhile is gone (counts included).
            self.state.expire();
            if control.is_closed() && ordered.is_closed() {
                return;
            }
            while batch.len() < COMMAND_BATCH {
                match control.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let mut taken = 0;
            while (taken as i64) < (2 * COMMAND_BATCH as i64).min(allowance) {
                match ordered.try_recv() {
                    Ok(command) => {
                        taken += command.publishes().max(1);
                        batch.push(command);
                    }
                    Err(_) => break,
                }
            }
            allowance = allowance.saturating_sub(taken as i64);
            let publishes = batch.iter().map(QueueCommand::publishes).sum();
            let mut stop = None;
            for command in batch.drain(..) {
                if let QueueCommand::Shutdown(reply) = command {
                    stop = Some(Stop::Shutdown(reply));
                    break;
                }
                if let Flow::Stop = self.handle_command(command) {
                    stop = Some(Stop::Deleted);
                    break;
                }
            }
            batch.clear();
            if let Some(handle) = self.handle.upgrade() {
                handle.took_in(publishes);
            }
            if stop.is_none() {
                self.state.expire();
                if self.state.is_unused_too_long() {
                    self.unregister();
                    stop = Some(Stop::Deleted);
                }
            }
            self.dead_letter_pending();
            self.record_removals();
            if stop.is_none() {
                let delivered = self.deliver_ready();
                if behind {
                    allowance = allowance.saturating_add(delivered as i64);
                }
                // Expired heads found while delivering; their removal is logged next batch.
                self.dead_letter_pending();
            }
            self.end_batch();
            if stop.is_none() && self.log.is_none() && self.state.over_memory_budget() {
                self.open_paging_log().await;
            }
            if stop.is_some() {
                if let Some(handle) = self.handle.upgrade() {
                    // Nothing will take these in now: let held-back publishers go.
                    handle.backlog.store(0, Ordering::Release);
                    handle.drained.notify_waiters();
                }
            }
            match stop {
                None => {}
                Some(Stop::Deleted) => {
                    self.cancel_all_consumers();
                    if let Some(log) = self.log.take() {
                        let _ = tokio::task::spawn_blocking(move || log.destroy()).await;
                    }
                    return;
                }
                Some(Stop::Shutdown(reply)) => {
                    if let Some(log) = self.log.take() {
                        let durable = self.log_is_durable;
                        let _ = tokio::task::spawn_blocking(move || {
                            if durable {
                                log.close()
                            } else {
                                log.destroy()
                            }
                        })
                        .await;
                    }
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    fn handle_command(&mut self, command: QueueCommand) -> Flow {
        match command {
            QueueCommand::Publish { message, confirm } => self.publish(message, confirm),
            QueueCommand::Publishes(batch) => {
                for (message, confirm) in batch {
                    self.publish(message, confirm);
                }
            }
            QueueCommand::Consume { consumer, reply } => {
                let result = self.check_consume(&consumer);
                if result.is_ok() {
                    self.state.add_consumer(consumer);
                }
                let _ = reply.send(result);
            }
            QueueCommand::Cancel {
                connection_id,
                channel_id,
                consumer_tag,
            } => {
                self.state
                    .remove_consumer(connection_id, channel_id, &consumer_tag);
                if self.should_auto_delete() {
                    self.unregister();
                    return Flow::Stop;
                }
            }
            QueueCommand::Get { no_ack, reply } => {
                let got = self.state.get(no_ack);
                let loaded = got.and_then(|(stored, remaining)| {
                    if !no_ack {
                        self.mark_delivered(&stored);
                    }
                    let returns = self.state.returns_of(stored.id);
                    let message = self.load(&stored);
                    if message.is_none() {
                        self.state.ack(&[stored.id]);
                    }
                    message.map(|mut m| {
                        m.message = with_delivery_count(m.message, returns);
                        (m, remaining)
                    })
                });
                if let Some((got, _)) = &loaded {
                    self.totals.deliver_get += 1;
                    self.totals.redeliver += u64::from(got.redelivered);
                }
                let _ = reply.send(loaded);
            }
            QueueCommand::Ack(ids) => {
                self.totals.ack += ids.len() as u64;
                self.state.ack(&ids);
            }
            QueueCommand::Discard(ids) => self.state.reject(&ids),
            QueueCommand::Reconfigure(settings) => {
                self.state.reconfigure(
                    settings.limits,
                    settings.lifetimes,
                    settings.dead_letter.is_some(),
                );
                self.dead_letter = settings.dead_letter;
            }
            QueueCommand::Peek { count, reply } => {
                let peeked = self
                    .state
                    .peek(count)
                    .into_iter()
                    .filter_map(|(stored, returns)| {
                        let mut loaded = Self::load_from(&mut self.log, &stored)?;
                        loaded.message = with_delivery_count(loaded.message, returns);
                        Some(loaded)
                    })
                    .collect();
                let _ = reply.send(peeked);
            }
            QueueCommand::Touch => self.state.touch(),
            QueueCommand::Requeue { ids, redelivered } => self.state.requeue(&ids, redelivered),
            QueueCommand::CreditAvailable => {}
            QueueCommand::Stats(reply) => {
                let _ = reply.send(QueueStats {
                    message_count: self.state.message_count(),
                    consumer_count: self.state.consumer_count(),
                    unacked_count: self.state.unacked_count(),
                    totals: self.totals,
                });
            }
            QueueCommand::Purge(reply) => {
                let _ = reply.send(self.state.purge());
            }
            QueueCommand::Shutdown(_) => {}
            QueueCommand::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                let name = self.name();
                if if_unused && self.state.consumer_count() > 0 {
                    let _ = reply.send(Err(AmqpException::precondition_failed(format!(
                        "queue '{name}' in vhost '{}' in use",
                        self.vhost_name()
                    ))));
                } else if if_empty && self.state.message_count() > 0 {
                    let _ = reply.send(Err(AmqpException::precondition_failed(format!(
                        "queue '{name}' in vhost '{}' not empty",
                        self.vhost_name()
                    ))));
                } else {
                    self.unregister();
                    let _ = reply.send(Ok(self.state.message_count()));
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    }

    fn publish(&mut self, message: Arc<Message>, confirm: Option<ConfirmToken>) {
        let log = &mut self.log;
        let durable_log = self.log_is_durable;
        let paging = self.state.over_memory_budget();
        let now = self.state.now();
        let mut fsync_needed = false;
        let mut logged = false;
        // Refused by reject-publish-dlx, it is dead-lettered: keep a reference for that.
        let refusable =
            (self.state.limits().overflow == Overflow::RejectPublishDlx).then(|| message.clone());
        let outcome = self.state.publish(message, |id, message, expiry| {
            let durable = durable_log && message.persistent;
            let Some(log) = log.as_mut().filter(|_| durable || paging) else {
                return Ok(None);
            };
            logged = true;
            fsync_needed = durable;
            let annotations = message.annotations.as_ref().map(|a| a.encode());
            let parts: [&[u8]; 5] = [
                message.exchange.as_bytes(),
                message.routing_key.as_bytes(),
                &message.properties,
                &message.body,
                annotations.as_deref().unwrap_or_default(),
            ];
            let parts = if annotations.is_some() {
                &parts[..]
            } else {
                &parts[..PART_ANNOTATIONS]
            };
            let expires_at = expiry.map(|at| wall_clock_ms(at, now));
            log.append_expiring(id, durable, expires_at, parts)
                .map(Some)
                .map_err(|error| {
                    tracing::error!(%error, "cannot log a message; refusing it");
                })
        });
        if let (Publish::Rejected, Some(message)) = (outcome, refusable) {
            self.dead_letter(&message, DeathReason::MaxLen);
        }
        if let Publish::Accepted(_) = outcome {
            self.totals.publish += 1;
        }
        match (outcome, confirm) {
            (Publish::Rejected | Publish::NotStored, Some(token)) => token.reject(),
            (Publish::Accepted(_), Some(token)) if fsync_needed => self.awaiting_commit.push(token),
            _ => {}
        }
        self.log_dirty |= logged;
    }

    /// Dead-letters a message to the queue's dead-letter exchange, if it has one.
    fn dead_letter(&self, message: &Message, reason: DeathReason) {
        let Some(target) = &self.dead_letter else {
            return;
        };
        let (Some(handle), Some(vhost)) = (self.handle.upgrade(), self.vhost.upgrade()) else {
            return;
        };
        dead_letter::publish(&vhost, message, reason, &handle.name, target);
    }

    /// Dead-letters the messages that died since the last call, reading back those paged out
    /// (before their removal reaches the log), then lets them go.
    fn dead_letter_pending(&mut self) {
        if !self.state.has_dead() {
            return;
        }
        for (stored, reason) in self.state.take_dead() {
            if let Some(loaded) = Self::load_from(&mut self.log, &stored) {
                self.dead_letter(&loaded.message, reason);
            }
            self.state.discard(stored);
        }
    }

    /// Notes in the log that a message went to a client (basic.get), written to the OS before
    /// the reply leaves, so that a crash brings it back as redelivered.
    fn mark_delivered(&mut self, message: &StoredMessage) {
        if let (Some(log), Some(position)) = (&mut self.log, message.position()) {
            if !message.redelivered() && log.mark_delivered(message.id, position).is_ok() {
                let _ = log.flush();
            }
        }
    }

    /// Records in the log the removal of logged messages (acks, discards, purges, drops).
    fn record_removals(&mut self) {
        if !self.state.has_removed() {
            return;
        }
        let log = &mut self.log;
        let mut failed = None;
        self.state.drain_removed(|removed| {
            if let Some(log) = log.as_mut() {
                if let Err(error) = log.ack(removed) {
                    failed.get_or_insert(error);
                }
            }
        });
        if let Some(error) = failed {
            tracing::error!(%error, "cannot log acknowledgements");
        }
        self.log_dirty |= self.log.is_some();
    }

    /// Makes the batch's log writes safe: an fsync for confirms waiting on it (group commit
    /// shared with every other queue), else a plain write to the OS.
    fn end_batch(&mut self) {
        let Some(log) = &mut self.log else {
            self.awaiting_commit.clear();
            return;
        };
        if !self.awaiting_commit.is_empty() {
            let tokens = std::mem::take(&mut self.awaiting_commit);
            log.commit_then(move |result| {
                if let Err(error) = result {
                    tracing::error!(%error, "fsync failed; nacking the publishes that waited on it");
                    tokens.into_iter().for_each(ConfirmToken::reject);
                }
            });
        } else if self.log_dirty {
            if let Err(error) = log.flush() {
                tracing::error!(%error, "cannot write the queue's log");
            }
        }
        self.log_dirty = false;
    }

    fn check_consume(&self, consumer: &Consumer) -> AmqpResult<()> {
        // RabbitMQ refuses an exclusive consumer on a single-active-consumer queue outright.
        let exclusive_refused = consumer.exclusive
            && (self.state.consumer_count() > 0 || self.state.is_single_active_consumer());
        if self.state.has_exclusive_consumer() || exclusive_refused {
            return Err(AmqpException::access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name(),
                self.vhost_name()
            )));
        }
        Ok(())
    }

    fn should_auto_delete(&self) -> bool {
        let auto_delete = self.handle.upgrade().is_some_and(|h| h.config.auto_delete);
        auto_delete && self.state.had_consumers() && self.state.consumer_count() == 0
    }

    /// Hands ready messages to consumers with credit. Logged messages are marked delivered
    /// (so that a crash brings them back as redelivered) before any of them is sent.
    /// Whether the queue's consumers fall behind its publishers. Such a queue takes publishes
    /// in only as fast as it delivers, so its backlog of waiting publishes grows and holds the
    /// publishers back (flow control, like RabbitMQ's credit flow) instead of the queue growing
    /// without end while its consumers starve for CPU.
    fn consumers_behind(&self) -> bool {
        self.state.consumer_count() > 0
            && (self.state.message_count() > CONSUMERS_BEHIND_READY
                || self.state.ready_bytes() > CONSUMERS_BEHIND_READY_BYTES)
    }

    /// Returns how many messages went out.
    fn deliver_ready(&mut self) -> usize {
        let queue = self.handle.upgrade();
        let mut marked = false;
        let mut unreadable = Vec::new();
        while let Some(delivery) = self.state.next_delivery() {
            let consumer = delivery.consumer;
            let stored = delivery.message;
            if !consumer.no_ack && !stored.redelivered() {
                if let (Some(log), Some(position)) = (&mut self.log, stored.position()) {
                    marked |= log.mark_delivered(stored.id, position).is_ok();
                }
            }
            let source = match (&queue, consumer.no_ack) {
                (Some(q), false) => Some((q.clone(), stored.id)),
                _ => None,
            };
            let sink = consumer.sink.clone();
            let credit = consumer.credit.clone();
            let (channel_id, consumer_tag) = (consumer.channel_id, consumer.consumer_tag.clone());
            let Some(message) = Self::load_from(&mut self.log, &stored) else {
                consumer.release_credit();
                unreadable.push(stored.id);
                continue;
            };
            self.totals.redeliver += u64::from(message.redelivered);
            let event = ConnectionEvent::Deliver(DeliveryEvent {
                channel_id,
                consumer_tag,
                message: with_delivery_count(message.message, delivery.returns),
                redelivered: message.redelivered,
                source,
                credit: Some(credit),
            });
            self.outgoing.push((sink, event));
        }
        self.state.ack(&unreadable);
        if marked {
            if let Some(log) = &mut self.log {
                let _ = log.flush();
            }
        }
        let sent = self.outgoing.len();
        self.totals.deliver_get += sent as u64;
        for (sink, event) in self.outgoing.drain(..) {
            if let Err(mpsc::error::SendError(lost)) = sink.send(event) {
                Self::lost_delivery(&mut self.state, lost);
            }
        }
        sent
    }

    /// The connection went away before its channel-close could requeue this delivery.
    fn lost_delivery(state: &mut QueueState, lost: ConnectionEvent) {
        let ConnectionEvent::Deliver(delivery) = lost else {
            return;
        };
        let Some(consumer) = state.consumers().iter().find(|c| {
            c.channel_id == delivery.channel_id && c.consumer_tag == delivery.consumer_tag
        }) else {
            return;
        };
        consumer.release_credit();
        let (connection_id, channel_id) = (consumer.connection_id, consumer.channel_id);
        if let Some((_, id)) = delivery.source {
            state.requeue(&[id], false);
        }
        state.remove_consumer(connection_id, channel_id, &delivery.consumer_tag);
    }

    fn cancel_all_consumers(&mut self) {
        for consumer in self.state.take_consumers() {
            let _ = consumer.sink.send(ConnectionEvent::ConsumerCancelled {
                channel_id: consumer.channel_id,
                consumer_tag: consumer.consumer_tag,
            });
        }
    }

    fn unregister(&self) {
        if let (Some(vhost), Some(handle)) = (self.vhost.upgrade(), self.handle.upgrade()) {
            vhost.unregister_queue(&handle);
        }
    }

    fn name(&self) -> String {
        self.handle
            .upgrade()
            .map(|h| h.name.to_string())
            .unwrap_or_default()
    }

    fn vhost_name(&self) -> String {
        self.vhost
            .upgrade()
            .map(|v| v.name().to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn bytes_under(path: &std::path::Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(path) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => bytes_under(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }

    fn message(n: u32, size: usize) -> Arc<Message> {
        let mut body = vec![0u8; size];
        body[..4].copy_from_slice(&n.to_be_bytes());
        Arc::new(Message {
            exchange: ShortStr::default(),
            routing_key: ShortStr::from_static("q"),
            properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from(body),
            persistent: false,
            annotations: None,
        })
    }

    /// A queue far over its memory budget pages transient messages out to a paging log and
    /// still hands every one back, in order, with its body intact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backlog_over_the_memory_budget_is_paged_out_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let durability = Arc::new(Durability::on_disk(dir.path()).unwrap());
        let vhost = VHost::with_durability("/", Some(durability));
        let queue = QueueHandle::spawn(
            ShortStr::from_static("q"),
            QueueConfig::default(),
            QueueSettings::default(),
            None,
            Arc::downgrade(&vhost),
            vhost.durability.clone(),
        );
        let body_size = 1024 * 1024;
        let count = (2 * IN_MEMORY_BUDGET_BYTES / body_size as u64) as u32;
        for n in 0..count {
            queue.send(QueueCommand::Publish {
                message: message(n, body_size),
                confirm: None,
            });
            // One batch per publish, so the paging log opens as soon as the budget is hit.
            queue.stats().await.unwrap();
        }
        let paged = bytes_under(&dir.path().join("paging"));
        assert!(
            paged >= IN_MEMORY_BUDGET_BYTES / 2,
            "only {paged} bytes were paged out"
        );
        for n in 0..count {
            let (got, _) = queue.get(true).await.unwrap().expect("a message");
            assert_eq!(got.message.body.len(), body_size);
            assert_eq!(
                got.message.body[..4],
                n.to_be_bytes(),
                "message {n} in order"
            );
        }
        assert!(queue.get(true).await.unwrap().is_none());
    }
}

#[cfg(test)]
mod flow_control_tests {
    use super::*;
    use crate::consumer::tests::test_consumer;
    use crate::message::Message;

    fn small_message() -> Arc<Message> {
        Arc::new(Message {
            exchange: ShortStr::default(),
            routing_key: ShortStr::from_static("q"),
            properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from_static(b"x"),
            persistent: false,
            annotations: None,
        })
    }

    fn spawn_queue(vhost: &Arc<VHost>) -> QueueRef {
        QueueHandle::spawn(
            ShortStr::from_static("q"),
            QueueConfig::default(),
            QueueSettings::default(),
            None,
            Arc::downgrade(vhost),
            None,
        )
    }

    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// A queue whose consumer does not keep up takes publishes in only as it delivers, so
    /// its waiting publishes pile up and publishers are told to hold back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishers_are_held_back_while_consumers_fall_behind() {
        let vhost = VHost::new("/");
        let queue = spawn_queue(&vhost);
        let (mut stalled, _credit) = test_consumer("stalled", 1, false);
        let (sink, _deliveries) = mpsc::unbounded_channel();
        stalled.sink = sink;
        queue.consume(stalled).await.unwrap();
        let total = CONSUMERS_BEHIND_READY as usize + 2 * BACKLOG_HIGH;
        for _ in 0..total {
            queue.send(QueueCommand::Publish {
                message: small_message(),
                confirm: None,
            });
        }
        let behind_at = total - CONSUMERS_BEHIND_READY as usize;
        eventually("the queue took in enough to fall behind", || {
            queue.backlog.load(Ordering::Acquire) <= behind_at
        })
        .await;
        // An observation window, not synchronisation: without flow control the queue takes
        // the rest in within a few milliseconds; with it, only the trickle gets through.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            queue.is_congested(),
            "publishes still waiting: {}",
            queue.backlog.load(Ordering::Acquire)
        );
    }

    /// Without consumers there is nobody to fall behind: the queue takes everything in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_queue_without_consumers_takes_every_publish_in() {
        let vhost = VHost::new("/");
        let queue = spawn_queue(&vhost);
        let total = CONSUMERS_BEHIND_READY as usize + 2 * BACKLOG_HIGH;
        for _ in 0..total {
            queue.send(QueueCommand::Publish {
                message: small_message(),
                confirm: None,
            });
        }
        let stats = queue.stats().await.unwrap();
        assert_eq!(stats.message_count as usize, total);
        assert!(!queue.is_congested());
    }
}
