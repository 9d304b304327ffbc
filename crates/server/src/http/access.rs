//! Users, vhosts and permissions over HTTP (`/api/users`, `/api/vhosts`, `/api/permissions`),
//! in RabbitMQ's management plugin's shapes: administrators change them, other management
//! users see the vhosts they have permissions in.

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use broker::permissions::Permission;
use broker::users::User;
use broker::vhost::VHost;
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::listing::{reply_list, reply_one, ListQuery};
use super::message::Body;
use super::{node_name, State};

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/api/users", get(list_users))
        .route(
            "/api/users/without-permissions",
            get(users_without_permissions),
        )
        .route("/api/users/bulk-delete", post(bulk_delete_users))
        .route(
            "/api/users/{name}",
            get(show_user).put(put_user).delete(delete_user),
        )
        .route("/api/users/{name}/permissions", get(user_permissions))
        .route("/api/vhosts", get(list_vhosts))
        .route(
            "/api/vhosts/{name}",
            get(show_vhost).put(put_vhost).delete(delete_vhost),
        )
        .route("/api/vhosts/{name}/permissions", get(vhost_permissions))
        .route("/api/permissions", get(list_permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(show_permission)
                .put(put_permission)
                .delete(delete_permission),
        )
}

/// 201 for something new, 204 for a change, as RabbitMQ answers a PUT.
pub(crate) fn created_or_updated(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
}

fn user_json(user: &User) -> Value {
    json!({
        "name": user.name,
        "password_hash": user.password_hash,
        "hashing_algorithm": broker::users::HASHING_ALGORITHM,
        "tags": user.tags,
        "limits": {},
    })
}

/// Tags as RabbitMQ takes them: a comma-separated string or a list.
fn parse_tags(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(text)) => text
            .split(',')
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(String::from)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

async fn list_users(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let users = state.broker.users.all().iter().map(user_json).collect();
    reply_list(users, &query)
}

async fn users_without_permissions(
    Extract(state): Extract<State>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let with: std::collections::HashSet<String> = state
        .broker
        .permissions
        .all()
        .into_iter()
        .map(|(_, user, _)| user)
        .collect();
    let users = state
        .broker
        .users
        .all()
        .iter()
        .filter(|user| !with.contains(&user.name))
        .map(user_json)
        .collect();
    Ok(Json(Value::Array(users)))
}

async fn show_user(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let user = state
        .broker
        .users
        .get(&name)
        .ok_or_else(ApiError::not_found)?;
    Ok(reply_one(user_json(&user), &query))
}

async fn put_user(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let body = Body::parse(&body)?;
    let tags = parse_tags(body.get("tags"));
    let existing = state.broker.users.get(&name);
    let mut user = match (body.get("password"), body.get("password_hash")) {
        (Some(Value::String(password)), _) => User::with_password(&name, password, tags),
        (Some(_), _) => return Err(ApiError::bad_request("password must be a string")),
        (None, Some(Value::String(hash))) => User {
            name: name.clone(),
            password_hash: hash.clone(),
            tags,
            loopback_only: false,
        },
        (None, Some(_)) => return Err(ApiError::bad_request("password_hash must be a string")),
        // Without a password an existing user keeps theirs; a new one gets none (it may
        // then log in only by other means, as in RabbitMQ).
        (None, None) => User {
            name: name.clone(),
            password_hash: existing
                .as_ref()
                .map(|user| user.password_hash.clone())
                .unwrap_or_default(),
            tags,
            loopback_only: false,
        },
    };
    user.loopback_only = existing
        .as_ref()
        .map_or(name == "guest", |user| user.loopback_only);
    state.broker.put_user(user);
    Ok(created_or_updated(existing.is_none()))
}

async fn delete_user(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if state.broker.delete_user(&name) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}

async fn bulk_delete_users(
    Extract(state): Extract<State>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let body = Body::parse(&body)?;
    let Some(Value::Array(names)) = body.get("users") else {
        return Err(ApiError::keys_missing(&["users"]));
    };
    for name in names.iter().filter_map(Value::as_str) {
        state.broker.delete_user(name);
    }
    Ok(StatusCode::NO_CONTENT)
}

fn permission_json(vhost: &str, user: &str, permission: &Permission) -> Value {
    json!({
        "user": user,
        "vhost": vhost,
        "configure": permission.configure,
        "write": permission.write,
        "read": permission.read,
    })
}

fn permissions_where(state: &State, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    state
        .broker
        .permissions
        .all()
        .iter()
        .filter(|(vhost, user, _)| keep(vhost, user))
        .map(|(vhost, user, permission)| permission_json(vhost, user, permission))
        .collect()
}

async fn user_permissions(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    state
        .broker
        .users
        .get(&name)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(permissions_where(&state, |_, user| {
        user == name
    }))))
}

async fn vhost_permissions(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    state.broker.vhost(&name).ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(permissions_where(&state, |vhost, _| {
        vhost == name
    }))))
}

async fn list_permissions(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    reply_list(permissions_where(&state, |_, _| true), &query)
}

async fn show_permission(
    Extract(state): Extract<State>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let permission = state
        .broker
        .permissions
        .get(&vhost, &user)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(permission_json(&vhost, &user, &permission)))
}

async fn put_permission(
    Extract(state): Extract<State>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let body = Body::parse(&body)?;
    body.require(&["configure", "write", "read"])?;
    let pattern = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or_default();
    if state.broker.vhost(&vhost).is_none() || state.broker.users.get(&user).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    let permission = Permission::new(pattern("configure"), pattern("write"), pattern("read"))
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    let created = state.broker.permissions.get(&vhost, &user).is_none();
    state.broker.set_permissions(&vhost, &user, permission);
    Ok(created_or_updated(created))
}

async fn delete_permission(
    Extract(state): Extract<State>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if state.broker.clear_permissions(&vhost, &user) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}

/// A vhost as RabbitMQ lists it, with the message counts of its queues summed.
async fn vhost_json(vhost: &VHost) -> Value {
    let name = vhost.name();
    let description = if name == "/" {
        "Default virtual host"
    } else {
        ""
    };
    let (mut ready, mut unacked) = (0u64, 0u64);
    for queue in vhost.queues() {
        if let Ok(stats) = queue.stats().await {
            ready += u64::from(stats.message_count);
            unacked += u64::from(stats.unacked_count);
        }
    }
    json!({
        "name": name,
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "description": description,
        "tags": [],
        "default_queue_type": "undefined",
        "metadata": {"description": description, "tags": []},
        "tracing": false,
        "cluster_state": {node_name(): "running"},
    })
}

async fn list_vhosts(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let mut vhosts = Vec::new();
    for vhost in caller.visible_vhosts(&state) {
        vhosts.push(vhost_json(&vhost).await);
    }
    reply_list(vhosts, &query)
}

async fn show_vhost(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    // RabbitMQ shows a single vhost to administrators only, and asks before looking it up:
    // anyone else gets 401, even for a vhost they have permissions in or one that is not there.
    caller.require_admin()?;
    let vhost = caller.vhost(&state, &name)?;
    Ok(reply_one(vhost_json(&vhost).await, &query))
}

async fn put_vhost(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let created = state.broker.declare_vhost(&name);
    if created {
        // RabbitMQ gives the user who creates a vhost full permissions in it.
        state
            .broker
            .set_permissions(&name, caller.name(), Permission::full());
    }
    Ok(created_or_updated(created))
}

async fn delete_vhost(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if state.broker.delete_vhost(&name).await {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}
