//! Issue 4, item 7 (robust recovery): after a clean stop the segment files are damaged on disk
//! (one queue's last segment cut in the middle of a record, a byte flipped in the middle of
//! another queue's segment, a third queue's segment header broken); the broker still starts,
//! each damaged queue keeps every intact message before its damage, nothing corrupt is ever
//! delivered, the untouched queue is whole, and the damaged queues take new messages that
//! survive the next restart.
//!
//! Segments are found by walking the data directory for `*.seg` under a directory named after
//! the queue (docs/storage-format.md); a message is found in a segment by searching for its
//! body, which the format stores as plain bytes. Nothing else of the record layout is assumed.

use std::path::PathBuf;

use durability_tests::client::*;
use durability_tests::disk::{self, describe, locate, segments_of};
use durability_tests::{Stop, TestDir};
use lapin::types::FieldTable;

const COUNT: usize = 40;
const BODY_LEN: usize = 1000;
const TORN: &str = "torn";
const FLIPPED: &str = "flipped";
const BAD_HEADER: &str = "bad-header";
const INTACT: &str = "intact";
/// The message whose record gets the flipped byte.
const FLIPPED_AT: usize = COUNT / 2;

/// Unique per queue and index, so it is found at exactly one place on disk.
fn body(queue: &str, i: usize) -> Vec<u8> {
    let tag = format!("{queue}:{i:04}:");
    let mut b: Vec<u8> = tag.bytes().collect();
    b.extend((0..BODY_LEN - tag.len()).map(|k| b'a' + ((k * 7 + i) % 26) as u8));
    b
}

/// `Ok(index)` for a body that is exactly one this test published to `queue`.
fn which(queue: &str, got: &[u8]) -> Result<usize, String> {
    (0..COUNT + 1)
        .find(|&i| body(queue, i) == got)
        .ok_or_else(|| {
            format!(
                "queue {queue} delivered a body that was never published (corrupt?): {:?}...",
                String::from_utf8_lossy(&got[..got.len().min(40)])
            )
        })
}

fn segments(data: &std::path::Path, queue: &str) -> Vec<PathBuf> {
    let segs = segments_of(data, queue);
    assert!(
        !segs.is_empty(),
        "no *.seg file for durable queue '{queue}' after a clean stop with {COUNT} persistent \
         messages in it: are persistent messages written to disk?\n{}",
        describe(data)
    );
    segs
}

/// Where message `i` of `queue` is on disk: (segment file, offset of its body).
fn position(data: &std::path::Path, queue: &str, i: usize) -> (PathBuf, u64) {
    let segs = segments(data, queue);
    let (file, at) = locate(&segs, &body(queue, i)).unwrap_or_else(|| {
        panic!(
            "message {i} of '{queue}' is in none of its segments {segs:?}: are bodies stored \
             as plain bytes, as docs/storage-format.md says?"
        )
    });
    (file, at as u64)
}

/// Drains `queue` and returns the indices of what came back, checking every body.
async fn indices(ch: &lapin::Channel, queue: &str) -> Vec<usize> {
    drain(ch, queue)
        .await
        .iter()
        .map(|g| which(queue, &g.body).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_segments_lose_only_what_follows_the_damage() {
    let dir = TestDir::new("recovery");
    let data = dir.data();
    let warren = dir.start().await;
    let (conn, ch) = open(&warren.url()).await;
    let queues = [TORN, FLIPPED, BAD_HEADER, INTACT];
    for q in queues {
        declare_queue(&ch, q, durable(), FieldTable::default()).await;
        let mut confirms = Vec::new();
        for i in 0..COUNT {
            confirms.push(publish_nowait(&ch, "", q, persistent(), &body(q, i)).await);
        }
        for c in confirms {
            expect_ack(c).await;
        }
    }
    warren.stop(Stop::Term).await;
    drop(conn);

    // Torn tail: the last segment ends in the middle of the last message's record.
    let (file, at) = position(&data, TORN, COUNT - 1);
    assert_eq!(
        Some(&file),
        segments(&data, TORN).last(),
        "the last message is in the last segment"
    );
    disk::truncate(&file, at + BODY_LEN as u64 / 2);
    // Bit rot: one byte in the middle of a message in the middle of the segment.
    let (file, at) = position(&data, FLIPPED, FLIPPED_AT);
    disk::flip_byte(&file, at + BODY_LEN as u64 / 2);
    // A broken file header (the magic) of the queue's first segment.
    disk::flip_byte(&segments(&data, BAD_HEADER)[0], 1);

    let warren = dir.start().await;
    let (conn, ch) = open(&warren.url()).await;
    for q in queues {
        assert!(
            queue_exists(&conn, q).await,
            "durable queue '{q}' is gone after recovery from damaged segments"
        );
    }
    let intact = indices(&ch, INTACT).await;
    assert_eq!(
        intact,
        (0..COUNT).collect::<Vec<_>>(),
        "the undamaged queue"
    );

    let torn = indices(&ch, TORN).await;
    assert_eq!(
        torn,
        (0..COUNT - 1).collect::<Vec<_>>(),
        "every message before the torn record, and not the torn one"
    );

    let flipped = indices(&ch, FLIPPED).await;
    assert!(
        flipped.starts_with(&(0..FLIPPED_AT).collect::<Vec<_>>()),
        "every message before the damaged record, in order; got {flipped:?}"
    );
    assert!(
        !flipped.contains(&FLIPPED_AT),
        "the damaged message was delivered"
    );
    assert!(
        flipped.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates: {flipped:?}"
    );

    let bad_header = indices(&ch, BAD_HEADER).await;
    assert!(
        bad_header.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates: {bad_header:?}"
    );
    eprintln!(
        "recovery: torn kept {}, flipped kept {} (damage at {FLIPPED_AT}), bad header kept {} of {COUNT}",
        torn.len(),
        flipped.len(),
        bad_header.len()
    );

    // The damaged queues work on: a new message is appended after what recovery kept, and
    // both survive the next restart.
    for q in [TORN, FLIPPED, BAD_HEADER] {
        publish_confirmed(&ch, "", q, persistent(), &body(q, COUNT)).await;
    }
    let warren = dir.restart(warren, Stop::Term).await;
    drop(conn);
    let (_conn, ch) = open(&warren.url()).await;
    for q in [TORN, FLIPPED, BAD_HEADER] {
        assert_eq!(
            indices(&ch, q).await,
            [COUNT],
            "'{q}': the message published after recovery (the drained ones were acked)"
        );
    }
    warren.terminate_clean().await;
}
