//! Issue 4, items 2 and 4 (acks across restarts): a message delivered but not acked when the
//! broker dies comes back with redelivered=true; one acked before a SIGTERM never comes back;
//! one acked before a kill -9 may come back, but only flagged redelivered (at-least-once).

use durability_tests::client::*;
use durability_tests::{Stop, TestDir, Warren};
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;

const QUEUE: &str = "acks";
const PUBLISHED: usize = 15;
/// Messages taken (delivered) before the stop; the rest are never delivered.
const TAKEN: usize = 10;
/// Of those taken, how many are acked before the stop.
const ACKED: usize = 5;

fn body(i: usize) -> Vec<u8> {
    format!("m{i:02}").into_bytes()
}

fn index_of(b: &[u8]) -> usize {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.strip_prefix('m'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected body {:?}", String::from_utf8_lossy(b)))
}

async fn setup(dir: &TestDir) -> Warren {
    let warren = dir.start().await;
    let (_conn, ch) = open(&warren.url()).await;
    declare_queue(&ch, QUEUE, durable(), FieldTable::default()).await;
    let mut confirms = Vec::new();
    for i in 0..PUBLISHED {
        confirms.push(publish_nowait(&ch, "", QUEUE, persistent(), &body(i)).await);
    }
    for c in confirms {
        expect_ack(c).await;
    }
    warren
}

/// Takes the first [`TAKEN`] messages with basic.get (manual ack) and acks the first
/// [`ACKED`] of them; a synchronous method on the same channel then proves the broker has
/// processed the acks (a channel's methods are handled in order).
async fn take_and_ack_some(ch: &Channel) {
    let mut tags = Vec::new();
    for i in 0..TAKEN {
        let m = get(ch, QUEUE, false)
            .await
            .unwrap_or_else(|| panic!("message {i} before the stop"));
        assert_eq!(index_of(&m.delivery.data), i);
        assert!(!m.delivery.redelivered);
        tags.push(m.delivery.delivery_tag);
    }
    for tag in &tags[..ACKED] {
        within("basic.ack", ch.basic_ack(*tag, BasicAckOptions::default()))
            .await
            .expect("basic.ack");
    }
    within(
        "basic.qos round trip",
        ch.basic_qos(0, BasicQosOptions::default()),
    )
    .await
    .expect("basic.qos");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_deliveries_come_back_redelivered_after_kill9() {
    let dir = TestDir::new("unacked-kill");
    let warren = setup(&dir).await;
    let conn = connect(&warren.url()).await;
    let ch = channel(&conn).await;
    within(
        "basic.qos",
        ch.basic_qos(TAKEN as u16, BasicQosOptions::default()),
    )
    .await
    .expect("basic.qos");
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume(
            QUEUE.into(),
            "holder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("basic.consume");
    for i in 0..TAKEN {
        let d = within("a delivery", consumer.next())
            .await
            .expect("consumer stream")
            .expect("delivery");
        assert_eq!(index_of(&d.data), i);
        assert!(!d.redelivered);
    }
    // The consumer holds TAKEN unacked deliveries (its whole prefetch) at the crash.
    let warren = dir.restart(warren, Stop::Kill).await;
    drop(conn);

    let (conn, ch) = open(&warren.url()).await;
    expect_queue(&conn, QUEUE).await;
    let got = drain(&ch, QUEUE).await;
    let indices: Vec<usize> = got.iter().map(|g| index_of(&g.body)).collect();
    assert_eq!(
        indices,
        (0..PUBLISHED).collect::<Vec<_>>(),
        "every message back, in order"
    );
    for g in &got[..TAKEN] {
        assert!(
            g.redelivered,
            "{:?} was delivered before the crash but is not flagged redelivered",
            String::from_utf8_lossy(&g.body)
        );
    }
    warren.terminate_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_before_sigterm_never_come_back() {
    let dir = TestDir::new("acked-term");
    let warren = setup(&dir).await;
    let conn = connect(&warren.url()).await;
    let ch = channel(&conn).await;
    take_and_ack_some(&ch).await;
    let warren = dir.restart(warren, Stop::Term).await;
    drop(conn);

    let (conn, ch) = open(&warren.url()).await;
    expect_queue(&conn, QUEUE).await;
    let got = drain(&ch, QUEUE).await;
    let seen: Vec<(usize, bool)> = got
        .iter()
        .map(|g| (index_of(&g.body), g.redelivered))
        .collect();
    // Acked: gone. Taken, not acked: back, flagged. Never taken: back, not flagged.
    let expected: Vec<(usize, bool)> = (ACKED..PUBLISHED).map(|i| (i, i < TAKEN)).collect();
    assert_eq!(
        seen, expected,
        "(message, redelivered) after a clean restart"
    );
    warren.terminate_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_before_kill9_come_back_only_as_redelivered() {
    let dir = TestDir::new("acked-kill");
    let warren = setup(&dir).await;
    let conn = connect(&warren.url()).await;
    let ch = channel(&conn).await;
    take_and_ack_some(&ch).await;
    let warren = dir.restart(warren, Stop::Kill).await;
    drop(conn);

    let (conn, ch) = open(&warren.url()).await;
    expect_queue(&conn, QUEUE).await;
    let got = drain(&ch, QUEUE).await;
    let indices: Vec<usize> = got.iter().map(|g| index_of(&g.body)).collect();
    let mut sorted = indices.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, indices, "in order, each at most once");
    for i in ACKED..PUBLISHED {
        assert!(
            indices.contains(&i),
            "unacked message {i} lost; got {indices:?}"
        );
    }
    for g in &got {
        let i = index_of(&g.body);
        if i < TAKEN {
            // Acked or not, it had been delivered: it may come back only flagged.
            assert!(g.redelivered, "message {i} came back without redelivered");
        }
    }
    warren.terminate_clean().await;
}
