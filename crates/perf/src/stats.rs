//! What a run shares between its tasks: message counters, the latency histograms, the stop
//! signals and the first error; and snapshots of them (with CPU and memory) for rates.
//! Knows nothing of the wire.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::sys::{self, ProcSample};

#[derive(Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub published_bytes: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub consumed: AtomicU64,
    pub consumed_bytes: AtomicU64,
}

/// End-to-end latency in nanoseconds: everything since warm-up, and the current second.
pub struct Latency {
    pub total: Histogram<u64>,
    pub interval: Histogram<u64>,
}

impl Latency {
    fn new() -> Latency {
        // 1 ns .. 1 hour at 3 significant figures; values above are clamped.
        let h = Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
        Latency {
            total: h.clone(),
            interval: h,
        }
    }

    pub fn record(&mut self, nanos: &[u64]) {
        for &v in nanos {
            let v = v.max(1);
            self.total.saturating_record(v);
            self.interval.saturating_record(v);
        }
    }
}

/// A stop signal: a flag for hot loops plus a watch for tasks parked on a socket.
pub struct Stop {
    tx: watch::Sender<bool>,
}

impl Stop {
    fn new() -> Stop {
        Stop {
            tx: watch::channel(false).0,
        }
    }
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
    pub fn is_set(&self) -> bool {
        *self.tx.borrow()
    }
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}

/// Waits until `rx` says stop (returns at once if it already does).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

pub struct Shared {
    pub counters: Counters,
    pub latency: Mutex<Latency>,
    pub stop_producers: Stop,
    pub stop_consumers: Stop,
    error: Mutex<Option<String>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            counters: Counters::default(),
            latency: Mutex::new(Latency::new()),
            stop_producers: Stop::new(),
            stop_consumers: Stop::new(),
            error: Mutex::new(None),
        }
    }
}

impl Shared {
    /// Records the first failure and stops everything.
    pub fn fail(&self, what: impl std::fmt::Display) {
        {
            let mut e = self.error.lock();
            if e.is_none() {
                *e = Some(what.to_string());
            }
        }
        self.stop_producers.trigger();
        self.stop_consumers.trigger();
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().clone()
    }

    pub fn snapshot(&self, broker_pid: Option<u32>) -> Snapshot {
        let c = &self.counters;
        Snapshot {
            at: Instant::now(),
            published: c.published.load(Relaxed),
            published_bytes: c.published_bytes.load(Relaxed),
            confirmed: c.confirmed.load(Relaxed),
            nacked: c.nacked.load(Relaxed),
            consumed: c.consumed.load(Relaxed),
            consumed_bytes: c.consumed_bytes.load(Relaxed),
            client_cpu_secs: sys::self_cpu_secs(),
            broker: broker_pid.and_then(|pid| sys::sample_process(pid).ok()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub at: Instant,
    pub published: u64,
    pub published_bytes: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub consumed: u64,
    pub consumed_bytes: u64,
    pub client_cpu_secs: f64,
    pub broker: Option<ProcSample>,
}

/// Differences between two snapshots.
#[derive(Debug, Clone, Copy)]
pub struct Delta {
    pub secs: f64,
    pub published: u64,
    pub published_bytes: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub consumed: u64,
    pub consumed_bytes: u64,
    pub client_cpu_secs: f64,
    pub broker_cpu_secs: Option<f64>,
}

impl Delta {
    pub fn between(a: &Snapshot, b: &Snapshot) -> Delta {
        Delta {
            secs: b.at.duration_since(a.at).as_secs_f64().max(1e-9),
            published: b.published - a.published,
            published_bytes: b.published_bytes - a.published_bytes,
            confirmed: b.confirmed - a.confirmed,
            nacked: b.nacked - a.nacked,
            consumed: b.consumed - a.consumed,
            consumed_bytes: b.consumed_bytes - a.consumed_bytes,
            client_cpu_secs: b.client_cpu_secs - a.client_cpu_secs,
            broker_cpu_secs: match (a.broker, b.broker) {
                (Some(x), Some(y)) => Some(y.cpu_secs - x.cpu_secs),
                _ => None,
            },
        }
    }

    pub fn rate(&self, n: u64) -> f64 {
        n as f64 / self.secs
    }
}
