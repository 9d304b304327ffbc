//! Runs every warren-perf scenario for about a second against a real `warren` started in
//! this process, and checks from the JSON report that messages actually flowed. No timing
//! is asserted: benchmarks are not tests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::Value;
use tokio::process::Command;
use tokio::sync::oneshot;

struct Broker {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

async fn start_broker() -> Broker {
    let data = tempfile::tempdir().unwrap();
    let server = warren::Server::bind(warren::Config {
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Broker {
        addr,
        stop: Some(tx),
        task,
        _data: data,
    }
}

impl Broker {
    fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap();
    }
}

/// Runs warren-perf with `args` after the scenario name; returns (exit success, report).
async fn perf(broker: &Broker, scenario: &str, args: &[&str]) -> (bool, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_warren-perf"))
        .arg("--uri")
        .arg(broker.uri())
        // The broker runs inside this test process: its CPU and memory are ours.
        .arg("--broker-pid")
        .arg(std::process::id().to_string())
        .arg("--json")
        .arg("--quiet")
        .arg(scenario)
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{scenario}: no JSON report ({e}); stdout: {stdout}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

fn u(report: &Value, path: &[&str]) -> u64 {
    let mut v = report;
    for key in path {
        v = &v[*key];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path:?} missing in {report:#}"))
}

fn assert_ok(ok: bool, report: &Value) {
    assert!(ok, "warren-perf failed: {report:#}");
    assert_eq!(report["ok"], Value::Bool(true), "{report:#}");
    assert!(report["client"]["cpu_seconds"].as_f64().is_some());
    assert!(
        report["broker"]["rss_bytes_end"].as_u64().unwrap_or(0) > 0
            || report["scenario"] == "connections",
        "broker figures missing: {report:#}"
    );
}

const SHORT_RUN: &[&str] = &["-z", "1", "--warmup", "0", "--drain-timeout", "30"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_moves_messages_through_warren() {
    let broker = start_broker().await;

    // Throughput, auto-ack, two producers and consumers over two queues.
    let (ok, r) = perf(
        &broker,
        "throughput",
        &[
            SHORT_RUN,
            &["-x", "2", "-y", "2", "--queues", "2", "-a", "-r", "3000"],
        ]
        .concat(),
    )
    .await;
    assert_ok(ok, &r);
    assert!(
        u(&r, &["published"]) > 0 && u(&r, &["consumed"]) > 0,
        "{r:#}"
    );
    assert_eq!(
        u(&r, &["total_consumed"]),
        u(&r, &["total_published"]),
        "{r:#}"
    );
    assert!(u(&r, &["latency_us", "count"]) > 0);

    // Manual acks, prefetch and multi-ack; 1 KiB bodies.
    let (ok, r) = perf(
        &broker,
        "throughput",
        &[
            SHORT_RUN,
            &["-q", "50", "-A", "10", "-s", "1024", "-r", "3000"],
        ]
        .concat(),
    )
    .await;
    assert_ok(ok, &r);
    assert!(u(&r, &["consumed"]) > 0, "{r:#}");
    assert_eq!(
        u(&r, &["total_consumed"]),
        u(&r, &["total_published"]),
        "{r:#}"
    );

    // Persistent with publisher confirms: every publish confirmed, none nacked.
    let (ok, r) = perf(
        &broker,
        "throughput",
        &[
            SHORT_RUN,
            &[
                "-f",
                "persistent",
                "-c",
                "20",
                "-q",
                "20",
                "-s",
                "1024",
                "-r",
                "2000",
            ],
        ]
        .concat(),
    )
    .await;
    assert_ok(ok, &r);
    assert!(u(&r, &["confirmed"]) > 0, "{r:#}");
    assert_eq!(u(&r, &["nacked"]), 0, "{r:#}");
    assert_eq!(
        u(&r, &["total_consumed"]),
        u(&r, &["total_published"]),
        "{r:#}"
    );

    // Latency at a fixed rate: percentiles from stamped bodies.
    let (ok, r) = perf(
        &broker,
        "latency",
        &[SHORT_RUN, &["-r", "1000", "-a"]].concat(),
    )
    .await;
    assert_ok(ok, &r);
    assert!(u(&r, &["latency_us", "count"]) > 0, "{r:#}");
    assert!(
        r["latency_us"]["p99"].as_f64().unwrap_or(0.0) > 0.0,
        "{r:#}"
    );
    assert_eq!(
        u(&r, &["total_consumed"]),
        u(&r, &["total_published"]),
        "{r:#}"
    );

    // Fanout: each message reaches every queue.
    let (ok, r) = perf(
        &broker,
        "fanout",
        &[SHORT_RUN, &["--queues", "3", "-a", "-r", "2000"]].concat(),
    )
    .await;
    assert_ok(ok, &r);
    assert!(u(&r, &["published"]) > 0, "{r:#}");
    assert_eq!(
        u(&r, &["total_consumed"]),
        3 * u(&r, &["total_published"]),
        "{r:#}"
    );

    // Backlog: fill with no consumer, then drain every message.
    let (ok, r) = perf(
        &broker,
        "backlog",
        &["-C", "3000", "-s", "100", "-q", "100"],
    )
    .await;
    assert_ok(ok, &r);
    assert_eq!(u(&r, &["backlog", "messages"]), 3000);
    assert_eq!(u(&r, &["total_published"]), 3000, "{r:#}");
    assert_eq!(u(&r, &["total_consumed"]), 3000, "{r:#}");
    assert!(r["backlog"]["fill_rate"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(r["backlog"]["bytes_per_message"].is_number(), "{r:#}");

    // Connections: all opened (each with a channel) and measured.
    let (ok, r) = perf(
        &broker,
        "connections",
        &["-k", "40", "--concurrency", "8", "--hold", "0"],
    )
    .await;
    assert_ok(ok, &r);
    assert_eq!(u(&r, &["connections", "connections"]), 40, "{r:#}");
    assert!(
        r["connections"]["bytes_per_connection"].is_number(),
        "{r:#}"
    );

    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_reported_not_hidden() {
    let broker = start_broker().await;
    let out = Command::new(env!("CARGO_BIN_EXE_warren-perf"))
        .arg("--uri")
        .arg(format!("amqp://guest:wrong@{}/%2f", broker.addr))
        .args([
            "--json",
            "--quiet",
            "throughput",
            "-z",
            "1",
            "--warmup",
            "0",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], Value::Bool(false));
    let error = r["error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "{r:#}");
    assert_eq!(r["published"], 0);
    broker.stop().await;
}
