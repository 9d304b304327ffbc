//! In-process restarts of a broker on one data directory: durable definitions and persistent
//! messages come back (in order, with redelivered set for what had been handed out), the rest
//! does not. The binary-level restart and kill -9 tests live in tests/durability.

use std::sync::Arc;

use amqp::{FieldTable, FieldValue, ShortStr};
use broker::confirm::{ChannelKey, ConfirmToken};
use broker::consumer::ConnectionEvent;
use broker::durability::Durability;
use broker::message::Message;
use broker::queue::QueueCommand;
use broker::vhost::{ExchangeDeclaration, QueueDeclaration};
use broker::Broker;
use bytes::Bytes;
use tokio::sync::mpsc;

fn s(v: &str) -> ShortStr {
    ShortStr::new(v).unwrap()
}

fn message(n: u32, persistent: bool) -> Arc<Message> {
    Arc::new(Message {
        exchange: ShortStr::default(),
        routing_key: s("q"),
        properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from(n.to_be_bytes().to_vec()),
        persistent,
        annotations: None,
    })
}

fn open(dir: &std::path::Path) -> Arc<Broker> {
    Broker::open(Durability::on_disk(dir).unwrap()).unwrap()
}

fn declare(broker: &Broker, name: &str, durable: bool) -> broker::queue::QueueRef {
    let mut arguments = FieldTable::new();
    arguments.insert(s("x-max-length"), FieldValue::I32(1000));
    broker
        .vhost("/")
        .unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_state_survives_a_clean_restart_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let vhost = broker.vhost("/").unwrap();
    vhost
        .declare_exchange(
            ExchangeDeclaration {
                name: &s("events"),
                kind: "topic",
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: &FieldTable::new(),
            },
            false,
        )
        .unwrap();
    let queue = declare(&broker, "q", true);
    declare(&broker, "scratch", false);
    vhost
        .bind_queue(&queue, "events", &s("a.#"), &FieldTable::new())
        .unwrap();
    broker.definitions_synced().await.unwrap();

    // Persistent messages are confirmed only once fsynced; transient ones never come back.
    let (sink, mut confirms) = mpsc::unbounded_channel();
    let key = ChannelKey {
        channel_id: 1,
        serial: 1,
    };
    for n in 0..10u32 {
        let persistent = n % 2 == 0;
        let confirm = persistent.then(|| ConfirmToken::split(key, u64::from(n), 1, &sink).pop());
        queue.send(QueueCommand::Publish {
            message: message(n, persistent),
            confirm: confirm.flatten(),
        });
    }
    let mut acked = 0;
    while acked < 5 {
        match confirms.recv().await {
            Some(ConnectionEvent::Confirm { ack: true, .. }) => acked += 1,
            other => panic!("expected a positive confirm, got {other:?}"),
        }
    }
    // Handed out but not acknowledged: it must come back marked redelivered.
    let (first, _) = queue.get(false).await.unwrap().unwrap();
    assert_eq!(first.message.body[..], 0u32.to_be_bytes());
    broker.shutdown().await;
    drop((broker, vhost, queue));

    let broker = open(dir.path());
    let vhost = broker.vhost("/").unwrap();
    assert!(
        vhost.exchange("events").is_some(),
        "durable exchange restored"
    );
    assert!(vhost.queue("scratch", 1).is_err(), "non-durable queue gone");
    let queue = vhost.queue("q", 1).unwrap();
    assert_eq!(
        queue
            .config
            .arguments
            .get("x-max-length")
            .and_then(FieldValue::as_i64),
        Some(1000)
    );
    let mut routed = Vec::new();
    vhost.route(
        &vhost.exchange("events").unwrap(),
        "a.b",
        &Bytes::new(),
        &mut routed,
    );
    assert_eq!(routed.len(), 1, "binding restored");
    let mut bodies = Vec::new();
    let mut redelivered = Vec::new();
    while let Some((m, _)) = queue.get(true).await.unwrap() {
        bodies.push(u32::from_be_bytes(m.message.body[..4].try_into().unwrap()));
        redelivered.push(m.redelivered);
    }
    assert_eq!(bodies, vec![0, 2, 4, 6, 8], "persistent messages, in order");
    assert_eq!(redelivered, vec![true, false, false, false, false]);
    broker.shutdown().await;
}
