//! The whole broker's shared state: vhosts, users, connection ids and direct reply-to consumers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use amqp::ShortStr;
use parking_lot::RwLock;

use crate::consumer::ConnectionSink;
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
    pub users: Users,
    next_connection_id: AtomicU64,
    reply_consumers: RwLock<HashMap<ShortStr, ReplyConsumer>>,
}

impl Broker {
    /// A fresh broker with vhost `/` and user guest, as RabbitMQ starts.
    pub fn new() -> Arc<Broker> {
        let broker = Broker {
            vhosts: RwLock::new(HashMap::new()),
            users: Users::with_default_user(),
            next_connection_id: AtomicU64::new(1),
            reply_consumers: RwLock::new(HashMap::new()),
        };
        broker.add_vhost("/");
        Arc::new(broker)
    }

    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        self.vhosts
            .write()
            .entry(name.to_string())
            .or_insert_with(|| VHost::new(name))
            .clone()
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
