//! How one cell of a listing is written: rabbitmqctl's Erlang-flavoured text for the table
//! formatter, its typed JSON for the json formatter. Knows nothing of HTTP or columns.

use serde_json::{Map, Number, Value};

/// What a column holds, which decides how rabbitmqctl writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Strings, numbers, booleans as they are; missing is empty text, `null` in JSON.
    Plain,
    /// A string that rabbitmqctl writes as empty when unset (policy, consumer tag...).
    Text,
    /// An AMQP field table (queue/binding arguments, client properties).
    FieldTable,
    /// A list of atoms such as user tags: `[a, b]`; the API may give "a,b".
    AtomList,
    /// An IP address: text as given, JSON as a list of numbers (an Erlang tuple).
    IpAddress,
    /// "AMQP 0-9-1": `{0,9,1}` in text, `[0,9,1]` in JSON.
    Protocol,
    /// A JSON document shown as its compact text (a policy definition).
    JsonText,
    /// A map of node name to state (vhost cluster_state): `[{node, state}]`.
    NodeStates,
}

/// The table formatter's text for one cell.
pub fn to_text(value: &Value, kind: Kind) -> String {
    match kind {
        Kind::Plain | Kind::Text | Kind::IpAddress => plain_text(value),
        Kind::FieldTable => match value {
            Value::Object(fields) => table_text(fields),
            Value::Array(items) if items.is_empty() => "[]".to_string(),
            Value::Null => "[]".to_string(),
            other => plain_text(other),
        },
        Kind::AtomList => format!("[{}]", atoms(value).join(", ")),
        Kind::Protocol => match protocol_version(value) {
            Some(parts) => format!(
                "{{{}}}",
                parts
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => plain_text(value),
        },
        Kind::JsonText => match value {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        Kind::NodeStates => match value {
            Value::Object(states) => {
                let pairs: Vec<String> = states
                    .iter()
                    .map(|(node, state)| format!("{{{node}, {}}}", plain_text(state)))
                    .collect();
                format!("[{}]", pairs.join(", "))
            }
            other => plain_text(other),
        },
    }
}

/// The json formatter's value for one cell.
pub fn to_json(value: &Value, kind: Kind) -> Value {
    match kind {
        Kind::Plain => value.clone(),
        Kind::Text => match value {
            Value::Null => Value::String(String::new()),
            other => other.clone(),
        },
        Kind::FieldTable => match value {
            Value::Object(fields) => typed_table(fields),
            Value::Null => Value::Array(Vec::new()),
            other => other.clone(),
        },
        Kind::AtomList => Value::Array(atoms(value).into_iter().map(Value::String).collect()),
        Kind::IpAddress => match value
            .as_str()
            .and_then(|s| s.parse::<std::net::IpAddr>().ok())
        {
            Some(std::net::IpAddr::V4(ip)) => ip.octets().iter().map(|&o| Value::from(o)).collect(),
            Some(std::net::IpAddr::V6(ip)) => {
                ip.segments().iter().map(|&s| Value::from(s)).collect()
            }
            None => value.clone(),
        },
        Kind::Protocol => match protocol_version(value) {
            Some(parts) => parts.into_iter().map(Value::from).collect(),
            None => value.clone(),
        },
        Kind::JsonText => Value::String(to_text(value, Kind::JsonText)),
        Kind::NodeStates => value.clone(),
    }
}

fn plain_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(_) | Value::Object(_) => nested_text(value),
    }
}

/// `[{"key",value},...]`: an Erlang proplist, strings quoted.
fn table_text(fields: &Map<String, Value>) -> String {
    let entries: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{{\"{key}\",{}}}", nested_text(value)))
        .collect();
    format!("[{}]", entries.join(","))
}

fn nested_text(value: &Value) -> String {
    match value {
        Value::Null => "undefined".to_string(),
        Value::String(s) => format!("\"{s}\""),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(nested_text).collect();
            format!("[{}]", parts.join(","))
        }
        Value::Object(fields) => table_text(fields),
    }
}

/// `[["key","type",value],...]`, the AMQP field types guessed back from JSON the way a
/// client library would encode them (pika sends an int that fits 32 bits as a signedint).
fn typed_table(fields: &Map<String, Value>) -> Value {
    fields
        .iter()
        .map(|(key, value)| {
            let (type_name, typed) = typed_field(value);
            Value::Array(vec![
                Value::String(key.clone()),
                Value::String(type_name.into()),
                typed,
            ])
        })
        .collect()
}

fn typed_field(value: &Value) -> (&'static str, Value) {
    match value {
        Value::Null => ("void", Value::Null),
        Value::Bool(b) => ("bool", Value::Bool(*b)),
        Value::String(s) => ("longstr", Value::String(s.clone())),
        Value::Number(n) => (number_type(n), Value::Number(n.clone())),
        Value::Object(fields) => ("table", typed_table(fields)),
        Value::Array(items) => (
            "array",
            items
                .iter()
                .map(|item| {
                    let (type_name, typed) = typed_field(item);
                    Value::Array(vec![Value::String(type_name.into()), typed])
                })
                .collect(),
        ),
    }
}

fn number_type(n: &Number) -> &'static str {
    match n.as_i64() {
        Some(i) if i32::try_from(i).is_ok() => "signedint",
        Some(_) => "long",
        None if n.is_u64() => "long",
        None => "double",
    }
}

/// Tags come as a JSON list (RabbitMQ 3.9+) or a comma-separated string (older versions).
fn atoms(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().map(plain_text).collect(),
        Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// "AMQP 0-9-1" -> [0, 9, 1].
fn protocol_version(value: &Value) -> Option<Vec<u64>> {
    let text = value.as_str()?;
    let version = text.rsplit(' ').next()?;
    version.split('-').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_tables_read_like_rabbitmqctl() {
        let args = json!({"a": [1, "s", true], "b": true, "neg": -3, "t": {"in": "x", "n": 1}});
        assert_eq!(
            to_text(&args, Kind::FieldTable),
            r#"[{"a",[1,"s",true]},{"b",true},{"neg",-3},{"t",[{"in","x"},{"n",1}]}]"#
        );
        assert_eq!(to_text(&json!({}), Kind::FieldTable), "[]");
        assert_eq!(
            to_json(
                &json!({"x-message-ttl": 60000, "big": 1_099_511_627_776_i64, "k": "v"}),
                Kind::FieldTable
            ),
            json!([
                ["big", "long", 1_099_511_627_776_i64],
                ["k", "longstr", "v"],
                ["x-message-ttl", "signedint", 60000]
            ])
        );
        assert_eq!(
            to_json(&json!({"t": {"b": false}}), Kind::FieldTable),
            json!([["t", "table", [["b", "bool", false]]]])
        );
    }

    #[test]
    fn tags_hosts_protocols_and_states() {
        assert_eq!(
            to_text(&json!(["monitoring", "management"]), Kind::AtomList),
            "[monitoring, management]"
        );
        assert_eq!(to_text(&json!("a,b"), Kind::AtomList), "[a, b]");
        assert_eq!(to_text(&json!([]), Kind::AtomList), "[]");
        assert_eq!(
            to_json(&json!("127.0.0.1"), Kind::IpAddress),
            json!([127, 0, 0, 1])
        );
        assert_eq!(to_text(&json!("AMQP 0-9-1"), Kind::Protocol), "{0,9,1}");
        assert_eq!(
            to_json(&json!("AMQP 0-9-1"), Kind::Protocol),
            json!([0, 9, 1])
        );
        assert_eq!(
            to_text(&json!({"rabbit@h": "running"}), Kind::NodeStates),
            "[{rabbit@h, running}]"
        );
        assert_eq!(
            to_json(&json!({"max-length": 10}), Kind::JsonText),
            json!("{\"max-length\":10}")
        );
        assert_eq!(to_json(&Value::Null, Kind::Text), json!(""));
        assert_eq!(to_text(&Value::Null, Kind::Plain), "");
    }
}
