//! The holder driven through a vhost, with tokio's clock paused: messages come out at their
//! time, in due order, never before; they survive a restart on the same storage; a publisher's
//! confirm of a persistent one comes only once it is synced into the log.

use std::sync::Arc;
use std::time::Duration;

use amqp::{BasicProperties, FieldTable, FieldValue, ShortStr};
use bytes::{Bytes, BytesMut};
use store::{MemStorage, Storage};
use tokio::sync::mpsc;

use crate::confirm::{ChannelKey, ConfirmToken};
use crate::consumer::{ConnectionEvent, ConnectionSink};
use crate::durability::Durability;
use crate::message::Message;
use crate::queue::QueueRef;
use crate::vhost::{ExchangeDeclaration, QueueDeclaration, VHost};
use crate::Broker;

fn s(v: &str) -> ShortStr {
    ShortStr::new(v).unwrap()
}

fn delayed_args(kind: &str) -> FieldTable {
    FieldTable(vec![(s("x-delayed-type"), FieldValue::from(kind))])
}

fn declare(vhost: &VHost, exchange: &str, queue: &str, durable: bool) -> QueueRef {
    vhost
        .declare_exchange(
            ExchangeDeclaration {
                name: &s(exchange),
                kind: "x-delayed-message",
                durable,
                auto_delete: false,
                internal: false,
                arguments: &delayed_args("direct"),
            },
            false,
        )
        .unwrap();
    let queue = vhost
        .declare_queue(
            QueueDeclaration {
                name: &s(queue),
                durable,
                exclusive: false,
                auto_delete: false,
                arguments: &FieldTable::new(),
            },
            false,
            1,
        )
        .unwrap();
    vhost
        .bind_queue(&queue, exchange, &s("k"), &FieldTable::new())
        .unwrap();
    queue
}

fn message(exchange: &str, delay: Option<FieldValue>, body: &str, persistent: bool) -> Message {
    let mut headers = FieldTable(vec![(s("other"), FieldValue::I32(7))]);
    if let Some(delay) = delay {
        headers.insert(s("x-delay"), delay);
    }
    let properties = BasicProperties {
        headers: Some(headers),
        delivery_mode: Some(if persistent { 2 } else { 1 }),
        ..Default::default()
    };
    let mut encoded = BytesMut::new();
    properties.encode(&mut encoded);
    Message::new(
        s(exchange),
        s("k"),
        encoded.freeze(),
        Bytes::from(body.to_owned()),
    )
}

/// Publishes as a channel does; returns the queues it reached now.
fn publish(vhost: &VHost, exchange: &str, message: &Message) -> usize {
    let exchange = vhost.existing_exchange(exchange).unwrap();
    let mut routed = Vec::new();
    vhost.route_message(&exchange, message, &mut routed);
    for queue in &routed {
        queue.send(crate::queue::QueueCommand::Publish {
            message: Arc::new(message.clone()),
            confirm: None,
        });
    }
    routed.len()
}

const PUBLISHER: ChannelKey = ChannelKey {
    channel_id: 1,
    serial: 1,
};

/// Publishes as a channel in confirm mode does: the queues and delayed exchanges that must
/// answer share a confirm token for `seq`; if none must, the publish is confirmed at once.
fn publish_confirmed(
    vhost: &VHost,
    exchange: &str,
    message: &Message,
    seq: u64,
    sink: &ConnectionSink,
) {
    let exchange = vhost.existing_exchange(exchange).unwrap();
    let (mut routed, mut held) = (Vec::new(), Vec::new());
    vhost.route_publish(&exchange, message, &mut routed, &mut held);
    let waiting = routed
        .iter()
        .filter(|q| q.confirms_wait_for(message))
        .count()
        + held.iter().filter(|h| h.confirms_wait_for(message)).count();
    if waiting == 0 {
        let ack = ConnectionEvent::Confirm {
            channel: PUBLISHER,
            seq,
            ack: true,
        };
        sink.send(ack).unwrap();
    }
    let mut tokens = ConfirmToken::split(PUBLISHER, seq, waiting as u32, sink);
    for hold in held {
        let confirm = hold
            .confirms_wait_for(message)
            .then(|| tokens.pop().unwrap());
        hold.hold(message, confirm);
    }
    for queue in routed {
        let confirm = queue
            .confirms_wait_for(message)
            .then(|| tokens.pop().unwrap());
        queue.send(crate::queue::QueueCommand::Publish {
            message: Arc::new(message.clone()),
            confirm,
        });
    }
}

/// The confirms sent so far, as (seq, ack).
fn confirms(events: &mut mpsc::UnboundedReceiver<ConnectionEvent>) -> Vec<(u64, bool)> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let ConnectionEvent::Confirm { seq, ack, .. } = event {
            out.push((seq, ack));
        }
    }
    out
}

/// Waits (in real time: the group commit runs on its own thread) for the next confirms.
async fn next_confirms(events: &mut mpsc::UnboundedReceiver<ConnectionEvent>) -> Vec<(u64, bool)> {
    let mut got = Vec::new();
    busy_wait_until("a confirm", || {
        got.extend(confirms(events));
        !got.is_empty()
    })
    .await;
    got
}

async fn ready(queue: &QueueRef) -> u32 {
    queue.stats().await.unwrap().message_count
}

/// Lets spawned tasks run, then moves the paused clock on.
async fn advance(ms: u64) {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::advance(Duration::from_millis(ms)).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Waits (in real time: opening runs on a blocking thread) until the exchange's log is open.
async fn opened(vhost: &VHost, exchange: &str) {
    let exchange = vhost.exchange(exchange).unwrap();
    let holder = exchange.delayed.as_ref().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while holder.is_opening() {
        assert!(std::time::Instant::now() < deadline, "the log never opened");
        std::thread::sleep(Duration::from_millis(1));
        tokio::task::yield_now().await;
    }
    advance(0).await;
}

async fn take_bodies(queue: &QueueRef) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some((queued, _)) = queue.get(true).await.unwrap() {
        bodies.push(String::from_utf8_lossy(&queued.message.body).into_owned());
    }
    bodies
}

#[tokio::test(start_paused = true)]
async fn messages_arrive_at_their_time_in_due_order_and_not_before() {
    let vhost = VHost::new("/");
    let queue = declare(&vhost, "dx", "q", false);
    for (delay, body) in [(300, "c"), (100, "a"), (200, "b"), (200, "b2")] {
        let held = message("dx", Some(FieldValue::I32(delay)), body, false);
        assert_eq!(publish(&vhost, "dx", &held), 0, "held, routed nowhere now");
    }
    assert_eq!(vhost.messages_delayed("dx"), Some(4));
    advance(99).await;
    assert_eq!(ready(&queue).await, 0, "nothing before its time");
    advance(1).await;
    advance(0).await;
    assert_eq!(take_bodies(&queue).await, ["a"]);
    advance(100).await;
    advance(0).await;
    assert_eq!(
        take_bodies(&queue).await,
        ["b", "b2"],
        "ties keep publish order"
    );
    advance(99).await;
    assert_eq!(ready(&queue).await, 0);
    advance(1).await;
    advance(0).await;
    assert_eq!(take_bodies(&queue).await, ["c"]);
    assert_eq!(vhost.messages_delayed("dx"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn no_positive_delay_routes_at_once_with_headers_untouched() {
    let vhost = VHost::new("/");
    let queue = declare(&vhost, "dx", "q", false);
    for delay in [
        None,
        Some(FieldValue::I32(0)),
        Some(FieldValue::I32(-50)),
        Some(FieldValue::from("soon")),
    ] {
        let now = message("dx", delay.clone(), "now", false);
        assert_eq!(publish(&vhost, "dx", &now), 1, "{delay:?}");
    }
    advance(0).await;
    let (queued, _) = queue.get(true).await.unwrap().unwrap();
    assert_eq!(
        queued.message.properties,
        message("dx", None, "now", false).properties
    );
    assert_eq!(vhost.messages_delayed("dx"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_delivered_message_carries_a_negative_x_delay_and_keeps_the_rest() {
    let vhost = VHost::new("/");
    let queue = declare(&vhost, "dx", "q", false);
    publish(
        &vhost,
        "dx",
        &message("dx", Some(FieldValue::from("50")), "m", true),
    );
    advance(50).await;
    advance(0).await;
    let (queued, _) = queue.get(true).await.unwrap().unwrap();
    let delivered = &queued.message;
    assert_eq!(delivered.exchange.as_str(), "dx");
    assert_eq!(delivered.routing_key.as_str(), "k");
    assert!(delivered.persistent);
    let properties = BasicProperties::decode(&delivered.properties).unwrap();
    let headers = properties.headers.unwrap();
    assert_eq!(headers.get("x-delay"), Some(&FieldValue::I64(-50)));
    assert_eq!(headers.get("other"), Some(&FieldValue::I32(7)));
    assert_eq!(properties.delivery_mode, Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_deleted_exchange_drops_what_it_held() {
    let vhost = VHost::new("/");
    let queue = declare(&vhost, "dx", "q", false);
    publish(
        &vhost,
        "dx",
        &message("dx", Some(FieldValue::I32(100)), "gone", false),
    );
    vhost.delete_exchange("dx", false).unwrap();
    advance(200).await;
    assert_eq!(ready(&queue).await, 0);
}

fn open_broker(storage: &MemStorage) -> Arc<Broker> {
    let storage: Arc<dyn Storage> = Arc::new(storage.clone());
    let durability = Durability::new(storage, std::path::Path::new("/data")).unwrap();
    Broker::open(durability).unwrap()
}

#[tokio::test(start_paused = true)]
async fn persistent_messages_of_a_durable_exchange_survive_a_restart() {
    let storage = MemStorage::new();
    let broker = open_broker(&storage);
    let vhost = broker.vhost("/").unwrap();
    declare(&vhost, "dx", "q", true);
    broker.definitions_synced().await.unwrap();
    opened(&vhost, "dx").await;
    publish(
        &vhost,
        "dx",
        &message("dx", Some(FieldValue::I32(5_000)), "kept", true),
    );
    publish(
        &vhost,
        "dx",
        &message("dx", Some(FieldValue::I32(4_000)), "lost", false),
    );
    publish(
        &vhost,
        "dx",
        &message("dx", Some(FieldValue::I32(3_000)), "first", true),
    );
    advance(10).await;
    broker.shutdown().await;
    drop(vhost);
    drop(broker);

    let broker = open_broker(&storage);
    let vhost = broker.vhost("/").unwrap();
    let queue = vhost.queue("q", 1).unwrap();
    opened(&vhost, "dx").await;
    assert_eq!(
        vhost.messages_delayed("dx"),
        Some(2),
        "the transient one is gone"
    );
    assert_eq!(ready(&queue).await, 0);
    advance(5_100).await;
    advance(0).await;
    assert_eq!(take_bodies(&queue).await, ["first", "kept"]);
    // Delivered messages leave the exchange's log once the queue has them on disk: another
    // restart brings nothing back.
    let holder = vhost.exchange("dx").unwrap();
    let holder = holder.delayed.as_ref().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while holder.unanswered() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue never answered"
        );
        std::thread::sleep(Duration::from_millis(1));
        advance(0).await;
    }
    broker.shutdown().await;
    drop(vhost);
    drop(broker);
    let broker = open_broker(&storage);
    let vhost = broker.vhost("/").unwrap();
    opened(&vhost, "dx").await;
    assert_eq!(vhost.messages_delayed("dx"), Some(0));
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn deleting_a_durable_delayed_exchange_removes_its_files() {
    let storage = MemStorage::new();
    let broker = open_broker(&storage);
    let vhost = broker.vhost("/").unwrap();
    declare(&vhost, "dx", "q", true);
    opened(&vhost, "dx").await;
    publish(
        &vhost,
        "dx",
        &message("dx", Some(FieldValue::I32(5_000)), "m", true),
    );
    let dir = std::path::Path::new("/data/delayed/%2F/dx");
    assert!(storage.exists(dir).unwrap());
    vhost.delete_exchange("dx", false).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while storage.exists(dir).unwrap() {
        assert!(std::time::Instant::now() < deadline, "the files stayed");
        std::thread::sleep(Duration::from_millis(1));
        advance(0).await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn refused_arguments_close_as_rabbitmq_does() {
    let vhost = VHost::new("/");
    let declare = |kind: &str, arguments: FieldTable| {
        vhost.declare_exchange(
            ExchangeDeclaration {
                name: &s("x"),
                kind,
                durable: false,
                auto_delete: false,
                internal: false,
                arguments: &arguments,
            },
            false,
        )
    };
    let refused = declare("x-delayed-message", FieldTable::new()).unwrap_err();
    assert_eq!(
        (refused.scope, refused.reply_code, refused.reply_text.as_str()),
        (
            crate::Scope::Channel,
            406,
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type"
        )
    );
    let crashed = declare(
        "x-consistent-hash",
        FieldTable(vec![(s("hash-header"), FieldValue::I32(1))]),
    )
    .unwrap_err();
    assert_eq!(
        (crashed.scope, crashed.reply_code),
        (crate::Scope::Connection, 541)
    );
    assert!(vhost.exchange("x").is_none());
    // Arguments are checked only when the exchange is created, as RabbitMQ does.
    declare("x-delayed-message", delayed_args("fanout")).unwrap();
    declare("x-delayed-message", FieldTable::new()).unwrap();
}

/// Lets the owner tasks and the group-commit thread work, without the paused clock jumping to
/// the next timer as it does when the runtime goes idle.
async fn busy_wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "waited for {what}");
        std::thread::sleep(Duration::from_millis(1));
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_message_routed_as_the_broker_stops_is_neither_lost_nor_routed_again() {
    let storage = MemStorage::new();
    let broker = open_broker(&storage);
    let vhost = broker.vhost("/").unwrap();
    declare(&vhost, "dx", "q", true);
    broker.definitions_synced().await.unwrap();
    opened(&vhost, "dx").await;
    // Held fsyncs keep the queue's write of the routed message from being answered until the
    // stop has begun.
    storage.close_sync_gate();
    publish(
        &vhost,
        "dx",
        &message("dx", Some(FieldValue::I32(100)), "due", true),
    );
    advance(100).await;
    advance(0).await;
    let holder = vhost.exchange("dx").unwrap();
    let holder = holder.delayed.as_ref().unwrap();
    assert_eq!(holder.unanswered(), 1, "routed, the queue has not answered");
    let stopping = tokio::spawn({
        let broker = broker.clone();
        async move { broker.shutdown().await }
    });
    advance(0).await;
    storage.open_sync_gate();
    busy_wait_until("the broker to stop", || stopping.is_finished()).await;
    stopping.await.unwrap();
    drop(vhost);
    drop(broker);

    let broker = open_broker(&storage);
    let vhost = broker.vhost("/").unwrap();
    let queue = vhost.queue("q", 1).unwrap();
    opened(&vhost, "dx").await;
    assert_eq!(vhost.messages_delayed("dx"), Some(0), "not routed twice");
    advance(1_000).await;
    assert_eq!(take_bodies(&queue).await, ["due"]);
    broker.shutdown().await;
}

/// A durable broker with a durable delayed exchange `dx` whose log is open, and its queue `q`
/// settled, so that the next sync is one the test causes.
async fn durable_exchange(storage: &MemStorage) -> (Arc<Broker>, Arc<VHost>) {
    let broker = open_broker(storage);
    let vhost = broker.vhost("/").unwrap();
    let queue = declare(&vhost, "dx", "q", true);
    broker.definitions_synced().await.unwrap();
    opened(&vhost, "dx").await;
    ready(&queue).await;
    (broker, vhost)
}

#[tokio::test(start_paused = true)]
async fn a_held_persistent_message_is_confirmed_only_once_its_log_is_synced() {
    let storage = MemStorage::new();
    let (broker, vhost) = durable_exchange(&storage).await;
    let (sink, mut events) = mpsc::unbounded_channel();
    storage.close_sync_gate();
    let persistent = message("dx", Some(FieldValue::I32(5_000)), "kept", true);
    publish_confirmed(&vhost, "dx", &persistent, 1, &sink);
    let transient = message("dx", Some(FieldValue::I32(5_000)), "lost", false);
    publish_confirmed(&vhost, "dx", &transient, 2, &sink);
    busy_wait_until("the log's fsync", || storage.syncs_waiting_at_gate() > 0).await;
    let before_fsync = confirms(&mut events);
    storage.open_sync_gate();
    assert_eq!(
        before_fsync,
        [(2, true)],
        "the transient message is confirmed at once, the persistent one not before its fsync"
    );
    assert_eq!(next_confirms(&mut events).await, [(1, true)]);
    assert_eq!(vhost.messages_delayed("dx"), Some(2));
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_message_held_while_the_log_opens_is_confirmed_once_it_is_logged() {
    let storage = MemStorage::new();
    let broker = open_broker(&storage);
    let vhost = broker.vhost("/").unwrap();
    declare(&vhost, "dx", "q", true);
    let exchange = vhost.exchange("dx").unwrap();
    let holder = exchange.delayed.as_ref().unwrap();
    assert!(holder.is_opening(), "the owner task has not run yet");
    let (sink, mut events) = mpsc::unbounded_channel();
    let held = message("dx", Some(FieldValue::I32(5_000)), "kept", true);
    publish_confirmed(&vhost, "dx", &held, 1, &sink);
    assert_eq!(confirms(&mut events), [], "not while it is only in memory");
    assert_eq!(next_confirms(&mut events).await, [(1, true)]);
    assert!(!holder.is_opening());
    // Confirmed means on disk: a power cut right after the confirm keeps it.
    broker.definitions_synced().await.unwrap();
    let after_power_cut = storage.crash();
    let broker = open_broker(&after_power_cut);
    let vhost = broker.vhost("/").unwrap();
    opened(&vhost, "dx").await;
    assert_eq!(vhost.messages_delayed("dx"), Some(1));
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_held_message_whose_fsync_fails_is_nacked() {
    let storage = MemStorage::new();
    let (broker, vhost) = durable_exchange(&storage).await;
    let (sink, mut events) = mpsc::unbounded_channel();
    storage.crash_at_sync(1);
    let held = message("dx", Some(FieldValue::I32(5_000)), "m", true);
    publish_confirmed(&vhost, "dx", &held, 1, &sink);
    assert_eq!(next_confirms(&mut events).await, [(1, false)]);
    broker.shutdown().await;
}
