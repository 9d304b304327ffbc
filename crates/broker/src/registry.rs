//! Live connections and their channels as the management API and metrics see them: who is
//! connected from where, which channels and consumers they have, and how many messages went
//! through. Each connection's own task is the only writer of its entries (plain loads and
//! stores, no read-modify-write on the hot path); listing and scraping only read. Knows
//! nothing of sockets or frames.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::{AddAssign, Deref};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use amqp::{FieldTable, FieldValue};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

/// A count that only one task adds to: a relaxed load and store, as cheap as a plain field,
/// yet readable from other threads. Two writers would lose counts.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Message counters of a channel, with RabbitMQ's `message_stats` names.
#[derive(Debug, Default)]
pub struct MessageCounters {
    pub publish: Counter,
    pub confirm: Counter,
    /// Delivered to consumers that acknowledge.
    pub deliver: Counter,
    pub deliver_no_ack: Counter,
    /// basic.get answered with a message, to be acknowledged.
    pub get: Counter,
    pub get_no_ack: Counter,
    pub get_empty: Counter,
    pub ack: Counter,
    pub redeliver: Counter,
    pub return_unroutable: Counter,
    pub drop_unroutable: Counter,
}

/// A snapshot of `MessageCounters`, summed over channels and connections.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MessageStats {
    pub publish: u64,
    pub confirm: u64,
    pub deliver: u64,
    pub deliver_no_ack: u64,
    pub get: u64,
    pub get_no_ack: u64,
    pub get_empty: u64,
    pub ack: u64,
    pub redeliver: u64,
    pub return_unroutable: u64,
    pub drop_unroutable: u64,
}

impl MessageCounters {
    pub fn snapshot(&self) -> MessageStats {
        MessageStats {
            publish: self.publish.get(),
            confirm: self.confirm.get(),
            deliver: self.deliver.get(),
            deliver_no_ack: self.deliver_no_ack.get(),
            get: self.get.get(),
            get_no_ack: self.get_no_ack.get(),
            get_empty: self.get_empty.get(),
            ack: self.ack.get(),
            redeliver: self.redeliver.get(),
            return_unroutable: self.return_unroutable.get(),
            drop_unroutable: self.drop_unroutable.get(),
        }
    }
}

impl AddAssign for MessageStats {
    fn add_assign(&mut self, other: MessageStats) {
        self.publish += other.publish;
        self.confirm += other.confirm;
        self.deliver += other.deliver;
        self.deliver_no_ack += other.deliver_no_ack;
        self.get += other.get;
        self.get_no_ack += other.get_no_ack;
        self.get_empty += other.get_empty;
        self.ack += other.ack;
        self.redeliver += other.redeliver;
        self.return_unroutable += other.return_unroutable;
        self.drop_unroutable += other.drop_unroutable;
    }
}

impl MessageStats {
    /// Every message handed to a client, as RabbitMQ's `deliver_get`.
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }
}

/// A consumer as listed by `/api/consumers`.
#[derive(Debug, Clone)]
pub struct ConsumerInfo {
    pub consumer_tag: String,
    pub queue: String,
    pub ack_required: bool,
    pub exclusive: bool,
    pub prefetch_count: u32,
    pub arguments: FieldTable,
}

/// A channel's state, refreshed by its connection once per batch of work.
#[derive(Debug, Default)]
pub struct ChannelGauges {
    pub prefetch_count: Counter,
    pub global_prefetch_count: Counter,
    pub consumer_count: Counter,
    pub messages_unacknowledged: Counter,
    pub messages_unconfirmed: Counter,
    pub messages_uncommitted: Counter,
    pub acks_uncommitted: Counter,
    pub confirm: AtomicBool,
    pub transactional: AtomicBool,
}

#[derive(Debug)]
pub struct ChannelInfo {
    pub number: u16,
    pub stats: MessageCounters,
    pub gauges: ChannelGauges,
    consumers: Mutex<Vec<ConsumerInfo>>,
}

impl ChannelInfo {
    pub fn consumer_added(&self, consumer: ConsumerInfo) {
        self.consumers.lock().push(consumer);
    }

    pub fn consumer_removed(&self, consumer_tag: &str) {
        self.consumers
            .lock()
            .retain(|c| c.consumer_tag != consumer_tag);
    }

    pub fn consumers(&self) -> Vec<ConsumerInfo> {
        self.consumers.lock().clone()
    }
}

/// What the client said at login.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub auth_mechanism: String,
    pub client_properties: FieldTable,
}

/// What was negotiated by the time the connection opened its vhost.
#[derive(Debug, Clone)]
pub struct Opened {
    pub vhost: String,
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat_secs: u16,
}

#[derive(Debug, Default)]
struct ChannelTable {
    open: BTreeMap<u16, Arc<ChannelInfo>>,
    /// Counts of the channels that closed, so that the connection's never go back.
    closed: MessageStats,
}

#[derive(Debug)]
pub struct ConnectionInfo {
    pub id: u64,
    /// RabbitMQ's connection name: `peer -> local`.
    pub name: String,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    login: RwLock<Option<Login>>,
    opened: RwLock<Option<Opened>>,
    channels: Mutex<ChannelTable>,
    close_reason: Mutex<Option<String>>,
    close_requested: Notify,
    /// The connection's task took up the close request.
    close_taken: AtomicBool,
}

impl ConnectionInfo {
    pub fn login(&self) -> Option<Login> {
        self.login.read().clone()
    }

    pub fn opened(&self) -> Option<Opened> {
        self.opened.read().clone()
    }

    pub fn user(&self) -> Option<String> {
        self.login.read().as_ref().map(|l| l.user.clone())
    }

    pub fn vhost(&self) -> Option<String> {
        self.opened.read().as_ref().map(|o| o.vhost.clone())
    }

    /// The `connection_name` the client gave in its properties, if any.
    pub fn user_provided_name(&self) -> Option<String> {
        let login = self.login.read();
        match login.as_ref()?.client_properties.get("connection_name")? {
            FieldValue::LongStr(name) => Some(String::from_utf8_lossy(name.as_bytes()).into()),
            _ => None,
        }
    }

    /// "starting" until the vhost is open, "closing" once a close was asked for.
    pub fn state(&self) -> &'static str {
        if self.close_reason.lock().is_some() {
            "closing"
        } else if self.opened.read().is_some() {
            "running"
        } else {
            "starting"
        }
    }

    pub fn channels(&self) -> Vec<Arc<ChannelInfo>> {
        self.channels.lock().open.values().cloned().collect()
    }

    pub fn channel_count(&self) -> usize {
        self.channels.lock().open.len()
    }

    /// Counts of every channel this connection had, open or closed.
    pub fn stats(&self) -> MessageStats {
        let table = self.channels.lock();
        let mut total = table.closed;
        for channel in table.open.values() {
            total += channel.stats.snapshot();
        }
        total
    }

    /// Asks the connection to close itself with 320 CONNECTION_FORCED and this reason.
    pub fn request_close(&self, reason: &str) {
        *self.close_reason.lock() = Some(reason.to_string());
        self.close_requested.notify_one();
    }
}

/// A connection's entry, held by its task; dropping it removes the entry.
pub struct ConnectionRegistration {
    info: Arc<ConnectionInfo>,
    registry: Arc<Shared>,
}

impl ConnectionRegistration {
    pub fn logged_in(&self, user: &str, auth_mechanism: &str, client_properties: &FieldTable) {
        *self.info.login.write() = Some(Login {
            user: user.to_string(),
            auth_mechanism: auth_mechanism.to_string(),
            client_properties: client_properties.clone(),
        });
    }

    pub fn opened(&self, vhost: &str, frame_max: u32, channel_max: u16, heartbeat_secs: u16) {
        *self.info.opened.write() = Some(Opened {
            vhost: vhost.to_string(),
            frame_max,
            channel_max,
            heartbeat_secs,
        });
    }

    pub fn open_channel(&self, number: u16) -> ChannelRegistration {
        let info = Arc::new(ChannelInfo {
            number,
            stats: MessageCounters::default(),
            gauges: ChannelGauges::default(),
            consumers: Mutex::new(Vec::new()),
        });
        self.info.channels.lock().open.insert(number, info.clone());
        self.registry
            .channels_opened
            .fetch_add(1, Ordering::Relaxed);
        ChannelRegistration {
            info,
            connection: self.info.clone(),
            registry: self.registry.clone(),
        }
    }

    /// Completes when someone asked this connection to close; gives their reason. Resolves
    /// once per request.
    pub async fn close_requested(&self) -> String {
        loop {
            let notified = self.info.close_requested.notified();
            if let Some(reason) = self.info.close_reason.lock().as_ref() {
                if !self.info.close_taken.swap(true, Ordering::Relaxed) {
                    return reason.clone();
                }
            }
            notified.await;
        }
    }
}

impl Deref for ConnectionRegistration {
    type Target = ConnectionInfo;

    fn deref(&self) -> &ConnectionInfo {
        &self.info
    }
}

impl Drop for ConnectionRegistration {
    fn drop(&mut self) {
        let mut connections = self.registry.connections.write();
        if connections.remove(&self.info.id).is_some() {
            let mut closed = self.registry.closed.lock();
            *closed += self.info.stats();
            self.registry
                .connections_closed
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A channel's entry, held by the channel; dropping it removes the entry and keeps its
/// counts in the connection's.
pub struct ChannelRegistration {
    info: Arc<ChannelInfo>,
    connection: Arc<ConnectionInfo>,
    registry: Arc<Shared>,
}

impl Deref for ChannelRegistration {
    type Target = ChannelInfo;

    fn deref(&self) -> &ChannelInfo {
        &self.info
    }
}

impl Drop for ChannelRegistration {
    fn drop(&mut self) {
        // Under the table's lock, so that a scrape sees the counts once, never twice or none.
        let mut table = self.connection.channels.lock();
        let removed = match table.open.get(&self.info.number) {
            Some(current) if Arc::ptr_eq(current, &self.info) => {
                table.open.remove(&self.info.number)
            }
            _ => None,
        };
        if removed.is_some() {
            table.closed += self.info.stats.snapshot();
            self.registry
                .channels_closed
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Shared {
    connections: RwLock<BTreeMap<u64, Arc<ConnectionInfo>>>,
    /// Counts of the connections that closed, so that global counters never go back.
    closed: Mutex<MessageStats>,
    connections_opened: AtomicU64,
    connections_closed: AtomicU64,
    channels_opened: AtomicU64,
    channels_closed: AtomicU64,
}

/// Opened and closed counts since the broker started (RabbitMQ's churn metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Churn {
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub channels_opened: u64,
    pub channels_closed: u64,
}

/// Every live connection of the broker.
#[derive(Default)]
pub struct Registry {
    shared: Arc<Shared>,
}

impl Registry {
    pub fn register(&self, id: u64, peer: SocketAddr, local: SocketAddr) -> ConnectionRegistration {
        let connected_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let info = Arc::new(ConnectionInfo {
            id,
            name: format!("{peer} -> {local}"),
            peer,
            local,
            connected_at_ms,
            login: RwLock::new(None),
            opened: RwLock::new(None),
            channels: Mutex::new(ChannelTable::default()),
            close_reason: Mutex::new(None),
            close_requested: Notify::new(),
            close_taken: AtomicBool::new(false),
        });
        self.shared.connections.write().insert(id, info.clone());
        self.shared
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        ConnectionRegistration {
            info,
            registry: self.shared.clone(),
        }
    }

    /// Live connections, oldest first.
    pub fn connections(&self) -> Vec<Arc<ConnectionInfo>> {
        self.shared.connections.read().values().cloned().collect()
    }

    pub fn connection_by_name(&self, name: &str) -> Option<Arc<ConnectionInfo>> {
        self.shared
            .connections
            .read()
            .values()
            .find(|c| c.name == name)
            .cloned()
    }

    pub fn connection_count(&self) -> usize {
        self.shared.connections.read().len()
    }

    /// Message counts of every connection since the broker started, open or closed.
    pub fn message_stats(&self) -> MessageStats {
        let connections = self.shared.connections.read();
        let mut total = *self.shared.closed.lock();
        for connection in connections.values() {
            total += connection.stats();
        }
        total
    }

    pub fn churn(&self) -> Churn {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Churn {
            connections_opened: load(&self.shared.connections_opened),
            connections_closed: load(&self.shared.connections_closed),
            channels_opened: load(&self.shared.channels_opened),
            channels_closed: load(&self.shared.channels_closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn counts_survive_their_channel_and_connection() {
        let registry = Registry::default();
        let connection = registry.register(1, addr(40000), addr(5672));
        assert_eq!(connection.name, "127.0.0.1:40000 -> 127.0.0.1:5672");
        let channel = connection.open_channel(1);
        channel.stats.publish.add(3);
        channel.stats.ack.add(2);
        assert_eq!(registry.message_stats().publish, 3);
        drop(channel);
        assert_eq!(connection.channel_count(), 0);
        assert_eq!(registry.message_stats().publish, 3);
        let again = connection.open_channel(1);
        again.stats.publish.add(1);
        drop(again);
        drop(connection);
        assert_eq!(registry.connection_count(), 0);
        let stats = registry.message_stats();
        assert_eq!((stats.publish, stats.ack), (4, 2));
        let churn = registry.churn();
        assert_eq!((churn.connections_opened, churn.connections_closed), (1, 1));
        assert_eq!((churn.channels_opened, churn.channels_closed), (2, 2));
    }

    #[test]
    fn login_and_open_fill_in_the_listing() {
        let registry = Registry::default();
        let connection = registry.register(7, addr(40001), addr(5672));
        assert_eq!(connection.state(), "starting");
        let mut properties = FieldTable::new();
        properties.insert(
            amqp::ShortStr::from_static("connection_name"),
            FieldValue::from("worker-1"),
        );
        connection.logged_in("guest", "PLAIN", &properties);
        connection.opened("/", 131072, 2047, 60);
        assert_eq!(connection.state(), "running");
        let listed = registry.connection_by_name(&connection.name).unwrap();
        assert_eq!(listed.user().as_deref(), Some("guest"));
        assert_eq!(listed.vhost().as_deref(), Some("/"));
        assert_eq!(listed.user_provided_name().as_deref(), Some("worker-1"));
    }

    #[tokio::test]
    async fn a_close_request_reaches_the_connection_once() {
        let registry = Registry::default();
        let connection = registry.register(2, addr(40002), addr(5672));
        let listed = registry.connection_by_name(&connection.name).unwrap();
        listed.request_close("Closed via management plugin");
        assert_eq!(
            connection.close_requested().await,
            "Closed via management plugin"
        );
        assert_eq!(connection.state(), "closing");
        let again = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            connection.close_requested(),
        )
        .await;
        assert!(again.is_err(), "the request was already served");
    }
}
