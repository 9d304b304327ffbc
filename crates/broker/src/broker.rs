//! The whole broker's shared state: vhosts, users, connection ids and direct reply-to consumers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use amqp::ShortStr;
use parking_lot::RwLock;

use store::StoreError;

use crate::consumer::ConnectionSink;
use crate::durability::Durability;
use crate::permissions::{Permission, Permissions};
use crate::policies::{Policies, Policy};
use crate::registry::Registry;
use crate::users::{User, Users};
use crate::vhost::VHost;

/// A channel consuming from `amq.rabbitmq.reply-to`: replies published to its generated
/// reply-to name go straight to it, without a queue.
#[derive(Clone)]
pub struct ReplyConsumer {
    pub channel_id: u16,
    pub consumer_tag: ShortStr,
    pub sink: ConnectionSink,
}

pub struct Broker {
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    durability: Option<Arc<Durability>>,
    pub users: Users,
    pub permissions: Arc<Permissions>,
    /// Shared with every vhost, which applies them to its queues and exchanges.
    pub policies: Arc<Policies>,
    /// Live connections and channels, for the management API and metrics.
    pub registry: Registry,
    next_connection_id: AtomicU64,
    reply_consumers: RwLock<HashMap<ShortStr, ReplyConsumer>>,
}

impl Broker {
    /// A broker that keeps everything in memory, with vhost `/` and user guest.
    pub fn new() -> Arc<Broker> {
        let broker = Self::with_durability(None);
        broker.add_default_vhost();
        Arc::new(broker)
    }

    fn with_durability(durability: Option<Arc<Durability>>) -> Broker {
        Broker {
            vhosts: RwLock::new(HashMap::new()),
            durability,
            users: Users::with_default_user(),
            permissions: Arc::new(Permissions::default()),
            policies: Arc::default(),
            registry: Registry::default(),
            next_connection_id: AtomicU64::new(1),
            reply_consumers: RwLock::new(HashMap::new()),
        }
    }

    /// A broker whose durable state lives under `durability`'s data directory: definitions are
    /// restored and every durable queue recovers its messages (in its own task, before it
    /// serves anything). A data directory without definitions starts like RabbitMQ does.
    pub fn open(durability: Durability) -> Result<Arc<Broker>, StoreError> {
        let durability = Arc::new(durability);
        durability.remove_paging_logs();
        let definitions = durability.read_definitions()?;
        let broker = Arc::new(Self::with_durability(Some(durability.clone())));
        match &definitions {
            Some(definitions) => broker.restore_definitions(definitions),
            None => broker.add_default_vhost(),
        }
        if broker.vhosts.read().is_empty() {
            broker.add_default_vhost();
        }
        broker.remove_unknown_queue_dirs();
        broker.remove_unknown_delayed_dirs();
        durability.start_definitions_writer(Arc::downgrade(&broker));
        if definitions.is_none() {
            durability.definitions_changed();
        }
        Ok(broker)
    }

    /// Queue directories that no durable queue owns (a delete interrupted by a crash).
    fn remove_unknown_queue_dirs(&self) {
        let Some(durability) = &self.durability else {
            return;
        };
        let mut known = std::collections::HashSet::new();
        for vhost in self.vhosts() {
            for queue in vhost.queues() {
                known.insert(durability.queue_dir(vhost.name(), &queue.name));
            }
        }
        remove_unknown_dirs(&durability.data_dir.join("queues"), &known, "queue");
    }

    /// Directories of delayed-message exchanges that are no longer durable definitions (a
    /// delete interrupted by a crash).
    fn remove_unknown_delayed_dirs(&self) {
        let Some(durability) = &self.durability else {
            return;
        };
        let mut known = std::collections::HashSet::new();
        for vhost in self.vhosts() {
            for exchange in vhost.exchanges() {
                if exchange.durable
                    && exchange.kind == crate::exchange::ExchangeKind::DelayedMessage
                {
                    known.insert(durability.delayed_dir(vhost.name(), &exchange.name));
                }
            }
        }
        remove_unknown_dirs(
            &durability.data_dir.join("delayed"),
            &known,
            "delayed exchange",
        );
    }

    /// What a fresh RabbitMQ node has: vhost `/` with full permissions for `guest`.
    fn add_default_vhost(&self) {
        self.add_vhost("/");
        if self.users.get("guest").is_some() {
            self.permissions.set("/", "guest", Permission::full());
        }
    }

    fn definitions_changed(&self) {
        if let Some(durability) = &self.durability {
            durability.definitions_changed();
        }
    }

    /// Creates a vhost (nothing happens if it exists); whether it was created.
    pub fn declare_vhost(&self, name: &str) -> bool {
        if self.vhost(name).is_some() {
            return false;
        }
        self.add_vhost(name);
        self.definitions_changed();
        true
    }

    /// Deletes a vhost with its queues (and their messages), exchanges and permissions;
    /// whether it existed.
    pub async fn delete_vhost(&self, name: &str) -> bool {
        let Some(vhost) = self.vhosts.write().remove(name) else {
            return false;
        };
        self.close_connections_where(
            |connection| connection.vhost().as_deref() == Some(name),
            &format!("vhost '{name}' is deleted"),
        );
        for queue in vhost.queues() {
            let _ = queue.delete(false, false).await;
        }
        self.permissions.clear_where(|vhost, _| vhost == name);
        self.policies.delete_vhost(name);
        self.definitions_changed();
        true
    }

    /// Adds or replaces a policy; whether it is new. The vhost's queues and exchanges follow
    /// it at once.
    pub fn put_policy(&self, policy: Policy) -> bool {
        let vhost = policy.vhost.clone();
        let created = self.policies.put(policy);
        self.apply_policies(&vhost);
        self.definitions_changed();
        created
    }

    /// Whether there was such a policy. What it applied to falls back to its arguments (or
    /// the next matching policy) at once.
    pub fn delete_policy(&self, vhost: &str, name: &str) -> bool {
        let deleted = self.policies.delete(vhost, name);
        if deleted {
            self.apply_policies(vhost);
        }
        self.definitions_changed();
        deleted
    }

    fn apply_policies(&self, vhost: &str) {
        if let Some(vhost) = self.vhost(vhost) {
            vhost.apply_policies();
        }
    }

    /// Closes with 320 CONNECTION_FORCED each connection that `affected` picks.
    fn close_connections_where(
        &self,
        affected: impl Fn(&crate::registry::ConnectionInfo) -> bool,
        reason: &str,
    ) {
        for connection in self.registry.connections() {
            if affected(&connection) {
                connection.request_close(reason);
            }
        }
    }

    /// Adds or replaces a user.
    pub fn put_user(&self, user: User) {
        self.users.add(user);
        self.definitions_changed();
    }

    /// Deletes a user and their permissions; whether the user existed.
    pub fn delete_user(&self, name: &str) -> bool {
        let existed = self.users.remove(name);
        if existed {
            self.close_connections_where(
                |connection| connection.user().as_deref() == Some(name),
                &format!("user '{name}' is deleted"),
            );
        }
        self.permissions.clear_where(|_, user| user == name);
        self.definitions_changed();
        existed
    }

    pub fn set_permissions(&self, vhost: &str, user: &str, permission: Permission) {
        self.permissions.set(vhost, user, permission);
        self.definitions_changed();
    }

    /// Whether there were permissions to clear.
    pub fn clear_permissions(&self, vhost: &str, user: &str) -> bool {
        let cleared = self.permissions.clear(vhost, user);
        self.definitions_changed();
        cleared
    }

    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        self.vhosts
            .write()
            .entry(name.to_string())
            .or_insert_with(|| {
                VHost::with_policies(name, self.durability.clone(), self.policies.clone())
            })
            .clone()
    }

    /// Waits until every change to durable definitions so far is on disk (a declare-ok for a
    /// durable queue means it survives a crash).
    pub async fn definitions_synced(&self) -> Result<(), StoreError> {
        match &self.durability {
            Some(durability) => durability.definitions_synced().await,
            None => Ok(()),
        }
    }

    /// Stops every queue with its log closed cleanly, then writes the definitions a last time.
    pub async fn shutdown(&self) {
        for vhost in self.vhosts() {
            vhost.shutdown().await;
        }
        let _ = self.definitions_synced().await;
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().get(name).cloned()
    }

    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        self.vhosts.read().values().cloned().collect()
    }

    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn register_reply_consumer(&self, reply_to: ShortStr, consumer: ReplyConsumer) {
        self.reply_consumers.write().insert(reply_to, consumer);
    }

    pub fn unregister_reply_consumer(&self, reply_to: &str) {
        self.reply_consumers.write().remove(reply_to);
    }

    pub fn reply_consumer(&self, reply_to: &str) -> Option<ReplyConsumer> {
        self.reply_consumers.read().get(reply_to).cloned()
    }
}

/// Removes the `<root>/<vhost>/<name>` directories that are not in `known`.
fn remove_unknown_dirs(
    root: &std::path::Path,
    known: &std::collections::HashSet<std::path::PathBuf>,
    what: &str,
) {
    let Ok(vhost_dirs) = std::fs::read_dir(root) else {
        return;
    };
    for vhost_dir in vhost_dirs.flatten() {
        let Ok(dirs) = std::fs::read_dir(vhost_dir.path()) else {
            continue;
        };
        for dir in dirs.flatten() {
            let path = dir.path();
            if path.is_dir() && !known.contains(&path) {
                tracing::info!(path = %path.display(), "removing the data of a deleted {what}");
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}
