//! Issue 4, item 6 (disk reclaimed): after a volume of persistent messages has been published
//! and consumed+acked through a durable queue, the data directory is small again, while the
//! broker runs and after a clean restart. Sizes are read from the filesystem.
//!
//! Knobs: `WARREN_RECLAIM_MIB` (volume pushed through, default 200), `WARREN_RECLAIM_BODY_KIB`
//! (message size, default 64), `WARREN_RECLAIM_LIMIT_MIB` (largest data directory allowed
//! while running once everything is acked, default 100: the figure; it must stay
//! above the store's 64 MiB segment size because the newest segment is kept until it rolls).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durability_tests::client::*;
use durability_tests::disk::{describe, dir_size};
use durability_tests::{knobs, Stop, TestDir};
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;

const QUEUE: &str = "reclaim";
const MIB: u64 = 1024 * 1024;
/// Published before any consumer exists, to show the messages really are on disk (otherwise
/// "the directory is small" would hold for a broker that writes nothing).
const ON_DISK_PROBE_BYTES: u64 = 16 * MIB;
/// What a clean restart may leave once every message is acked: definitions and empty
/// directories, no segment.
const AFTER_RESTART_LIMIT_BYTES: u64 = MIB;
/// Confirms in flight per publisher.
const WINDOW: usize = 64;

fn body(seq: u64, len: usize) -> Vec<u8> {
    let tag = format!("reclaim {seq:08};");
    tag.bytes().cycle().take(len).collect()
}

/// Publishes messages `from..to` with up to [`WINDOW`] confirms in flight.
async fn publish_range(ch: &Channel, from: u64, to: u64, len: usize) {
    let mut in_flight = VecDeque::new();
    for seq in from..to {
        if in_flight.len() >= WINDOW {
            expect_ack(in_flight.pop_front().expect("non-empty")).await;
        }
        in_flight.push_back(publish_nowait(ch, "", QUEUE, persistent(), &body(seq, len)).await);
    }
    for c in in_flight {
        expect_ack(c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directory_is_small_after_everything_is_acked() {
    let volume = knobs::u64_or("WARREN_RECLAIM_MIB", 200) * MIB;
    let body_len = (knobs::u64_or("WARREN_RECLAIM_BODY_KIB", 64) * 1024).max(1) as usize;
    let running_limit = knobs::u64_or("WARREN_RECLAIM_LIMIT_MIB", 100) * MIB;
    let total = volume.div_ceil(body_len as u64);
    let probe = (ON_DISK_PROBE_BYTES.min(volume) / body_len as u64).max(1);

    let dir = TestDir::new("reclaim");
    let data = dir.data();
    let warren = dir.start().await;
    let (conn, ch) = open(&warren.url()).await;
    declare_queue(&ch, QUEUE, durable(), FieldTable::default()).await;

    let started = Instant::now();
    publish_range(&ch, 0, probe, body_len).await;
    let unacked = probe * body_len as u64;
    let held = dir_size(&data);
    assert!(
        held >= unacked,
        "the data directory holds {held} bytes while {unacked} bytes of confirmed persistent \
         messages sit unacked in a durable queue: they are not on disk\n{}",
        describe(&data)
    );

    // A consumer acks everything; the publisher pushes the rest of the volume past it.
    let consumed = Arc::new(AtomicU64::new(0));
    let cons_ch = channel(&conn).await;
    within(
        "basic.qos",
        cons_ch.basic_qos(256, BasicQosOptions::default()),
    )
    .await
    .expect("basic.qos");
    let mut consumer = within(
        "basic.consume",
        cons_ch.basic_consume(
            QUEUE.into(),
            "reclaimer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("basic.consume");
    let consuming = tokio::spawn({
        let consumed = consumed.clone();
        async move {
            while let Some(d) = consumer.next().await {
                let d = d.expect("delivery");
                assert_eq!(d.data.len(), body_len, "body size");
                d.acker
                    .ack(BasicAckOptions::default())
                    .await
                    .expect("basic.ack");
                if consumed.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    break;
                }
            }
        }
    });
    publish_range(&ch, probe, total, body_len).await;
    // Generous: a debug build on a loaded CI machine, at 5 MiB/s at the very least.
    let drain_limit = DEADLINE + Duration::from_secs(volume / (5 * MIB));
    within_for(drain_limit, "the consumer to ack every message", consuming)
        .await
        .expect("consumer task");
    // Acks are one-way: a synchronous method after them on the consumer's channel means the
    // broker has handled them.
    within(
        "basic.qos round trip",
        cons_ch.basic_qos(256, BasicQosOptions::default()),
    )
    .await
    .expect("basic.qos");
    eprintln!(
        "reclaim: {} MiB in {total} messages of {body_len} bytes through '{QUEUE}' in {:?}",
        volume / MIB,
        started.elapsed()
    );

    if volume > running_limit {
        // Segments are deleted as their last message is acked, maybe a little later.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let size = dir_size(&data);
            if size <= running_limit {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{size} bytes in the data directory of the running broker after {} MiB were \
                 published and acked (limit {} MiB)\n{}",
                volume / MIB,
                running_limit / MIB,
                describe(&data)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        eprintln!(
            "reclaim: volume {} MiB is not above the limit {} MiB; running-size check skipped",
            volume / MIB,
            running_limit / MIB
        );
    }
    let running_size = dir_size(&data);

    let warren = dir.restart(warren, Stop::Term).await;
    drop(conn);
    // Recovery may delete dead segments just after the broker starts listening.
    let deadline = Instant::now() + DEADLINE;
    let after_restart = loop {
        let size = dir_size(&data);
        if size <= AFTER_RESTART_LIMIT_BYTES || Instant::now() >= deadline {
            break size;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "reclaim: data dir {running_size} bytes while running, {after_restart} after a clean restart"
    );
    assert!(
        after_restart <= AFTER_RESTART_LIMIT_BYTES,
        "{after_restart} bytes left after every message was acked and the broker restarted\n{}",
        describe(&data)
    );
    let conn = connect(&warren.url()).await;
    assert_eq!(
        queue_count(&conn, QUEUE).await,
        Some(0),
        "the durable queue, empty (None: it is gone)"
    );
    warren.terminate_clean().await;
}
