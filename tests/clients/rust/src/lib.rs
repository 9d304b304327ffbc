//! Support for the client integration tests: a broker per test ([`broker`]), a hand-made
//! AMQP peer ([`raw`]) and small helpers around lapin (deadlines, unique names, reading the
//! reply code out of an error). Must not know broker internals: everything goes over TCP.

pub mod broker;
pub mod raw;

use std::future::Future;
use std::time::Duration;

pub use broker::TestBroker;

use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};

/// Every wait in a test is bounded by this, so a broken broker fails instead of hanging.
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

/// `prefix` plus a random suffix: tests share an external broker and run in parallel.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{prefix}-{n:016x}")
}

pub async fn connect(broker: &TestBroker) -> Connection {
    connect_url(&broker.amqp_url()).await
}

pub async fn connect_url(url: &str) -> Connection {
    within(
        "lapin connect",
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("connect {url}: {e:?}"))
}

pub async fn channel(conn: &Connection) -> Channel {
    within("channel.open", conn.create_channel())
        .await
        .expect("channel.open")
}

/// A connection and one channel on it.
pub async fn open(broker: &TestBroker) -> (Connection, Channel) {
    let conn = connect(broker).await;
    let ch = channel(&conn).await;
    (conn, ch)
}

/// Declares a non-durable queue with a unique name (auto-delete off, so tests control its
/// lifetime) and returns that name.
pub async fn declare_queue(ch: &Channel, prefix: &str) -> String {
    let name = unique(prefix);
    within(
        "queue.declare",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.declare");
    name
}

/// A channel in confirm mode, so every publish can be awaited until the broker has it.
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

/// Publishes with default properties and waits for the confirm (on a confirm channel) or
/// for nothing (on a plain channel).
pub async fn publish(ch: &Channel, exchange: &str, routing_key: &str, body: &[u8]) -> Confirmation {
    publish_with(
        ch,
        exchange,
        routing_key,
        BasicPublishOptions::default(),
        BasicProperties::default(),
        body,
    )
    .await
}

pub async fn publish_with(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    options: BasicPublishOptions,
    properties: BasicProperties,
    body: &[u8],
) -> Confirmation {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            body,
            properties,
        ),
    )
    .await
    .expect("basic.publish");
    within("publisher confirm", confirm)
        .await
        .expect("publisher confirm")
}

/// Ready messages in `queue`, read with a passive queue.declare.
pub async fn message_count(ch: &Channel, queue: &str) -> u32 {
    within(
        "passive queue.declare",
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("passive queue.declare")
    .message_count()
}

/// basic.get with no-ack: the body of the next ready message, if any.
pub async fn get_body(ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    within(
        "basic.get",
        ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("basic.get")
    .map(|m| m.delivery.data)
}

/// Every ready message body in `queue`, in order (drains it).
pub async fn drain(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(body) = get_body(ch, queue).await {
        out.push(body);
    }
    out
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
    .expect("queue.bind");
}

pub async fn consume(ch: &Channel, queue: &str, no_ack: bool) -> Consumer {
    within(
        "basic.consume",
        ch.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("basic.consume")
}

/// The next delivery of `consumer`, which must come before the deadline.
pub async fn next_delivery(consumer: &mut Consumer) -> lapin::message::Delivery {
    use futures_lite::StreamExt;
    within("a delivery", consumer.next())
        .await
        .expect("consumer stream ended")
        .expect("delivery error")
}

/// A consumer whose only job is to report why the server closed its channel: lapin hands a
/// channel.close to the channel's consumers, while a method called after the close was
/// received fails locally without the reason.
pub struct CloseWatch {
    consumer: Consumer,
}

impl CloseWatch {
    /// Consumes from a fresh server-named queue on `ch`.
    pub async fn on(ch: &Channel) -> CloseWatch {
        let q = within(
            "queue.declare for the close watch",
            ch.queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .expect("queue.declare");
        CloseWatch {
            consumer: consume(ch, q.name().as_str(), true).await,
        }
    }

    /// `(reply_code, reply_text)` of the channel.close that must come.
    pub async fn reason(mut self) -> (u16, String) {
        use futures_lite::StreamExt;
        match within("channel.close from the server", self.consumer.next()).await {
            Some(Err(e)) => {
                amqp_error(&e).unwrap_or_else(|| panic!("channel ended without a close: {e:?}"))
            }
            other => panic!("expected the channel to be closed by the server, got {other:?}"),
        }
    }
}

/// `(reply_code, reply_text)` carried by a channel or connection close.
pub fn amqp_error(err: &lapin::Error) -> Option<(u16, String)> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some((e.get_id(), e.get_message().to_string())),
        _ => None,
    }
}

/// The operation must have failed with a server close; returns its code and text.
pub fn expect_amqp_error<T: std::fmt::Debug>(res: lapin::Result<T>) -> (u16, String) {
    match res {
        Ok(v) => panic!("expected an AMQP error, got Ok({v:?})"),
        Err(e) => amqp_error(&e).unwrap_or_else(|| panic!("expected an AMQP error, got {e:?}")),
    }
}

/// RabbitMQ's answer to declaring, checking or binding the default exchange.
pub fn default_exchange_refused() -> (u16, String) {
    (
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange".into(),
    )
}

/// Polls `check` until it returns true or the deadline passes (no sleeping for
/// synchronisation: this is the bounded poll the rules ask for).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("condition never became true: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Says on stderr that a check was skipped, so a run against an external broker is honest
/// about what it did not cover.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}
