//! add_vhost and delete_vhost.

use serde_json::{json, Value};

use crate::client::api_path;
use crate::error::CtlError;

use super::Context;

pub fn add_vhost(
    ctx: &Context,
    vhost: &str,
    description: Option<&str>,
    tags: Option<&str>,
    default_queue_type: Option<&str>,
) -> Result<(), CtlError> {
    ctx.out.info(&format!("Adding vhost \"{vhost}\" ..."))?;
    let mut body = json!({});
    for (key, value) in [
        ("description", description),
        ("tags", tags),
        ("default_queue_type", default_queue_type),
    ] {
        if let Some(value) = value {
            body[key] = Value::from(value);
        }
    }
    ctx.api.put(&api_path(&["vhosts", vhost]), &body)?;
    ctx.done()
}

pub fn delete_vhost(ctx: &Context, vhost: &str) -> Result<(), CtlError> {
    ctx.out.info(&format!("Deleting vhost \"{vhost}\" ..."))?;
    match ctx.api.delete(&api_path(&["vhosts", vhost]), &[]) {
        Err(e) if e.status() == Some(404) => Err(CtlError::vhost_not_found(vhost)),
        other => other.map_err(CtlError::from),
    }?;
    ctx.done()
}
