//! Queues: the handle others hold, the commands they send, and the owner task that is the only
//! place a queue's state changes (one owner per queue, as in RabbitMQ).

mod state;

pub use state::{Delivery, MessageId, Overflow, Publish, QueueLimits, QueueState, QueuedMessage};

use std::sync::{Arc, Weak};

use amqp::{FieldTable, ShortStr};
use tokio::sync::{mpsc, oneshot};

use crate::confirm::ConfirmToken;
use crate::consumer::{ConnectionEvent, Consumer, DeliveryEvent};
use crate::error::{AmqpException, AmqpResult};
use crate::message::Message;
use crate::vhost::VHost;

pub type QueueRef = Arc<QueueHandle>;

/// A queue's properties as declared; fixed for its lifetime.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    pub durable: bool,
    /// The connection that declared an exclusive queue.
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    /// Read from `arguments` once, at declaration.
    pub limits: QueueLimits,
}

/// What everyone but the owner task holds: the queue's name and properties, and its inbox.
#[derive(Debug)]
pub struct QueueHandle {
    pub name: ShortStr,
    pub config: QueueConfig,
    commands: mpsc::UnboundedSender<QueueCommand>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub message_count: u32,
    pub consumer_count: u32,
    pub unacked_count: u32,
}

pub enum QueueCommand {
    Publish {
        message: Arc<Message>,
        /// Present when the publisher waits for this queue's answer (confirm mode and the
        /// queue may refuse the message).
        confirm: Option<ConfirmToken>,
    },
    Consume {
        consumer: Consumer,
        reply: oneshot::Sender<AmqpResult<()>>,
    },
    Cancel {
        connection_id: u64,
        channel_id: u16,
        consumer_tag: ShortStr,
    },
    Get {
        no_ack: bool,
        reply: oneshot::Sender<Option<(QueuedMessage, u32)>>,
    },
    Ack(Vec<MessageId>),
    Requeue {
        ids: Vec<MessageId>,
        redelivered: bool,
    },
    /// Rejected without requeue: the message is dropped.
    Discard(Vec<MessageId>),
    /// Some consumer's channel got credit back; try delivering again.
    CreditAvailable,
    Stats(oneshot::Sender<QueueStats>),
    Purge(oneshot::Sender<u32>),
    Delete {
        if_unused: bool,
        if_empty: bool,
        reply: oneshot::Sender<AmqpResult<u32>>,
    },
}

impl std::fmt::Debug for QueueCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueCommand")
    }
}

impl QueueHandle {
    /// Starts the owner task of a new queue and returns its handle.
    pub fn spawn(name: ShortStr, config: QueueConfig, vhost: Weak<VHost>) -> QueueRef {
        let (commands, inbox) = mpsc::unbounded_channel();
        let handle = Arc::new(QueueHandle {
            name,
            config,
            commands,
        });
        let task = QueueTask {
            state: QueueState::with_limits(handle.config.limits),
            handle: Arc::downgrade(&handle),
            vhost,
        };
        tokio::spawn(task.run(inbox));
        handle
    }

    /// Sends a command; a queue that is gone silently drops it, like a deleted RabbitMQ queue.
    pub fn send(&self, command: QueueCommand) {
        let _ = self.commands.send(command);
    }

    pub fn is_exclusive(&self) -> bool {
        self.config.exclusive_owner.is_some()
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> QueueCommand,
    ) -> AmqpResult<T> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx));
        rx.await.map_err(|_| self.gone())
    }

    fn gone(&self) -> AmqpException {
        AmqpException::not_found(format!("queue '{}' was deleted", self.name))
    }

    pub async fn stats(&self) -> AmqpResult<QueueStats> {
        self.request(QueueCommand::Stats).await
    }

    pub async fn purge(&self) -> AmqpResult<u32> {
        self.request(QueueCommand::Purge).await
    }

    pub async fn get(&self, no_ack: bool) -> AmqpResult<Option<(QueuedMessage, u32)>> {
        self.request(|reply| QueueCommand::Get { no_ack, reply })
            .await
    }

    pub async fn consume(&self, consumer: Consumer) -> AmqpResult<()> {
        self.request(|reply| QueueCommand::Consume { consumer, reply })
            .await?
    }

    pub async fn delete(&self, if_unused: bool, if_empty: bool) -> AmqpResult<u32> {
        self.request(|reply| QueueCommand::Delete {
            if_unused,
            if_empty,
            reply,
        })
        .await?
    }
}

struct QueueTask {
    state: QueueState,
    handle: Weak<QueueHandle>,
    vhost: Weak<VHost>,
}

enum Flow {
    Continue,
    Stop,
}

const COMMAND_BATCH: usize = 256;

impl QueueTask {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<QueueCommand>) {
        let mut batch = Vec::with_capacity(COMMAND_BATCH);
        while inbox.recv_many(&mut batch, COMMAND_BATCH).await > 0 {
            for command in batch.drain(..) {
                if let Flow::Stop = self.handle_command(command) {
                    self.cancel_all_consumers();
                    return;
                }
            }
            self.deliver_ready();
        }
    }

    fn handle_command(&mut self, command: QueueCommand) -> Flow {
        match command {
            QueueCommand::Publish { message, confirm } => {
                if let (Publish::Rejected, Some(token)) = (self.state.publish(message), confirm) {
                    token.reject();
                }
            }
            QueueCommand::Consume { consumer, reply } => {
                let result = self.check_consume(&consumer);
                if result.is_ok() {
                    self.state.add_consumer(consumer);
                }
                let _ = reply.send(result);
            }
            QueueCommand::Cancel {
                connection_id,
                channel_id,
                consumer_tag,
            } => {
                self.state
                    .remove_consumer(connection_id, channel_id, &consumer_tag);
                if self.should_auto_delete() {
                    self.unregister();
                    return Flow::Stop;
                }
            }
            QueueCommand::Get { no_ack, reply } => {
                let _ = reply.send(self.state.get(no_ack));
            }
            QueueCommand::Ack(ids) | QueueCommand::Discard(ids) => self.state.ack(&ids),
            QueueCommand::Requeue { ids, redelivered } => self.state.requeue(&ids, redelivered),
            QueueCommand::CreditAvailable => {}
            QueueCommand::Stats(reply) => {
                let _ = reply.send(QueueStats {
                    message_count: self.state.message_count(),
                    consumer_count: self.state.consumer_count(),
                    unacked_count: self.state.unacked_count(),
                });
            }
            QueueCommand::Purge(reply) => {
                let _ = reply.send(self.state.purge());
            }
            QueueCommand::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                let name = self.name();
                if if_unused && self.state.consumer_count() > 0 {
                    let _ = reply.send(Err(AmqpException::precondition_failed(format!(
                        "queue '{name}' in vhost '{}' in use",
                        self.vhost_name()
                    ))));
                } else if if_empty && self.state.message_count() > 0 {
                    let _ = reply.send(Err(AmqpException::precondition_failed(format!(
                        "queue '{name}' in vhost '{}' not empty",
                        self.vhost_name()
                    ))));
                } else {
                    self.unregister();
                    let _ = reply.send(Ok(self.state.message_count()));
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    }

    fn check_consume(&self, consumer: &Consumer) -> AmqpResult<()> {
        if self.state.has_exclusive_consumer()
            || (consumer.exclusive && self.state.consumer_count() > 0)
        {
            return Err(AmqpException::access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name(),
                self.vhost_name()
            )));
        }
        Ok(())
    }

    fn should_auto_delete(&self) -> bool {
        let auto_delete = self.handle.upgrade().is_some_and(|h| h.config.auto_delete);
        auto_delete && self.state.had_consumers() && self.state.consumer_count() == 0
    }

    fn deliver_ready(&mut self) {
        let queue = self.handle.upgrade();
        while let Some(delivery) = self.state.next_delivery() {
            let consumer = delivery.consumer;
            let message = delivery.message;
            let source = match (&queue, consumer.no_ack) {
                (Some(q), false) => Some((q.clone(), message.id)),
                _ => None,
            };
            let event = ConnectionEvent::Deliver(DeliveryEvent {
                channel_id: consumer.channel_id,
                consumer_tag: consumer.consumer_tag.clone(),
                message: message.message,
                redelivered: message.redelivered,
                source,
            });
            let Err(mpsc::error::SendError(lost)) = consumer.sink.send(event) else {
                continue;
            };
            // The connection is gone before its channel-close could requeue this delivery.
            consumer.release_credit();
            let (connection_id, channel_id) = (consumer.connection_id, consumer.channel_id);
            let tag = consumer.consumer_tag.clone();
            if let ConnectionEvent::Deliver(DeliveryEvent {
                source: Some((_, id)),
                ..
            }) = lost
            {
                self.state.requeue(&[id], false);
            }
            self.state.remove_consumer(connection_id, channel_id, &tag);
        }
    }

    fn cancel_all_consumers(&mut self) {
        for consumer in self.state.take_consumers() {
            let _ = consumer.sink.send(ConnectionEvent::ConsumerCancelled {
                channel_id: consumer.channel_id,
                consumer_tag: consumer.consumer_tag,
            });
        }
    }

    fn unregister(&self) {
        if let (Some(vhost), Some(handle)) = (self.vhost.upgrade(), self.handle.upgrade()) {
            vhost.unregister_queue(&handle);
        }
    }

    fn name(&self) -> String {
        self.handle
            .upgrade()
            .map(|h| h.name.to_string())
            .unwrap_or_default()
    }

    fn vhost_name(&self) -> String {
        self.vhost
            .upgrade()
            .map(|v| v.name().to_string())
            .unwrap_or_default()
    }
}
