//! set_policy and clear_policy.

use serde_json::{json, Value};

use crate::client::api_path;
use crate::error::CtlError;

use super::Context;

pub fn set_policy(
    ctx: &Context,
    name: &str,
    pattern: &str,
    definition: &str,
    priority: i64,
    apply_to: &str,
) -> Result<(), CtlError> {
    let vhost = &ctx.vhost;
    ctx.out.info(&format!(
        "Setting policy \"{name}\" for pattern \"{pattern}\" to \"{definition}\" \
         with priority \"{priority}\" for vhost \"{vhost}\" ..."
    ))?;
    let definition: Value = serde_json::from_str(definition)
        .map_err(|e| CtlError::unavailable(format!("JSON decoding error. Reason: {e}")))?;
    let body = json!({
        "pattern": pattern,
        "definition": definition,
        "priority": priority,
        "apply-to": apply_to,
    });
    match ctx.api.put(&api_path(&["policies", vhost, name]), &body) {
        Err(e) if e.status() == Some(404) => Err(CtlError::vhost_not_found(vhost)),
        // "Validation failed ... are not recognised policy settings" and the like.
        Err(e) if e.status() == Some(400) => Err(CtlError::unavailable(e.reason())),
        other => other.map_err(CtlError::from),
    }?;
    ctx.done()
}

pub fn clear_policy(ctx: &Context, name: &str) -> Result<(), CtlError> {
    let vhost = &ctx.vhost;
    ctx.out.info(&format!(
        "Clearing policy \"{name}\" on vhost \"{vhost}\" ..."
    ))?;
    match ctx.api.delete(&api_path(&["policies", vhost, name]), &[]) {
        Err(e) if e.status() == Some(404) => Err(CtlError::unavailable("Parameter does not exist")),
        other => other.map_err(CtlError::from),
    }?;
    ctx.done()
}
