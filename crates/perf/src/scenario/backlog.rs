//! `backlog`: fill a queue with M messages and no consumer (fill rate, broker memory per
//! queued message), then consume them all (drain rate).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::load::consumer_spec;
use super::{fill_report, Control, Ctx, Live};
use crate::actors::{start_consumer, start_producer, ProducerSpec};
use crate::cli::{is_persistent, BacklogArgs};
use crate::report::{BacklogFigures, Report};
use crate::sys;

pub async fn run(ctx: &Ctx, a: &BacklogArgs, report: &mut Report) -> anyhow::Result<()> {
    let persistent = is_persistent(&a.flags);
    let producers = a.producers.max(1) as u64;
    report.params = json!({
        "messages": a.messages, "size": a.size, "persistent": persistent,
        "confirm": a.confirm, "producers": producers, "consumers": a.consumers.max(1),
        "auto_ack": a.consumer.auto_ack, "prefetch": a.consumer.prefetch,
    });
    let shared = &ctx.shared;
    let mut control = Control::open(&ctx.uri)
        .await
        .context("control connection")?;
    control
        .fresh_queue(&a.queue, persistent)
        .await
        .with_context(|| format!("declaring queue '{}'", a.queue))?;
    let rss = || ctx.broker_pid.and_then(|p| sys::sample_process(p).ok());
    let rss_empty = rss().map(|s| s.rss_bytes);
    let mut live = Live::new(ctx);
    let start = shared.snapshot(ctx.broker_pid);
    let timeout = Duration::from_secs_f64(a.timeout_secs.max(1.0));

    // Fill.
    let fill_started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..producers {
        let share = a.messages / producers + u64::from(i < a.messages % producers);
        let spec = ProducerSpec {
            exchange: String::new(),
            routing_key: a.queue.clone(),
            body_size: a.size,
            persistent,
            confirm: a.confirm,
            rate: 0.0,
            limit: Some(share),
            batch: a.batch,
        };
        tasks.push(
            start_producer(
                &ctx.uri,
                &format!("warren-perf producer {i}"),
                spec,
                shared.clone(),
            )
            .await
            .with_context(|| format!("starting producer {i}"))?
            .task,
        );
    }
    let deadline = fill_started + timeout;
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    let mut depth = 0;
    loop {
        if let Some(e) = shared.error() {
            anyhow::bail!("{e}");
        }
        let published = shared.counters.published.load(Relaxed);
        if published >= a.messages {
            // Everything is written: poll closely so the fill time is the queue's, not ours.
            // A broker busy paging may answer slowly; that must not end the wait.
            match control.depth_within(Duration::from_secs(10)).await {
                Some(d) if d >= a.messages => {
                    depth = d;
                    break;
                }
                Some(d) => depth = d,
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "fill timed out: the queue holds {depth} of {} messages after {:.0} s",
                a.messages,
                timeout.as_secs_f64()
            );
        }
        if Instant::now() >= next_tick {
            let d = control.depth().await;
            depth = d.unwrap_or(depth);
            live.tick(shared, "fill", d);
            next_tick += Duration::from_secs(1);
        }
    }
    let fill_secs = fill_started.elapsed().as_secs_f64();
    stop_producers(shared, tasks).await;
    let rss_filled = rss().map(|s| s.rss_bytes);
    if ctx.live {
        eprintln!("filled {} messages in {fill_secs:.2} s; draining", depth);
    }

    // Drain.
    let drain_started = Instant::now();
    let mut consumers = Vec::new();
    for i in 0..a.consumers.max(1) {
        consumers.push(
            start_consumer(
                &ctx.uri,
                &format!("warren-perf consumer {i}"),
                consumer_spec(&a.queue, &a.consumer),
                shared.clone(),
            )
            .await
            .with_context(|| format!("starting consumer {i}"))?,
        );
    }
    let deadline = drain_started + timeout;
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    let mut failure = None;
    while shared.counters.consumed.load(Relaxed) < a.messages {
        if let Some(e) = shared.error() {
            failure = Some(e);
            break;
        }
        if Instant::now() >= deadline {
            failure = Some(format!(
                "drain timed out: consumed {} of {} messages after {:.0} s",
                shared.counters.consumed.load(Relaxed),
                a.messages,
                timeout.as_secs_f64()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if Instant::now() >= next_tick {
            let d = control.depth().await;
            live.tick(shared, "drain", d);
            next_tick += Duration::from_secs(1);
        }
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let end = shared.snapshot(ctx.broker_pid);
    shared.stop_consumers.trigger();
    for c in consumers {
        let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
    }
    fill_report(ctx, report, &start, &end);
    let bytes_per_message = match (rss_empty, rss_filled) {
        (Some(e), Some(f)) if a.messages > 0 => Some((f as f64 - e as f64) / a.messages as f64),
        _ => None,
    };
    report.backlog = Some(BacklogFigures {
        messages: a.messages,
        fill_seconds: fill_secs,
        fill_rate: a.messages as f64 / fill_secs,
        drain_seconds: drain_secs,
        drain_rate: shared.counters.consumed.load(Relaxed).min(a.messages) as f64 / drain_secs,
        rss_bytes_empty: rss_empty,
        rss_bytes_filled: rss_filled,
        bytes_per_message,
    });
    control.cleanup(None).await;
    match failure {
        Some(e) => anyhow::bail!("{e}"),
        None => Ok(()),
    }
}

async fn stop_producers(shared: &crate::stats::Shared, tasks: Vec<tokio::task::JoinHandle<()>>) {
    shared.stop_producers.trigger();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(40), t).await;
    }
}
