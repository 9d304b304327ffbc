//! Policies over HTTP (`/api/policies[/vhost[/name]]`) in RabbitMQ's management plugin's
//! shapes: users see the policies of the vhosts they may enter; policymakers and
//! administrators change them.

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use broker::policies::Policy;
use serde_json::{json, Value};

use super::access::created_or_updated;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::listing::{reply_list, ListQuery};
use super::message::Body;
use super::State;

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/api/policies", get(list_all))
        .route("/api/policies/{vhost}", get(list_vhost))
        .route(
            "/api/policies/{vhost}/{name}",
            get(show).put(put).delete(delete),
        )
}

fn policy_json(policy: &Policy) -> Value {
    json!({
        "vhost": policy.vhost,
        "name": policy.name,
        "pattern": policy.pattern,
        "apply-to": policy.apply_to.as_str(),
        "definition": policy.definition,
        "priority": policy.priority,
    })
}

fn may_change(caller: &Caller, state: &State, vhost: &str) -> ApiResult<()> {
    let policymaker = caller.is_admin() || caller.user.tags.iter().any(|t| t == "policymaker");
    if policymaker && caller.vhost(state, vhost).is_ok() {
        Ok(())
    } else {
        Err(ApiError::not_authorised(
            "User not authorised to access object",
        ))
    }
}

async fn list_all(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let policies = state
        .broker
        .policies
        .all(None)
        .iter()
        .filter(|policy| caller.vhost(&state, &policy.vhost).is_ok())
        .map(|policy| policy_json(policy))
        .collect();
    reply_list(policies, &query)
}

async fn list_vhost(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.vhost(&state, &vhost)?;
    let policies = state
        .broker
        .policies
        .all(Some(&vhost))
        .iter()
        .map(|policy| policy_json(policy))
        .collect();
    reply_list(policies, &query)
}

async fn show(
    Extract(state): Extract<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.vhost(&state, &vhost)?;
    let policy = state
        .broker
        .policies
        .get(&vhost, &name)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(policy_json(&policy)))
}

async fn put(
    Extract(state): Extract<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    may_change(&caller, &state, &vhost)?;
    let body = Body::parse(&body)?;
    body.require(&["pattern", "definition"])?;
    let pattern = body
        .get("pattern")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let apply_to = body
        .get("apply-to")
        .and_then(Value::as_str)
        .unwrap_or("all");
    let priority = body.get("priority").and_then(Value::as_i64).unwrap_or(0);
    let definition = body
        .get("definition")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let policy = Policy::new(&vhost, &name, pattern, apply_to, priority, definition)
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    Ok(created_or_updated(state.broker.put_policy(policy)))
}

async fn delete(
    Extract(state): Extract<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    may_change(&caller, &state, &vhost)?;
    if state.broker.delete_policy(&vhost, &name) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}
