//! lapin with deadlines: connecting, declaring, publishing with confirms, reading queues back
//! with their redelivered flags, and asking whether a queue or exchange exists. Every wait is
//! bounded so a broken broker fails a test instead of hanging it. Knows nothing of processes
//! or files.

use std::future::Future;
use std::time::Duration;

use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};

/// Every single wait in a test is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Awaits `fut` or panics naming `what` after [`DEADLINE`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(DEADLINE, what, fut).await
}

pub async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `check` until it holds, failing after `limit` (the bounded poll the rules ask for,
/// instead of sleeping for synchronisation).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("still not true after {limit:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn connect(url: &str) -> Connection {
    within(
        "connect",
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

pub async fn channel(conn: &Connection) -> Channel {
    within("channel.open", conn.create_channel())
        .await
        .expect("channel.open")
}

/// A channel in confirm mode.
pub async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = channel(conn).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    ch
}

/// A connection and a confirm-mode channel on it.
pub async fn open(url: &str) -> (Connection, Channel) {
    let conn = connect(url).await;
    let ch = confirm_channel(&conn).await;
    (conn, ch)
}

/// A field table from `(key, value)` pairs.
pub fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

pub fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

pub fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    }
}

pub async fn declare_queue(ch: &Channel, name: &str, opts: QueueDeclareOptions, args: FieldTable) {
    within("queue.declare", ch.queue_declare(name.into(), opts, args))
        .await
        .unwrap_or_else(|e| panic!("queue.declare {name}: {e}"));
}

pub async fn declare_exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    durable: bool,
    args: FieldTable,
) {
    let opts = ExchangeDeclareOptions {
        durable,
        ..ExchangeDeclareOptions::default()
    };
    within(
        "exchange.declare",
        ch.exchange_declare(name.into(), kind, opts, args),
    )
    .await
    .unwrap_or_else(|e| panic!("exchange.declare {name}: {e}"));
}

pub async fn bind(ch: &Channel, queue: &str, exchange: &str, routing_key: &str, args: FieldTable) {
    within(
        "queue.bind",
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            args,
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("queue.bind {queue} to {exchange} ({routing_key}): {e}"));
}

/// `delivery_mode = 2`.
pub fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// `delivery_mode = 1`.
pub fn transient() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(1)
}

/// Sends a publish and returns the confirm still to be awaited (so many can be in flight:
/// group commit is exercised only when several wait at once).
pub async fn publish_nowait(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    properties: BasicProperties,
    body: &[u8],
) -> lapin::PublisherConfirm {
    within(
        "basic.publish",
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        ),
    )
    .await
    .expect("basic.publish")
}

/// Waits for a confirm that must be an ack.
pub async fn expect_ack(confirm: lapin::PublisherConfirm) {
    match within("publisher confirm", confirm).await {
        Ok(Confirmation::Ack(None)) => {}
        other => panic!("expected a basic.ack confirm, got {other:?}"),
    }
}

/// Publishes on a confirm channel and waits for the broker's ack.
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    properties: BasicProperties,
    body: &[u8],
) {
    let confirm = publish_nowait(ch, exchange, routing_key, properties, body).await;
    expect_ack(confirm).await;
}

/// basic.get; `no_ack` removes the message at once.
pub async fn get(ch: &Channel, queue: &str, no_ack: bool) -> Option<BasicGetMessage> {
    within(
        "basic.get",
        ch.basic_get(queue.into(), BasicGetOptions { no_ack }),
    )
    .await
    .unwrap_or_else(|e| panic!("basic.get {queue}: {e}"))
}

/// A message read back from a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Got {
    pub body: Vec<u8>,
    pub redelivered: bool,
    pub properties: BasicProperties,
}

/// Every ready message of `queue`, in order, removed with no-ack gets.
pub async fn drain(ch: &Channel, queue: &str) -> Vec<Got> {
    let mut out = Vec::new();
    while let Some(m) = get(ch, queue, true).await {
        out.push(Got {
            body: m.delivery.data,
            redelivered: m.delivery.redelivered,
            properties: m.delivery.properties,
        });
    }
    out
}

/// `(reply_code, reply_text)` of a channel or connection close carried by an error.
pub fn amqp_error(err: &lapin::Error) -> Option<(u16, String)> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some((e.get_id(), e.get_message().to_string())),
        _ => None,
    }
}

/// The ready count of `queue`, or `None` when the broker answers 404 NOT_FOUND. Asked on a
/// fresh channel because the 404 closes it.
pub async fn queue_count(conn: &Connection, queue: &str) -> Option<u32> {
    let ch = channel(conn).await;
    let res = within(
        "passive queue.declare",
        ch.queue_declare(queue.into(), passive(), FieldTable::default()),
    )
    .await;
    match res {
        Ok(q) => {
            let _ = ch.close(200, "done".into()).await;
            Some(q.message_count())
        }
        Err(e) => match amqp_error(&e) {
            Some((404, _)) => None,
            _ => panic!("passive queue.declare {queue}: {e}"),
        },
    }
}

/// The ready count of a queue that must exist after a restart.
pub async fn expect_queue(conn: &Connection, queue: &str) -> u32 {
    queue_count(conn, queue)
        .await
        .unwrap_or_else(|| panic!("durable queue '{queue}' is gone after the restart"))
}

pub async fn queue_exists(conn: &Connection, queue: &str) -> bool {
    queue_count(conn, queue).await.is_some()
}

/// Whether exchange `name` exists (passive declare on a fresh channel).
pub async fn exchange_exists(conn: &Connection, name: &str) -> bool {
    let ch = channel(conn).await;
    let opts = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    let res = within(
        "passive exchange.declare",
        ch.exchange_declare(
            name.into(),
            ExchangeKind::Direct,
            opts,
            FieldTable::default(),
        ),
    )
    .await;
    match res {
        Ok(()) => {
            let _ = ch.close(200, "done".into()).await;
            true
        }
        Err(e) => match amqp_error(&e) {
            Some((404, _)) => false,
            _ => panic!("passive exchange.declare {name}: {e}"),
        },
    }
}

/// The error a declare on a fresh channel fails with (it must fail).
pub async fn declare_queue_error(
    conn: &Connection,
    name: &str,
    opts: QueueDeclareOptions,
    args: FieldTable,
) -> (u16, String) {
    let ch = channel(conn).await;
    let res = within("queue.declare", ch.queue_declare(name.into(), opts, args)).await;
    match res {
        Ok(q) => panic!("queue.declare {name} should have failed, got {q:?}"),
        Err(e) => amqp_error(&e).unwrap_or_else(|| panic!("queue.declare {name}: {e}")),
    }
}

/// The error an exchange declare on a fresh channel fails with (it must fail).
pub async fn declare_exchange_error(
    conn: &Connection,
    name: &str,
    kind: ExchangeKind,
    opts: ExchangeDeclareOptions,
) -> (u16, String) {
    let ch = channel(conn).await;
    let res = within(
        "exchange.declare",
        ch.exchange_declare(name.into(), kind, opts, FieldTable::default()),
    )
    .await;
    match res {
        Ok(()) => panic!("exchange.declare {name} should have failed"),
        Err(e) => amqp_error(&e).unwrap_or_else(|| panic!("exchange.declare {name}: {e}")),
    }
}
