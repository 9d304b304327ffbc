//! Users and their permissions: add_user, delete_user, change_password, set_user_tags,
//! set_permissions, clear_permissions, with rabbitmqctl's messages and exit codes.

use serde_json::{json, Value};

use crate::client::{api_path, ApiError};
use crate::error::CtlError;
use crate::output::json_object;

use super::Context;

fn user_path(username: &str) -> String {
    api_path(&["users", username])
}

fn user_does_not_exist(username: &str) -> CtlError {
    CtlError::no_user(format!("User \"{username}\" does not exist"))
}

/// The user's record, or rabbitmqctl's "does not exist" failure.
fn existing_user(ctx: &Context, username: &str) -> Result<Value, CtlError> {
    ctx.api
        .get_optional(&user_path(username))?
        .ok_or_else(|| user_does_not_exist(username))
}

/// Tags as the API takes them on PUT: one comma-separated string (accepted by every
/// RabbitMQ version; 3.9+ answer GET with a list).
fn tags_text(user: &Value) -> String {
    match user.get("tags") {
        Some(Value::Array(tags)) => tags
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::String(tags)) => tags.clone(),
        _ => String::new(),
    }
}

pub fn add_user(ctx: &Context, username: &str, password: &str) -> Result<(), CtlError> {
    ctx.out.info(&format!("Adding user \"{username}\" ..."))?;
    // PUT would silently update an existing user; rabbitmqctl refuses.
    if ctx.api.get_optional(&user_path(username))?.is_some() {
        return Err(CtlError::software(format!(
            "User \"{username}\" already exists"
        )));
    }
    ctx.api.put(
        &user_path(username),
        &json!({"password": password, "tags": ""}),
    )?;
    const HINT: &str = "Done. Don't forget to grant the user permissions to some virtual hosts! \
                        See 'warrenctl help set_permissions' to learn more.";
    if ctx.out.is_json() {
        // rabbitmqctl's add_user answers in its own shape, the hint included.
        let node = ctx.node_name()?;
        return ctx.out.emit(&format!(
            "{}\n",
            json_object(&[
                ("message", Value::from(HINT)),
                ("node", Value::from(node)),
                ("status", Value::from("ok")),
            ])
        ));
    }
    ctx.out.info(HINT)
}

pub fn delete_user(ctx: &Context, username: &str) -> Result<(), CtlError> {
    ctx.out.info(&format!("Deleting user \"{username}\" ..."))?;
    match ctx.api.delete(&user_path(username), &[]) {
        Err(e) if e.status() == Some(404) => Err(user_does_not_exist(username)),
        other => other.map_err(CtlError::from),
    }?;
    ctx.done()
}

pub fn change_password(ctx: &Context, username: &str, password: &str) -> Result<(), CtlError> {
    ctx.out
        .info(&format!("Changing password for user \"{username}\" ..."))?;
    // PUT replaces the whole user, so the tags must be sent back.
    let user = existing_user(ctx, username)?;
    ctx.api.put(
        &user_path(username),
        &json!({"password": password, "tags": tags_text(&user)}),
    )?;
    ctx.done()
}

pub fn set_user_tags(ctx: &Context, username: &str, tags: &[String]) -> Result<(), CtlError> {
    ctx.out.info(&format!(
        "Setting tags for user \"{username}\" to [{}] ...",
        tags.join(", ")
    ))?;
    // A PUT without a password clears it, so the stored hash goes back unchanged.
    let user = existing_user(ctx, username)?;
    let mut body = json!({"tags": tags.join(",")});
    for key in ["password_hash", "hashing_algorithm"] {
        if let Some(value) = user.get(key) {
            body[key] = value.clone();
        }
    }
    ctx.api.put(&user_path(username), &body)?;
    ctx.done()
}

pub fn set_permissions(
    ctx: &Context,
    username: &str,
    configure: &str,
    write: &str,
    read: &str,
) -> Result<(), CtlError> {
    let vhost = &ctx.vhost;
    ctx.out.info(&format!(
        "Setting permissions for user \"{username}\" in vhost \"{vhost}\" ..."
    ))?;
    let result = ctx.api.put(
        &api_path(&["permissions", vhost, username]),
        &json!({"configure": configure, "write": write, "read": read}),
    );
    match result {
        // The API answers "vhost_or_user_not_found"; rabbitmqctl says which.
        Err(e) if matches!(e.status(), Some(400 | 404)) => Err(which_is_missing(ctx, username, e)),
        other => other.map_err(CtlError::from),
    }?;
    ctx.done()
}

fn which_is_missing(ctx: &Context, username: &str, original: ApiError) -> CtlError {
    let vhost = &ctx.vhost;
    match ctx.api.get_optional(&api_path(&["vhosts", vhost])) {
        Ok(None) => return CtlError::unavailable(format!("Virtual host {vhost} does not exist")),
        Err(e) => return e.into(),
        Ok(Some(_)) => {}
    }
    match ctx.api.get_optional(&user_path(username)) {
        Ok(None) => CtlError::no_user(format!("User {username} does not exist")),
        Err(e) => e.into(),
        Ok(Some(_)) => original.into(),
    }
}

pub fn clear_permissions(ctx: &Context, username: &str) -> Result<(), CtlError> {
    let vhost = &ctx.vhost;
    ctx.out.info(&format!(
        "Clearing permissions for user \"{username}\" in vhost \"{vhost}\" ..."
    ))?;
    match ctx
        .api
        .delete(&api_path(&["permissions", vhost, username]), &[])
    {
        // Clearing permissions a user does not have succeeds, as in rabbitmqctl.
        Err(e) if e.status() == Some(404) => {
            if ctx.api.get_optional(&user_path(username))?.is_none() {
                return Err(CtlError::no_user(format!("User {username} does not exist")));
            }
        }
        other => other?,
    }
    ctx.done()
}
