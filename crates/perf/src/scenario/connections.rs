//! `connections`: open K connections with one channel each, a few handshakes at a time;
//! report the open rate and the broker's resident memory per connection.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

use super::Ctx;
use crate::actors::connect;
use crate::client::Connection;
use crate::report::{ConnectionFigures, Report};
use crate::stats::Delta;
use crate::sys;

pub async fn run(
    ctx: &Ctx,
    a: &crate::cli::ConnectionsArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    report.params = json!({
        "connections": a.connections, "concurrency": a.concurrency, "hold": a.hold_secs,
    });
    let rss = || ctx.broker_pid.and_then(|p| sys::sample_process(p).ok());
    let rss_before = rss().map(|s| s.rss_bytes);
    let start = ctx.shared.snapshot(ctx.broker_pid);
    let started = Instant::now();
    let mut open: Vec<Connection> = Vec::with_capacity(a.connections);
    let mut pending = JoinSet::new();
    let mut next = 0usize;
    let mut next_tick = started + Duration::from_secs(1);
    let mut failure = None;
    while open.len() < a.connections {
        while next < a.connections && pending.len() < a.concurrency.max(1) {
            let uri = ctx.uri.clone();
            let name = format!("warren-perf idle {next}");
            pending.spawn(async move { connect(&uri, &name).await });
            next += 1;
        }
        let joined = tokio::select! {
            j = pending.join_next() => j,
            _ = tokio::time::sleep_until(next_tick.into()) => {
                if ctx.live {
                    eprintln!(
                        "[{:>6.1}s    open] {} connections open",
                        ctx.started.elapsed().as_secs_f64(),
                        open.len()
                    );
                }
                next_tick += Duration::from_secs(1);
                continue;
            }
        };
        match joined {
            Some(Ok(Ok(conn))) => open.push(conn),
            Some(Ok(Err(e))) => {
                failure = Some(format!("connection {} failed: {e}", open.len() + 1));
                break;
            }
            Some(Err(e)) => {
                failure = Some(format!("connection task failed: {e}"));
                break;
            }
            None => break,
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    let opened = open.len() as u64;
    if failure.is_none() {
        // Let the broker finish whatever each new connection set in motion before reading RSS.
        tokio::time::sleep(Duration::from_secs_f64(a.hold_secs.max(0.0))).await;
    }
    let rss_open = rss().map(|s| s.rss_bytes);
    let end = ctx.shared.snapshot(ctx.broker_pid);
    pending.abort_all();
    let mut closing = JoinSet::new();
    for conn in open {
        closing.spawn(conn.close());
        while closing.len() >= a.concurrency.max(1) {
            let _ = closing.join_next().await;
        }
    }
    while closing.join_next().await.is_some() {}

    let d = Delta::between(&start, &end);
    let r = match (start.broker, end.broker) {
        (Some(a), Some(b)) => Some((a.rss_bytes, b.rss_bytes)),
        _ => None,
    };
    report.set_window(&d, ctx.broker_pid, r);
    report.connections = Some(ConnectionFigures {
        connections: opened,
        open_seconds: open_secs,
        open_rate: opened as f64 / open_secs.max(1e-9),
        rss_bytes_before: rss_before,
        rss_bytes_open: rss_open,
        bytes_per_connection: match (rss_before, rss_open) {
            (Some(b), Some(o)) if opened > 0 => Some((o as f64 - b as f64) / opened as f64),
            _ => None,
        },
    });
    match failure {
        Some(e) => anyhow::bail!("{e}"),
        None => Ok(()),
    }
}
