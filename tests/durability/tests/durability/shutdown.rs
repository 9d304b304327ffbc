//! Issue 4, item 8 (graceful stop): SIGTERM while clients are connected closes each of them
//! with 320 CONNECTION_FORCED and the process exits 0 within 5 seconds. Needs no durability,
//! so it passes on an in-memory broker too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durability_tests::client::*;
use durability_tests::process::STOP_DEADLINE;
use durability_tests::TestDir;
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{Confirmation, Connection, Event};

/// The close the connection's event stream reports, which must come before the deadline.
async fn close_reason(
    events: &mut (impl futures_lite::Stream<Item = Event> + Unpin),
) -> (u16, String) {
    loop {
        match within("connection.close from the broker", events.next()).await {
            Some(Event::Error(e)) => {
                return amqp_error(&e)
                    .unwrap_or_else(|| panic!("connection ended without a close method: {e}"))
            }
            Some(_) => continue,
            None => panic!("event stream ended without an error"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_client_with_320_and_exits_0_within_5s() {
    let dir = TestDir::new("sigterm");
    let warren = dir.start().await;
    let url = warren.url();

    // Three kinds of client: idle, consuming, and publishing persistent messages with
    // confirms at the moment of the signal.
    let idle = connect(&url).await;
    let _idle_ch = channel(&idle).await;
    let (consuming, cons_ch) = open(&url).await;
    declare_queue(&cons_ch, "sigterm-busy", durable(), FieldTable::default()).await;
    let mut consumer = within(
        "basic.consume",
        cons_ch.basic_consume(
            "sigterm-busy".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("basic.consume");
    let (publishing, pub_ch) = open(&url).await;
    let conns: [&Connection; 3] = [&idle, &consuming, &publishing];
    let mut events: Vec<_> = conns.iter().map(|c| c.events_listener()).collect();

    let confirmed = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn({
        let confirmed = confirmed.clone();
        async move {
            loop {
                let sent = pub_ch
                    .basic_publish(
                        "".into(),
                        "sigterm-busy".into(),
                        BasicPublishOptions::default(),
                        b"in flight at the signal",
                        persistent(),
                    )
                    .await;
                let Ok(confirm) = sent else { break };
                match confirm.await {
                    Ok(Confirmation::Ack(_)) => confirmed.fetch_add(1, Ordering::Relaxed),
                    _ => break,
                };
            }
        }
    });
    eventually(DEADLINE, "the publisher gets confirms", || {
        let n = confirmed.load(Ordering::Relaxed);
        async move { n >= 20 }
    })
    .await;
    // The consumer is live too: it has received deliveries.
    within("a delivery before the signal", consumer.next())
        .await
        .expect("consumer stream")
        .expect("delivery");

    let took = warren.terminate_clean().await;
    assert!(took <= STOP_DEADLINE, "took {took:?}");

    for (i, ev) in events.iter_mut().enumerate() {
        let (code, text) = close_reason(ev).await;
        // RabbitMQ 3.10.8: 320 "CONNECTION_FORCED - broker forced connection closure with
        // reason 'shutdown'".
        assert_eq!(code, 320, "client {i}: {text}");
        assert!(text.starts_with("CONNECTION_FORCED"), "client {i}: {text}");
    }
    within_for(Duration::from_secs(10), "the publisher to stop", publisher)
        .await
        .expect("publisher task");
    // The consumer's stream ends with the same close.
    loop {
        match within("the consumer's stream to end", consumer.next()).await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                assert_eq!(amqp_error(&e).map(|(c, _)| c), Some(320), "{e}");
                break;
            }
            None => break,
        }
    }
}
