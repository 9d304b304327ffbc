//! A recovered backlog is held in its compact paged form (runs of log positions, not one
//! object per message): across restarts it still comes back whole and in order, with bodies
//! read from the right records and redelivered set where it was handed out, and a purge of it
//! reaches the log.

use std::sync::Arc;

use amqp::{FieldTable, ShortStr};
use broker::durability::Durability;
use broker::message::Message;
use broker::queue::{QueueCommand, QueueRef};
use broker::vhost::QueueDeclaration;
use broker::Broker;
use bytes::Bytes;

const COUNT: u32 = 3_000;

fn s(v: &str) -> ShortStr {
    ShortStr::new(v).unwrap()
}

/// Message `n`: its number, then padding whose length changes every 700 messages, so that the
/// log holds stretches of records alike and of records that differ.
fn body(n: u32) -> Vec<u8> {
    let mut body = n.to_be_bytes().to_vec();
    let padding = if (n / 700).is_multiple_of(2) {
        16
    } else {
        n as usize % 13
    };
    body.resize(4 + padding, b'x');
    body
}

fn message(n: u32) -> Arc<Message> {
    Arc::new(Message {
        exchange: ShortStr::default(),
        routing_key: s("q"),
        properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from(body(n)),
        persistent: true,
        annotations: None,
    })
}

fn open(dir: &std::path::Path) -> Arc<Broker> {
    Broker::open(Durability::on_disk(dir).unwrap()).unwrap()
}

fn declare(broker: &Broker, name: &str) -> QueueRef {
    broker
        .vhost("/")
        .unwrap()
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

async fn fill(queue: &QueueRef) {
    for n in 0..COUNT {
        queue.send(QueueCommand::Publish {
            message: message(n),
            confirm: None,
        });
    }
    assert_eq!(queue.stats().await.unwrap().message_count, COUNT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_backlog_comes_back_in_order_and_a_purge_of_it_lasts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let (kept, purged) = (declare(&broker, "kept"), declare(&broker, "purged"));
    broker.definitions_synced().await.unwrap();
    fill(&kept).await;
    fill(&purged).await;
    // Handed out, never acknowledged: they come back redelivered.
    for n in 0..2u32 {
        let (got, _) = kept.get(false).await.unwrap().unwrap();
        assert_eq!(got.message.body[..], body(n)[..]);
    }
    broker.shutdown().await;
    drop((broker, kept, purged));

    let broker = open(dir.path());
    let vhost = broker.vhost("/").unwrap();
    let (kept, purged) = (
        vhost.queue("kept", 1).unwrap(),
        vhost.queue("purged", 1).unwrap(),
    );
    assert_eq!(kept.stats().await.unwrap().message_count, COUNT);
    let peeked: Vec<_> = kept
        .peek(3)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.message.body.to_vec(), m.redelivered))
        .collect();
    assert_eq!(peeked, [(body(0), true), (body(1), true), (body(2), false)]);
    assert_eq!(purged.purge().await.unwrap(), COUNT);
    // Half of the backlog is taken (and so acknowledged), the rest stays for the next start.
    for n in 0..COUNT / 2 {
        let (got, left) = kept.get(true).await.unwrap().expect("a message");
        assert_eq!(got.message.body[..], body(n)[..], "message {n}");
        assert_eq!(got.redelivered, n < 2, "message {n}");
        assert_eq!(left, COUNT - n - 1);
    }
    broker.shutdown().await;
    drop((broker, vhost, kept, purged));

    let broker = open(dir.path());
    let vhost = broker.vhost("/").unwrap();
    let (kept, purged) = (
        vhost.queue("kept", 1).unwrap(),
        vhost.queue("purged", 1).unwrap(),
    );
    assert_eq!(purged.stats().await.unwrap().message_count, 0);
    for n in COUNT / 2..COUNT {
        let (got, _) = kept.get(true).await.unwrap().expect("a message");
        assert_eq!(got.message.body[..], body(n)[..], "message {n}");
        assert!(!got.redelivered);
    }
    assert!(kept.get(true).await.unwrap().is_none());
    broker.shutdown().await;
}
