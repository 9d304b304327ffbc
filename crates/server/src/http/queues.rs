//! `/api/queues`: listing with message counts, declare, delete, purge (`/contents`), and
//! `/get`, which takes messages as basic.get does and puts them back for the requeue modes
//! (so they come back redelivered, as in RabbitMQ).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use amqp::{FieldTable, ShortStr};
use axum::body::Bytes;
use axum::extract::{Path, Query, State as StateOf};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use broker::durability::table_to_json;
use broker::permissions::{Access, Resource};
use broker::queue::{MessageId, MessageTotals, QueueCommand, QueueHandle, QueueRef, QueueStats};
use broker::vhost::{QueueDeclaration, VHost};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth::Caller;
use super::bindings::{binding_json, bindings_of};
use super::connections::consumers_of;
use super::error::{ApiError, ApiResult};
use super::listing::{reply_list, reply_one, ListQuery};
use super::message::{payload_to_json, properties_to_json, Body, PayloadEncoding};
use super::overview::RateSampler;
use super::{node_name, queue_stats, State};

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/api/queues", get(list_all))
        .route("/api/queues/{vhost}", get(list_vhost))
        .route(
            "/api/queues/{vhost}/{name}",
            get(show).put(declare).delete(remove),
        )
        .route("/api/queues/{vhost}/{name}/contents", delete(purge))
        .route("/api/queues/{vhost}/{name}/get", post(get_messages))
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
}

/// A queue as the management API lists it.
/// What a queue's rates are measured from: its totals and its depth.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QueueSample {
    totals: MessageTotals,
    ready: u64,
    unacked: u64,
}

/// A queue by vhost and name.
type QueueKey = (String, String);

/// Every queue's recent samples, by vhost and name; rates compare a request's figures with
/// the oldest sample of the last seconds, as `/api/overview` does.
#[derive(Default)]
pub(crate) struct QueueRates {
    samplers: Mutex<HashMap<QueueKey, Arc<RateSampler<QueueSample>>>>,
}

impl QueueRates {
    fn earlier(
        &self,
        vhost: &str,
        name: &str,
        now: Instant,
        current: QueueSample,
    ) -> Option<(QueueSample, f64)> {
        let sampler = self
            .samplers
            .lock()
            .entry((vhost.to_string(), name.to_string()))
            .or_default()
            .clone();
        sampler.earlier(now, current)
    }

    /// How fast a queue's ready and unacknowledged counts change, per second.
    pub fn depth_rates(&self, vhost: &str, name: &str, stats: &QueueStats) -> (f64, f64) {
        let current = QueueSample {
            totals: stats.totals,
            ready: u64::from(stats.message_count),
            unacked: u64::from(stats.unacked_count),
        };
        match self.earlier(vhost, name, Instant::now(), current) {
            Some((then, seconds)) if seconds > 0.0 => (
                (current.ready as f64 - then.ready as f64) / seconds,
                (current.unacked as f64 - then.unacked as f64) / seconds,
            ),
            _ => (0.0, 0.0),
        }
    }

    /// Forgets the samples of queues that are gone (`present` is every queue there is).
    fn keep_only(&self, present: &HashSet<QueueKey>) {
        self.samplers.lock().retain(|key, _| present.contains(key));
    }
}

/// A count and its rate per second since `earlier` (0 without an earlier sample; a queue
/// deleted and declared again starts over, so a count that went down is no rate).
fn with_rate(json: &mut Map<String, Value>, key: &str, now: u64, earlier: Option<(u64, f64)>) {
    json.insert(key.to_string(), json!(now));
    json.insert(format!("{key}_details"), rate_json(now, earlier));
}

fn rate_json(now: u64, earlier: Option<(u64, f64)>) -> Value {
    let rate = match earlier {
        Some((then, seconds)) if seconds > 0.0 => (now as f64 - then as f64) / seconds,
        _ => 0.0,
    };
    json!({ "rate": rate })
}

pub(crate) fn queue_json(
    state: &State,
    vhost: &str,
    queue: &QueueHandle,
    stats: Option<QueueStats>,
) -> Value {
    let stats = stats.unwrap_or_default();
    let ready = u64::from(stats.message_count);
    let unacked = u64::from(stats.unacked_count);
    let current = QueueSample {
        totals: stats.totals,
        ready,
        unacked,
    };
    let earlier = state
        .queue_rates
        .earlier(vhost, queue.name.as_str(), Instant::now(), current);
    let then = |pick: fn(&QueueSample) -> u64| earlier.map(|(sample, secs)| (pick(&sample), secs));
    let mut message_stats = Map::new();
    let totals = stats.totals;
    with_rate(
        &mut message_stats,
        "publish",
        totals.publish,
        then(|s| s.totals.publish),
    );
    with_rate(
        &mut message_stats,
        "deliver_get",
        totals.deliver_get,
        then(|s| s.totals.deliver_get),
    );
    with_rate(
        &mut message_stats,
        "redeliver",
        totals.redeliver,
        then(|s| s.totals.redeliver),
    );
    with_rate(
        &mut message_stats,
        "ack",
        totals.ack,
        then(|s| s.totals.ack),
    );
    let policy = queue.policy();
    json!({
        "name": queue.name.as_str(),
        "vhost": vhost,
        "durable": queue.config.durable,
        "auto_delete": queue.config.auto_delete,
        "exclusive": queue.is_exclusive(),
        "arguments": table_to_json(&queue.config.arguments),
        "node": node_name(),
        "type": "classic",
        "state": "running",
        "consumers": stats.consumer_count,
        "messages": ready + unacked,
        "messages_details": rate_json(ready + unacked, then(|s| s.ready + s.unacked)),
        "messages_ready": ready,
        "messages_ready_details": rate_json(ready, then(|s| s.ready)),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": rate_json(unacked, then(|s| s.unacked)),
        "message_stats": message_stats,
        "policy": policy.as_ref().map(|p| p.name.as_str()),
        "operator_policy": null,
        "effective_policy_definition": policy.as_ref().map_or_else(
            || Value::Object(Default::default()),
            |p| Value::Object(p.definition.clone()),
        ),
        "exclusive_consumer_tag": null,
        "single_active_consumer_tag": null,
    })
}

async fn queues_json(state: &State, vhosts: &[std::sync::Arc<VHost>]) -> Vec<Value> {
    let mut queues: Vec<(String, QueueRef)> = Vec::new();
    for vhost in vhosts {
        queues.extend(
            vhost
                .queues()
                .into_iter()
                .map(|q| (vhost.name().to_string(), q)),
        );
    }
    let handles: Vec<QueueRef> = queues.iter().map(|(_, q)| q.clone()).collect();
    let stats = queue_stats(&handles).await;
    if vhosts.len() == state.broker.vhosts().len() {
        let present = queues
            .iter()
            .map(|(vhost, q)| (vhost.clone(), q.name.to_string()))
            .collect();
        state.queue_rates.keep_only(&present);
    }
    queues
        .iter()
        .zip(stats)
        .map(|((vhost, queue), stats)| queue_json(state, vhost, queue, stats))
        .collect()
}

async fn list_all(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let vhosts = caller.accessible_vhosts(&state);
    reply_list(queues_json(&state, &vhosts).await, &query)
}

async fn list_vhost(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let vhost = caller.vhost(&state, &vhost)?;
    reply_list(queues_json(&state, &[vhost]).await, &query)
}

fn existing(vhost: &VHost, name: &str) -> ApiResult<QueueRef> {
    vhost.queue(name, 0).map_err(|e| match e.reply_code {
        broker::error::reply_code::NOT_FOUND => ApiError::not_found(),
        _ => ApiError::from_amqp(e),
    })
}

async fn show(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let vhost = caller.vhost(&state, &vhost)?;
    let queue = vhost
        .queues()
        .into_iter()
        .find(|q| q.name.as_str() == name)
        .ok_or_else(ApiError::not_found)?;
    let stats = queue.stats().await.ok();
    let mut item = queue_json(&state, vhost.name(), &queue, stats);
    // Everyone's consumers of the queue, as RabbitMQ shows them to anyone who may see it.
    let consumers: Vec<Value> = consumers_of(&state.broker.registry.connections())
        .into_iter()
        .filter(|c| c["queue"]["name"] == name.as_str() && c["queue"]["vhost"] == vhost.name())
        .collect();
    item["consumer_details"] = Value::Array(consumers);
    item["deliveries"] = json!([]);
    item["incoming"] = json!([]);
    Ok(reply_one(item, &query))
}

fn short(name: &str, what: &str) -> ApiResult<ShortStr> {
    ShortStr::new(name).map_err(|_| ApiError::bad_request(format!("{what} name is too long")))
}

async fn declare(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let vhost = caller.vhost(&state, &vhost_name)?;
    let body = Body::parse(&body)?;
    let name = short(&name, "queue")?;
    let name = vhost.queue_name_to_declare(&name)?;
    caller.check(
        &state,
        &vhost_name,
        Access::Configure,
        Resource::Queue,
        &name,
    )?;
    let mut arguments: FieldTable = body.arguments()?;
    if let Some(kind) = body.text("queue_type") {
        arguments.insert(
            ShortStr::from_static("x-queue-type"),
            amqp::FieldValue::from(kind.as_str()),
        );
    }
    let durable = body.bool_or("durable", false)?;
    let existed = vhost.queue(&name, 0).is_ok();
    vhost.declare_queue(
        QueueDeclaration {
            name: &name,
            durable,
            exclusive: false,
            auto_delete: body.bool_or("auto_delete", false)?,
            arguments: &arguments,
        },
        false,
        0,
    )?;
    definitions_on_disk(&state).await?;
    Ok(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

/// A durable change answered only once it is on disk, as the AMQP side does.
pub(crate) async fn definitions_on_disk(state: &State) -> ApiResult<()> {
    state
        .broker
        .definitions_synced()
        .await
        .map_err(|e| ApiError::internal(format!("cannot write definitions: {e}")))
}

#[derive(Debug, Default, Deserialize)]
struct DeleteQuery {
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
    #[serde(rename = "if-empty")]
    if_empty: Option<String>,
}

async fn remove(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost_name, name)): Path<(String, String)>,
    Query(flags): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let vhost = caller.vhost(&state, &vhost_name)?;
    let queue = existing(&vhost, &name)?;
    caller.check(
        &state,
        &vhost_name,
        Access::Configure,
        Resource::Queue,
        &name,
    )?;
    queue
        .delete(
            flags.if_unused.as_deref() == Some("true"),
            flags.if_empty.as_deref() == Some("true"),
        )
        .await?;
    definitions_on_disk(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn purge(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost_name, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let vhost = caller.vhost(&state, &vhost_name)?;
    let queue = existing(&vhost, &name)?;
    caller.check(&state, &vhost_name, Access::Read, Resource::Queue, &name)?;
    queue.purge().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What happens to messages `/get` took, once the answer is built (or the request dropped).
#[derive(Clone, Copy, PartialEq, Eq)]
enum AckMode {
    AckRequeueTrue,
    AckRequeueFalse,
    RejectRequeueTrue,
    RejectRequeueFalse,
}

impl AckMode {
    fn parse(text: &str) -> Option<AckMode> {
        Some(match text {
            "ack_requeue_true" => AckMode::AckRequeueTrue,
            "ack_requeue_false" => AckMode::AckRequeueFalse,
            "reject_requeue_true" => AckMode::RejectRequeueTrue,
            "reject_requeue_false" => AckMode::RejectRequeueFalse,
            _ => return None,
        })
    }
}

/// Messages taken from a queue by `/get`: settled when dropped, so a request cancelled half
/// way never strands a message as unacknowledged.
struct Taken {
    queue: QueueRef,
    ids: Vec<MessageId>,
    mode: AckMode,
}

impl Drop for Taken {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.ids);
        self.queue.send(match self.mode {
            AckMode::AckRequeueTrue | AckMode::RejectRequeueTrue => QueueCommand::Requeue {
                ids,
                redelivered: true,
            },
            AckMode::RejectRequeueFalse => QueueCommand::Discard(ids),
            AckMode::AckRequeueFalse => QueueCommand::Ack(ids),
        });
    }
}

async fn get_messages(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let vhost = caller.vhost(&state, &vhost_name)?;
    let body = Body::parse(&body)?;
    body.require(&["count", "ackmode", "encoding"])?;
    let count = body.u64_field("count")?.unwrap_or(1);
    let mode = body
        .text("ackmode")
        .as_deref()
        .and_then(AckMode::parse)
        .ok_or_else(|| ApiError::bad_request("invalid ackmode"))?;
    let encoding = match body.text("encoding").as_deref() {
        Some("auto") => PayloadEncoding::Auto,
        Some("base64") => PayloadEncoding::Base64,
        _ => return Err(ApiError::bad_request("invalid encoding")),
    };
    let truncate = body.u64_field("truncate")?.map(|n| n as usize);
    let queue = vhost
        .queue(&name, 0)
        .map_err(|e| ApiError::not_found_because(e.reply_text))?;
    caller.check(&state, &vhost_name, Access::Read, Resource::Queue, &name)?;
    let no_ack = mode == AckMode::AckRequeueFalse;
    let mut taken = Taken {
        queue: queue.clone(),
        ids: Vec::new(),
        mode,
    };
    let mut messages = Vec::new();
    for _ in 0..count {
        let Some((queued, message_count)) = queue.get(no_ack).await? else {
            break;
        };
        if !no_ack {
            taken.ids.push(queued.id);
        }
        let message = &queued.message;
        let (payload, payload_encoding) = payload_to_json(&message.body, encoding, truncate);
        messages.push(json!({
            "payload_bytes": message.body.len(),
            "redelivered": queued.redelivered,
            "exchange": message.exchange.as_str(),
            "routing_key": message.routing_key.as_str(),
            "message_count": message_count,
            "properties": properties_to_json(&message.properties),
            "payload": payload,
            "payload_encoding": payload_encoding,
        }));
    }
    drop(taken);
    Ok(Json(Value::Array(messages)))
}

async fn queue_bindings(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost_name, name)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let vhost = caller.vhost(&state, &vhost_name)?;
    existing(&vhost, &name)?;
    let rows: Vec<Value> = bindings_of(&vhost)
        .into_iter()
        .filter(|b| b.destination_type == "queue" && b.destination == name)
        .map(|b| binding_json(vhost.name(), &b))
        .collect();
    Ok(reply_list(rows, &query)?.into_response())
}
