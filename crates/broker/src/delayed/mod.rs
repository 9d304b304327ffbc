//! What a delayed-message exchange holds: messages published with a positive `x-delay`, kept
//! in the exchange's own log under the data directory (docs/storage-format.md,
//! "Delayed-message exchanges") and indexed by due time in `schedule`, then routed through the
//! exchange, as its `x-delayed-type`, when their time comes. One owner task per exchange does
//! the timing and routing; routing finds the exchanges that are to hold a message (`Hold`) and
//! the publisher hands it over from its own task. Knows nothing of frames or channels.
//!
//! As RabbitMQ's plugin: a held message is not routed at publish time (a mandatory publish is
//! returned, an alternate exchange gets it), it is routed at its time with `x-delay` turned
//! negative, and nobody is told if it then reaches no queue. The publisher's confirm of a
//! persistent message held by a durable exchange waits, as a queue's does, until the group
//! commit has fsynced it into the log (also while the log is still being opened, when the
//! message waits in memory); one that cannot be logged is nacked. Other held messages are
//! confirmed at once. A held message is removed from the log only once the queues it was
//! routed to have it on disk. Transient ones are logged too, so that memory does not grow with
//! what is held, but never recovered. A clean stop waits for those queues' answers, so it
//! routes nothing twice; after a crash a message may be routed again, never lost.

mod schedule;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqp::{BasicProperties, ShortStr};
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use store::{MessageId, Payload, Position, QueueLog, SpillDir, StoreError};
use tokio::sync::{mpsc, watch, Notify};

use crate::confirm::{ChannelKey, ConfirmToken};
use crate::consumer::{ConnectionEvent, ConnectionSink};
use crate::durability::Durability;
use crate::exchange::swap_delay_header;
use crate::message::{Annotations, Message};
use crate::queue::{QueueCommand, QueueRef};
use crate::vhost::{Exchange, VHost};

use schedule::{Entry, Held, Millis, Schedule};

/// Messages routed per turn of the owner task before it lets others run.
const DELIVERY_BATCH: usize = 256;
/// How long a stopping broker waits for queues to write what was routed to them, so that a
/// clean stop routes nothing twice; what is still unanswered then is routed again at the next
/// start.
const ANSWERS_AT_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Where the log and the spill files go inside the exchange's directory.
const LOG_DIR: &str = "log";
const INDEX_DIR: &str = "index";

/// The parts a held message is logged as; `message_from_payload` reads them back.
const PART_DUE: usize = 0;
const PART_EXCHANGE: usize = 1;
const PART_ROUTING_KEY: usize = 2;
const PART_PROPERTIES: usize = 3;
const PART_BODY: usize = 4;
/// CC and BCC routing keys (`Annotations::encode`); empty when there are none.
const PART_ANNOTATIONS: usize = 5;

/// Wall-clock milliseconds read through tokio's clock, so tests can pause time: the wall
/// clock is read once, and tokio's monotonic clock counts from there.
#[derive(Clone, Copy)]
struct Clock {
    wall_at_start: Millis,
    started: tokio::time::Instant,
}

impl Clock {
    fn new() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as Millis);
        Clock {
            wall_at_start: wall,
            started: tokio::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> Millis {
        self.wall_at_start + self.started.elapsed().as_millis() as Millis
    }

    /// `now_ms` rounded up: a message due `delay` after this comes out no sooner.
    fn now_ms_rounded_up(&self) -> Millis {
        self.wall_at_start + self.started.elapsed().as_micros().div_ceil(1000) as Millis
    }

    fn instant_at(&self, ms: Millis) -> tokio::time::Instant {
        self.started + Duration::from_millis(ms.saturating_sub(self.wall_at_start))
    }
}

/// Where held messages are kept.
enum Keeping {
    /// The log is being opened (and recovered): messages wait here to be appended, with their
    /// publishers' confirms.
    Opening(Vec<(Millis, Arc<Message>, Option<ConfirmToken>)>),
    Log(Box<QueueLog>),
    /// No data directory (or the log failed to open): messages stay in memory.
    Memory,
}

/// Why the owner task stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The broker is stopping: close the log cleanly.
    Close,
    /// The exchange was deleted: its messages and files go.
    Discard,
}

struct State {
    keeping: Keeping,
    schedule: Schedule,
    next_id: MessageId,
    /// Persistent appends that no commit covers yet.
    uncommitted: bool,
    /// Publishers' confirms of those appends, answered once the commit has synced them.
    awaiting_commit: Vec<ConfirmToken>,
    stop: Option<Stop>,
    /// When the owner task looks again on its own; a message due earlier wakes it.
    wakes_at: Millis,
}

struct Shared {
    vhost: Weak<VHost>,
    vhost_name: String,
    exchange: ShortStr,
    /// Whether persistent messages are logged to survive a restart.
    durable: bool,
    durability: Option<Arc<Durability>>,
    clock: Clock,
    state: Mutex<State>,
    wake: Notify,
    started: AtomicBool,
    /// Set once the owner task has finished.
    finished: watch::Sender<bool>,
    held: AtomicU64,
    /// Routed messages still in the log until their queues have them on disk.
    unanswered: AtomicU64,
}

/// The holder of one delayed-message exchange's messages; the exchange owns it.
pub struct DelayedExchange {
    shared: Arc<Shared>,
}

impl DelayedExchange {
    /// A holder for exchange `exchange` of `vhost`; it does nothing until `start`.
    pub fn new(
        vhost: Weak<VHost>,
        vhost_name: &str,
        exchange: &ShortStr,
        durable: bool,
        durability: Option<Arc<Durability>>,
    ) -> DelayedExchange {
        let keeping = if durability.is_some() {
            Keeping::Opening(Vec::new())
        } else {
            Keeping::Memory
        };
        DelayedExchange {
            shared: Arc::new(Shared {
                vhost,
                vhost_name: vhost_name.to_owned(),
                exchange: exchange.clone(),
                durable,
                durability,
                clock: Clock::new(),
                state: Mutex::new(State {
                    keeping,
                    schedule: Schedule::new(None),
                    next_id: 0,
                    uncommitted: false,
                    awaiting_commit: Vec::new(),
                    stop: None,
                    wakes_at: Millis::MAX,
                }),
                wake: Notify::new(),
                started: AtomicBool::new(false),
                finished: watch::channel(false).0,
                held: AtomicU64::new(0),
                unanswered: AtomicU64::new(0),
            }),
        }
    }

    /// Starts the owner task (once): it opens the log, recovering what a durable exchange
    /// held, and routes messages as they fall due. Call it after the exchange's bindings are
    /// in place, or recovered messages already due find no queue.
    pub fn start(&self) {
        if !self.shared.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(run(self.shared.clone()));
        }
    }

    /// What routing found: this exchange is to hold a message for `delay_ms`.
    pub(crate) fn to_hold(&self, delay_ms: u64) -> Hold {
        Hold {
            shared: self.shared.clone(),
            delay_ms,
        }
    }

    /// Messages held now (RabbitMQ's `messages_delayed`).
    pub fn messages_delayed(&self) -> u64 {
        self.shared.held.load(Ordering::Relaxed)
    }

    /// Stops the owner task with the log closed cleanly (the broker is stopping), once the
    /// queues have answered for what it routed: stop it before them.
    pub async fn shutdown(&self) {
        self.stop(Stop::Close);
        if self.shared.started.load(Ordering::Acquire) {
            let mut finished = self.shared.finished.subscribe();
            let _ = finished.wait_for(|done| *done).await;
        }
    }

    /// The exchange was deleted: what it held is dropped and its files removed.
    pub fn discard(&self) {
        self.stop(Stop::Discard);
        if !self.shared.started.swap(true, Ordering::AcqRel) {
            // Never started, so nothing is open; only files of an earlier run may be there.
            tokio::spawn(run(self.shared.clone()));
        }
    }

    fn stop(&self, stop: Stop) {
        let mut state = self.shared.state.lock();
        if state.stop != Some(Stop::Discard) {
            state.stop = Some(stop);
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Routed messages that stay in the log until their queues have written them.
    pub fn unanswered(&self) -> u64 {
        self.shared.unanswered.load(Ordering::Relaxed)
    }

    /// Whether the log is still being opened (held messages wait in memory meanwhile).
    #[cfg(test)]
    fn is_opening(&self) -> bool {
        matches!(self.shared.state.lock().keeping, Keeping::Opening(_))
    }

    fn is(&self, shared: &Arc<Shared>) -> bool {
        Arc::ptr_eq(&self.shared, shared)
    }
}

/// A delayed exchange that routing found is to hold a message: the publisher hands the message
/// over with `hold`, with its confirm token if `confirms_wait_for` says so.
pub struct Hold {
    shared: Arc<Shared>,
    delay_ms: u64,
}

impl Hold {
    /// Whether the publisher's confirm of `message` must wait until the exchange has it on
    /// disk: a persistent message held by a durable exchange of a broker with a data directory.
    pub fn confirms_wait_for(&self, message: &Message) -> bool {
        self.shared.durable && message.persistent && self.shared.durability.is_some()
    }

    /// Keeps `message` until it is due, then routes it through the exchange. `confirm` is
    /// answered once the message is durably logged, or rejected if it cannot be.
    pub fn hold(self, message: &Message, confirm: Option<ConfirmToken>) {
        let shared = &self.shared;
        let due = shared
            .clock
            .now_ms_rounded_up()
            .saturating_add(self.delay_ms);
        let mut state = shared.state.lock();
        if let Some(stop) = state.stop {
            // Dropped: a deleted exchange takes it as a deleted queue does (the confirm is an
            // ack), a stopping broker does not have it.
            if let (Stop::Close, Some(confirm)) = (stop, confirm) {
                confirm.reject();
            }
            return;
        }
        let must_commit = state.hold(message, due, shared.durable, shared.clock.now_ms(), confirm);
        shared.held.fetch_add(1, Ordering::Relaxed);
        let wake = must_commit || due < state.wakes_at;
        drop(state);
        if wake {
            shared.wake.notify_one();
        }
    }
}

impl State {
    /// Returns whether a persistent message now waits for a commit that nobody asked for yet.
    /// `confirm` waits for that commit; it is rejected if the message cannot be logged (the
    /// message is then held in memory only).
    fn hold(
        &mut self,
        message: &Message,
        due: Millis,
        durable: bool,
        now: Millis,
        confirm: Option<ConfirmToken>,
    ) -> bool {
        let log = match &mut self.keeping {
            Keeping::Opening(waiting) => {
                waiting.push((due, Arc::new(message.clone()), confirm));
                return false;
            }
            Keeping::Memory => {
                if let Some(confirm) = confirm {
                    confirm.reject();
                }
                let seq = self.take_id();
                let held = Held::Memory(Arc::new(message.clone()));
                self.schedule.insert(Entry { due, seq, held }, now);
                return false;
            }
            Keeping::Log(log) => log,
        };
        let id = self.next_id;
        let persistent = durable && message.persistent;
        let due_bytes = due.to_le_bytes();
        let annotations = message
            .annotations
            .as_ref()
            .map_or_else(Bytes::new, |a| a.encode());
        let parts: [&[u8]; 6] = [
            &due_bytes,
            message.exchange.as_bytes(),
            message.routing_key.as_bytes(),
            &message.properties,
            &message.body,
            &annotations,
        ];
        // Written out and fsynced by the next commit, which the owner task asks for.
        let appended = log.append(id, persistent, &parts);
        self.next_id += 1;
        match appended {
            Ok(position) => {
                self.schedule.insert(
                    Entry {
                        due,
                        seq: id,
                        held: Held::Logged { id, position },
                    },
                    now,
                );
                if let (true, Some(confirm)) = (persistent, confirm) {
                    self.awaiting_commit.push(confirm);
                }
                let first = persistent && !self.uncommitted;
                self.uncommitted |= persistent;
                first
            }
            Err(error) => {
                tracing::error!(%error, "cannot log a delayed message; it is held in memory only");
                if let Some(confirm) = confirm {
                    confirm.reject();
                }
                let held = Held::Memory(Arc::new(message.clone()));
                self.schedule.insert(Entry { due, seq: id, held }, now);
                false
            }
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The messages of `entries`, read from the log where needed. Unreadable ones are
    /// dropped (loudly) and removed from the log.
    fn load(&mut self, entries: Vec<Entry>) -> Vec<(Entry, Message)> {
        let mut loaded = Vec::with_capacity(entries.len());
        let mut unreadable = Vec::new();
        for entry in entries {
            let message = match &entry.held {
                Held::Memory(message) => Some(Message::clone(message)),
                Held::Logged { id, position } => match &mut self.keeping {
                    Keeping::Log(log) => {
                        let message = log
                            .read(*position)
                            .ok()
                            .and_then(|payload| message_from_payload(&payload));
                        if message.is_none() {
                            unreadable.push((*id, *position));
                        }
                        message
                    }
                    _ => None,
                },
            };
            match message {
                Some(message) => loaded.push((entry, message)),
                None => tracing::error!(
                    seq = entry.seq,
                    "a delayed message cannot be read back; dropping it"
                ),
            }
        }
        self.remove_from_log(&unreadable);
        loaded
    }

    fn remove_from_log(&mut self, removed: &[(MessageId, Position)]) {
        if removed.is_empty() {
            return;
        }
        if let Keeping::Log(log) = &mut self.keeping {
            if let Err(error) = log.ack(removed).and_then(|()| log.flush()) {
                tracing::error!(%error, "cannot record routed delayed messages; they may be routed again after a restart");
            }
        }
    }

    /// Asks the group commit to fsync the persistent messages held since the last call; their
    /// publishers' confirms go once it has (dropping a token accepts), nacks if it failed.
    fn commit(&mut self) {
        if !std::mem::take(&mut self.uncommitted) {
            return;
        }
        let confirms = std::mem::take(&mut self.awaiting_commit);
        if let Keeping::Log(log) = &mut self.keeping {
            log.commit_then(move |result| {
                if let Err(error) = result {
                    tracing::error!(%error, "fsync of delayed messages failed; nacking the publishes that waited on it");
                    confirms.into_iter().for_each(ConfirmToken::reject);
                }
            });
        } else {
            confirms.into_iter().for_each(ConfirmToken::reject);
        }
    }
}

/// Reads back what `State::hold` logged.
fn message_from_payload(payload: &Payload) -> Option<Message> {
    let part = |i| payload.part(i);
    // Persistence comes from the properties, not the log's flag: a transient exchange logs
    // persistent messages as transient.
    let mut message = Message::new(
        ShortStr::from_bytes(part(PART_EXCHANGE)?).ok()?,
        ShortStr::from_bytes(part(PART_ROUTING_KEY)?).ok()?,
        part(PART_PROPERTIES)?,
        part(PART_BODY).unwrap_or_else(Bytes::new),
    );
    let annotations = part(PART_ANNOTATIONS).unwrap_or_else(Bytes::new);
    if !annotations.is_empty() {
        message.annotations = Some(Box::new(Annotations::decode(&annotations)?));
    }
    Some(message)
}

fn due_of(payload: &Payload) -> Option<Millis> {
    let bytes: [u8; 8] = payload.part(PART_DUE)?.as_ref().try_into().ok()?;
    Some(Millis::from_le_bytes(bytes))
}

/// The properties a held message is routed with: `x-delay` turned negative.
fn properties_at_delivery(properties: &Bytes) -> Bytes {
    let Ok(mut decoded) = BasicProperties::decode(properties) else {
        return properties.clone();
    };
    if !swap_delay_header(&mut decoded) {
        return properties.clone();
    }
    let mut encoded = BytesMut::with_capacity(properties.len() + 8);
    decoded.encode(&mut encoded);
    encoded.freeze()
}

impl Shared {
    /// Where a durable exchange keeps its messages, or a fresh paging directory (removed at
    /// every start) for a transient one.
    fn dir(&self, durability: &Durability) -> PathBuf {
        if self.durable {
            durability.delayed_dir(&self.vhost_name, &self.exchange)
        } else {
            durability.paging_dir()
        }
    }

    /// Opens (and recovers) the log, then logs what was held meanwhile.
    async fn open(&self) -> Option<PathBuf> {
        let durability = self.durability.clone()?;
        let dir = self.dir(&durability);
        let storage = durability.storage.clone();
        let syncer = durability.syncer();
        let config = durability.log_config.clone();
        let clock = self.clock;
        let open_dir = dir.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let spill = SpillDir::create(storage.clone(), open_dir.join(INDEX_DIR))?;
            let mut schedule = Schedule::new(Some(spill));
            let mut unreadable = Vec::new();
            let (mut log, recovered) = QueueLog::open_visiting(
                storage,
                open_dir.join(LOG_DIR),
                syncer,
                config,
                |m, payload| match due_of(&payload) {
                    Some(due) => {
                        let held = Held::Logged {
                            id: m.id,
                            position: m.position,
                        };
                        schedule.insert(
                            Entry {
                                due,
                                seq: m.id,
                                held,
                            },
                            clock.now_ms(),
                        );
                    }
                    None => unreadable.push((m.id, m.position)),
                },
            )?;
            log.ack(&unreadable)?;
            Ok::<_, StoreError>((log, schedule, recovered.next_id))
        })
        .await;
        let mut state = self.state.lock();
        let waiting = match std::mem::replace(&mut state.keeping, Keeping::Memory) {
            Keeping::Opening(waiting) => waiting,
            _ => Vec::new(),
        };
        match opened {
            Ok(Ok((log, schedule, next_id))) => {
                let recovered = schedule.len();
                if recovered > 0 {
                    tracing::info!(vhost = %self.vhost_name, exchange = %self.exchange, messages = recovered, "recovered delayed messages");
                }
                self.held.fetch_add(recovered, Ordering::Relaxed);
                state.keeping = Keeping::Log(Box::new(log));
                state.schedule = schedule;
                state.next_id = next_id;
            }
            Ok(Err(error)) => {
                tracing::error!(exchange = %self.exchange, %error, "cannot open the delayed exchange's log; its messages stay in memory")
            }
            Err(error) => tracing::error!(%error, "delayed exchange log task failed"),
        }
        let now = self.clock.now_ms();
        for (due, message, confirm) in waiting {
            state.hold(&message, due, self.durable, now, confirm);
        }
        state.commit();
        Some(dir)
    }

    /// The exchange this holder belongs to, while it still exists.
    fn exchange(self: &Arc<Self>) -> Option<(Arc<VHost>, Arc<Exchange>)> {
        let vhost = self.vhost.upgrade()?;
        let exchange = vhost.exchange(&self.exchange)?;
        let ours = exchange.delayed.as_ref().is_some_and(|d| d.is(self));
        ours.then_some((vhost, exchange))
    }
}

/// Routing of held messages whose queues must write them to disk before the message may leave
/// the log (the queue answers through a confirm token, as it does to a publisher).
struct Routing {
    sink: ConnectionSink,
    events: mpsc::UnboundedReceiver<ConnectionEvent>,
    /// Logged messages routed to queues that have not answered yet, by seq.
    awaiting: HashMap<u64, (MessageId, Position)>,
    routed: Vec<QueueRef>,
    congested: Vec<QueueRef>,
}

impl Routing {
    fn new() -> Routing {
        let (sink, events) = mpsc::unbounded_channel();
        Routing {
            sink,
            events,
            awaiting: HashMap::new(),
            routed: Vec::new(),
            congested: Vec::new(),
        }
    }

    /// Routes one message through the exchange; returns its log place if it may leave the
    /// log now.
    fn route(
        &mut self,
        vhost: &VHost,
        exchange: &Arc<Exchange>,
        entry: &Entry,
        mut message: Message,
    ) -> Option<(MessageId, Position)> {
        message.properties = properties_at_delivery(&message.properties);
        self.routed.clear();
        vhost.route_message(exchange, &message, &mut self.routed);
        let message = Arc::new(message);
        let logged = match entry.held {
            Held::Logged { id, position } => Some((id, position)),
            Held::Memory(_) => None,
        };
        let waiting = self
            .routed
            .iter()
            .filter(|q| q.confirms_wait_for(&message))
            .count() as u32;
        let mut tokens = match logged {
            Some(place) if waiting > 0 => {
                self.awaiting.insert(entry.seq, place);
                let key = ChannelKey {
                    channel_id: 0,
                    serial: 0,
                };
                ConfirmToken::split(key, entry.seq, waiting, &self.sink)
            }
            _ => Vec::new(),
        };
        for queue in self.routed.drain(..) {
            let confirm = if queue.confirms_wait_for(&message) {
                tokens.pop()
            } else {
                None
            };
            queue.send(QueueCommand::Publish {
                message: message.clone(),
                confirm,
            });
            if queue.is_congested() && !self.congested.iter().any(|q| Arc::ptr_eq(q, &queue)) {
                self.congested.push(queue);
            }
        }
        if waiting > 0 {
            None
        } else {
            logged
        }
    }

    /// Log places of messages whose queues have all answered since the last call.
    fn answered(&mut self, event: ConnectionEvent, out: &mut Vec<(MessageId, Position)>) {
        if let ConnectionEvent::Confirm { seq, .. } = event {
            // Accepted or refused by a queue, the plugin does not try again: it leaves the log.
            if let Some(place) = self.awaiting.remove(&seq) {
                out.push(place);
            }
        }
    }

    /// Collects the answers still to come for routed messages, for a while.
    async fn wait_for_answers(&mut self, out: &mut Vec<(MessageId, Position)>) {
        let deadline = tokio::time::sleep(ANSWERS_AT_SHUTDOWN_WAIT);
        tokio::pin!(deadline);
        while !self.awaiting.is_empty() {
            tokio::select! {
                Some(event) = self.events.recv() => self.answered(event, out),
                _ = &mut deadline => {
                    tracing::warn!(messages = self.awaiting.len(), "queues did not answer for routed delayed messages; they will be routed again after the restart");
                    return;
                }
            }
        }
    }

    /// Waits until the queues this turn filled to their limit have taken their messages in.
    async fn wait_for_congested(&mut self) {
        for queue in self.congested.drain(..) {
            queue.drained().await;
        }
    }
}

async fn run(shared: Arc<Shared>) {
    let discarded_early = shared.state.lock().stop == Some(Stop::Discard);
    if discarded_early {
        // Deleted before it ever ran: there is nothing to recover, only files to remove.
        finish(&shared, Stop::Discard, None).await;
        let _ = shared.finished.send(true);
        return;
    }
    let dir = shared.open().await;
    let mut routing = Routing::new();
    let mut due = Vec::with_capacity(DELIVERY_BATCH);
    let mut done: Vec<(MessageId, Position)> = Vec::new();
    let stop = loop {
        let now = shared.clock.now_ms();
        let (popped, loaded) = {
            let mut state = shared.state.lock();
            if let Some(stop) = state.stop {
                // What was held just before the stop is synced (and confirmed) all the same.
                state.commit();
                break stop;
            }
            state.schedule.advance(now);
            state.schedule.pop_due(now, DELIVERY_BATCH, &mut due);
            let popped = due.len();
            let loaded = state.load(std::mem::take(&mut due));
            state.commit();
            state.wakes_at = if popped == DELIVERY_BATCH {
                now
            } else {
                state.schedule.next_wakeup().unwrap_or(Millis::MAX)
            };
            (popped, loaded)
        };
        let full = popped == DELIVERY_BATCH;
        shared.held.fetch_sub(popped as u64, Ordering::Relaxed);
        if !loaded.is_empty() {
            match shared.exchange() {
                Some((vhost, exchange)) => {
                    for (entry, message) in loaded {
                        done.extend(routing.route(&vhost, &exchange, &entry, message));
                    }
                }
                None => done.extend(loaded.iter().filter_map(|(entry, _)| match entry.held {
                    Held::Logged { id, position } => Some((id, position)),
                    Held::Memory(_) => None,
                })),
            }
            routing.wait_for_congested().await;
        }
        while let Ok(event) = routing.events.try_recv() {
            routing.answered(event, &mut done);
        }
        if !done.is_empty() {
            shared.state.lock().remove_from_log(&done);
            done.clear();
        }
        shared
            .unanswered
            .store(routing.awaiting.len() as u64, Ordering::Relaxed);
        if full {
            tokio::task::yield_now().await;
            continue;
        }
        let wakes_at = shared.state.lock().wakes_at;
        let deadline = (wakes_at != Millis::MAX).then(|| shared.clock.instant_at(wakes_at));
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = sleep_until(deadline) => {}
            Some(event) = routing.events.recv() => routing.answered(event, &mut done),
        }
    };
    if stop == Stop::Close {
        // The vhost stops its queues only after its delayed exchanges: they are still there to
        // answer for what was routed to them.
        routing.wait_for_answers(&mut done).await;
    }
    while let Ok(event) = routing.events.try_recv() {
        routing.answered(event, &mut done);
    }
    // Unanswered ones stay in the log and are routed again after a restart (at least once).
    shared.state.lock().remove_from_log(&done);
    finish(&shared, stop, dir).await;
    let _ = shared.finished.send(true);
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Closes the log, or removes everything the exchange kept.
async fn finish(shared: &Shared, stop: Stop, dir: Option<PathBuf>) {
    let (keeping, spill) = {
        let mut state = shared.state.lock();
        let keeping = std::mem::replace(&mut state.keeping, Keeping::Memory);
        (keeping, state.schedule.take_spill())
    };
    let storage = shared.durability.as_ref().map(|d| d.storage.clone());
    let discard_dir = match stop {
        Stop::Discard => dir.or_else(|| {
            let durability = shared.durability.as_ref()?;
            shared
                .durable
                .then(|| durability.delayed_dir(&shared.vhost_name, &shared.exchange))
        }),
        Stop::Close => None,
    };
    let closed = tokio::task::spawn_blocking(move || {
        drop(spill);
        if let Keeping::Log(log) = keeping {
            match stop {
                Stop::Close => log.close()?,
                Stop::Discard => drop(log),
            }
        }
        if let (Some(storage), Some(dir)) = (storage, discard_dir) {
            if storage.exists(&dir).unwrap_or(false) {
                storage.remove_dir_all(&dir)?;
            }
        }
        Ok::<(), StoreError>(())
    })
    .await;
    match closed {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::error!(exchange = %shared.exchange, %error, "closing the delayed exchange's log failed")
        }
        Err(error) => tracing::error!(%error, "delayed exchange close task failed"),
    }
}

#[cfg(test)]
mod tests;
