//! The whole broker's shared state: vhosts, users, connection ids and direct reply-to consumers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use amqp::ShortStr;
use parking_lot::RwLock;

use store::StoreError;

use crate::consumer::ConnectionSink;
use crate::durability::Durability;
use crate::users::Users;
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
    next_connection_id: AtomicU64,
    reply_consumers: RwLock<HashMap<ShortStr, ReplyConsumer>>,
}

impl Broker {
    /// A broker that keeps everything in memory, with vhost `/` and user guest.
    pub fn new() -> Arc<Broker> {
        let broker = Self::with_durability(None);
        broker.add_vhost("/");
        Arc::new(broker)
    }

    fn with_durability(durability: Option<Arc<Durability>>) -> Broker {
        Broker {
            vhosts: RwLock::new(HashMap::new()),
            durability,
            users: Users::with_default_user(),
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
            None => {
                broker.add_vhost("/");
            }
        }
        if broker.vhosts.read().is_empty() {
            broker.add_vhost("/");
        }
        broker.remove_unknown_queue_dirs();
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
        let root = durability.data_dir.join("queues");
        let Ok(vhost_dirs) = std::fs::read_dir(&root) else {
            return;
        };
        for vhost_dir in vhost_dirs.flatten() {
            let Ok(queue_dirs) = std::fs::read_dir(vhost_dir.path()) else {
                continue;
            };
            for queue_dir in queue_dirs.flatten() {
                let path = queue_dir.path();
                if path.is_dir() && !known.contains(&path) {
                    tracing::info!(path = %path.display(), "removing the data of a deleted queue");
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
    }

    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        self.vhosts
            .write()
            .entry(name.to_string())
            .or_insert_with(|| VHost::with_durability(name, self.durability.clone()))
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
