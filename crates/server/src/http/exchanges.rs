//! `/api/exchanges`: listing, declare, delete, the bindings an exchange is source or
//! destination of, and `/publish`, which routes a message as basic.publish does. The default
//! exchange is `amq.default` in paths.

use std::sync::Arc;

use amqp::ShortStr;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as StateOf};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use broker::durability::table_to_json;
use broker::message::Message;
use broker::permissions::{Access, Resource};
use broker::queue::QueueCommand;
use broker::vhost::{Exchange, ExchangeDeclaration, VHost};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::bindings::{binding_json, bindings_of, exchange_name};
use super::error::{ApiError, ApiResult};
use super::listing::{reply_list, reply_one, ListQuery};
use super::message::{payload_from_json, properties_from_json, Body};
use super::queues::definitions_on_disk;
use super::State;

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/api/exchanges", get(list_all))
        .route("/api/exchanges/{vhost}", get(list_vhost))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(show).put(declare).delete(remove),
        )
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/{direction}",
            get(exchange_bindings),
        )
}

fn exchange_json(vhost: &str, exchange: &Exchange) -> Value {
    json!({
        "name": exchange.name.as_str(),
        "vhost": vhost,
        "type": exchange.kind.as_str(),
        "durable": exchange.durable,
        "auto_delete": exchange.auto_delete,
        "internal": exchange.internal,
        "arguments": table_to_json(&exchange.arguments),
        "policy": exchange.policy().map(|p| p.name.clone()),
    })
}

fn exchanges_json(vhosts: &[Arc<VHost>]) -> Vec<Value> {
    vhosts
        .iter()
        .flat_map(|vhost| {
            vhost
                .exchanges()
                .iter()
                .map(|x| exchange_json(vhost.name(), x))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn list_all(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    reply_list(exchanges_json(&caller.accessible_vhosts(&state)), &query)
}

async fn list_vhost(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let vhost = caller.vhost(&state, &vhost)?;
    reply_list(exchanges_json(&[vhost]), &query)
}

async fn show(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let vhost = caller.vhost(&state, &vhost)?;
    let exchange = vhost
        .exchange(exchange_name(&name))
        .ok_or_else(ApiError::not_found)?;
    let mut item = exchange_json(vhost.name(), &exchange);
    item["incoming"] = json!([]);
    item["outgoing"] = json!([]);
    Ok(reply_one(item, &query))
}

async fn declare(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let vhost = caller.vhost(&state, &vhost_name)?;
    let body = Body::parse(&body)?;
    let name = exchange_name(&name);
    caller.check(
        &state,
        &vhost_name,
        Access::Configure,
        Resource::Exchange,
        name,
    )?;
    let name =
        ShortStr::new(name).map_err(|_| ApiError::bad_request("exchange name is too long"))?;
    let kind = body.text("type").unwrap_or_else(|| "direct".to_string());
    let arguments = body.arguments()?;
    let existed = vhost.exchange(&name).is_some();
    vhost.declare_exchange(
        ExchangeDeclaration {
            name: &name,
            kind: &kind,
            durable: body.bool_or("durable", false)?,
            auto_delete: body.bool_or("auto_delete", false)?,
            internal: body.bool_or("internal", false)?,
            arguments: &arguments,
        },
        false,
    )?;
    definitions_on_disk(&state).await?;
    Ok(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

#[derive(Debug, Default, Deserialize)]
struct DeleteQuery {
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
}

async fn remove(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost_name, name)): Path<(String, String)>,
    Query(flags): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let vhost = caller.vhost(&state, &vhost_name)?;
    let name = exchange_name(&name);
    vhost.exchange(name).ok_or_else(ApiError::not_found)?;
    caller.check(
        &state,
        &vhost_name,
        Access::Configure,
        Resource::Exchange,
        name,
    )?;
    vhost.delete_exchange(name, flags.if_unused.as_deref() == Some("true"))?;
    definitions_on_disk(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn publish(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let vhost = caller.vhost(&state, &vhost_name)?;
    let body = Body::parse(&body)?;
    body.require(&["routing_key", "payload", "payload_encoding"])?;
    let name = exchange_name(&name);
    let exchange = vhost
        .existing_exchange(name)
        .map_err(|e| ApiError::bad_request(format!("{} {}", e.reply_code, e.reply_text)))?;
    caller.check(&state, &vhost_name, Access::Write, Resource::Exchange, name)?;
    if exchange.internal {
        return Err(ApiError::bad_request(format!(
            "cannot publish to internal exchange '{name}' in vhost '{vhost_name}'"
        )));
    }
    let payload = payload_from_json(
        &body.text("payload").unwrap_or_default(),
        &body.text("payload_encoding").unwrap_or_default(),
    )?;
    let max = state.config.max_message_size_bytes;
    if payload.len() > max {
        return Err(ApiError::bad_request(format!(
            "message size {} is larger than configured max size {max}",
            payload.len()
        )));
    }
    let properties = properties_from_json(body.get("properties"))?;
    let routing_key = ShortStr::new(body.text("routing_key").unwrap_or_default().as_str())
        .map_err(|_| ApiError::bad_request("routing key is too long"))?;
    let message = Message::published(exchange.name.clone(), routing_key, properties, payload)?;
    let mut routed = Vec::new();
    vhost.route_message(&exchange, &message, &mut routed);
    let message = Arc::new(message);
    for queue in &routed {
        queue.send(QueueCommand::Publish {
            message: message.clone(),
            confirm: None,
        });
    }
    Ok(Json(json!({ "routed": !routed.is_empty() })))
}

async fn exchange_bindings(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost_name, name, direction)): Path<(String, String, String)>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let vhost = caller.vhost(&state, &vhost_name)?;
    let name = exchange_name(&name);
    vhost.exchange(name).ok_or_else(ApiError::not_found)?;
    let rows = bindings_of(&vhost);
    let rows: Vec<Value> = match direction.as_str() {
        "source" => rows
            .iter()
            .filter(|b| b.source == name)
            .map(|b| binding_json(vhost.name(), b))
            .collect(),
        "destination" => rows
            .iter()
            .filter(|b| b.destination_type == "exchange" && b.destination == name)
            .map(|b| binding_json(vhost.name(), b))
            .collect(),
        _ => return Err(ApiError::not_found()),
    };
    reply_list(rows, &query)
}
