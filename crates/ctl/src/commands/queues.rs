//! purge_queue and delete_queue.

use serde_json::Value;

use crate::client::api_path;
use crate::error::CtlError;
use crate::output::json_object;

use super::Context;

pub fn purge_queue(ctx: &Context, queue: &str) -> Result<(), CtlError> {
    let vhost = &ctx.vhost;
    ctx.out
        .info(&format!("Purging queue '{queue}' in vhost '{vhost}' ..."))?;
    match ctx
        .api
        .delete(&api_path(&["queues", vhost, queue, "contents"]), &[])
    {
        // rabbitmqctl's own (terse) words for a missing queue.
        Err(e) if e.status() == Some(404) => Err(CtlError::unavailable("not_found")),
        other => other.map_err(CtlError::from),
    }?;
    ctx.done()
}

pub fn delete_queue(
    ctx: &Context,
    queue: &str,
    if_empty: bool,
    if_unused: bool,
) -> Result<(), CtlError> {
    let vhost = &ctx.vhost;
    let conditions: Vec<&str> = [
        (if_empty, "if queue is empty "),
        (if_unused, "if queue is unused "),
    ]
    .into_iter()
    .filter_map(|(on, text)| on.then_some(text))
    .collect();
    ctx.out.info(&format!(
        "Deleting queue '{queue}' on vhost '{vhost}' {}...",
        conditions.join("and ")
    ))?;

    let path = api_path(&["queues", vhost, queue]);
    // The DELETE answers no count; rabbitmqctl reports how many ready messages went.
    let Some(before) = ctx.api.get_optional(&path)? else {
        return Err(CtlError::usage("Queue not found"));
    };
    let ready = before
        .get("messages_ready")
        .and_then(Value::as_u64)
        .unwrap_or(0);

    let mut query = Vec::new();
    if if_empty {
        query.push("if-empty=true");
    }
    if if_unused {
        query.push("if-unused=true");
    }
    let target = if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    };
    match ctx.api.delete(&target, &[]) {
        Err(e) if e.status() == Some(404) => Err(CtlError::usage("Queue not found")),
        Err(e) if e.status() == Some(400) => {
            let reason = e.reason();
            Err(CtlError::usage(if reason.contains("not empty") {
                "Queue is not empty"
            } else if reason.contains("in use") {
                "Queue is in use"
            } else {
                reason
            }))
        }
        other => other.map_err(CtlError::from),
    }?;

    let message = format!("Queue was successfully deleted with {ready} ready messages");
    if ctx.out.is_json() {
        ctx.out.emit(&format!(
            "{}\n",
            json_object(&[("message", Value::from(message))])
        ))
    } else {
        // Printed even with -q: it is the command's result, not an informational line.
        ctx.out.emit(&format!("{message}\n"))
    }
}
