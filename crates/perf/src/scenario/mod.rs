//! The scenarios and what they share: setup (declare, bind, delete) on a control connection
//! that also reads queue depths, the measured window with its live line, and the drain.

mod backlog;
mod connections;
mod fanout;
mod load;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp::{
    ExchangeDeclare, ExchangeDelete, FieldTable, Method, QueueBind, QueueDeclare, QueueDelete,
};
use tokio::task::JoinHandle;

use crate::actors::{connect, CHANNEL};
use crate::cli::{Cli, Scenario};
use crate::client::{short, ClientError, Connection};
use crate::report::{group, mib, Percentiles, Report};
use crate::stats::{Delta, Shared, Snapshot};
use crate::uri::AmqpUri;

pub struct Ctx {
    pub uri: AmqpUri,
    pub broker_pid: Option<u32>,
    pub live: bool,
    pub shared: Arc<Shared>,
    pub started: Instant,
}

/// Runs the scenario the command line names; failures end up in the report, not as panics.
pub async fn run(cli: &Cli) -> Report {
    let uri = match AmqpUri::parse(&cli.uri) {
        Ok(u) => u,
        Err(e) => {
            return Report {
                scenario: scenario_name(&cli.scenario),
                broker_uri: cli.uri.clone(),
                error: Some(e.to_string()),
                ..Default::default()
            }
        }
    };
    let ctx = Ctx {
        uri: uri.clone(),
        broker_pid: cli.broker_pid,
        live: !cli.quiet,
        shared: Arc::new(Shared::default()),
        started: Instant::now(),
    };
    let mut report = Report {
        scenario: scenario_name(&cli.scenario),
        broker_uri: uri.to_string(),
        ..Default::default()
    };
    let result = match &cli.scenario {
        Scenario::Throughput(a) => load::throughput(&ctx, a, &mut report).await,
        Scenario::Latency(a) => load::latency(&ctx, a, &mut report).await,
        Scenario::Fanout(a) => fanout::run(&ctx, a, &mut report).await,
        Scenario::Backlog(a) => backlog::run(&ctx, a, &mut report).await,
        Scenario::Connections(a) => connections::run(&ctx, a, &mut report).await,
    };
    let error = match result {
        Err(e) => Some(format!("{e:#}")),
        Ok(()) => ctx.shared.error(),
    };
    report.ok = error.is_none();
    report.error = error;
    report
}

fn scenario_name(s: &Scenario) -> &'static str {
    match s {
        Scenario::Throughput(_) => "throughput",
        Scenario::Latency(_) => "latency",
        Scenario::Fanout(_) => "fanout",
        Scenario::Backlog(_) => "backlog",
        Scenario::Connections(_) => "connections",
    }
}

/// The control connection: declares before the run, queue depths during it, deletes after.
pub struct Control {
    uri: AmqpUri,
    conn: Option<Connection>,
    queues: Vec<String>,
}

impl Control {
    pub async fn open(uri: &AmqpUri) -> Result<Control, ClientError> {
        Ok(Control {
            uri: uri.clone(),
            conn: Some(connect(uri, "warren-perf control").await?),
            queues: Vec::new(),
        })
    }

    fn conn(&mut self) -> Result<&mut Connection, ClientError> {
        self.conn.as_mut().ok_or(ClientError::Eof)
    }

    /// Deletes any queue left by an earlier run, then declares it afresh (durable when the
    /// messages are persistent) and watches its depth.
    pub async fn fresh_queue(&mut self, name: &str, durable: bool) -> Result<(), ClientError> {
        self.delete_queue(name).await?;
        let declare = QueueDeclare {
            queue: short(name)?,
            passive: false,
            durable,
            exclusive: false,
            auto_delete: false,
            no_wait: false,
            arguments: FieldTable::new(),
        };
        match self.conn()?.rpc(CHANNEL, declare).await? {
            Method::QueueDeclareOk(_) => {}
            other => return Err(unexpected("queue.declare-ok", other)),
        }
        self.queues.push(name.to_string());
        Ok(())
    }

    /// queue.delete; a broker that refuses to delete a missing queue (404) is fine here.
    pub async fn delete_queue(&mut self, name: &str) -> Result<(), ClientError> {
        let delete = QueueDelete {
            queue: short(name)?,
            if_unused: false,
            if_empty: false,
            no_wait: false,
        };
        self.tolerant(delete, "queue.delete-ok").await
    }

    pub async fn fresh_fanout(&mut self, name: &str, durable: bool) -> Result<(), ClientError> {
        self.delete_exchange(name).await?;
        let declare = ExchangeDeclare {
            exchange: short(name)?,
            kind: short("fanout")?,
            passive: false,
            durable,
            auto_delete: false,
            internal: false,
            no_wait: false,
            arguments: FieldTable::new(),
        };
        match self.conn()?.rpc(CHANNEL, declare).await? {
            Method::ExchangeDeclareOk(_) => Ok(()),
            other => Err(unexpected("exchange.declare-ok", other)),
        }
    }

    pub async fn delete_exchange(&mut self, name: &str) -> Result<(), ClientError> {
        let delete = ExchangeDelete {
            exchange: short(name)?,
            if_unused: false,
            no_wait: false,
        };
        self.tolerant(delete, "exchange.delete-ok").await
    }

    pub async fn bind(&mut self, queue: &str, exchange: &str) -> Result<(), ClientError> {
        let bind = QueueBind {
            queue: short(queue)?,
            exchange: short(exchange)?,
            routing_key: short("")?,
            no_wait: false,
            arguments: FieldTable::new(),
        };
        match self.conn()?.rpc(CHANNEL, bind).await? {
            Method::QueueBindOk(_) => Ok(()),
            other => Err(unexpected("queue.bind-ok", other)),
        }
    }

    async fn tolerant(
        &mut self,
        method: impl Into<Method>,
        want: &'static str,
    ) -> Result<(), ClientError> {
        let conn = self.conn()?;
        match conn.rpc(CHANNEL, method).await {
            Ok(Method::QueueDeleteOk(_) | Method::ExchangeDeleteOk(_)) => Ok(()),
            Ok(other) => Err(unexpected(want, other)),
            Err(ClientError::ChannelClosed { code: 404, .. }) => conn.open_channel(CHANNEL).await,
            Err(e) => Err(e),
        }
    }

    /// Ready messages in the watched queues for the live line: None when the broker did not
    /// answer within half a second.
    pub async fn depth(&mut self) -> Option<u64> {
        self.depth_within(Duration::from_millis(500)).await
    }

    /// Ready messages in the watched queues (queue.declare passive), or None when the broker
    /// did not answer within `limit`. A late answer could be mistaken for the next one's, so
    /// after a timeout the connection is dropped and the next call opens a new one.
    pub async fn depth_within(&mut self, limit: Duration) -> Option<u64> {
        if self.conn.is_none() {
            let reconnect = connect(&self.uri, "warren-perf control");
            self.conn = tokio::time::timeout(limit, reconnect).await.ok()?.ok();
        }
        let queues = self.queues.clone();
        let conn = self.conn.as_mut()?;
        let probe = async {
            let mut total = 0u64;
            for q in &queues {
                let declare = QueueDeclare {
                    queue: short(q).ok()?,
                    passive: true,
                    ..Default::default()
                };
                match conn.rpc(CHANNEL, declare).await.ok()? {
                    Method::QueueDeclareOk(ok) => total += u64::from(ok.message_count),
                    _ => return None,
                }
            }
            Some(total)
        };
        match tokio::time::timeout(limit, probe).await {
            Ok(Some(d)) => Some(d),
            Ok(None) | Err(_) => {
                self.conn = None;
                None
            }
        }
    }

    /// Deletes the watched queues and closes; errors here don't change a run's figures.
    pub async fn cleanup(mut self, exchange: Option<&str>) {
        if self.conn.is_none() {
            // The depth probe gave up on the old connection; clean up on a new one.
            self.conn = connect(&self.uri, "warren-perf control").await.ok();
        }
        let queues = std::mem::take(&mut self.queues);
        let work = async {
            for q in &queues {
                let _ = self.delete_queue(q).await;
            }
            if let Some(x) = exchange {
                let _ = self.delete_exchange(x).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(30), work).await;
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
    }
}

fn unexpected(want: &'static str, got: Method) -> ClientError {
    ClientError::Unexpected {
        want,
        got: got.name().to_string(),
    }
}

/// The per-second live line, on stderr.
pub struct Live {
    last: Snapshot,
    enabled: bool,
    broker_pid: Option<u32>,
    started: Instant,
}

impl Live {
    pub fn new(ctx: &Ctx) -> Live {
        Live {
            last: ctx.shared.snapshot(ctx.broker_pid),
            enabled: ctx.live,
            broker_pid: ctx.broker_pid,
            started: ctx.started,
        }
    }

    pub fn tick(&mut self, shared: &Shared, phase: &str, depth: Option<u64>) -> Snapshot {
        let now = shared.snapshot(self.broker_pid);
        if self.enabled {
            let d = Delta::between(&self.last, &now);
            let mut line = format!(
                "[{:>6.1}s {phase:>7}] pub {:>9}/s",
                self.started.elapsed().as_secs_f64(),
                group(d.rate(d.published))
            );
            if d.confirmed > 0 || d.nacked > 0 {
                line += &format!(" conf {:>9}/s", group(d.rate(d.confirmed)));
            }
            line += &format!(" cons {:>9}/s", group(d.rate(d.consumed)));
            match depth {
                Some(q) => line += &format!(" ready {:>9}", group(q as f64)),
                None => {
                    let backlog = now.published.saturating_sub(now.consumed);
                    line += &format!(" unconsumed {:>9}", group(backlog as f64))
                }
            }
            {
                let mut lat = shared.latency.lock();
                if let Some(p) = Percentiles::from_nanos(&lat.interval) {
                    line += &format!(" lat p50 {:.0}µs p99 {:.0}µs", p.p50, p.p99);
                }
                lat.interval.reset();
            }
            line += &format!(" | cpu client {:>3.0}%", d.client_cpu_secs / d.secs * 100.0);
            if let (Some(cpu), Some(b)) = (d.broker_cpu_secs, now.broker) {
                line += &format!(
                    " broker {:>3.0}% rss {:.0} MiB",
                    cpu / d.secs * 100.0,
                    mib(b.rss_bytes)
                );
            }
            eprintln!("{line}");
        }
        self.last = now;
        now
    }
}

/// Warm-up, the measured window with a live line each second, then stop the producers and
/// let the consumers take what is queued (`expect_per_publish` deliveries per message).
/// Returns the window's first and last snapshots.
pub async fn measure_and_drain(
    ctx: &Ctx,
    timing: &crate::cli::Timing,
    control: &mut Control,
    producers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<()>>,
    expect_per_publish: u64,
) -> (Snapshot, Snapshot) {
    let shared = &ctx.shared;
    let mut live = Live::new(ctx);
    let warmup_end = Instant::now() + Duration::from_secs_f64(timing.warmup_secs.max(0.0));
    tick_until(ctx, &mut live, control, "warmup", warmup_end).await;
    shared.latency.lock().total.reset();
    let start = live.tick(shared, "warmup", None);
    let end_at = Instant::now() + Duration::from_secs_f64(timing.time_secs.max(0.0));
    tick_until(ctx, &mut live, control, "run", end_at).await;
    let end = shared.snapshot(ctx.broker_pid);
    shared.stop_producers.trigger();
    for p in producers {
        let _ = tokio::time::timeout(Duration::from_secs(40), p).await;
    }
    if !consumers.is_empty() && shared.error().is_none() {
        let target = shared.counters.published.load(Relaxed) * expect_per_publish;
        let deadline = Instant::now() + Duration::from_secs_f64(timing.drain_timeout_secs.max(0.0));
        while shared.counters.consumed.load(Relaxed) < target
            && Instant::now() < deadline
            && shared.error().is_none()
        {
            let next = (Instant::now() + Duration::from_secs(1)).min(deadline);
            while Instant::now() < next && shared.counters.consumed.load(Relaxed) < target {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if Instant::now() >= next {
                let depth = control.depth().await;
                live.tick(shared, "drain", depth);
            }
        }
    }
    shared.stop_consumers.trigger();
    for c in consumers {
        let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
    }
    (start, end)
}

/// Live lines once a second until `until`, ending early when the run failed.
pub async fn tick_until(
    ctx: &Ctx,
    live: &mut Live,
    control: &mut Control,
    phase: &str,
    until: Instant,
) {
    let mut errors = ctx.shared.stop_consumers.subscribe();
    loop {
        let now = Instant::now();
        if now >= until || ctx.shared.error().is_some() {
            return;
        }
        let next = (now + Duration::from_secs(1)).min(until);
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = crate::stats::stopped(&mut errors) => return,
        }
        if next < until {
            let depth = control.depth().await;
            live.tick(&ctx.shared, phase, depth);
        }
    }
}

/// Sets the report's window figures and totals.
pub fn fill_report(ctx: &Ctx, report: &mut Report, start: &Snapshot, end: &Snapshot) {
    let d = Delta::between(start, end);
    let rss = match (start.broker, end.broker) {
        (Some(a), Some(b)) => Some((a.rss_bytes, b.rss_bytes)),
        _ => None,
    };
    report.set_window(&d, ctx.broker_pid, rss);
    report.total_published = ctx.shared.counters.published.load(Relaxed);
    report.total_consumed = ctx.shared.counters.consumed.load(Relaxed);
    report.latency_us = Percentiles::from_nanos(&ctx.shared.latency.lock().total);
}
