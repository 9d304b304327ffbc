//! `/api/definitions`: export in RabbitMQ's definitions format (what the data directory's
//! definitions.json holds, plus transient objects) and import, which declares what a file
//! names the way clients would, so the broker persists it as usual. Administrators only.

use amqp::ShortStr;
use axum::body::Bytes;
use axum::extract::{Path, State as StateOf};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use broker::durability::json_to_table;
use broker::permissions::Permission;
use broker::policies::Policy;
use broker::users::{User, HASHING_ALGORITHM};
use broker::vhost::{ExchangeDeclaration, QueueDeclaration};
use broker::Broker;
use serde_json::Value;
use store::Definitions;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::queues::definitions_on_disk;
use super::State;

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/api/definitions", get(export_all).post(import_all))
        .route(
            "/api/definitions/{vhost}",
            get(export_vhost).post(import_vhost),
        )
}

/// Everything the broker would export, less exclusive queues (they die with their
/// connection, so RabbitMQ leaves them out).
fn export(state: &State) -> Definitions {
    let mut defs = state.broker.export_definitions(false);
    defs.queues.retain(|q| {
        state
            .broker
            .vhost(&q.vhost)
            .and_then(|v| v.queues().into_iter().find(|h| h.name.as_str() == q.name))
            .is_some_and(|h| !h.is_exclusive())
    });
    defs
}

fn to_json(defs: &Definitions) -> ApiResult<Json<Value>> {
    serde_json::to_value(defs)
        .map(Json)
        .map_err(|e| ApiError::internal(e.to_string()))
}

async fn export_all(StateOf(state): StateOf<State>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    to_json(&export(&state))
}

/// One vhost's objects, without users, vhosts and permissions, as RabbitMQ exports them.
async fn export_vhost(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    state.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let mut defs = export(&state);
    defs.users.clear();
    defs.vhosts.clear();
    defs.permissions.clear();
    defs.topic_permissions.clear();
    defs.global_parameters.clear();
    defs.queues.retain(|q| q.vhost == vhost);
    defs.exchanges.retain(|x| x.vhost == vhost);
    defs.bindings.retain(|b| b.vhost == vhost);
    defs.policies.retain(|p| p.vhost == vhost);
    defs.parameters.retain(|p| p.vhost == vhost);
    to_json(&defs)
}

fn parse(body: &[u8]) -> ApiResult<Definitions> {
    serde_json::from_slice(body).map_err(|_| ApiError::bad_request("failed_to_parse_json"))
}

async fn import_all(
    StateOf(state): StateOf<State>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let defs = parse(&body)?;
    import_definitions(&state.broker, &defs).map_err(ApiError::bad_request)?;
    definitions_on_disk(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A vhost's objects into the named vhost, whatever vhost the file's entries name.
async fn import_vhost(
    StateOf(state): StateOf<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let mut defs = parse(&body)?;
    defs.users.clear();
    defs.vhosts.clear();
    defs.permissions.clear();
    defs.queues.iter_mut().for_each(|q| q.vhost = vhost.clone());
    defs.exchanges
        .iter_mut()
        .for_each(|x| x.vhost = vhost.clone());
    defs.bindings
        .iter_mut()
        .for_each(|b| b.vhost = vhost.clone());
    import_definitions(&state.broker, &defs).map_err(ApiError::bad_request)?;
    definitions_on_disk(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds what the definitions name to the broker (nothing is removed): users with their
/// password hashes, vhosts, permissions, policies, then exchanges, queues and bindings, declared as a
/// client would declare them. Stops at the first entry the broker refuses, naming it.
pub(crate) fn import_definitions(broker: &Broker, defs: &Definitions) -> Result<(), String> {
    for user in &defs.users {
        if user.hashing_algorithm != HASHING_ALGORITHM {
            return Err(format!(
                "user '{}': unsupported hashing_algorithm '{}'",
                user.name, user.hashing_algorithm
            ));
        }
        broker.put_user(User {
            name: user.name.clone(),
            password_hash: user.password_hash.clone(),
            tags: user.tags.clone(),
            loopback_only: user.name == "guest",
        });
    }
    for vhost in &defs.vhosts {
        broker.declare_vhost(&vhost.name);
    }
    for p in &defs.permissions {
        let permission = Permission::new(&p.configure, &p.write, &p.read)
            .map_err(|e| format!("permissions of '{}' in vhost '{}': {e}", p.user, p.vhost))?;
        broker.set_permissions(&p.vhost, &p.user, permission);
    }
    for p in &defs.policies {
        let definition = p.definition.as_object().cloned().unwrap_or_default();
        let policy = Policy::new(
            &p.vhost,
            &p.name,
            &p.pattern,
            &p.apply_to,
            p.priority,
            definition,
        )
        .map_err(|e| format!("policy '{}' in vhost '{}': {e}", p.name, p.vhost))?;
        broker.put_policy(policy);
    }
    let vhost_of = |name: &str| {
        broker
            .vhost(name)
            .ok_or_else(|| format!("vhost '{name}' does not exist"))
    };
    let short = |text: &str, what: &str| {
        ShortStr::new(text).map_err(|_| format!("{what} '{text}' is too long"))
    };
    for x in &defs.exchanges {
        let vhost = vhost_of(&x.vhost)?;
        let name = short(&x.name, "exchange name")?;
        vhost
            .declare_exchange(
                ExchangeDeclaration {
                    name: &name,
                    kind: &x.exchange_type,
                    durable: x.durable,
                    auto_delete: x.auto_delete,
                    internal: x.internal,
                    arguments: &json_to_table(&x.arguments),
                },
                false,
            )
            .map_err(|e| format!("exchange '{}': {}", x.name, e.reply_text))?;
    }
    for q in &defs.queues {
        let vhost = vhost_of(&q.vhost)?;
        let name = short(&q.name, "queue name")?;
        let mut arguments = json_to_table(&q.arguments);
        if let Some(kind) = &q.queue_type {
            if arguments.get("x-queue-type").is_none() && kind != "classic" {
                arguments.insert(
                    ShortStr::from_static("x-queue-type"),
                    amqp::FieldValue::from(kind.as_str()),
                );
            }
        }
        vhost
            .declare_queue(
                QueueDeclaration {
                    name: &name,
                    durable: q.durable,
                    exclusive: false,
                    auto_delete: q.auto_delete,
                    arguments: &arguments,
                },
                false,
                0,
            )
            .map_err(|e| format!("queue '{}': {}", q.name, e.reply_text))?;
    }
    for b in &defs.bindings {
        let vhost = vhost_of(&b.vhost)?;
        let routing_key = short(&b.routing_key, "routing key")?;
        let arguments = json_to_table(&b.arguments);
        let bound = match b.destination_type.as_str() {
            "queue" => vhost
                .queue(&b.destination, 0)
                .and_then(|queue| vhost.bind_queue(&queue, &b.source, &routing_key, &arguments)),
            _ => vhost.bind_exchange(&b.destination, &b.source, &routing_key, &arguments),
        };
        bound.map_err(|e| {
            format!(
                "binding from '{}' to '{}': {}",
                b.source, b.destination, e.reply_text
            )
        })?;
    }
    Ok(())
}
