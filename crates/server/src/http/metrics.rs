//! Prometheus `/metrics` with the metric names of RabbitMQ's rabbitmq_prometheus plugin, so
//! that its Grafana dashboards work: `/metrics` sums per node, as the plugin does by default;
//! `/metrics/per-object` labels queue metrics with vhost and queue. A scrape reads the
//! registry's counters and asks every queue for its counts in parallel.

use std::fmt::Write;

use axum::extract::State as StateOf;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use broker::queue::{QueueRef, QueueStats};
use broker::registry::MessageStats;

use super::{node_name, queue_stats, State};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const PROTOCOL: &str = "protocol=\"amqp091\"";
const CLASSIC: &str = "protocol=\"amqp091\",queue_type=\"rabbit_classic_queue\"";

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
}

async fn aggregated(StateOf(state): StateOf<State>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        scrape(&state, false).await,
    )
}

async fn per_object(StateOf(state): StateOf<State>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        scrape(&state, true).await,
    )
}

/// Writes metric families in the Prometheus text format.
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# TYPE {name} {kind}\n# HELP {name} {help}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.text, "{name} {value}");
        } else {
            let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
        }
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, labels: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, labels, value);
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

const QUEUE_FAMILIES: [(&str, &str); 4] = [
    (
        "rabbitmq_queue_messages_ready",
        "Messages ready to be delivered to consumers",
    ),
    (
        "rabbitmq_queue_messages_unacked",
        "Messages delivered to consumers but not yet acknowledged",
    ),
    (
        "rabbitmq_queue_messages",
        "Sum of ready and unacknowledged messages - total queue depth",
    ),
    ("rabbitmq_queue_consumers", "Consumers on a queue"),
];

fn queue_values(stats: &QueueStats) -> [u64; 4] {
    let ready = u64::from(stats.message_count);
    let unacked = u64::from(stats.unacked_count);
    [
        ready,
        unacked,
        ready + unacked,
        u64::from(stats.consumer_count),
    ]
}

async fn scrape(state: &State, per_object: bool) -> String {
    let broker = &state.broker;
    let mut queues: Vec<(String, QueueRef)> = Vec::new();
    for vhost in broker.vhosts() {
        let name = vhost.name().to_string();
        queues.extend(vhost.queues().into_iter().map(|q| (name.clone(), q)));
    }
    let handles: Vec<QueueRef> = queues.iter().map(|(_, q)| q.clone()).collect();
    let stats = queue_stats(&handles).await;
    let connections = broker.registry.connections();
    let mut channels = 0u64;
    let mut publishers = 0u64;
    let mut consumers = 0u64;
    let mut unacked = 0u64;
    let mut unconfirmed = 0u64;
    for connection in &connections {
        for channel in connection.channels() {
            channels += 1;
            if channel.stats.publish.get() > 0 {
                publishers += 1;
            }
            consumers += channel.gauges.consumer_count.get();
            unacked += channel.gauges.messages_unacknowledged.get();
            unconfirmed += channel.gauges.messages_unconfirmed.get();
        }
    }
    let messages = broker.registry.message_stats();
    let churn = broker.registry.churn();

    let mut out = Exposition {
        text: String::with_capacity(4096 + if per_object { queues.len() * 400 } else { 0 }),
    };
    let node = escape(&node_name());
    let version = crate::RABBITMQ_VERSION;
    out.single(
        "rabbitmq_identity_info",
        "untyped",
        "RabbitMQ node & cluster identity info",
        &format!("rabbitmq_node=\"{node}\",rabbitmq_cluster=\"{node}\",rabbitmq_cluster_permanent_id=\"{node}\""),
        1,
    );
    out.single(
        "rabbitmq_build_info",
        "untyped",
        "RabbitMQ & Erlang/OTP version info",
        &format!("rabbitmq_version=\"{version}\",prometheus_plugin_version=\"{version}\",prometheus_client_version=\"{version}\",erlang_version=\"none\""),
        1,
    );
    out.single(
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
        "",
        connections.len() as u64,
    );
    out.single(
        "rabbitmq_channels",
        "gauge",
        "Channels currently open",
        "",
        channels,
    );
    out.single(
        "rabbitmq_consumers",
        "gauge",
        "Consumers currently connected",
        "",
        consumers,
    );
    out.single(
        "rabbitmq_queues",
        "gauge",
        "Queues available",
        "",
        queues.len() as u64,
    );
    out.single(
        "rabbitmq_connections_opened_total",
        "counter",
        "Total number of connections opened",
        "",
        churn.connections_opened,
    );
    out.single(
        "rabbitmq_connections_closed_total",
        "counter",
        "Total number of connections closed or terminated",
        "",
        churn.connections_closed,
    );
    out.single(
        "rabbitmq_channels_opened_total",
        "counter",
        "Total number of channels opened",
        "",
        churn.channels_opened,
    );
    out.single(
        "rabbitmq_channels_closed_total",
        "counter",
        "Total number of channels closed",
        "",
        churn.channels_closed,
    );
    out.single(
        "rabbitmq_channel_messages_unacked",
        "gauge",
        "Delivered but not yet acknowledged messages",
        "",
        unacked,
    );
    out.single(
        "rabbitmq_channel_messages_unconfirmed",
        "gauge",
        "Published but not yet confirmed messages",
        "",
        unconfirmed,
    );

    for (index, (name, help)) in QUEUE_FAMILIES.iter().enumerate() {
        out.family(name, "gauge", help);
        if per_object {
            for ((vhost, queue), stats) in queues.iter().zip(&stats) {
                let Some(stats) = stats else { continue };
                let labels = format!(
                    "vhost=\"{}\",queue=\"{}\"",
                    escape(vhost),
                    escape(&queue.name)
                );
                out.sample(name, &labels, queue_values(stats)[index]);
            }
        } else {
            let total: u64 = stats.iter().flatten().map(|s| queue_values(s)[index]).sum();
            out.sample(name, "", total);
        }
    }

    global_counters(&mut out, &messages, publishers, consumers);
    process_metrics(&mut out);
    out.text
}

fn global_counters(out: &mut Exposition, m: &MessageStats, publishers: u64, consumers: u64) {
    let routed = m
        .publish
        .saturating_sub(m.return_unroutable + m.drop_unroutable);
    let families: [(&str, &str, &str, u64); 12] = [
        ("rabbitmq_global_messages_received_total", "Total number of messages received from publishers", PROTOCOL, m.publish),
        ("rabbitmq_global_messages_routed_total", "Total number of messages routed to queues or streams", PROTOCOL, routed),
        ("rabbitmq_global_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", PROTOCOL, m.drop_unroutable),
        ("rabbitmq_global_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", PROTOCOL, m.return_unroutable),
        ("rabbitmq_global_messages_confirmed_total", "Total number of messages confirmed to publishers", PROTOCOL, m.confirm),
        ("rabbitmq_global_messages_delivered_total", "Total number of messages delivered to consumers", CLASSIC, m.deliver_get()),
        ("rabbitmq_global_messages_delivered_consume_manual_ack_total", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment", CLASSIC, m.deliver),
        ("rabbitmq_global_messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment", CLASSIC, m.deliver_no_ack),
        ("rabbitmq_global_messages_delivered_get_manual_ack_total", "Total number of messages delivered to consumers using basic.get with manual acknowledgment", CLASSIC, m.get),
        ("rabbitmq_global_messages_delivered_get_auto_ack_total", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment", CLASSIC, m.get_no_ack),
        ("rabbitmq_global_messages_get_empty_total", "Total number of times basic.get operations fetched no message", CLASSIC, m.get_empty),
        ("rabbitmq_global_messages_redelivered_total", "Total number of messages redelivered to consumers", CLASSIC, m.redeliver),
    ];
    for (name, help, labels, value) in families {
        out.single(name, "counter", help, labels, value);
    }
    out.single(
        "rabbitmq_global_messages_acknowledged_total",
        "counter",
        "Total number of messages acknowledged by consumers",
        CLASSIC,
        m.ack,
    );
    out.single(
        "rabbitmq_global_publishers",
        "gauge",
        "Current number of publishers",
        PROTOCOL,
        publishers,
    );
    out.single(
        "rabbitmq_global_consumers",
        "gauge",
        "Current number of consumers",
        PROTOCOL,
        consumers,
    );
}

/// What Linux tells of the process, where it tells it.
fn process_metrics(out: &mut Exposition) {
    if let Some(rss) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
    {
        out.single(
            "rabbitmq_process_resident_memory_bytes",
            "gauge",
            "Memory used in bytes",
            "",
            rss * 4096,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.single(
            "rabbitmq_process_open_fds",
            "gauge",
            "Open file descriptors",
            "",
            fds.count() as u64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
