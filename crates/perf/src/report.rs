//! The result of a run: one serialisable record (the `--json` output) and its human-readable
//! summary. Knows nothing of how the figures were obtained.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::Delta;

#[derive(Debug, Serialize, Default)]
pub struct Report {
    pub scenario: &'static str,
    pub broker_uri: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub params: serde_json::Value,
    /// The measured window (after warm-up), in seconds.
    pub seconds: f64,
    pub published: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub consumed: u64,
    pub publish_rate: f64,
    pub confirm_rate: f64,
    pub consume_rate: f64,
    pub publish_mb_per_s: f64,
    pub consume_mb_per_s: f64,
    /// Whole run, warm-up and drain included.
    pub total_published: u64,
    pub total_consumed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Percentiles>,
    pub client: CpuFigures,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<BacklogFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<ConnectionFigures>,
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// From a histogram in nanoseconds, reported in microseconds.
    pub fn from_nanos(h: &Histogram<u64>) -> Option<Percentiles> {
        if h.is_empty() {
            return None;
        }
        let us = |v: u64| v as f64 / 1000.0;
        Some(Percentiles {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p95: us(h.value_at_quantile(0.95)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        })
    }
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct CpuFigures {
    pub cpu_seconds: f64,
    /// Of one core, over the measured window.
    pub cpu_percent: f64,
    /// CPU microseconds per message (consumed, or published when nothing is consumed).
    pub cpu_us_per_msg: Option<f64>,
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct BrokerFigures {
    pub pid: u32,
    pub cpu_seconds: f64,
    pub cpu_percent: f64,
    pub cpu_us_per_msg: Option<f64>,
    pub rss_bytes_start: u64,
    pub rss_bytes_end: u64,
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct BacklogFigures {
    pub messages: u64,
    pub fill_seconds: f64,
    pub fill_rate: f64,
    pub drain_seconds: f64,
    pub drain_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes_empty: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes_filled: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_message: Option<f64>,
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct ConnectionFigures {
    pub connections: u64,
    pub open_seconds: f64,
    pub open_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes_before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes_open: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_connection: Option<f64>,
}

impl Report {
    /// Fills rates and CPU figures from the measured window.
    pub fn set_window(&mut self, d: &Delta, broker_pid: Option<u32>, rss: Option<(u64, u64)>) {
        self.seconds = d.secs;
        self.published = d.published;
        self.confirmed = d.confirmed;
        self.nacked = d.nacked;
        self.consumed = d.consumed;
        self.publish_rate = d.rate(d.published);
        self.confirm_rate = d.rate(d.confirmed);
        self.consume_rate = d.rate(d.consumed);
        self.publish_mb_per_s = d.published_bytes as f64 / d.secs / 1e6;
        self.consume_mb_per_s = d.consumed_bytes as f64 / d.secs / 1e6;
        let messages = if d.consumed > 0 {
            d.consumed
        } else {
            d.published
        };
        let per_msg = |cpu: f64| (messages > 0).then(|| cpu * 1e6 / messages as f64);
        self.client = CpuFigures {
            cpu_seconds: d.client_cpu_secs,
            cpu_percent: d.client_cpu_secs / d.secs * 100.0,
            cpu_us_per_msg: per_msg(d.client_cpu_secs),
        };
        if let (Some(pid), Some(cpu)) = (broker_pid, d.broker_cpu_secs) {
            let (start, end) = rss.unwrap_or_default();
            self.broker = Some(BrokerFigures {
                pid,
                cpu_seconds: cpu,
                cpu_percent: cpu / d.secs * 100.0,
                cpu_us_per_msg: per_msg(cpu),
                rss_bytes_start: start,
                rss_bytes_end: end,
            });
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "== warren-perf {} against {} ==",
            self.scenario, self.broker_uri
        );
        let _ = writeln!(s, "params: {}", self.params);
        if let Some(e) = &self.error {
            let _ = writeln!(s, "FAILED: {e}");
        }
        if self.seconds > 0.0 {
            let _ = writeln!(s, "measured over {:.1} s", self.seconds);
            let _ = writeln!(
                s,
                "publish  {:>12} msg/s {:>9.2} MB/s  ({} msgs)",
                group(self.publish_rate),
                self.publish_mb_per_s,
                self.published
            );
            if self.confirmed > 0 || self.nacked > 0 {
                let _ = writeln!(
                    s,
                    "confirm  {:>12} msg/s                 ({} acked, {} nacked)",
                    group(self.confirm_rate),
                    self.confirmed,
                    self.nacked
                );
            }
            let _ = writeln!(
                s,
                "consume  {:>12} msg/s {:>9.2} MB/s  ({} msgs)",
                group(self.consume_rate),
                self.consume_mb_per_s,
                self.consumed
            );
            let _ = writeln!(
                s,
                "totals   published {} consumed {} (warm-up and drain included)",
                self.total_published, self.total_consumed
            );
        }
        if let Some(l) = &self.latency_us {
            let _ = writeln!(
                s,
                "latency  p50 {:.1} µs  p95 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs  (n={})",
                l.p50, l.p95, l.p99, l.p999, l.max, l.count
            );
        }
        if let Some(b) = &self.backlog {
            let _ = writeln!(
                s,
                "backlog  {} msgs: fill {:.2} s = {} msg/s, drain {:.2} s = {} msg/s",
                b.messages,
                b.fill_seconds,
                group(b.fill_rate),
                b.drain_seconds,
                group(b.drain_rate)
            );
            if let (Some(e), Some(f)) = (b.rss_bytes_empty, b.rss_bytes_filled) {
                let _ = writeln!(
                    s,
                    "         broker RSS {:.1} MiB empty, {:.1} MiB filled = {:.0} B per queued message",
                    mib(e),
                    mib(f),
                    b.bytes_per_message.unwrap_or(0.0)
                );
            }
        }
        if let Some(c) = &self.connections {
            let _ = writeln!(
                s,
                "connections {} opened in {:.2} s = {} conn/s",
                c.connections,
                c.open_seconds,
                group(c.open_rate)
            );
            if let (Some(b), Some(o)) = (c.rss_bytes_before, c.rss_bytes_open) {
                let _ = writeln!(
                    s,
                    "         broker RSS {:.1} MiB before, {:.1} MiB open = {:.1} KiB per connection",
                    mib(b),
                    mib(o),
                    c.bytes_per_connection.unwrap_or(0.0) / 1024.0
                );
            }
        }
        let _ = writeln!(
            s,
            "client   cpu {:.2} s = {:.0}% of a core{}",
            self.client.cpu_seconds,
            self.client.cpu_percent,
            per_msg(self.client.cpu_us_per_msg)
        );
        if let Some(b) = &self.broker {
            let _ = writeln!(
                s,
                "broker   pid {} cpu {:.2} s = {:.0}% of a core{}, RSS {:.1} -> {:.1} MiB",
                b.pid,
                b.cpu_seconds,
                b.cpu_percent,
                per_msg(b.cpu_us_per_msg),
                mib(b.rss_bytes_start),
                mib(b.rss_bytes_end)
            );
        }
        s
    }
}

fn per_msg(v: Option<f64>) -> String {
    v.map(|us| format!(", {us:.2} µs per message"))
        .unwrap_or_default()
}

pub fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// 1234567.8 -> "1,234,568"
pub fn group(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0.0), "0");
        assert_eq!(group(999.4), "999");
        assert_eq!(group(1000.0), "1,000");
        assert_eq!(group(1_234_567.8), "1,234,568");
    }
}
