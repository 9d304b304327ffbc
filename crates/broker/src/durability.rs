//! What the broker keeps on disk and how it gets it back: the store's storage and group-commit
//! syncer, the definitions file (written in the background, awaited by the declaring channel),
//! and the conversion between the broker's durable entities and RabbitMQ's definitions format.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use amqp::{Decimal, FieldTable, FieldValue, LongStr, ShortStr};
use serde_json::{Map, Number, Value};
use store::{
    read_definitions, write_definitions_atomically, BindingDef, Definitions, ExchangeDef,
    FsStorage, LogConfig, Permission, QueueDef, Storage, StoreError, Syncer, SyncerHandle,
};
use tokio::sync::{watch, Notify};

use crate::broker::Broker;
use crate::users::{User, HASHING_ALGORITHM};
use crate::vhost::Destination;

const PAGING_DIR: &str = "paging";

/// The durable side of a broker: where its files are and who fsyncs them.
pub struct Durability {
    pub storage: Arc<dyn Storage>,
    pub data_dir: PathBuf,
    pub log_config: LogConfig,
    syncer: Syncer,
    definitions: DefinitionsWriter,
}

impl Durability {
    /// Real files under `data_dir`, with the group-commit thread started.
    pub fn on_disk(data_dir: &Path) -> Result<Durability, StoreError> {
        Self::new(Arc::new(FsStorage::new()), data_dir)
    }

    pub fn new(storage: Arc<dyn Storage>, data_dir: &Path) -> Result<Durability, StoreError> {
        Ok(Durability {
            storage,
            data_dir: data_dir.to_path_buf(),
            log_config: LogConfig::default(),
            syncer: Syncer::start().map_err(StoreError::Io)?,
            definitions: DefinitionsWriter::new(),
        })
    }

    pub fn syncer(&self) -> SyncerHandle {
        self.syncer.handle()
    }

    pub fn queue_dir(&self, vhost: &str, queue: &str) -> PathBuf {
        store::queue_dir(&self.data_dir, vhost, queue)
    }

    /// Where a durable delayed-message exchange keeps what it holds.
    pub fn delayed_dir(&self, vhost: &str, exchange: &str) -> PathBuf {
        store::delayed_exchange_dir(&self.data_dir, vhost, exchange)
    }

    /// A fresh directory for a paging log (transient messages that did not fit in memory).
    pub fn paging_dir(&self) -> PathBuf {
        let unique = crate::names::generate_name("");
        self.data_dir.join(PAGING_DIR).join(unique.as_str())
    }

    /// Paging logs hold nothing worth keeping across a restart.
    pub fn remove_paging_logs(&self) {
        let _ = std::fs::remove_dir_all(self.data_dir.join(PAGING_DIR));
    }

    pub fn read_definitions(&self) -> Result<Option<Definitions>, StoreError> {
        read_definitions(&*self.storage, &self.data_dir)
    }

    /// Notes that a durable definition changed; the writer will write the file again.
    pub fn definitions_changed(&self) {
        self.definitions.changed();
    }

    /// Waits until every change noted so far is on disk.
    pub async fn definitions_synced(&self) -> Result<(), StoreError> {
        self.definitions.synced().await
    }

    /// Starts the task that writes definitions.json whenever they change.
    pub fn start_definitions_writer(&self, broker: Weak<Broker>) {
        let writer = self.definitions.clone_handles();
        let storage = self.storage.clone();
        let data_dir = self.data_dir.clone();
        tokio::spawn(async move {
            loop {
                writer.wake.notified().await;
                let generation = writer.generation.load(Ordering::Acquire);
                let Some(broker) = broker.upgrade() else {
                    return;
                };
                let definitions = broker.export_definitions(true);
                drop(broker);
                let storage = storage.clone();
                let data_dir = data_dir.clone();
                let written = tokio::task::spawn_blocking(move || {
                    write_definitions_atomically(&*storage, &data_dir, &definitions)
                })
                .await;
                let result = match written {
                    Ok(Ok(())) => Ok(generation),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(error) => Err(error.to_string()),
                };
                if let Err(error) = &result {
                    tracing::error!(%error, "writing definitions.json failed");
                }
                let _previous = writer.written.send_replace(result);
            }
        });
    }
}

/// Coalesces definition changes: many changes, one write of the whole file.
struct DefinitionsWriter {
    generation: Arc<AtomicU64>,
    wake: Arc<Notify>,
    written: Arc<watch::Sender<Result<u64, String>>>,
}

impl DefinitionsWriter {
    fn new() -> Self {
        DefinitionsWriter {
            generation: Arc::new(AtomicU64::new(0)),
            wake: Arc::new(Notify::new()),
            written: Arc::new(watch::channel(Ok(0)).0),
        }
    }

    fn clone_handles(&self) -> DefinitionsWriter {
        DefinitionsWriter {
            generation: self.generation.clone(),
            wake: self.wake.clone(),
            written: self.written.clone(),
        }
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    async fn synced(&self) -> Result<(), StoreError> {
        let wanted = self.generation.load(Ordering::Acquire);
        let mut written = self.written.subscribe();
        loop {
            match &*written.borrow_and_update() {
                Ok(done) if *done >= wanted => return Ok(()),
                Ok(_) => {}
                Err(error) => {
                    return Err(StoreError::Io(std::io::Error::other(error.clone())));
                }
            }
            if written.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}

impl Broker {
    /// The broker's definitions in RabbitMQ's format: with `durable_only`, what must survive a
    /// restart (durable exchanges, durable non-exclusive queues, bindings between them).
    pub fn export_definitions(&self, durable_only: bool) -> Definitions {
        let mut defs = Definitions {
            rabbit_version: Some(crate::RABBIT_VERSION.to_string()),
            rabbitmq_version: Some(crate::RABBIT_VERSION.to_string()),
            ..Definitions::default()
        };
        for user in self.users.all() {
            defs.users.push(store::User {
                name: user.name.clone(),
                password_hash: user.password_hash.clone(),
                hashing_algorithm: HASHING_ALGORITHM.to_string(),
                tags: user.tags.clone(),
                limits: Value::Object(Map::new()),
                extra: Map::new(),
            });
        }
        for policy in self.policies.all(None) {
            defs.policies.push(store::Policy {
                vhost: policy.vhost.clone(),
                name: policy.name.clone(),
                pattern: policy.pattern.clone(),
                apply_to: policy.apply_to.as_str().to_string(),
                definition: Value::Object(policy.definition.clone()),
                priority: policy.priority,
            });
        }
        for (vhost, user, permission) in self.permissions.all() {
            defs.permissions.push(Permission {
                user,
                vhost,
                configure: permission.configure.clone(),
                write: permission.write.clone(),
                read: permission.read.clone(),
            });
        }
        let mut vhosts = self.vhosts();
        vhosts.sort_by(|a, b| a.name().cmp(b.name()));
        for vhost in vhosts {
            let vhost_name = vhost.name().to_string();
            defs.vhosts.push(store::VHost {
                name: vhost_name.clone(),
                metadata: None,
                limits: None,
                extra: Map::new(),
            });
            let mut queues = vhost.queues();
            queues.sort_by(|a, b| a.name.cmp(&b.name));
            for queue in &queues {
                if durable_only && !queue.is_persistent_definition() {
                    continue;
                }
                defs.queues.push(QueueDef {
                    name: queue.name.to_string(),
                    vhost: vhost_name.clone(),
                    durable: queue.config.durable,
                    auto_delete: queue.config.auto_delete,
                    arguments: table_to_json(&queue.config.arguments),
                    queue_type: None,
                    extra: Map::new(),
                });
            }
            let mut exchanges = vhost.exchanges();
            exchanges.sort_by(|a, b| a.name.cmp(&b.name));
            for exchange in &exchanges {
                let predeclared = exchange.is_default() || exchange.name.starts_with("amq.");
                if !predeclared && (exchange.durable || !durable_only) {
                    defs.exchanges.push(ExchangeDef {
                        name: exchange.name.to_string(),
                        vhost: vhost_name.clone(),
                        exchange_type: exchange.kind.as_str().to_string(),
                        durable: exchange.durable,
                        auto_delete: exchange.auto_delete,
                        internal: exchange.internal,
                        arguments: table_to_json(&exchange.arguments),
                        extra: Map::new(),
                    });
                }
                if exchange.is_default() || (durable_only && !exchange.durable) {
                    continue;
                }
                for (destination, key) in exchange.bindings() {
                    let (destination_type, name) = match &destination {
                        Destination::Queue(name) => ("queue", name),
                        Destination::Exchange(name) => ("exchange", name),
                    };
                    if durable_only && !vhost.is_durable_destination(&destination) {
                        continue;
                    }
                    defs.bindings.push(BindingDef {
                        source: exchange.name.to_string(),
                        vhost: vhost_name.clone(),
                        destination: name.to_string(),
                        destination_type: destination_type.to_string(),
                        routing_key: key.routing_key.to_string(),
                        arguments: table_to_json(&key.arguments),
                    });
                }
            }
        }
        defs
    }

    /// Restores users, vhosts, policies, exchanges, queues (which recover their own messages)
    /// and bindings from definitions read at startup. Entries that no longer make sense (a binding
    /// to a missing queue) are skipped with a warning, never fatal.
    pub fn restore_definitions(&self, defs: &Definitions) {
        if !defs.users.is_empty() {
            self.users.replace_all(defs.users.iter().map(|u| User {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                tags: u.tags.clone(),
                loopback_only: u.name == "guest",
            }));
        }
        for vhost in &defs.vhosts {
            self.add_vhost(&vhost.name);
        }
        self.policies.replace_all(defs.policies.iter().filter_map(|p| {
            let definition = p.definition.as_object().cloned().unwrap_or_default();
            match crate::policies::Policy::new(&p.vhost, &p.name, &p.pattern, &p.apply_to, p.priority, definition) {
                Ok(policy) => Some(policy),
                Err(error) => {
                    tracing::warn!(policy = %p.name, vhost = %p.vhost, %error, "policy not restored");
                    None
                }
            }
        }));
        // Before the exchanges and queues: each is created under the policy that applies to
        // it. The predeclared exchanges exist already and take theirs now.
        for vhost in self.vhosts() {
            vhost.apply_policies();
        }
        self.permissions.replace_all(defs.permissions.iter().filter_map(|p| {
            match crate::permissions::Permission::new(&p.configure, &p.write, &p.read) {
                Ok(permission) => Some((p.vhost.clone(), p.user.clone(), permission)),
                Err(error) => {
                    tracing::warn!(user = %p.user, vhost = %p.vhost, %error, "permission not restored");
                    None
                }
            }
        }));
        for exchange in &defs.exchanges {
            let Some(vhost) = self.vhost(&exchange.vhost) else {
                continue;
            };
            if let Err(error) = vhost.restore_exchange(exchange, json_to_table(&exchange.arguments))
            {
                tracing::warn!(exchange = %exchange.name, %error, "exchange not restored");
            }
        }
        for queue in &defs.queues {
            let Some(vhost) = self.vhost(&queue.vhost) else {
                continue;
            };
            if let Err(error) = vhost.restore_queue(queue, json_to_table(&queue.arguments)) {
                tracing::warn!(queue = %queue.name, %error, "queue not restored");
            }
        }
        for binding in &defs.bindings {
            let Some(vhost) = self.vhost(&binding.vhost) else {
                continue;
            };
            if let Err(error) = vhost.restore_binding(binding, &json_to_table(&binding.arguments)) {
                tracing::warn!(source = %binding.source, destination = %binding.destination, %error, "binding not restored");
            }
        }
        // Only now: messages already due must find the bindings in place.
        for vhost in self.vhosts() {
            vhost.start_delayed_exchanges();
        }
    }
}

/// A field table as RabbitMQ writes arguments in JSON.
pub fn table_to_json(table: &FieldTable) -> Value {
    let mut map = Map::new();
    for (key, value) in table.iter() {
        map.insert(key.to_string(), value_to_json(value));
    }
    Value::Object(map)
}

fn value_to_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::I8(n) => Value::from(*n),
        FieldValue::U8(n) => Value::from(*n),
        FieldValue::I16(n) => Value::from(*n),
        FieldValue::U16(n) => Value::from(*n),
        FieldValue::I32(n) => Value::from(*n),
        FieldValue::U32(n) => Value::from(*n),
        FieldValue::I64(n) => Value::from(*n),
        FieldValue::Timestamp(n) => Value::from(*n),
        FieldValue::F32(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        FieldValue::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        FieldValue::Decimal(d) => {
            let v = f64::from(d.value) / 10f64.powi(i32::from(d.scale));
            Number::from_f64(v).map_or(Value::Null, Value::Number)
        }
        FieldValue::LongStr(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        FieldValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        FieldValue::Array(items) => Value::Array(items.iter().map(value_to_json).collect()),
        FieldValue::Table(t) => table_to_json(t),
        FieldValue::Void => Value::Null,
    }
}

/// JSON arguments back into a field table, with the types RabbitMQ gives them on import:
/// integers as signed 64-bit, strings as long strings.
pub fn json_to_table(value: &Value) -> FieldTable {
    let mut table = FieldTable::new();
    if let Value::Object(map) = value {
        for (key, value) in map {
            if let Ok(key) = ShortStr::new(key.as_str()) {
                table.insert(key, json_to_value(value));
            }
        }
    }
    table
}

fn json_to_value(value: &Value) -> FieldValue {
    match value {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => FieldValue::I64(i),
            (None, Some(f)) => FieldValue::F64(f),
            _ => FieldValue::Decimal(Decimal { scale: 0, value: 0 }),
        },
        Value::String(s) => FieldValue::LongStr(LongStr::from(s.as_str())),
        Value::Array(items) => FieldValue::Array(items.iter().map(json_to_value).collect()),
        Value::Object(_) => FieldValue::Table(json_to_table(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip_through_json_by_value() {
        let mut table = FieldTable::new();
        table.insert(ShortStr::from_static("x-max-length"), FieldValue::I32(10));
        table.insert(
            ShortStr::from_static("x-dead-letter-exchange"),
            FieldValue::from("dlx"),
        );
        table.insert(ShortStr::from_static("flag"), FieldValue::Bool(true));
        let json = table_to_json(&table);
        assert_eq!(json["x-max-length"], 10);
        assert_eq!(json["x-dead-letter-exchange"], "dlx");
        let back = json_to_table(&json);
        assert_eq!(
            back.get("x-max-length").and_then(FieldValue::as_i64),
            Some(10)
        );
        assert_eq!(
            back.get("x-dead-letter-exchange")
                .and_then(FieldValue::as_str),
            Some("dlx")
        );
        assert_eq!(back.get("flag"), Some(&FieldValue::Bool(true)));
    }
}
