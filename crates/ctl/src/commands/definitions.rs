//! export_definitions and import_definitions: RabbitMQ's definitions JSON, moved between a
//! file (or stdin/stdout) and GET/POST /api/definitions.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use crate::client::{api_path, json_kind};
use crate::error::{CtlError, EX_DATAERR};

use super::Context;

const STDIO: &str = "-";

pub fn export(ctx: &Context, path: &str) -> Result<(), CtlError> {
    if path != STDIO {
        ctx.out.info(&format!(
            "Exporting definitions in JSON to a file at \"{path}\" ..."
        ))?;
    }
    let definitions = ctx.api.get(&api_path(&["definitions"]))?;
    // Compact with sorted keys and no final newline: the bytes rabbitmqctl writes.
    let text = definitions.to_string();
    if path == STDIO {
        return ctx.out.emit(&text);
    }
    std::fs::write(path, text).map_err(|e| CtlError::io_err(format!("cannot write {path}: {e}")))
}

pub fn import(ctx: &Context, path: &str) -> Result<(), CtlError> {
    let text = if path == STDIO {
        ctx.out
            .info("Importing definitions in JSON from standard input ...")?;
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CtlError::io_err(format!("cannot read standard input: {e}")))?;
        text
    } else {
        if !Path::new(path).exists() {
            return Err(CtlError::bare(
                EX_DATAERR,
                format!("Error (argument validation): Bad argument: File {path} does not exist"),
            ));
        }
        ctx.out.info(&format!(
            "Importing definitions in JSON from a file at \"{path}\" ..."
        ))?;
        std::fs::read_to_string(path)
            .map_err(|e| CtlError::io_err(format!("cannot read {path}: {e}")))?
    };
    // Checked here so that a broken file fails with a clear reason before any request.
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(_)) => {}
        Ok(other) => {
            return Err(CtlError::data_err(format!(
                "Failed to deserialise input (format: JSON) (error: expected an object, got {})",
                json_kind(&other)
            )))
        }
        Err(e) => {
            return Err(CtlError::data_err(format!(
                "Failed to deserialise input (format: JSON) (error: {e})"
            )))
        }
    }
    match ctx.api.post_text(&api_path(&["definitions"]), &text) {
        Err(e) if e.status() == Some(400) => Err(CtlError::data_err(e.reason())),
        other => other.map_err(CtlError::from),
    }?;
    ctx.out.info(
        "Successfully started definition import. This process is asynchronous and can take some time.",
    )?;
    ctx.done()
}
