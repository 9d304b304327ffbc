//! `fanout`: producers publish to one fanout exchange bound to N queues, each with its own
//! consumer; the figure is deliveries per second across all queues.

use anyhow::Context;
use serde_json::json;

use super::load::consumer_spec;
use super::{fill_report, measure_and_drain, Control, Ctx};
use crate::actors::{start_consumer, start_producer, ProducerSpec};
use crate::cli::{is_persistent, FanoutArgs};
use crate::report::Report;

pub async fn run(ctx: &Ctx, a: &FanoutArgs, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(a.queues > 0, "fanout needs at least one queue");
    let persistent = is_persistent(&a.flags);
    report.params = json!({
        "queues": a.queues, "producers": a.producers, "size": a.size,
        "persistent": persistent, "confirm": a.confirm, "rate_per_producer": a.rate,
        "auto_ack": a.consumer.auto_ack, "prefetch": a.consumer.prefetch,
        "time": a.timing.time_secs, "warmup": a.timing.warmup_secs,
    });
    let mut control = Control::open(&ctx.uri)
        .await
        .context("control connection")?;
    control
        .fresh_fanout(&a.exchange, persistent)
        .await
        .with_context(|| format!("declaring exchange '{}'", a.exchange))?;
    let queues: Vec<String> = (0..a.queues)
        .map(|i| format!("{}-{i}", a.exchange))
        .collect();
    for q in &queues {
        control
            .fresh_queue(q, persistent)
            .await
            .with_context(|| format!("declaring queue '{q}'"))?;
        control
            .bind(q, &a.exchange)
            .await
            .with_context(|| format!("binding '{q}' to '{}'", a.exchange))?;
    }
    let mut consumers = Vec::new();
    for (i, q) in queues.iter().enumerate() {
        consumers.push(
            start_consumer(
                &ctx.uri,
                &format!("warren-perf consumer {i}"),
                consumer_spec(q, &a.consumer),
                ctx.shared.clone(),
            )
            .await
            .with_context(|| format!("starting consumer on '{q}'"))?,
        );
    }
    let mut producers = Vec::new();
    for i in 0..a.producers {
        let spec = ProducerSpec {
            exchange: a.exchange.clone(),
            routing_key: String::new(),
            body_size: a.size,
            persistent,
            confirm: a.confirm,
            rate: a.rate,
            limit: None,
            batch: a.batch,
        };
        producers.push(
            start_producer(
                &ctx.uri,
                &format!("warren-perf producer {i}"),
                spec,
                ctx.shared.clone(),
            )
            .await
            .with_context(|| format!("starting producer {i}"))?
            .task,
        );
    }
    let (start, end) = measure_and_drain(
        ctx,
        &a.timing,
        &mut control,
        producers,
        consumers,
        a.queues as u64,
    )
    .await;
    fill_report(ctx, report, &start, &end);
    control.cleanup(Some(&a.exchange)).await;
    Ok(())
}
