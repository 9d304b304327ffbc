//! `/api/bindings`: every binding of a vhost (the default exchange's implicit ones too), and
//! creating and deleting one between an exchange and a queue or exchange. A binding is named
//! in paths by its `properties_key`: the routing key, plus a hash of the arguments if any.

use amqp::{FieldTable, ShortStr};
use axum::body::Bytes;
use axum::extract::{Path, Query, State as StateOf};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use broker::durability::table_to_json;
use broker::permissions::{Access, Resource};
use broker::vhost::{Destination, VHost};
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::listing::{reply_list, ListQuery};
use super::message::Body;
use super::queues::definitions_on_disk;
use super::State;

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/api/bindings", get(list_all))
        .route("/api/bindings/{vhost}", get(list_vhost))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(list_between).post(create),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(show).delete(remove),
        )
}

/// One binding of a vhost.
pub(crate) struct BindingRow {
    pub source: String,
    pub destination: String,
    /// "queue" or "exchange".
    pub destination_type: &'static str,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// The management API's name for the default exchange in paths.
pub(crate) fn exchange_name(path_name: &str) -> &str {
    if path_name == "amq.default" {
        ""
    } else {
        path_name
    }
}

/// Every binding of the vhost: first each queue's implicit one to the default exchange.
pub(crate) fn bindings_of(vhost: &VHost) -> Vec<BindingRow> {
    let mut queues: Vec<String> = vhost.queues().iter().map(|q| q.name.to_string()).collect();
    queues.sort();
    let mut rows: Vec<BindingRow> = queues
        .into_iter()
        .map(|name| BindingRow {
            source: String::new(),
            routing_key: name.clone(),
            destination: name,
            destination_type: "queue",
            arguments: FieldTable::new(),
        })
        .collect();
    let mut exchanges = vhost.exchanges();
    exchanges.sort_by(|a, b| a.name.cmp(&b.name));
    for exchange in exchanges.iter().filter(|x| !x.is_default()) {
        let mut bound: Vec<BindingRow> = exchange
            .bindings()
            .into_iter()
            .map(|(destination, key)| {
                let (destination_type, destination) = match destination {
                    Destination::Queue(name) => ("queue", name.to_string()),
                    Destination::Exchange(name) => ("exchange", name.to_string()),
                };
                BindingRow {
                    source: exchange.name.to_string(),
                    destination,
                    destination_type,
                    routing_key: key.routing_key.to_string(),
                    arguments: key.arguments,
                }
            })
            .collect();
        bound.sort_by(|a, b| {
            (a.destination_type, &a.destination, &a.routing_key).cmp(&(
                b.destination_type,
                &b.destination,
                &b.routing_key,
            ))
        });
        rows.extend(bound);
    }
    rows
}

/// RabbitMQ's `properties_key`: the routing key percent-encoded, then `~` and a hash of the
/// arguments when there are any.
pub(crate) fn properties_key(routing_key: &str, arguments: &FieldTable) -> String {
    let mut key = String::new();
    for byte in routing_key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.".contains(&byte) {
            key.push(byte as char);
        } else {
            key.push_str(&format!("%{byte:02X}"));
        }
    }
    if arguments.iter().next().is_some() {
        // FNV-1a over the arguments' JSON: stable for equal tables, opaque to clients.
        let text = table_to_json(arguments).to_string();
        let hash = text.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        key.push('~');
        key.push_str(&URL_SAFE_NO_PAD.encode(hash.to_be_bytes()));
    }
    key
}

pub(crate) fn binding_json(vhost: &str, b: &BindingRow) -> Value {
    json!({
        "source": b.source,
        "vhost": vhost,
        "destination": b.destination,
        "destination_type": b.destination_type,
        "routing_key": b.routing_key,
        "arguments": table_to_json(&b.arguments),
        "properties_key": properties_key(&b.routing_key, &b.arguments),
    })
}

/// Listed in `bindings_of`'s order within each vhost: bindings have no name, and the
/// default sort is stable.
fn rows_json(vhost: &VHost) -> Vec<Value> {
    bindings_of(vhost)
        .iter()
        .map(|b| binding_json(vhost.name(), b))
        .collect()
}

async fn list_all(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let rows = caller
        .accessible_vhosts(&state)
        .iter()
        .flat_map(|v| rows_json(v))
        .collect();
    reply_list(rows, &query)
}

async fn list_vhost(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let vhost = caller.vhost(&state, &vhost)?;
    reply_list(rows_json(&vhost), &query)
}

fn destination_type(kind: &str) -> ApiResult<&'static str> {
    match kind {
        "q" => Ok("queue"),
        "e" => Ok("exchange"),
        _ => Err(ApiError::not_found()),
    }
}

/// The bindings from `source` to `destination`; none, not an error, when either is unknown,
/// as RabbitMQ lists them.
fn between(
    vhost: &VHost,
    source: &str,
    kind: &str,
    destination: &str,
) -> ApiResult<Vec<BindingRow>> {
    let destination_type = destination_type(kind)?;
    let source = exchange_name(source);
    Ok(bindings_of(vhost)
        .into_iter()
        .filter(|b| {
            b.source == source
                && b.destination_type == destination_type
                && b.destination == destination
        })
        .collect())
}

async fn list_between(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    // RabbitMQ's access check lets a vhost that is not there through, and this listing then
    // finds nothing in it.
    if state.broker.vhost(&vhost).is_none() {
        return reply_list(Vec::new(), &query.without_pagination());
    }
    let vhost = caller.vhost(&state, &vhost)?;
    let rows = between(&vhost, &source, &kind, &destination)?
        .iter()
        .map(|b| binding_json(vhost.name(), b))
        .collect();
    reply_list(rows, &query.without_pagination())
}

/// The binding a path's `properties_key` names; a plain routing key is taken too.
fn find(rows: Vec<BindingRow>, props: &str) -> Option<BindingRow> {
    rows.into_iter().find(|b| {
        properties_key(&b.routing_key, &b.arguments) == props
            || (b.arguments.iter().next().is_none() && b.routing_key == props)
    })
}

async fn show(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let vhost = caller.vhost(&state, &vhost)?;
    let rows = between(&vhost, &source, &kind, &destination)?;
    let row = find(rows, &props).ok_or_else(ApiError::not_found)?;
    Ok(Json(binding_json(vhost.name(), &row)))
}

async fn create(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost_name, source, kind, destination)): Path<(String, String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let vhost = caller.vhost(&state, &vhost_name)?;
    let destination_type = destination_type(&kind)?;
    let body = Body::parse(&body)?;
    let routing_key = body.text("routing_key").unwrap_or_default();
    let routing_key = ShortStr::new(routing_key.as_str())
        .map_err(|_| ApiError::bad_request("routing key is too long"))?;
    let arguments = body.arguments()?;
    let source = exchange_name(&source);
    let resource = match destination_type {
        "queue" => Resource::Queue,
        _ => Resource::Exchange,
    };
    caller.check(&state, &vhost_name, Access::Write, resource, &destination)?;
    caller.check(
        &state,
        &vhost_name,
        Access::Read,
        Resource::Exchange,
        source,
    )?;
    match destination_type {
        "queue" => {
            let queue = vhost.queue(&destination, 0)?;
            vhost.bind_queue(&queue, source, &routing_key, &arguments)?;
        }
        _ => {
            vhost.existing_exchange(source)?;
            vhost.existing_exchange(&destination)?;
            vhost.bind_exchange(&destination, source, &routing_key, &arguments)?;
        }
    }
    definitions_on_disk(&state).await?;
    let location = format!("{destination}/{}", properties_key(&routing_key, &arguments));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

async fn remove(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path((vhost_name, source, kind, destination, props)): Path<(
        String,
        String,
        String,
        String,
        String,
    )>,
) -> ApiResult<StatusCode> {
    let vhost = caller.vhost(&state, &vhost_name)?;
    let rows = between(&vhost, &source, &kind, &destination)?;
    let row = find(rows, &props).ok_or_else(ApiError::not_found)?;
    let resource = match row.destination_type {
        "queue" => Resource::Queue,
        _ => Resource::Exchange,
    };
    caller.check(
        &state,
        &vhost_name,
        Access::Write,
        resource,
        &row.destination,
    )?;
    caller.check(
        &state,
        &vhost_name,
        Access::Read,
        Resource::Exchange,
        &row.source,
    )?;
    let routing_key = ShortStr::new(row.routing_key.as_str())
        .map_err(|_| ApiError::bad_request("routing key is too long"))?;
    match row.destination_type {
        "queue" => {
            let queue = vhost.queue(&row.destination, 0)?;
            vhost.unbind_queue(&queue, &row.source, &routing_key, &row.arguments)?;
        }
        _ => vhost.unbind_exchange(&row.destination, &row.source, &routing_key, &row.arguments)?,
    }
    definitions_on_disk(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_keys_escape_the_routing_key_and_hash_arguments() {
        assert_eq!(properties_key("a.#", &FieldTable::new()), "a.%23");
        let mut args = FieldTable::new();
        args.insert(ShortStr::from_static("x"), amqp::FieldValue::I64(1));
        let key = properties_key("k2", &args);
        assert!(key.starts_with("k2~") && key.len() == 9, "{key}");
        assert_eq!(key, properties_key("k2", &args));
    }
}
