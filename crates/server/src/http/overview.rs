//! The broker as a whole: `/api/overview`, `/api/nodes`, `/api/whoami`, the health checks
//! (`/api/aliveness-test/{vhost}`, `/api/health/checks/...`) and Warren's own
//! `/api/warren/stop`, with message rates measured between requests.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp::ShortStr;
use axum::extract::{Path, State as StateOf};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use broker::message::Message;
use broker::queue::QueueCommand;
use broker::queue::QueueRef;
use broker::registry::{Churn, MessageStats};
use broker::vhost::QueueDeclaration;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::auth::Caller;
use super::connections::message_stats_json;
use super::error::{ApiError, ApiResult};
use super::{node_name, queue_stats, State};

/// How far back rates look at most, and how often a new sample is kept.
const RATE_WINDOW: Duration = Duration::from_secs(10);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// The queue the aliveness test declares, as RabbitMQ names it.
const ALIVENESS_QUEUE: &str = "aliveness-test";

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{name}", get(node))
        .route("/api/whoami", get(whoami))
        .route("/api/warren/stop", post(stop))
        .route("/api/aliveness-test/{vhost}", get(aliveness_test))
        .route("/api/health/checks/alarms", get(no_alarms))
        .route("/api/health/checks/local-alarms", get(no_alarms))
        .route("/api/health/checks/virtual-hosts", get(no_alarms))
        .route(
            "/api/health/checks/port-listener/{port}",
            get(port_listener),
        )
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            get(protocol_listener),
        )
}

/// Snapshots of the message counters, so that a request can tell rates without a
/// background task: each request compares with the oldest snapshot of the last seconds.
pub(crate) struct RateSampler<T = MessageStats> {
    samples: Mutex<VecDeque<(Instant, T)>>,
}

impl<T> Default for RateSampler<T> {
    fn default() -> Self {
        RateSampler {
            samples: Mutex::new(VecDeque::new()),
        }
    }
}

impl<T: Copy> RateSampler<T> {
    /// An earlier snapshot and the seconds since it, if there is one.
    pub fn earlier(&self, now: Instant, current: T) -> Option<(T, f64)> {
        let mut samples = self.samples.lock();
        while samples.len() > 1
            && samples
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= RATE_WINDOW)
        {
            samples.pop_front();
        }
        let earlier = samples
            .front()
            .map(|(at, stats)| (*stats, now.duration_since(*at).as_secs_f64()));
        if samples
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= SAMPLE_EVERY)
        {
            samples.push_back((now, current));
        }
        earlier.filter(|(_, seconds)| *seconds > 0.0)
    }
}

fn exchange_types() -> Value {
    let kinds = [
        (
            "direct",
            "AMQP direct exchange, as per the AMQP specification",
        ),
        (
            "fanout",
            "AMQP fanout exchange, as per the AMQP specification",
        ),
        (
            "headers",
            "AMQP headers exchange, as per the AMQP specification",
        ),
        (
            "topic",
            "AMQP topic exchange, as per the AMQP specification",
        ),
    ];
    Value::Array(
        kinds
            .iter()
            .map(|(name, description)| {
                json!({"name": name, "description": description, "enabled": true})
            })
            .collect(),
    )
}

fn listeners_json(state: &State) -> Value {
    let node = node_name();
    let mut listeners = vec![json!({
        "node": node,
        "protocol": "amqp",
        "ip_address": state.listeners.amqp.ip().to_string(),
        "port": state.listeners.amqp.port(),
    })];
    for (protocol, addr) in [
        ("http", state.listeners.http),
        ("http/prometheus", state.listeners.metrics),
    ] {
        if let Some(addr) = addr {
            listeners.push(json!({
                "node": node,
                "protocol": protocol,
                "ip_address": addr.ip().to_string(),
                "port": addr.port(),
            }));
        }
    }
    Value::Array(listeners)
}

async fn overview(StateOf(state): StateOf<State>, caller: Caller) -> ApiResult<Json<Value>> {
    let vhosts = caller.visible_vhosts(&state);
    let named: Vec<(String, QueueRef)> = vhosts
        .iter()
        .flat_map(|v| v.queues().into_iter().map(|q| (v.name().to_string(), q)))
        .collect();
    let queues: Vec<QueueRef> = named.iter().map(|(_, q)| q.clone()).collect();
    let stats = queue_stats(&queues).await;
    let (mut ready, mut unacked, mut consumers) = (0u64, 0u64, 0u64);
    let (mut ready_rate, mut unacked_rate) = (0.0, 0.0);
    for ((vhost, queue), s) in named.iter().zip(&stats) {
        let Some(s) = s else { continue };
        ready += u64::from(s.message_count);
        unacked += u64::from(s.unacked_count);
        consumers += u64::from(s.consumer_count);
        let (ready_change, unacked_change) =
            state.queue_rates.depth_rates(vhost, queue.name.as_str(), s);
        ready_rate += ready_change;
        unacked_rate += unacked_change;
    }
    let connections: Vec<_> = state
        .broker
        .registry
        .connections()
        .into_iter()
        .filter(|c| caller.sees_connection(c))
        .collect();
    let channels: usize = connections.iter().map(|c| c.channel_count()).sum();
    let exchanges: usize = vhosts.iter().map(|v| v.exchanges().len()).sum();
    let version = env!("CARGO_PKG_VERSION");
    let node = node_name();
    let rate = |per_second: f64| json!({ "rate": per_second });
    let message_stats = if caller.is_monitor() {
        let current = state.broker.registry.message_stats();
        let earlier = state.rates.earlier(Instant::now(), current);
        message_stats_json(
            &current,
            earlier.as_ref().map(|(stats, seconds)| (stats, *seconds)),
        )
    } else {
        json!({})
    };
    let churn = state.broker.registry.churn();
    let earlier_churn = state.churn_rates.earlier(Instant::now(), churn);
    let churn_rate = |pick: fn(&Churn) -> u64| {
        rate(earlier_churn.map_or(0.0, |(then, seconds)| {
            (pick(&churn) as f64 - pick(&then) as f64) / seconds
        }))
    };
    Ok(Json(json!({
        "management_version": crate::RABBITMQ_VERSION,
        "rates_mode": "basic",
        "exchange_types": exchange_types(),
        "product_version": version,
        "product_name": "Warren",
        "rabbitmq_version": crate::RABBITMQ_VERSION,
        "cluster_name": node,
        "node": node,
        "disable_stats": false,
        "enable_queue_totals": false,
        "message_stats": message_stats,
        "churn_rates": {
            "connection_created": churn.connections_opened,
            "connection_created_details": churn_rate(|c| c.connections_opened),
            "connection_closed": churn.connections_closed,
            "connection_closed_details": churn_rate(|c| c.connections_closed),
            "channel_created": churn.channels_opened,
            "channel_created_details": churn_rate(|c| c.channels_opened),
            "channel_closed": churn.channels_closed,
            "channel_closed_details": churn_rate(|c| c.channels_closed),
        },
        "queue_totals": {
            "messages": ready + unacked,
            "messages_details": rate(ready_rate + unacked_rate),
            "messages_ready": ready,
            "messages_ready_details": rate(ready_rate),
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": rate(unacked_rate),
        },
        "object_totals": {
            "channels": channels,
            "connections": connections.len(),
            "consumers": consumers,
            "exchanges": exchanges,
            "queues": queues.len(),
        },
        "statistics_db_event_queue": 0,
        "listeners": listeners_json(&state),
        "contexts": [],
    })))
}

/// A number from a `/proc` file, where there is one (Linux).
fn proc_value(path: &str, field: impl Fn(&str) -> Option<u64>) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| field(&text))
}

fn node_json(state: &State) -> Value {
    let page_size = 4096;
    let mem_used = proc_value("/proc/self/statm", |t| {
        t.split_whitespace().nth(1)?.parse::<u64>().ok()
    })
    .map(|pages| pages * page_size);
    let mem_total = proc_value("/proc/meminfo", |t| {
        let line = t.lines().find(|l| l.starts_with("MemTotal:"))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    });
    let fd_used = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).ok();
    let fd_total = proc_value("/proc/self/limits", |t| {
        let line = t.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    });
    let processors = std::thread::available_parallelism().map_or(1, |n| n.get());
    json!({
        "name": node_name(),
        "type": "disc",
        "running": true,
        "os_pid": std::process::id().to_string(),
        "uptime": state.started.elapsed().as_millis() as u64,
        "mem_used": mem_used,
        // RabbitMQ's default high watermark: 40 % of the machine's memory.
        "mem_limit": mem_total.map(|t| t * 2 / 5),
        "mem_alarm": false,
        "disk_free_alarm": false,
        "disk_free_limit": 50_000_000u64,
        "fd_used": fd_used,
        "fd_total": fd_total,
        "sockets_used": state.broker.registry.connection_count(),
        "processors": processors,
        "run_queue": 0,
        "rates_mode": "basic",
        "partitions": [],
        "db_dir": state.config.data_dir.display().to_string(),
        "exchange_types": exchange_types(),
        "auth_mechanisms": [
            {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
            {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true},
        ],
        "applications": [],
        "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
        "listeners": listeners_json(state),
    })
}

async fn nodes(StateOf(state): StateOf<State>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    Ok(Json(json!([node_json(&state)])))
}

async fn node(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    if name != node_name() {
        return Err(ApiError::not_found());
    }
    Ok(Json(node_json(&state)))
}

/// Warren's own endpoint (RabbitMQ's API has none): a graceful stop, as on SIGTERM, for
/// `warrenctl stop`. Administrators only.
async fn stop(StateOf(state): StateOf<State>, caller: Caller) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    tracing::info!(user = caller.name(), "stop requested over HTTP");
    state.stop_requested.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({ "name": caller.user.name, "tags": caller.user.tags }))
}

fn failed(reason: impl Into<String>) -> Response {
    let body = json!({"status": "failed", "reason": reason.into()});
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// Declares `aliveness-test`, publishes a message to it and gets it back, as RabbitMQ does.
async fn aliveness_test(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    let vhost = caller.vhost(&state, &vhost)?;
    let name = ShortStr::from_static(ALIVENESS_QUEUE);
    let queue = vhost.declare_queue(
        QueueDeclaration {
            name: &name,
            durable: false,
            exclusive: false,
            auto_delete: false,
            arguments: &amqp::FieldTable::new(),
        },
        false,
        0,
    )?;
    let message = Message::new(
        ShortStr::default(),
        name,
        Bytes::from_static(&[0, 0]),
        Bytes::from_static(b"test_message"),
    );
    queue.send(QueueCommand::Publish {
        message: Arc::new(message),
        confirm: None,
    });
    Ok(match queue.get(true).await {
        Ok(Some((got, _))) if &got.message.body[..] == b"test_message" => {
            Json(json!({"status": "ok"})).into_response()
        }
        Ok(_) => failed("aliveness-test message not received"),
        Err(e) => failed(e.reply_text),
    })
}

async fn no_alarms(_caller: Caller) -> Json<Value> {
    Json(json!({"status": "ok"}))
}

fn listener_ports(state: &State) -> Vec<(&'static str, u16)> {
    let mut ports = vec![("amqp", state.listeners.amqp.port())];
    if let Some(addr) = state.listeners.http {
        ports.push(("http", addr.port()));
    }
    if let Some(addr) = state.listeners.metrics {
        ports.push(("http/prometheus", addr.port()));
    }
    ports
}

async fn port_listener(
    StateOf(state): StateOf<State>,
    _caller: Caller,
    Path(port): Path<u16>,
) -> Response {
    let ports = listener_ports(&state);
    if ports.iter().any(|(_, p)| *p == port) {
        return Json(json!({"status": "ok", "port": port})).into_response();
    }
    let body = json!({
        "status": "failed",
        "reason": "No active listener",
        "missing": port,
        "ports": ports.iter().map(|(_, p)| p).collect::<Vec<_>>(),
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn protocol_listener(
    StateOf(state): StateOf<State>,
    _caller: Caller,
    Path(protocol): Path<String>,
) -> Response {
    let ports = listener_ports(&state);
    let wanted = match protocol.as_str() {
        "amqp091" | "amqp0.9.1" | "amqp0-9-1" => "amqp",
        "prometheus" => "http/prometheus",
        other => other,
    };
    if ports.iter().any(|(p, _)| *p == wanted) {
        return Json(json!({"status": "ok", "protocol": protocol})).into_response();
    }
    let body = json!({
        "status": "failed",
        "reason": "No active listener",
        "missing": protocol,
        "protocols": ports.iter().map(|(p, _)| p).collect::<Vec<_>>(),
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_compare_with_a_snapshot_of_the_last_seconds() {
        let sampler = RateSampler::default();
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let stats = |publish| MessageStats {
            publish,
            ..MessageStats::default()
        };
        assert!(sampler.earlier(at(0), stats(0)).is_none());
        let (before, seconds) = sampler.earlier(at(2), stats(20)).unwrap();
        assert_eq!((before.publish, seconds), (0, 2.0));
        sampler.earlier(at(5), stats(50));
        // The sample at 0 s is out of the window once the one at 2 s is 10 s old.
        let (before, seconds) = sampler.earlier(at(13), stats(130)).unwrap();
        assert_eq!((before.publish, seconds), (20, 11.0));
    }
}
