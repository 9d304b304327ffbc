//! `definitions.json`: vhosts, users, permissions, parameters, policies and durable
//! exchanges, queues and bindings, in RabbitMQ's definitions format (what
//! `rabbitmqctl export_definitions` writes), replaced atomically. Knows nothing of what the
//! broker does with them; keys it does not know are kept as they were read.

use crate::error::StoreError;
use crate::storage::{create_dir_all_durably, Storage};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};

pub const DEFINITIONS_FILE: &str = "definitions.json";
const DEFINITIONS_TMP: &str = "definitions.json.tmp";

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn default_hashing_algorithm() -> String {
    "rabbit_password_hashing_sha256".to_owned()
}

fn default_apply_to() -> String {
    "all".to_owned()
}

/// RabbitMQ 3.x writes tags as a list; older exports as one comma-separated string.
fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tags {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Tags::deserialize(d)? {
        Tags::List(v) => v,
        Tags::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// The whole file. Unknown top-level keys are kept in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbit_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq_version: Option<String>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub vhosts: Vec<VHost>,
    #[serde(default)]
    pub permissions: Vec<Permission>,
    #[serde(default)]
    pub topic_permissions: Vec<TopicPermission>,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    #[serde(default)]
    pub global_parameters: Vec<GlobalParameter>,
    #[serde(default)]
    pub policies: Vec<Policy>,
    #[serde(default)]
    pub queues: Vec<QueueDef>,
    #[serde(default)]
    pub exchanges: Vec<ExchangeDef>,
    #[serde(default)]
    pub bindings: Vec<BindingDef>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub password_hash: String,
    #[serde(default = "default_hashing_algorithm")]
    pub hashing_algorithm: String,
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
    #[serde(default = "empty_object")]
    pub limits: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VHost {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPermission {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// A vhost-scoped runtime parameter (`component` says whose: shovel, federation, vhost-limits…).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    pub vhost: String,
    pub component: String,
    pub name: String,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GlobalParameter {
    pub name: String,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    #[serde(rename = "apply-to", default = "default_apply_to")]
    pub apply_to: String,
    pub definition: Value,
    #[serde(default)]
    pub priority: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    pub name: String,
    pub vhost: String,
    pub durable: bool,
    pub auto_delete: bool,
    #[serde(default = "empty_object")]
    pub arguments: Value,
    /// "classic", "quorum", "stream"; RabbitMQ 3.10 writes it, older versions do not.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub queue_type: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDef {
    pub name: String,
    pub vhost: String,
    #[serde(rename = "type")]
    pub exchange_type: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// RabbitMQ's export leaves it out (and internal exchanges with it); its import reads it.
    #[serde(default)]
    pub internal: bool,
    #[serde(default = "empty_object")]
    pub arguments: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BindingDef {
    pub source: String,
    pub vhost: String,
    pub destination: String,
    /// "queue" or "exchange".
    pub destination_type: String,
    pub routing_key: String,
    #[serde(default = "empty_object")]
    pub arguments: Value,
}

/// Replaces `<data_dir>/definitions.json` so that a crash leaves either the old file or the
/// new one: write a temporary file, fsync it, rename it over, fsync the directory. Blocking.
pub fn write_definitions_atomically(
    storage: &dyn Storage,
    data_dir: &Path,
    defs: &Definitions,
) -> Result<(), StoreError> {
    let json = serde_json::to_vec_pretty(defs).map_err(|e| StoreError::Io(io::Error::other(e)))?;
    create_dir_all_durably(storage, data_dir)?;
    let tmp = data_dir.join(DEFINITIONS_TMP);
    let file = storage.create(&tmp)?;
    file.append(&[IoSlice::new(&json), IoSlice::new(b"\n")])?;
    file.sync()?;
    drop(file);
    storage.rename(&tmp, &data_dir.join(DEFINITIONS_FILE))?;
    storage.sync_dir(data_dir)?;
    Ok(())
}

/// Reads `<data_dir>/definitions.json`; `None` if there is none (a fresh data directory).
/// A file that is not valid JSON of this shape is `Corrupted` at the offending byte.
pub fn read_definitions(
    storage: &dyn Storage,
    data_dir: &Path,
) -> Result<Option<Definitions>, StoreError> {
    let path = data_dir.join(DEFINITIONS_FILE);
    let file = match storage.open_read(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = usize::try_from(file.len()?).map_err(|_| corrupted(&path, 0))?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        let offset = byte_offset(&bytes, e.line(), e.column());
        tracing::error!(file = %path.display(), offset, error = %e, "definitions file unreadable");
        corrupted(&path, offset)
    })
}

fn corrupted(path: &Path, offset: u64) -> StoreError {
    StoreError::Corrupted {
        file: PathBuf::from(path),
        offset,
    }
}

/// serde_json reports 1-based line and column; the byte offset is what `Corrupted` carries.
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> u64 {
    let mut offset = 0usize;
    for (i, l) in bytes.split(|b| *b == b'\n').enumerate() {
        if i + 1 == line {
            return (offset + column.saturating_sub(1)) as u64;
        }
        offset += l.len() + 1;
    }
    bytes.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    /// The shape of `rabbitmqctl export_definitions` from RabbitMQ 3.10.8 (values made up).
    const RABBIT_EXPORT: &str = r##"{
 "bindings": [
  {"arguments": {}, "destination": "ex2", "destination_type": "exchange", "routing_key": "#", "source": "ex1", "vhost": "/"},
  {"arguments": {"k": 1, "x-match": "all"}, "destination": "q1", "destination_type": "queue", "routing_key": "a.*.b", "source": "ex1", "vhost": "/"}
 ],
 "exchanges": [
  {"arguments": {"alternate-exchange": "ae"}, "auto_delete": false, "durable": true, "name": "ex1", "type": "topic", "vhost": "/"}
 ],
 "global_parameters": [{"name": "cluster_name", "value": "rabbit@localhost"}],
 "parameters": [{"component": "vhost-limits", "name": "limits", "value": {"max-queues": 5}, "vhost": "v1"}],
 "permissions": [{"configure": ".*", "read": ".*", "user": "guest", "vhost": "/", "write": ".*"}],
 "policies": [{"apply-to": "queues", "definition": {"message-ttl": 60000}, "name": "ttl", "pattern": "^q", "priority": 0, "vhost": "/"}],
 "queues": [
  {"arguments": {"x-max-length": 10, "x-queue-mode": "lazy"}, "auto_delete": false, "durable": true, "name": "q1", "type": "classic", "vhost": "/"}
 ],
 "rabbit_version": "3.10.8",
 "rabbitmq_version": "3.10.8",
 "topic_permissions": [],
 "users": [
  {"hashing_algorithm": "rabbit_password_hashing_sha256", "limits": {"max-connections": 10}, "name": "bob", "password_hash": "c2FsdGhhc2g=", "tags": ["management"]},
  {"hashing_algorithm": "rabbit_password_hashing_sha256", "limits": {}, "name": "guest", "password_hash": "c2FsdGhhc2g=", "tags": ["administrator"]}
 ],
 "vhosts": [
  {"limits": [], "metadata": {"description": "Default virtual host", "tags": []}, "name": "/"},
  {"limits": [["max-queues", 5]], "metadata": {"description": "", "tags": ""}, "name": "v1"}
 ]
}"##;

    #[test]
    fn reads_a_rabbitmq_export_and_round_trips_it() {
        let defs: Definitions = serde_json::from_str(RABBIT_EXPORT).unwrap();
        assert_eq!(defs.rabbit_version.as_deref(), Some("3.10.8"));
        assert_eq!(defs.users[0].tags, vec!["management"]);
        assert_eq!(defs.queues[0].arguments["x-max-length"], 10);
        assert_eq!(defs.queues[0].queue_type.as_deref(), Some("classic"));
        assert!(!defs.exchanges[0].internal);
        assert_eq!(defs.bindings[1].arguments["x-match"], "all");
        assert_eq!(defs.policies[0].apply_to, "queues");
        assert_eq!(
            defs.vhosts[1].limits,
            Some(serde_json::json!([["max-queues", 5]]))
        );
        let again: Definitions =
            serde_json::from_slice(&serde_json::to_vec(&defs).unwrap()).unwrap();
        assert_eq!(again, defs);
        // Everything RabbitMQ wrote is still there, value for value (plus `internal`).
        let original: Value = serde_json::from_str(RABBIT_EXPORT).unwrap();
        let mut written = serde_json::to_value(&defs).unwrap();
        written["exchanges"][0]
            .as_object_mut()
            .unwrap()
            .remove("internal");
        assert_eq!(written, original);
    }

    #[test]
    fn old_style_string_tags_and_unknown_keys() {
        let defs: Definitions = serde_json::from_str(
            r#"{"users":[{"name":"u","password_hash":"x","tags":"administrator, monitoring"}],
                "future_key": {"a": 1}}"#,
        )
        .unwrap();
        assert_eq!(defs.users[0].tags, vec!["administrator", "monitoring"]);
        assert_eq!(
            defs.users[0].hashing_algorithm,
            "rabbit_password_hashing_sha256"
        );
        assert_eq!(defs.extra["future_key"]["a"], 1);
    }

    fn sample() -> Definitions {
        serde_json::from_str(RABBIT_EXPORT).unwrap()
    }

    #[test]
    fn atomic_write_survives_a_crash_at_every_sync() {
        let dir = Path::new("/data");
        let old = Definitions {
            rabbit_version: Some("old".into()),
            ..Definitions::default()
        };
        let new = sample();
        // Each crash point leaves exactly the old or the new definitions, never a mix.
        for n in 1.. {
            let s = MemStorage::new();
            write_definitions_atomically(&s, dir, &old).unwrap();
            s.crash_at_sync(n);
            let finished = write_definitions_atomically(&s, dir, &new).is_ok();
            let after = s.crash();
            let got = read_definitions(&after, dir).unwrap().unwrap();
            assert!(got == old || got == new, "crash at sync {n}: mixed file");
            if finished {
                assert_eq!(got, new);
                break;
            }
        }
        // A torn temporary file is ignored.
        let s = MemStorage::new();
        write_definitions_atomically(&s, dir, &old).unwrap();
        s.create(&dir.join(DEFINITIONS_TMP))
            .unwrap()
            .append(&[IoSlice::new(b"{\"users\": [")])
            .unwrap();
        s.tear_last_write(3);
        let after = s.crash();
        assert_eq!(read_definitions(&after, dir).unwrap().unwrap(), old);
    }

    #[test]
    fn missing_and_garbage_files() {
        let s = MemStorage::new();
        assert_eq!(read_definitions(&s, Path::new("/nowhere")).unwrap(), None);
        s.create_dir(Path::new("/d")).unwrap();
        s.create(Path::new("/d/definitions.json"))
            .unwrap()
            .append(&[IoSlice::new(b"{\n  \"users\": [}")])
            .unwrap();
        match read_definitions(&s, Path::new("/d")) {
            Err(StoreError::Corrupted { file, offset }) => {
                assert_eq!(file, Path::new("/d/definitions.json"));
                assert_eq!(offset, 14, "the stray brace");
            }
            other => panic!("expected Corrupted, got {other:?}"),
        }
    }
}
