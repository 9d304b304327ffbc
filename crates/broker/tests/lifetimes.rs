//! Message and queue lifetimes through a vhost and real queue tasks, on tokio's paused clock:
//! a queue's own timer expires and dead-letters its head with nobody asking, an unused queue
//! with `x-expires` goes away, and a logged expiry still counts after a restart.

use std::sync::Arc;
use std::time::Duration;

use amqp::{BasicProperties, FieldTable, FieldValue, ShortStr};
use broker::durability::Durability;
use broker::message::Message;
use broker::queue::{QueueCommand, QueueRef};
use broker::vhost::{QueueDeclaration, VHost};
use broker::Broker;
use bytes::{Bytes, BytesMut};

fn s(v: &str) -> ShortStr {
    ShortStr::new(v).unwrap()
}

fn declare(vhost: &VHost, name: &str, durable: bool, arguments: FieldTable) -> QueueRef {
    vhost
        .declare_queue(
            QueueDeclaration {
                name: &s(name),
                durable,
                exclusive: false,
                auto_delete: false,
                arguments: &arguments,
            },
            false,
            1,
        )
        .unwrap()
}

fn arguments(entries: &[(&str, FieldValue)]) -> FieldTable {
    FieldTable(entries.iter().map(|(k, v)| (s(k), v.clone())).collect())
}

fn message(routing_key: &str, properties: BasicProperties) -> Arc<Message> {
    let mut encoded = BytesMut::new();
    properties.encode(&mut encoded);
    Arc::new(Message::new(
        ShortStr::default(),
        s(routing_key),
        encoded.freeze(),
        Bytes::from_static(b"body"),
    ))
}

/// Publishes through the default exchange, as a channel would.
fn publish(vhost: &VHost, message: Arc<Message>) {
    let mut routed = Vec::new();
    vhost.route_message(&vhost.exchange("").unwrap(), &message, &mut routed);
    for queue in routed {
        queue.send(QueueCommand::Publish {
            message: message.clone(),
            confirm: None,
        });
    }
}

async fn count(queue: &QueueRef) -> u32 {
    queue.stats().await.unwrap().message_count
}

#[tokio::test(start_paused = true)]
async fn the_head_expires_on_the_queues_own_timer_and_is_dead_lettered() {
    let vhost = VHost::new("/");
    let dlq = declare(&vhost, "dlq", false, FieldTable::new());
    let source = declare(
        &vhost,
        "source",
        false,
        arguments(&[
            ("x-message-ttl", FieldValue::I32(60_000)),
            ("x-dead-letter-exchange", FieldValue::from("")),
            ("x-dead-letter-routing-key", FieldValue::from("dlq")),
        ]),
    );
    publish(&vhost, message("source", BasicProperties::default()));
    assert_eq!(count(&source).await, 1);

    tokio::time::sleep(Duration::from_millis(59_000)).await;
    assert_eq!(count(&source).await, 1, "not yet");
    tokio::time::sleep(Duration::from_millis(1_001)).await;
    assert_eq!(count(&source).await, 0, "expired without anyone asking");
    let (dead, _) = dlq.get(true).await.unwrap().expect("dead-lettered");
    let headers = BasicProperties::decode(&dead.message.properties)
        .unwrap()
        .headers
        .unwrap();
    let death = headers
        .get("x-death")
        .and_then(FieldValue::as_array)
        .unwrap()[0]
        .as_table()
        .unwrap()
        .clone();
    assert_eq!(
        death.get("reason").and_then(FieldValue::as_str),
        Some("expired")
    );
    assert_eq!(
        death.get("queue").and_then(FieldValue::as_str),
        Some("source")
    );
    assert_eq!(dead.message.routing_key.as_str(), "dlq");
}

#[tokio::test(start_paused = true)]
async fn an_unused_queue_with_x_expires_is_deleted() {
    let vhost = VHost::new("/");
    let queue = declare(
        &vhost,
        "brief",
        false,
        arguments(&[("x-expires", FieldValue::I32(1_000))]),
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(queue.get(true).await.unwrap().is_none(), "a get uses it");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(vhost.queue("brief", 1).is_ok(), "renewed by the get");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..100 {
        if vhost.queue("brief", 1).is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the unused queue was not deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_expiry_counts_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(Durability::on_disk(dir.path()).unwrap()).unwrap();
    let vhost = broker.vhost("/").unwrap();
    let queue = declare(&vhost, "durable", true, FieldTable::new());
    broker.definitions_synced().await.unwrap();
    let persistent = |expiration: Option<&str>| BasicProperties {
        delivery_mode: Some(2),
        expiration: expiration.map(s),
        ..Default::default()
    };
    let expires_at = std::time::SystemTime::now() + Duration::from_millis(300);
    publish(&vhost, message("durable", persistent(Some("300"))));
    publish(&vhost, message("durable", persistent(Some("600000"))));
    publish(&vhost, message("durable", persistent(None)));
    assert_eq!(count(&queue).await, 3);
    broker.shutdown().await;
    drop((broker, vhost, queue));
    // The first message's time runs out while no broker runs.
    while std::time::SystemTime::now() < expires_at {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let broker = Broker::open(Durability::on_disk(dir.path()).unwrap()).unwrap();
    let queue = broker.vhost("/").unwrap().queue("durable", 1).unwrap();
    let mut expirations = Vec::new();
    while let Some((m, _)) = queue.get(true).await.unwrap() {
        let properties = BasicProperties::decode(&m.message.properties).unwrap();
        expirations.push(properties.expiration.map(|e| e.to_string()));
    }
    assert_eq!(expirations, vec![Some("600000".to_string()), None]);
    broker.shutdown().await;
}
