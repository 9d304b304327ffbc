//! `/api/connections`, `/api/channels`, `/api/consumers` and their per-vhost forms: what the
//! broker's registry of live connections holds, shown as RabbitMQ shows it. Users without the
//! monitoring tag see only their own; closing one (DELETE) sends 320 CONNECTION_FORCED.

use std::sync::Arc;

use axum::extract::{Path, Query, State as StateOf};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use broker::durability::table_to_json;
use broker::registry::{ChannelInfo, ConnectionInfo, MessageStats};
use broker::vhost::VHost;
use serde_json::{json, Map, Value};

use super::auth::{existing_vhost, Caller};
use super::error::{ApiError, ApiResult};
use super::listing::{reply_list, reply_one, ListQuery};
use super::{node_name, State};

/// RabbitMQ's reason when the management API closes a connection without `X-Reason`.
const DEFAULT_CLOSE_REASON: &str = "Closed via management plugin";

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/api/connections", get(list_connections))
        .route(
            "/api/connections/{name}",
            get(show_connection).delete(close_connection),
        )
        .route("/api/connections/{name}/channels", get(connection_channels))
        .route("/api/channels", get(list_channels))
        .route("/api/channels/{name}", get(show_channel))
        .route("/api/consumers", get(list_consumers))
        .route("/api/consumers/{vhost}", get(list_vhost_consumers))
        // `{name}`: the vhost routes of access.rs name this position so, and axum wants one
        // name per position.
        .route(
            "/api/vhosts/{name}/connections",
            get(list_vhost_connections),
        )
        .route("/api/vhosts/{name}/channels", get(list_vhost_channels))
}

/// One count of `MessageStats`, by its `message_stats` name.
type StatField = fn(&MessageStats) -> u64;

/// RabbitMQ's `message_stats` object: each count, and its `_details` rate measured against
/// an earlier snapshot taken `seconds` before (0 without one).
pub(crate) fn message_stats_json(
    stats: &MessageStats,
    earlier: Option<(&MessageStats, f64)>,
) -> Value {
    let fields: [(&str, StatField); 12] = [
        ("publish", |s| s.publish),
        ("confirm", |s| s.confirm),
        ("deliver", |s| s.deliver),
        ("deliver_no_ack", |s| s.deliver_no_ack),
        ("get", |s| s.get),
        ("get_no_ack", |s| s.get_no_ack),
        ("get_empty", |s| s.get_empty),
        ("deliver_get", MessageStats::deliver_get),
        ("ack", |s| s.ack),
        ("redeliver", |s| s.redeliver),
        ("return_unroutable", |s| s.return_unroutable),
        ("drop_unroutable", |s| s.drop_unroutable),
    ];
    let mut out = Map::new();
    for (name, field) in fields {
        let count = field(stats);
        let rate = match earlier {
            Some((before, seconds)) if seconds > 0.0 => {
                count.saturating_sub(field(before)) as f64 / seconds
            }
            _ => 0.0,
        };
        out.insert(name.to_string(), json!(count));
        out.insert(format!("{name}_details"), json!({ "rate": rate }));
    }
    Value::Object(out)
}

fn connection_json(c: &ConnectionInfo) -> Value {
    let login = c.login();
    let opened = c.opened();
    let mut item = json!({
        "name": c.name,
        "node": node_name(),
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "host": c.local.ip().to_string(),
        "port": c.local.port(),
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "ssl": false,
        "user": login.as_ref().map(|l| l.user.clone()),
        "user_who_performed_action": login.as_ref().map(|l| l.user.clone()),
        "auth_mechanism": login.as_ref().map(|l| l.auth_mechanism.clone()),
        "client_properties": login
            .as_ref()
            .map_or_else(|| json!({}), |l| table_to_json(&l.client_properties)),
        "vhost": opened.as_ref().map(|o| o.vhost.clone()),
        "channel_max": opened.as_ref().map(|o| o.channel_max),
        "frame_max": opened.as_ref().map(|o| o.frame_max),
        "timeout": opened.as_ref().map(|o| o.heartbeat_secs),
        "channels": c.channel_count(),
        "connected_at": c.connected_at_ms,
        "state": c.state(),
    });
    if let Some(name) = c.user_provided_name() {
        item["user_provided_name"] = json!(name);
    }
    item
}

fn channel_name(connection: &ConnectionInfo, channel: &ChannelInfo) -> String {
    format!("{} ({})", connection.name, channel.number)
}

fn channel_json(connection: &ConnectionInfo, channel: &ChannelInfo) -> Value {
    let gauges = &channel.gauges;
    let flag = |b: &std::sync::atomic::AtomicBool| b.load(std::sync::atomic::Ordering::Relaxed);
    json!({
        "name": channel_name(connection, channel),
        "number": channel.number,
        "node": node_name(),
        "user": connection.user(),
        "user_who_performed_action": connection.user(),
        "vhost": connection.vhost(),
        "connection_details": {
            "name": connection.name,
            "peer_host": connection.peer.ip().to_string(),
            "peer_port": connection.peer.port(),
        },
        "consumer_count": gauges.consumer_count.get(),
        "messages_unacknowledged": gauges.messages_unacknowledged.get(),
        "messages_unconfirmed": gauges.messages_unconfirmed.get(),
        "messages_uncommitted": gauges.messages_uncommitted.get(),
        "acks_uncommitted": gauges.acks_uncommitted.get(),
        "prefetch_count": gauges.prefetch_count.get(),
        "global_prefetch_count": gauges.global_prefetch_count.get(),
        "confirm": flag(&gauges.confirm),
        "transactional": flag(&gauges.transactional),
        "state": "running",
        "message_stats": message_stats_json(&channel.stats.snapshot(), None),
    })
}

fn visible_connections(state: &State, caller: &Caller) -> Vec<Arc<ConnectionInfo>> {
    state
        .broker
        .registry
        .connections()
        .into_iter()
        .filter(|c| caller.sees_connection(c))
        .collect()
}

/// Every consumer on these connections' channels.
pub(crate) fn consumers_of(connections: &[Arc<ConnectionInfo>]) -> Vec<Value> {
    let mut out = Vec::new();
    for connection in connections {
        let Some(vhost) = connection.vhost() else {
            continue;
        };
        for channel in connection.channels() {
            for consumer in channel.consumers() {
                out.push(json!({
                    "consumer_tag": consumer.consumer_tag,
                    "queue": { "name": consumer.queue, "vhost": vhost },
                    "channel_details": {
                        "name": channel_name(connection, &channel),
                        "number": channel.number,
                        "connection_name": connection.name,
                        "peer_host": connection.peer.ip().to_string(),
                        "peer_port": connection.peer.port(),
                        "user": connection.user(),
                        "node": node_name(),
                    },
                    "ack_required": consumer.ack_required,
                    "exclusive": consumer.exclusive,
                    "prefetch_count": consumer.prefetch_count,
                    "arguments": table_to_json(&consumer.arguments),
                    "active": true,
                    "activity_status": "up",
                }));
            }
        }
    }
    out
}

async fn list_connections(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = visible_connections(&state, &caller)
        .iter()
        .map(|c| connection_json(c))
        .collect();
    reply_list(items, &query)
}

fn find_connection(state: &State, name: &str) -> ApiResult<Arc<ConnectionInfo>> {
    state
        .broker
        .registry
        .connection_by_name(name)
        .ok_or_else(ApiError::not_found)
}

fn not_your_object() -> ApiError {
    ApiError::not_authorised("User not authorised to access object")
}

async fn show_connection(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let connection = find_connection(&state, &name)?;
    if !caller.sees_connection(&connection) {
        return Err(not_your_object());
    }
    Ok(reply_one(connection_json(&connection), &query))
}

async fn close_connection(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let connection = find_connection(&state, &name)?;
    let own = connection.user().as_deref() == Some(caller.name());
    if !(caller.is_admin() || own) {
        return Err(not_your_object());
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(DEFAULT_CLOSE_REASON);
    connection.request_close(reason);
    Ok(StatusCode::NO_CONTENT)
}

async fn connection_channels(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let connection = find_connection(&state, &name)?;
    if !caller.sees_connection(&connection) {
        return Err(not_your_object());
    }
    let items = connection
        .channels()
        .iter()
        .map(|ch| channel_json(&connection, ch))
        .collect();
    reply_list(items, &query)
}

/// The connections of one vhost that the caller sees. Unlike the unscoped listings, RabbitMQ
/// asks here for access to the vhost itself, of monitoring users too (administrators
/// excepted): 404 for an unknown vhost, then 401.
fn vhost_connections(
    state: &State,
    caller: &Caller,
    vhost: &str,
) -> ApiResult<Vec<Arc<ConnectionInfo>>> {
    let vhost = caller.vhost(state, vhost)?;
    Ok(connections_in(state, caller, &vhost))
}

fn connections_in(state: &State, caller: &Caller, vhost: &VHost) -> Vec<Arc<ConnectionInfo>> {
    visible_connections(state, caller)
        .into_iter()
        .filter(|c| c.vhost().as_deref() == Some(vhost.name()))
        .collect()
}

async fn list_vhost_connections(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = vhost_connections(&state, &caller, &vhost)?
        .iter()
        .map(|c| connection_json(c))
        .collect();
    reply_list(items, &query.without_pagination())
}

async fn list_vhost_channels(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let connections = vhost_connections(&state, &caller, &vhost)?;
    reply_list(channels_of(&connections), &query.without_pagination())
}

fn channels_json(state: &State, caller: &Caller) -> Vec<Value> {
    channels_of(&visible_connections(state, caller))
}

fn channels_of(connections: &[Arc<ConnectionInfo>]) -> Vec<Value> {
    connections
        .iter()
        .flat_map(|c| {
            c.channels()
                .iter()
                .map(|ch| channel_json(c, ch))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn list_channels(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    reply_list(channels_json(&state, &caller), &query)
}

async fn show_channel(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    channels_json(&state, &caller)
        .into_iter()
        .find(|ch| ch["name"] == name.as_str())
        .map(|ch| reply_one(ch, &query))
        .ok_or_else(ApiError::not_found)
}

async fn list_consumers(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    reply_list(consumers_of(&visible_connections(&state, &caller)), &query)
}

async fn list_vhost_consumers(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    // Unlike the vhost's connections, RabbitMQ asks here only that the vhost exists: the
    // listing is filtered to the caller's own consumers anyway (everyone's for monitors).
    let vhost = existing_vhost(&state, &vhost)?;
    let items = consumers_of(&connections_in(&state, &caller, &vhost));
    reply_list(items, &query)
}
