//! Non-destructive peek through a broker and real queue tasks: the first ready messages in
//! delivery order (priority first), with their properties and redelivered flags, read from
//! the log when they are paged out, and nothing about the queue changed by reading them, not
//! even across a restart. Also: a priority queue's recovered messages keep their priority.

use std::sync::Arc;

use amqp::{BasicProperties, FieldTable, FieldValue, ShortStr};
use broker::confirm::{ChannelKey, ConfirmToken};
use broker::consumer::ConnectionEvent;
use broker::durability::Durability;
use broker::message::Message;
use broker::queue::{MessageTotals, QueueCommand, QueueRef, QueueStats};
use broker::vhost::QueueDeclaration;
use broker::Broker;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

fn s(v: &str) -> ShortStr {
    ShortStr::new(v).unwrap()
}

fn open(dir: &std::path::Path) -> Arc<Broker> {
    Broker::open(Durability::on_disk(dir).unwrap()).unwrap()
}

fn declare_priority_queue(broker: &Broker) -> QueueRef {
    let mut arguments = FieldTable::new();
    arguments.insert(s("x-max-priority"), FieldValue::I32(5));
    broker
        .vhost("/")
        .unwrap()
        .declare_queue(
            QueueDeclaration {
                name: &s("q"),
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments: &arguments,
            },
            false,
            1,
        )
        .unwrap()
}

/// A persistent message `body` with priority `priority` and a message id naming it.
fn message(body: &str, priority: u8) -> Arc<Message> {
    let mut properties = BytesMut::new();
    BasicProperties {
        delivery_mode: Some(2),
        priority: Some(priority),
        message_id: Some(s(body)),
        ..Default::default()
    }
    .encode(&mut properties);
    Arc::new(Message::new(
        ShortStr::default(),
        s("q"),
        properties.freeze(),
        Bytes::copy_from_slice(body.as_bytes()),
    ))
}

/// Publishes persistent messages and waits until every one is on disk.
async fn publish_confirmed(queue: &QueueRef, messages: &[(&str, u8)]) {
    let (sink, mut confirms) = mpsc::unbounded_channel();
    let key = ChannelKey {
        channel_id: 1,
        serial: 1,
    };
    for (seq, (body, priority)) in messages.iter().enumerate() {
        queue.send(QueueCommand::Publish {
            message: message(body, *priority),
            confirm: ConfirmToken::split(key, seq as u64, 1, &sink).pop(),
        });
    }
    for _ in messages {
        match confirms.recv().await {
            Some(ConnectionEvent::Confirm { ack: true, .. }) => {}
            other => panic!("expected a positive confirm, got {other:?}"),
        }
    }
}

/// (body, redelivered, message-id property) of each peeked message.
async fn peek(queue: &QueueRef, count: usize) -> Vec<(String, bool, String)> {
    queue
        .peek(count)
        .await
        .unwrap()
        .into_iter()
        .map(|m| {
            let properties = BasicProperties::decode(&m.message.properties).unwrap();
            (
                String::from_utf8(m.message.body.to_vec()).unwrap(),
                m.redelivered,
                properties.message_id.unwrap().to_string(),
            )
        })
        .collect()
}

fn entry(body: &str, redelivered: bool) -> (String, bool, String) {
    (body.to_string(), redelivered, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_reads_without_taking_even_from_the_log_and_priorities_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let queue = declare_priority_queue(&broker);
    publish_confirmed(
        &queue,
        &[
            ("low", 1),
            ("high", 5),
            ("mid", 3),
            ("high2", 5),
            ("none", 0),
        ],
    )
    .await;
    // Handed out and put back: it is redelivered from now on, and the log knows.
    let (taken, _) = queue.get(false).await.unwrap().unwrap();
    assert_eq!(taken.message.body[..], b"high"[..]);
    queue.send(QueueCommand::Requeue {
        ids: vec![taken.id],
        redelivered: true,
    });

    let before = queue.stats().await.unwrap();
    assert_eq!(
        peek(&queue, 3).await,
        [
            entry("high", true),
            entry("high2", false),
            entry("mid", false)
        ]
    );
    assert_eq!(peek(&queue, 100).await.len(), 5);
    assert_eq!(queue.stats().await.unwrap(), before, "no count changed");
    broker.shutdown().await;
    drop((broker, queue));

    // Recovered messages are paged out: a peek reads them from the log. Peeking marked
    // nothing delivered, and each message is back at its priority.
    let broker = open(dir.path());
    let queue = broker.vhost("/").unwrap().queue("q", 1).unwrap();
    assert_eq!(
        peek(&queue, 10).await,
        [
            entry("high", true),
            entry("high2", false),
            entry("mid", false),
            entry("low", false),
            entry("none", false)
        ]
    );
    assert_eq!(
        queue.stats().await.unwrap(),
        QueueStats {
            message_count: 5,
            consumer_count: 0,
            unacked_count: 0,
            // Recovered, not published since the restart; peeking delivered nothing.
            totals: MessageTotals::default(),
        }
    );
    let mut delivered = Vec::new();
    while let Some((m, _)) = queue.get(true).await.unwrap() {
        delivered.push((
            String::from_utf8(m.message.body.to_vec()).unwrap(),
            m.redelivered,
        ));
    }
    assert_eq!(
        delivered,
        [
            ("high".to_string(), true),
            ("high2".to_string(), false),
            ("mid".to_string(), false),
            ("low".to_string(), false),
            ("none".to_string(), false)
        ]
    );
    assert!(queue.peek(10).await.unwrap().is_empty());
    broker.shutdown().await;
}
