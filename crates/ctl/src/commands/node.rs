//! The broker as a whole: status, await_startup and stop.
//!
//! `stop` uses Warren's `POST /api/warren/stop`; RabbitMQ's management API has no way to
//! stop a node, so against RabbitMQ it fails with a message saying so.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::client::{api_path, ApiClient, ApiError};
use crate::error::{CtlError, EX_UNAVAILABLE};
use crate::output::json_object;

use super::Context;

/// rabbitmqctl await_startup's default.
const AWAIT_STARTUP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `stop` waits for the API to go away after asking for the stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// One poll's request must not outlive the deadline, nor hang on a half-up broker.
const POLL_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

pub const STOP_PATH: &str = "/api/warren/stop";

fn overview_path() -> String {
    api_path(&["overview"])
}

pub fn status(ctx: &Context) -> Result<(), CtlError> {
    let overview = ctx.api.get(&overview_path())?;
    let node_name = str_field(&overview, "node");
    let nodes = ctx.api.get_list(&api_path(&["nodes"]))?;
    let node = nodes
        .iter()
        .find(|n| n.get("name").and_then(Value::as_str) == Some(node_name.as_str()))
        .or_else(|| nodes.first())
        .cloned()
        .unwrap_or(Value::Null);
    let vhost_count = ctx.api.get_list(&api_path(&["vhosts"]))?.len();
    let report = StatusReport {
        overview,
        node,
        node_name,
        vhost_count,
    };
    if ctx.out.is_json() {
        ctx.out.emit(&format!("{}\n", report.to_json()))
    } else {
        ctx.out
            .info(&format!("Status of node {} ...", report.node_name))?;
        ctx.out
            .emit(&report.to_text(std::io::stdout().is_terminal()))
    }
}

fn str_field(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn u64_field(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    })
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    match value.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                // /api/nodes lists applications as objects with a name.
                other => str_field(other, "name"),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Bytes in rabbitmqctl's "gb" (10^9, four decimals, shortest form: 0.05, 10.1106, 0.0).
fn gigabytes(bytes: u64) -> String {
    let gb = (bytes as f64 / 1e9 * 1e4).round() / 1e4;
    format!("{gb:?}")
}

fn listener_purpose(protocol: &str) -> &str {
    match protocol {
        "amqp" => "AMQP 0-9-1 and AMQP 1.0",
        "amqp/ssl" => "AMQP 0-9-1 and AMQP 1.0 over TLS",
        "clustering" => "inter-node and CLI tool communication",
        "http" => "HTTP API",
        "https" => "HTTP API over TLS (HTTPS)",
        "http/prometheus" | "prometheus" => "Prometheus exporter API over HTTP",
        other => other,
    }
}

struct StatusReport {
    overview: Value,
    node: Value,
    node_name: String,
    vhost_count: usize,
}

struct Listener {
    interface: String,
    port: u64,
    protocol: String,
}

impl StatusReport {
    fn listeners(&self) -> Vec<Listener> {
        let Some(Value::Array(listeners)) = self.overview.get("listeners") else {
            return Vec::new();
        };
        listeners
            .iter()
            .map(|l| {
                let ip = str_field(l, "ip_address");
                Listener {
                    interface: if ip.contains(':') {
                        format!("[{ip}]")
                    } else {
                        ip
                    },
                    port: u64_field(l, "port").unwrap_or(0),
                    protocol: str_field(l, "protocol"),
                }
            })
            .collect()
    }

    fn alarms(&self) -> Vec<(&'static str, &'static str)> {
        let mut alarms = Vec::new();
        if self.node.get("mem_alarm") == Some(&Value::Bool(true)) {
            alarms.push(("memory", "Memory alarm"));
        }
        if self.node.get("disk_free_alarm") == Some(&Value::Bool(true)) {
            alarms.push(("disk", "Free disk space alarm"));
        }
        alarms
    }

    fn total(&self, key: &str) -> Option<u64> {
        self.overview
            .get("object_totals")
            .and_then(|t| u64_field(t, key))
    }

    fn to_text(&self, bold: bool) -> String {
        let (node, overview) = (&self.node, &self.overview);
        let mut sections: Vec<(&str, Vec<String>)> = Vec::new();

        let mut runtime = Vec::new();
        let mut line = |label: &str, value: Option<String>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                runtime.push(format!("{label}: {value}"));
            }
        };
        line("OS PID", Some(str_field(node, "os_pid")));
        line(
            "Uptime (seconds)",
            u64_field(node, "uptime").map(|ms| (ms / 1000).to_string()),
        );
        line(
            "RabbitMQ version",
            Some(str_field(overview, "rabbitmq_version")),
        );
        line("Product name", Some(str_field(overview, "product_name")));
        line(
            "Product version",
            Some(str_field(overview, "product_version")),
        );
        line("Node name", Some(self.node_name.clone()));
        line(
            "Erlang configuration",
            Some(str_field(overview, "erlang_full_version")),
        );
        line(
            "Cluster heartbeat timeout (net_ticktime)",
            u64_field(node, "net_ticktime").map(|t| t.to_string()),
        );
        sections.push(("Runtime", runtime));

        let plugins = strings(node, "enabled_plugins");
        let plugin_lines = if plugins.is_empty() {
            Vec::new()
        } else {
            let mut lines = vec!["Enabled plugins:".to_string(), String::new()];
            lines.extend(plugins.iter().map(|p| format!(" * {p}")));
            lines
        };
        sections.push(("Plugins", plugin_lines));

        let db_dir = str_field(node, "db_dir");
        sections.push((
            "Data directory",
            if db_dir.is_empty() {
                Vec::new()
            } else {
                vec![format!("Node data directory: {db_dir}")]
            },
        ));
        let bullets = |key| {
            strings(node, key)
                .iter()
                .map(|f| format!(" * {f}"))
                .collect()
        };
        sections.push(("Config files", bullets("config_files")));
        sections.push(("Log file(s)", bullets("log_files")));

        let alarms = self.alarms();
        sections.push((
            "Alarms",
            if alarms.is_empty() {
                vec!["(none)".to_string()]
            } else {
                alarms
                    .iter()
                    .map(|(_, text)| format!("{text} on node {}", self.node_name))
                    .collect()
            },
        ));

        let mut memory = Vec::new();
        if let Some(used) = u64_field(node, "mem_used") {
            memory.push(format!("Total memory used: {} gb", gigabytes(used)));
        }
        if let Some(limit) = u64_field(node, "mem_limit") {
            memory.push(format!(
                "Memory high watermark setting: computed to: {} gb",
                gigabytes(limit)
            ));
        }
        sections.push(("Memory", memory));

        let mut descriptors = Vec::new();
        if let (Some(used), Some(limit)) = (u64_field(node, "fd_used"), u64_field(node, "fd_total"))
        {
            descriptors.push(format!("Total: {used}, limit: {limit}"));
        }
        if let (Some(used), Some(limit)) = (
            u64_field(node, "sockets_used"),
            u64_field(node, "sockets_total"),
        ) {
            descriptors.push(format!("Sockets: {used}, limit: {limit}"));
        }
        sections.push(("File Descriptors", descriptors));

        let mut disk = Vec::new();
        if let Some(limit) = u64_field(node, "disk_free_limit") {
            disk.push(format!(
                "Low free disk space watermark: {} gb",
                gigabytes(limit)
            ));
        }
        if let Some(free) = u64_field(node, "disk_free") {
            disk.push(format!("Free disk space: {} gb", gigabytes(free)));
        }
        sections.push(("Free Disk Space", disk));

        let mut totals = Vec::new();
        if let Some(n) = self.total("connections") {
            totals.push(format!("Connection count: {n}"));
        }
        if let Some(n) = self.total("queues") {
            totals.push(format!("Queue count: {n}"));
        }
        totals.push(format!("Virtual host count: {}", self.vhost_count));
        sections.push(("Totals", totals));

        sections.push((
            "Listeners",
            self.listeners()
                .iter()
                .map(|l| {
                    format!(
                        "Interface: {}, port: {}, protocol: {}, purpose: {}",
                        l.interface,
                        l.port,
                        l.protocol,
                        listener_purpose(&l.protocol)
                    )
                })
                .collect(),
        ));

        let mut out = String::new();
        for (title, lines) in sections.iter().filter(|(_, lines)| !lines.is_empty()) {
            if !out.is_empty() {
                out.push('\n');
            }
            if bold {
                out.push_str(&format!("\x1b[1m{title}\x1b[0m\n\n"));
            } else {
                out.push_str(&format!("{title}\n\n"));
            }
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The keys of `rabbitmqctl status --formatter json` that the HTTP API can fill.
    fn to_json(&self) -> Value {
        let (node, overview) = (&self.node, &self.overview);
        let mut out = Map::new();
        let mut put = |key: &str, value: Value| {
            if !value.is_null() {
                out.insert(key.to_string(), value);
            }
        };
        put("node", Value::from(self.node_name.clone()));
        put(
            "pid",
            u64_field(node, "os_pid").map_or(Value::Null, Value::from),
        );
        put(
            "uptime",
            u64_field(node, "uptime").map_or(Value::Null, |ms| Value::from(ms / 1000)),
        );
        for key in ["rabbitmq_version", "product_name", "product_version"] {
            put(key, overview.get(key).cloned().unwrap_or(Value::Null));
        }
        put(
            "erlang_version",
            overview
                .get("erlang_full_version")
                .cloned()
                .unwrap_or(Value::Null),
        );
        put(
            "data_directory",
            node.get("db_dir").cloned().unwrap_or(Value::Null),
        );
        put(
            "enabled_plugins",
            Value::from(strings(node, "enabled_plugins")),
        );
        put("config_files", Value::from(strings(node, "config_files")));
        put("log_files", Value::from(strings(node, "log_files")));
        put(
            "alarms",
            self.alarms()
                .iter()
                .map(|(resource, _)| json!({"node": self.node_name, "resource": resource}))
                .collect(),
        );
        put(
            "memory",
            json!({"total": {"rss": u64_field(node, "mem_used")}}),
        );
        put(
            "vm_memory_high_watermark_limit",
            node.get("mem_limit").cloned().unwrap_or(Value::Null),
        );
        put(
            "file_descriptors",
            json!({
                "total_used": u64_field(node, "fd_used"),
                "total_limit": u64_field(node, "fd_total"),
                "sockets_used": u64_field(node, "sockets_used"),
                "sockets_limit": u64_field(node, "sockets_total"),
            }),
        );
        put(
            "disk_free",
            node.get("disk_free").cloned().unwrap_or(Value::Null),
        );
        put(
            "disk_free_limit",
            node.get("disk_free_limit").cloned().unwrap_or(Value::Null),
        );
        put(
            "totals",
            json!({
                "connection_count": self.total("connections"),
                "queue_count": self.total("queues"),
                "virtual_host_count": self.vhost_count,
            }),
        );
        put(
            "listeners",
            self.listeners()
                .iter()
                .map(|l| {
                    json!({
                        "node": self.node_name,
                        "interface": l.interface,
                        "port": l.port,
                        "protocol": l.protocol,
                        "purpose": listener_purpose(&l.protocol),
                    })
                })
                .collect(),
        );
        Value::Object(out)
    }
}

/// Polls GET /api/overview until it answers. Wrong credentials fail at once: waiting
/// longer would not fix them.
pub fn await_startup(ctx: &Context) -> Result<(), CtlError> {
    let timeout = ctx.timeout.unwrap_or(AWAIT_STARTUP_TIMEOUT);
    let deadline = Instant::now() + timeout;
    loop {
        let client = poll_client(ctx, deadline);
        let last_error = match client.get(&overview_path()) {
            Ok(_) => return Ok(()),
            Err(e) if matches!(e.status(), Some(401 | 403)) => return Err(e.into()),
            Err(e) => e,
        };
        if Instant::now() + POLL_INTERVAL >= deadline {
            let reason = match &last_error {
                ApiError::Unreachable { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            return Err(CtlError::bare(
                EX_UNAVAILABLE,
                format!(
                    "Error: the management API at {} did not come up within {:?} seconds: {reason}",
                    ctx.api.base_url(),
                    timeout.as_secs_f64()
                ),
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn poll_client(ctx: &Context, deadline: Instant) -> ApiClient {
    let remaining = deadline.saturating_duration_since(Instant::now());
    ctx.client_with_timeout(remaining.clamp(Duration::from_millis(100), POLL_REQUEST_TIMEOUT))
}

pub fn stop(ctx: &Context, idempotent: bool) -> Result<(), CtlError> {
    let node_name = match ctx.node_name() {
        Ok(name) => name,
        Err(e) if e.unreachable && idempotent => {
            let node = ctx.api.base_url();
            ctx.out
                .info(&format!("Stopping and halting node {node} ..."))?;
            ctx.out.info(&format!("Node {node} is no longer running"))?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    ctx.out
        .info(&format!("Stopping and halting node {node_name} ..."))?;
    match ctx.api.post_text(STOP_PATH, "{}") {
        Ok(()) => {}
        // The broker may go down before its answer is out.
        Err(ApiError::Unreachable { .. }) => {}
        Err(e) if matches!(e.status(), Some(404 | 405)) => {
            return Err(CtlError::unavailable(format!(
                "the broker at {} cannot be stopped over HTTP (POST {STOP_PATH} answered {}); \
                 RabbitMQ's management API has no stop: stop it with its service manager",
                ctx.api.base_url(),
                e.status().unwrap_or_default()
            )))
        }
        Err(e) => return Err(e.into()),
    }
    ctx.out.flush_info()?;
    let timeout = ctx.timeout.unwrap_or(STOP_TIMEOUT);
    let deadline = Instant::now() + timeout;
    loop {
        if let Err(ApiError::Unreachable { .. }) = poll_client(ctx, deadline).get(&overview_path())
        {
            break;
        }
        if Instant::now() + POLL_INTERVAL >= deadline {
            return Err(CtlError::temp_fail(format!(
                "node {node_name} still answers {:?} seconds after the stop request",
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    if ctx.out.is_json() {
        ctx.out.emit(&format!(
            "{}\n",
            json_object(&[
                ("node", Value::from(node_name)),
                ("result", Value::from("ok"))
            ])
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gigabytes_like_rabbitmqctl() {
        assert_eq!(gigabytes(10_110_604_083), "10.1106");
        assert_eq!(gigabytes(50_000_000), "0.05");
        assert_eq!(gigabytes(0), "0.0");
    }

    #[test]
    fn status_text_has_rabbitmqctl_sections() {
        let report = StatusReport {
            overview: json!({"node": "warren@h", "product_name": "Warren", "product_version": "0.1.0",
                "object_totals": {"connections": 2, "queues": 3},
                "listeners": [{"node": "warren@h", "protocol": "amqp", "ip_address": "::", "port": 5672}]}),
            node: json!({"name": "warren@h", "os_pid": "42", "uptime": 5500, "mem_alarm": false,
                "disk_free_alarm": true, "fd_used": 5, "fd_total": 1024}),
            node_name: "warren@h".into(),
            vhost_count: 1,
        };
        let text = report.to_text(false);
        assert!(
            text.starts_with("Runtime\n\nOS PID: 42\nUptime (seconds): 5\nProduct name: Warren\n"),
            "{text}"
        );
        assert!(
            text.contains("Alarms\n\nFree disk space alarm on node warren@h\n"),
            "{text}"
        );
        assert!(
            text.contains("File Descriptors\n\nTotal: 5, limit: 1024\n"),
            "{text}"
        );
        assert!(
            text.contains("Totals\n\nConnection count: 2\nQueue count: 3\nVirtual host count: 1\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "Interface: [::], port: 5672, protocol: amqp, purpose: AMQP 0-9-1 and AMQP 1.0\n"
            ),
            "{text}"
        );
        let json = report.to_json();
        assert_eq!(json["pid"], 42);
        assert_eq!(json["totals"]["queue_count"], 3);
        assert_eq!(
            json["alarms"],
            json!([{"node": "warren@h", "resource": "disk"}])
        );
    }
}
