//! close_connection.

use crate::client::api_path;
use crate::error::CtlError;

use super::Context;

pub fn close_connection(ctx: &Context, name: &str, explanation: &str) -> Result<(), CtlError> {
    ctx.out.info(&format!(
        "Closing connection {name}, reason: {explanation}..."
    ))?;
    // The management API takes the reason the client is told in this header.
    match ctx.api.delete(
        &api_path(&["connections", name]),
        &[("X-Reason", explanation)],
    ) {
        Err(e) if e.status() == Some(404) => Err(CtlError::unavailable(format!(
            "Connection '{name}' does not exist"
        ))),
        other => other.map_err(CtlError::from),
    }?;
    ctx.done()
}
