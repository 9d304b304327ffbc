//! Messages and request bodies in the management API's JSON: message properties under
//! RabbitMQ's names, payloads as strings or base64, and the lenient fields RabbitMQ accepts
//! (`"true"` for true, `"5"` for 5, as rabbitmqadmin sends them).

use amqp::{BasicProperties, ShortStr};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use broker::durability::{json_to_table, table_to_json};
use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};

/// A message's properties as RabbitMQ's management API shows them; absent ones left out.
pub(crate) fn properties_to_json(properties: &Bytes) -> Value {
    let Ok(p) = BasicProperties::decode(properties) else {
        return Value::Object(Map::new());
    };
    let mut out = Map::new();
    let mut text = |key: &str, value: &Option<ShortStr>| {
        if let Some(value) = value {
            out.insert(key.to_string(), Value::String(value.to_string()));
        }
    };
    text("content_type", &p.content_type);
    text("content_encoding", &p.content_encoding);
    text("correlation_id", &p.correlation_id);
    text("reply_to", &p.reply_to);
    text("expiration", &p.expiration);
    text("message_id", &p.message_id);
    text("type", &p.kind);
    text("user_id", &p.user_id);
    text("app_id", &p.app_id);
    text("cluster_id", &p.cluster_id);
    if let Some(headers) = &p.headers {
        out.insert("headers".into(), table_to_json(headers));
    }
    if let Some(mode) = p.delivery_mode {
        out.insert("delivery_mode".into(), json!(mode));
    }
    if let Some(priority) = p.priority {
        out.insert("priority".into(), json!(priority));
    }
    if let Some(timestamp) = p.timestamp {
        out.insert("timestamp".into(), json!(timestamp));
    }
    Value::Object(out)
}

/// Properties from a publish request, encoded as a content header carries them.
pub(crate) fn properties_from_json(value: Option<&Value>) -> ApiResult<Bytes> {
    let mut p = BasicProperties::default();
    let empty = Map::new();
    let map = match value {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ApiError::bad_request("properties must be an object")),
    };
    for (key, value) in map {
        let text = || -> ApiResult<Option<ShortStr>> {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => return Ok(None),
                other => other.to_string(),
            };
            ShortStr::new(text.as_str())
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("property {key} is too long")))
        };
        let number = |max: u64| -> ApiResult<Option<u64>> {
            match value {
                Value::Null => Ok(None),
                other => lenient_u64(other)
                    .filter(|n| *n <= max)
                    .map(Some)
                    .ok_or_else(|| ApiError::bad_request(format!("invalid property {key}"))),
            }
        };
        match key.as_str() {
            "content_type" => p.content_type = text()?,
            "content_encoding" => p.content_encoding = text()?,
            "correlation_id" => p.correlation_id = text()?,
            "reply_to" => p.reply_to = text()?,
            "expiration" => p.expiration = text()?,
            "message_id" => p.message_id = text()?,
            "type" => p.kind = text()?,
            "user_id" => p.user_id = text()?,
            "app_id" => p.app_id = text()?,
            "cluster_id" => p.cluster_id = text()?,
            "headers" => p.headers = Some(json_to_table(value)),
            "delivery_mode" => p.delivery_mode = number(255)?.map(|n| n as u8),
            "priority" => p.priority = number(255)?.map(|n| n as u8),
            "timestamp" => p.timestamp = number(u64::MAX)?,
            other => {
                return Err(ApiError::bad_request(format!("unknown property {other}")));
            }
        }
    }
    let mut encoded = BytesMut::new();
    p.encode(&mut encoded);
    Ok(encoded.freeze())
}

/// How `/get` hands payloads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadEncoding {
    /// A string when the bytes are UTF-8, else base64.
    Auto,
    Base64,
}

/// The payload (cut to `truncate` bytes first) and the encoding it was given in.
pub(crate) fn payload_to_json(
    body: &[u8],
    encoding: PayloadEncoding,
    truncate: Option<usize>,
) -> (Value, &'static str) {
    let body = &body[..truncate.unwrap_or(body.len()).min(body.len())];
    if encoding == PayloadEncoding::Auto {
        if let Ok(text) = std::str::from_utf8(body) {
            return (Value::String(text.to_string()), "string");
        }
    }
    (Value::String(BASE64.encode(body)), "base64")
}

/// A publish request's payload: `payload_encoding` "string" or "base64".
pub(crate) fn payload_from_json(payload: &str, encoding: &str) -> ApiResult<Bytes> {
    match encoding {
        "string" => Ok(Bytes::copy_from_slice(payload.as_bytes())),
        "base64" => BASE64
            .decode(payload)
            .map(Bytes::from)
            .map_err(|_| ApiError::bad_request("payload is not valid base64")),
        other => Err(ApiError::bad_request(format!(
            "invalid payload_encoding {other}"
        ))),
    }
}

/// A request body's fields, read leniently as RabbitMQ does.
pub(crate) struct Body(Map<String, Value>);

impl Body {
    /// An absent or empty body is an empty object; anything but a JSON object is refused with
    /// RabbitMQ's reason.
    pub fn parse(bytes: &[u8]) -> ApiResult<Body> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(Map::new()));
        }
        match serde_json::from_slice(bytes) {
            Ok(Value::Object(map)) => Ok(Body(map)),
            Ok(_) => Err(ApiError::bad_request("not_json")),
            Err(_) => Err(ApiError::bad_request("not_json")),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// Fails with `{key_missing,…}` naming every absent one.
    pub fn require(&self, keys: &[&str]) -> ApiResult<()> {
        let missing: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| self.get(k).is_none())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ApiError::keys_missing(&missing))
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> ApiResult<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s == "true" => Ok(true),
            Some(Value::String(s)) if s == "false" => Ok(false),
            Some(other) => {
                let shown = match other {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                Err(ApiError::bad_request(json!(["not_boolean", shown])))
            }
        }
    }

    pub fn u64_field(&self, key: &str) -> ApiResult<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => lenient_u64(value)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(json!(["not_integer", value.to_string()]))),
        }
    }

    pub fn text(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// A field table from an `arguments` object (absent: empty).
    pub fn arguments(&self) -> ApiResult<amqp::FieldTable> {
        match self.get("arguments") {
            None => Ok(amqp::FieldTable::new()),
            Some(value @ Value::Object(_)) => Ok(json_to_table(value)),
            Some(_) => Err(ApiError::bad_request("arguments must be an object")),
        }
    }
}

fn lenient_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_through_json() {
        let json = json!({
            "content_type": "text/plain",
            "delivery_mode": 2,
            "headers": {"h": 1, "s": "x"},
            "type": "greeting",
            "timestamp": "1700000000",
        });
        let encoded = properties_from_json(Some(&json)).unwrap();
        let back = properties_to_json(&encoded);
        assert_eq!(back["content_type"], "text/plain");
        assert_eq!(back["delivery_mode"], 2);
        assert_eq!(back["headers"], json!({"h": 1, "s": "x"}));
        assert_eq!(back["type"], "greeting");
        assert_eq!(back["timestamp"], 1_700_000_000u64);
        assert!(properties_from_json(Some(&json!({"bogus": 1}))).is_err());
    }

    #[test]
    fn payloads_are_strings_when_they_can_be() {
        assert_eq!(
            payload_to_json(b"hello", PayloadEncoding::Auto, Some(3)),
            (json!("hel"), "string")
        );
        assert_eq!(
            payload_to_json(&[0xff, 0], PayloadEncoding::Auto, None),
            (json!("/wA="), "base64")
        );
        assert_eq!(
            payload_to_json(b"hi", PayloadEncoding::Base64, None),
            (json!("aGk="), "base64")
        );
        assert_eq!(&payload_from_json("aGk=", "base64").unwrap()[..], b"hi");
    }

    #[test]
    fn fields_are_read_leniently_and_missing_ones_named() {
        let body = Body::parse(br#"{"durable": "true", "count": "2", "x": false}"#).unwrap();
        assert!(body.bool_or("durable", false).unwrap());
        assert!(!body.bool_or("x", true).unwrap());
        assert_eq!(body.u64_field("count").unwrap(), Some(2));
        assert!(Body::parse(b"garbage").is_err());
        assert!(Body::parse(b"").unwrap().require(&[]).is_ok());
        let missing = Body::parse(b"{}")
            .unwrap()
            .require(&["ackmode", "encoding"]);
        assert!(missing.is_err());
    }
}
