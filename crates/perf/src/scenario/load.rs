//! `throughput` and `latency`: producers publish to queues through the default exchange,
//! consumers take from them; latency is the same load at a fixed rate.

use anyhow::Context;
use serde_json::json;

use super::{fill_report, measure_and_drain, Control, Ctx};
use crate::actors::{start_consumer, start_producer, ConsumerSpec, ProducerSpec};
use crate::cli::{is_persistent, ConsumerArgs, LatencyArgs, ThroughputArgs, Timing};
use crate::report::Report;

struct Load<'a> {
    producers: usize,
    consumers: usize,
    queues: Vec<String>,
    size: usize,
    persistent: bool,
    confirm: u64,
    rate: f64,
    batch: usize,
    timing: &'a Timing,
    consumer: &'a ConsumerArgs,
}

pub async fn throughput(ctx: &Ctx, a: &ThroughputArgs, report: &mut Report) -> anyhow::Result<()> {
    let queues = if a.queues > 1 {
        (0..a.queues).map(|i| format!("{}-{i}", a.queue)).collect()
    } else {
        vec![a.queue.clone()]
    };
    let persistent = is_persistent(&a.flags);
    report.params = json!({
        "producers": a.producers, "consumers": a.consumers, "queues": queues.len(),
        "size": a.size, "persistent": persistent, "confirm": a.confirm,
        "auto_ack": a.consumer.auto_ack, "prefetch": a.consumer.prefetch,
        "multi_ack_every": a.consumer.multi_ack_every, "rate_per_producer": a.rate,
        "time": a.timing.time_secs, "warmup": a.timing.warmup_secs,
    });
    run_load(
        ctx,
        Load {
            producers: a.producers,
            consumers: a.consumers,
            queues,
            size: a.size,
            persistent,
            confirm: a.confirm,
            rate: a.rate,
            batch: a.batch,
            timing: &a.timing,
            consumer: &a.consumer,
        },
        report,
    )
    .await
}

pub async fn latency(ctx: &Ctx, a: &LatencyArgs, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(a.rate > 0.0, "latency needs a rate (-r) above 0");
    let size = a.size.max(8);
    let persistent = is_persistent(&a.flags);
    report.params = json!({
        "rate": a.rate, "size": size, "persistent": persistent, "confirm": a.confirm,
        "auto_ack": a.consumer.auto_ack, "prefetch": a.consumer.prefetch,
        "time": a.timing.time_secs, "warmup": a.timing.warmup_secs,
    });
    run_load(
        ctx,
        Load {
            producers: 1,
            consumers: 1,
            queues: vec![a.queue.clone()],
            size,
            persistent,
            confirm: a.confirm,
            rate: a.rate,
            // The rate limiter sends what is due each tick; no more batching than that.
            batch: 64,
            timing: &a.timing,
            consumer: &a.consumer,
        },
        report,
    )
    .await
}

pub fn consumer_spec(queue: &str, c: &ConsumerArgs) -> ConsumerSpec {
    let mut every = c.multi_ack_every.max(1);
    if c.prefetch > 0 {
        // More than the prefetch would never be delivered before the ack that frees them.
        every = every.min(u32::from(c.prefetch));
    }
    ConsumerSpec {
        queue: queue.to_string(),
        auto_ack: c.auto_ack,
        prefetch: c.prefetch,
        multi_ack_every: every,
    }
}

async fn run_load(ctx: &Ctx, load: Load<'_>, report: &mut Report) -> anyhow::Result<()> {
    let mut control = Control::open(&ctx.uri)
        .await
        .context("control connection")?;
    for q in &load.queues {
        control
            .fresh_queue(q, load.persistent)
            .await
            .with_context(|| format!("declaring queue '{q}'"))?;
    }
    let mut consumers = Vec::new();
    for i in 0..load.consumers {
        let q = &load.queues[i % load.queues.len()];
        let spec = consumer_spec(q, load.consumer);
        consumers.push(
            start_consumer(
                &ctx.uri,
                &format!("warren-perf consumer {i}"),
                spec,
                ctx.shared.clone(),
            )
            .await
            .with_context(|| format!("starting consumer {i} on '{q}'"))?,
        );
    }
    let mut producers = Vec::new();
    for i in 0..load.producers {
        let q = &load.queues[i % load.queues.len()];
        let spec = ProducerSpec {
            exchange: String::new(),
            routing_key: q.clone(),
            body_size: load.size,
            persistent: load.persistent,
            confirm: load.confirm,
            rate: load.rate,
            limit: None,
            batch: load.batch,
        };
        producers.push(
            start_producer(
                &ctx.uri,
                &format!("warren-perf producer {i}"),
                spec,
                ctx.shared.clone(),
            )
            .await
            .with_context(|| format!("starting producer {i} to '{q}'"))?
            .task,
        );
    }
    let (start, end) =
        measure_and_drain(ctx, load.timing, &mut control, producers, consumers, 1).await;
    fill_report(ctx, report, &start, &end);
    control.cleanup(None).await;
    Ok(())
}
