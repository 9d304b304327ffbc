//! Policies applied through a broker: put and delete reach existing queues and exchanges at
//! once, and after a restart the restored queues and exchanges come back under the restored
//! policies (while the definitions keep the declared arguments only).

use std::sync::Arc;

use amqp::{FieldTable, ShortStr};
use broker::durability::Durability;
use broker::message::Message;
use broker::policies::Policy;
use broker::queue::{QueueCommand, QueueRef};
use broker::vhost::{ExchangeDeclaration, QueueDeclaration, VHost};
use broker::Broker;
use bytes::Bytes;
use serde_json::json;

fn s(v: &str) -> ShortStr {
    ShortStr::new(v).unwrap()
}

fn open(dir: &std::path::Path) -> Arc<Broker> {
    Broker::open(Durability::on_disk(dir).unwrap()).unwrap()
}

fn policy(name: &str, pattern: &str, apply_to: &str, definition: serde_json::Value) -> Policy {
    let definition = definition.as_object().cloned().unwrap();
    Policy::new("/", name, pattern, apply_to, 0, definition).unwrap()
}

fn declare_queue(vhost: &VHost, name: &str) -> QueueRef {
    vhost
        .declare_queue(
            QueueDeclaration {
                name: &s(name),
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments: &FieldTable::new(),
            },
            false,
            1,
        )
        .unwrap()
}

fn publish(queue: &QueueRef, count: usize) {
    for _ in 0..count {
        queue.send(QueueCommand::Publish {
            message: Arc::new(Message::new(
                s(""),
                queue.name.clone(),
                Bytes::new(),
                Bytes::new(),
            )),
            confirm: None,
        });
    }
}

async fn ready(queue: &QueueRef) -> u32 {
    queue.stats().await.unwrap().message_count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_apply_at_once_and_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let vhost = broker.vhost("/").unwrap();
    let queue = declare_queue(&vhost, "limited.q");
    vhost
        .declare_exchange(
            ExchangeDeclaration {
                name: &s("limited.x"),
                kind: "fanout",
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: &FieldTable::new(),
            },
            false,
        )
        .unwrap();
    publish(&queue, 5);
    assert_eq!(ready(&queue).await, 5);

    assert!(broker.put_policy(policy(
        "limit",
        "^limited\\.",
        "queues",
        json!({"max-length": 2})
    )));
    assert!(broker.put_policy(policy(
        "ae",
        "^limited\\.",
        "exchanges",
        json!({"alternate-exchange": "spill"})
    )));
    assert_eq!(
        ready(&queue).await,
        2,
        "an existing queue is trimmed at once"
    );
    assert_eq!(
        queue.policy().map(|p| p.name.clone()).as_deref(),
        Some("limit")
    );
    let exchange = vhost.exchange("limited.x").unwrap();
    assert_eq!(exchange.alternate_exchange(), Some(s("spill")));
    assert_eq!(
        exchange.policy().map(|p| p.name.clone()).as_deref(),
        Some("ae")
    );
    broker.definitions_synced().await.unwrap();
    broker.shutdown().await;
    drop((broker, vhost, queue, exchange));

    let broker = open(dir.path());
    let vhost = broker.vhost("/").unwrap();
    let queue = vhost.queue("limited.q", 1).unwrap();
    assert_eq!(
        queue.settings().limits.max_length,
        Some(2),
        "restored under its policy"
    );
    assert!(
        queue.config.arguments.is_empty(),
        "the declared arguments stay as declared"
    );
    let exchange = vhost.exchange("limited.x").unwrap();
    assert_eq!(exchange.alternate_exchange(), Some(s("spill")));
    publish(&queue, 5);
    assert_eq!(ready(&queue).await, 2);

    assert!(broker.delete_policy("/", "limit"));
    assert!(queue.policy().is_none());
    publish(&queue, 3);
    assert_eq!(ready(&queue).await, 5, "the limit is lifted");
    assert!(broker.delete_policy("/", "ae"));
    assert_eq!(exchange.alternate_exchange(), None);
    broker.shutdown().await;
}
