//! One AMQP channel: content assembly, the class handlers (exchange, queue, basic, tx,
//! confirm), delivery tags and unacknowledged deliveries, prefetch, confirms and transactions.
//! Holds no socket: handlers write replies into the session's output buffer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use amqp::{
    encode_content_header_frame, encode_method_frame, BasicAck, BasicCancel, BasicCancelOk,
    BasicConsume, BasicConsumeOk, BasicDeliver, BasicGet, BasicGetEmpty, BasicGetOk, BasicNack,
    BasicProperties, BasicPublish, BasicQos, BasicQosOk, BasicRecoverOk, BasicReturn,
    ChannelFlowOk, ConfirmSelectOk, ContentHeader, ExchangeBindOk, ExchangeDeclareOk,
    ExchangeDeleteOk, ExchangeUnbindOk, Method, QueueBindOk, QueueDeclareOk, QueueDeleteOk,
    QueuePurgeOk, QueueUnbindOk, ShortStr, TxCommitOk, TxRollbackOk, TxSelectOk, CLASS_BASIC,
};
use broker::confirm::{ChannelKey, ConfirmToken};
use broker::consumer::{ConnectionEvent, Consumer, DeliveryEvent, NO_ACK_WINDOW};
use broker::credit::Credit;
use broker::delayed::Hold;
use broker::error::reply_code;
use broker::message::{property_flag, property_flags, Message};
use broker::names::generate_name;
use broker::permissions::{Access, Resource};
use broker::queue::{MessageId, Published, QueueCommand, QueueRef};
use broker::registry::{ChannelRegistration, ConsumerInfo};
use broker::vhost::{
    Exchange, ExchangeCache, ExchangeDeclaration, QueueDeclaration, VHost, DIRECT_REPLY_TO,
};
use broker::{AmqpException, AmqpResult, ReplyConsumer};
use bytes::{Bytes, BytesMut};

use crate::config::Config;
use crate::connection::{unexpected_content, Session};

/// Where a channel is in receiving a published message's content.
enum Content {
    Idle,
    AwaitingHeader(BasicPublish),
    AwaitingBody {
        publish: BasicPublish,
        properties: Bytes,
        body_size: usize,
        body: Body,
    },
}

/// A body arriving in frames: one frame is kept as it came (no copy), more are joined.
enum Body {
    Empty,
    One(Bytes),
    Many(BytesMut),
    /// Too large to accept: only its length is kept.
    Discarded(usize),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(b) => b.len(),
            Body::Many(b) => b.len(),
            Body::Discarded(n) => *n,
        }
    }

    fn push(self, payload: Bytes, body_size: usize) -> Body {
        match self {
            Body::Discarded(n) => Body::Discarded(n + payload.len()),
            Body::Empty => Body::One(payload),
            Body::One(first) => {
                // Capacity from what arrived, not from the header's claim.
                let mut joined = BytesMut::with_capacity(body_size.min(first.len() * 16));
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&payload);
                Body::Many(joined)
            }
            Body::Many(mut joined) => {
                joined.extend_from_slice(&payload);
                Body::Many(joined)
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Body::Empty | Body::Discarded(_) => Bytes::new(),
            Body::One(b) => b,
            Body::Many(b) => b.freeze(),
        }
    }
}

/// A delivery the client has not acknowledged yet.
struct Unacked {
    delivery_tag: u64,
    queue: QueueRef,
    message_id: MessageId,
    /// The consumer's window, given back on ack; `None` for basic.get.
    credit: Option<Arc<Credit>>,
}

/// The last delivery tag handed out at each tick of the consumer-timeout check, so that a
/// delivery's age is known to within a tick without reading the clock for every delivery.
#[derive(Default)]
struct DeliveryClock {
    marks: VecDeque<(Instant, u64)>,
}

impl DeliveryClock {
    /// The highest tag handed out at least `age` before `now` (0 if none is that old).
    fn delivered_before(&self, now: Instant, age: Duration) -> u64 {
        let Some(cutoff) = now.checked_sub(age) else {
            return 0;
        };
        let newer = self.marks.partition_point(|(at, _)| *at <= cutoff);
        match newer {
            0 => 0,
            n => self.marks[n - 1].1,
        }
    }
}

struct ChannelConsumer {
    queue: Option<QueueRef>,
    credit: Arc<Credit>,
}

/// Publishes read in one go, grouped by queue until they are flushed. A lone publish (the
/// usual case for large messages) is kept inline: batching must not cost an allocation.
#[derive(Default)]
struct Outbox {
    batches: Vec<(QueueRef, Staged)>,
}

enum Staged {
    One(Published),
    Many(Vec<Published>),
}

impl Outbox {
    fn stage(&mut self, queue: QueueRef, message: Arc<Message>, confirm: Option<ConfirmToken>) {
        let Some((_, staged)) = self
            .batches
            .iter_mut()
            .find(|(q, _)| Arc::ptr_eq(q, &queue))
        else {
            self.batches.push((queue, Staged::One((message, confirm))));
            return;
        };
        match staged {
            Staged::Many(batch) => batch.push((message, confirm)),
            Staged::One(_) => {
                let Staged::One(first) = std::mem::replace(staged, Staged::Many(Vec::new())) else {
                    return;
                };
                *staged = Staged::Many(vec![first, (message, confirm)]);
            }
        }
    }
}

/// A publish held back until tx.commit.
struct PendingPublish {
    publish: BasicPublish,
    message: Message,
}

#[derive(Default)]
struct Transaction {
    publishes: Vec<PendingPublish>,
    acks: Vec<(Unacked, Settle)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack,
    Requeue,
    Discard,
}

/// How a confirmed publish turned out, as far as the channel knows yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Waiting for queues that may refuse it or must write it to disk first (delayed
    /// exchanges holding it count as queues here).
    Pending,
    Ack,
    Nack,
}

/// Publisher confirms: outcomes of the publishes not yet told to the client, in sequence
/// order, so that runs of acks go out as one `basic.ack multiple`.
struct Confirms {
    next_seq: u64,
    /// Sequence number of `unsent[0]`.
    first_unsent: u64,
    unsent: VecDeque<Outcome>,
}

impl Confirms {
    fn new() -> Self {
        Confirms {
            next_seq: 1,
            first_unsent: 1,
            unsent: VecDeque::new(),
        }
    }

    fn push(&mut self, outcome: Outcome) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unsent.push_back(outcome);
        seq
    }

    fn settle(&mut self, seq: u64, ack: bool) {
        let Some(index) = seq.checked_sub(self.first_unsent) else {
            return;
        };
        if let Some(outcome) = self.unsent.get_mut(index as usize) {
            *outcome = if ack { Outcome::Ack } else { Outcome::Nack };
        }
    }

    /// Writes basic.ack/nack for every settled publish up to the first pending one.
    fn flush(&mut self, channel: u16, session: &mut Session) {
        let mut acks_from: Option<u64> = None;
        let ack_run = |from: Option<u64>, to: u64, session: &mut Session| {
            if let Some(from) = from {
                session.send_method(
                    channel,
                    BasicAck {
                        delivery_tag: to,
                        multiple: to > from,
                    },
                );
            }
        };
        while let Some(&outcome) = self.unsent.front() {
            let seq = self.first_unsent;
            match outcome {
                Outcome::Pending => break,
                Outcome::Ack => {
                    acks_from.get_or_insert(seq);
                }
                Outcome::Nack => {
                    ack_run(acks_from.take(), seq - 1, session);
                    session.send_method(
                        channel,
                        BasicNack {
                            delivery_tag: seq,
                            multiple: false,
                            requeue: false,
                        },
                    );
                }
            }
            self.unsent.pop_front();
            self.first_unsent += 1;
        }
        ack_run(acks_from, self.first_unsent - 1, session);
    }
}

pub(crate) struct Channel {
    id: u16,
    /// Unique within the connection, unlike `id`, which a client reuses after a close.
    serial: u64,
    vhost: Arc<VHost>,
    closing: bool,
    content: Content,
    next_delivery_tag: u64,
    unacked: VecDeque<Unacked>,
    consumers: HashMap<ShortStr, ChannelConsumer>,
    /// basic.qos global=false: the window of consumers started after it.
    consumer_prefetch: u32,
    /// basic.qos global=true: one window for the whole channel.
    channel_credit: Arc<Credit>,
    confirms: Option<Confirms>,
    tx: Option<Transaction>,
    /// The queue last declared on this channel, which an empty queue name refers to.
    last_queue: Option<ShortStr>,
    /// Our generated `amq.rabbitmq.reply-to.…` name while consuming from direct reply-to.
    reply_to: Option<(ShortStr, ShortStr)>,
    routed: Vec<QueueRef>,
    /// Delayed exchanges that are to hold the message being published (reused, like `routed`).
    held: Vec<Hold>,
    outbox: Outbox,
    publish_exchange: ExchangeCache,
    delivery_clock: DeliveryClock,
    /// What the management API and metrics see of this channel.
    info: ChannelRegistration,
}

impl Channel {
    pub fn new(id: u16, serial: u64, vhost: Arc<VHost>, info: ChannelRegistration) -> Channel {
        Channel {
            id,
            serial,
            vhost,
            closing: false,
            content: Content::Idle,
            next_delivery_tag: 1,
            unacked: VecDeque::new(),
            consumers: HashMap::new(),
            consumer_prefetch: 0,
            channel_credit: Arc::new(Credit::new(0)),
            confirms: None,
            tx: None,
            last_queue: None,
            reply_to: None,
            publish_exchange: ExchangeCache::default(),
            delivery_clock: DeliveryClock::default(),
            routed: Vec::new(),
            held: Vec::new(),
            outbox: Outbox::default(),
            info,
        }
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    pub fn mark_closing(&mut self) {
        self.closing = true;
    }

    /// Whether a publish's content header or body frames are due.
    pub fn expecting_content(&self) -> bool {
        !matches!(self.content, Content::Idle)
    }

    /// The error for a frame of the wrong kind in the middle of a publish's content.
    pub fn unexpected_method_error(&self) -> AmqpException {
        match self.content {
            Content::AwaitingBody { .. } => AmqpException::unexpected_frame(
                "expected content body, got non content body frame instead",
            ),
            _ => AmqpException::unexpected_frame(
                "expected content header for class 60, got non content header frame instead",
            ),
        }
    }

    /// Whether `method` is one of the per-message methods served without awaiting anything.
    pub fn is_hot_method(method: &Method) -> bool {
        matches!(
            method,
            Method::BasicPublish(_)
                | Method::BasicAck(_)
                | Method::BasicNack(_)
                | Method::BasicReject(_)
        )
    }

    /// The per-message methods (publish, ack, nack, reject): synchronous, so that the
    /// connection serves them without building the future of `handle_method`.
    pub fn handle_hot_method(&mut self, method: Method) -> AmqpResult<()> {
        let requeue_or_discard = |requeue| {
            if requeue {
                Settle::Requeue
            } else {
                Settle::Discard
            }
        };
        match method {
            Method::BasicPublish(m) => {
                if m.immediate {
                    return Err(AmqpException::not_implemented("immediate=true"));
                }
                self.content = Content::AwaitingHeader(m);
                Ok(())
            }
            Method::BasicAck(m) => self.settle(m.delivery_tag, m.multiple, Settle::Ack),
            Method::BasicNack(m) => {
                self.settle(m.delivery_tag, m.multiple, requeue_or_discard(m.requeue))
            }
            Method::BasicReject(m) => {
                self.settle(m.delivery_tag, false, requeue_or_discard(m.requeue))
            }
            other => Err(AmqpException::internal_error(format!(
                "'{}' is not a per-message method",
                other.name()
            ))),
        }
    }

    /// Handles a method of an open channel; the connection has checked that no content is due.
    pub async fn handle_method(&mut self, method: Method, session: &mut Session) -> AmqpResult<()> {
        let ch = self.id;
        match method {
            Method::ChannelFlow(flow) => {
                if !flow.active {
                    return Err(AmqpException::not_implemented("active=false"));
                }
                session.send_method(ch, ChannelFlowOk { active: true });
            }
            Method::ExchangeDeclare(m) => {
                if !m.passive {
                    session.check_access(Access::Configure, Resource::Exchange, &m.exchange)?;
                }
                self.vhost.declare_exchange(
                    ExchangeDeclaration {
                        name: &m.exchange,
                        kind: &m.kind,
                        durable: m.durable,
                        auto_delete: m.auto_delete,
                        internal: m.internal,
                        arguments: &m.arguments,
                    },
                    m.passive,
                )?;
                definitions_on_disk(session).await?;
                if !m.no_wait {
                    session.send_method(ch, ExchangeDeclareOk {});
                }
            }
            Method::ExchangeDelete(m) => {
                session.check_access(Access::Configure, Resource::Exchange, &m.exchange)?;
                self.vhost.delete_exchange(&m.exchange, m.if_unused)?;
                definitions_on_disk(session).await?;
                if !m.no_wait {
                    session.send_method(ch, ExchangeDeleteOk {});
                }
            }
            Method::ExchangeBind(m) => {
                session.check_access(Access::Write, Resource::Exchange, &m.destination)?;
                session.check_access(Access::Read, Resource::Exchange, &m.source)?;
                self.vhost.bind_exchange(
                    &m.destination,
                    &m.source,
                    &m.routing_key,
                    &m.arguments,
                )?;
                definitions_on_disk(session).await?;
                if !m.no_wait {
                    session.send_method(ch, ExchangeBindOk {});
                }
            }
            Method::ExchangeUnbind(m) => {
                session.check_access(Access::Write, Resource::Exchange, &m.destination)?;
                session.check_access(Access::Read, Resource::Exchange, &m.source)?;
                self.vhost.unbind_exchange(
                    &m.destination,
                    &m.source,
                    &m.routing_key,
                    &m.arguments,
                )?;
                definitions_on_disk(session).await?;
                if !m.no_wait {
                    session.send_method(ch, ExchangeUnbindOk {});
                }
            }
            Method::QueueDeclare(m) => {
                if m.passive && m.queue.as_str() == DIRECT_REPLY_TO {
                    session.send_method(
                        ch,
                        // RabbitMQ reports the pseudo-queue as having one consumer.
                        QueueDeclareOk {
                            queue: m.queue.clone(),
                            message_count: 0,
                            consumer_count: 1,
                        },
                    );
                    return Ok(());
                }
                let declaration = QueueDeclaration {
                    name: &m.queue,
                    durable: m.durable,
                    exclusive: m.exclusive,
                    auto_delete: m.auto_delete,
                    arguments: &m.arguments,
                };
                let queue = if m.passive {
                    let name = self.queue_name(&m.queue)?;
                    let queue = self.vhost.queue(&name, session.connection_id)?;
                    queue.declared_again();
                    queue
                } else {
                    let name = self.vhost.queue_name_to_declare(&m.queue)?;
                    session.check_access(Access::Configure, Resource::Queue, &name)?;
                    self.vhost
                        .declare_named_queue(name, declaration, session.connection_id)?
                };
                self.last_queue = Some(queue.name.clone());
                definitions_on_disk(session).await?;
                if !m.no_wait {
                    let stats = queue.stats().await?;
                    session.send_method(
                        ch,
                        QueueDeclareOk {
                            queue: queue.name.clone(),
                            message_count: stats.message_count,
                            consumer_count: stats.consumer_count,
                        },
                    );
                }
            }
            Method::QueueBind(m) => {
                session.check_access(
                    Access::Write,
                    Resource::Queue,
                    &self.queue_name(&m.queue)?,
                )?;
                session.check_access(Access::Read, Resource::Exchange, &m.exchange)?;
                let queue = self.existing_queue(&m.queue, session)?;
                self.vhost
                    .bind_queue(&queue, &m.exchange, &m.routing_key, &m.arguments)?;
                definitions_on_disk(session).await?;
                if !m.no_wait {
                    session.send_method(ch, QueueBindOk {});
                }
            }
            Method::QueueUnbind(m) => {
                session.check_access(
                    Access::Write,
                    Resource::Queue,
                    &self.queue_name(&m.queue)?,
                )?;
                session.check_access(Access::Read, Resource::Exchange, &m.exchange)?;
                let queue = self.existing_queue(&m.queue, session)?;
                self.vhost
                    .unbind_queue(&queue, &m.exchange, &m.routing_key, &m.arguments)?;
                definitions_on_disk(session).await?;
                session.send_method(ch, QueueUnbindOk {});
            }
            Method::QueuePurge(m) => {
                session.check_access(Access::Read, Resource::Queue, &self.queue_name(&m.queue)?)?;
                let queue = self.existing_queue(&m.queue, session)?;
                let message_count = queue.purge().await?;
                if !m.no_wait {
                    session.send_method(ch, QueuePurgeOk { message_count });
                }
            }
            Method::QueueDelete(m) => {
                let name = self.queue_name(&m.queue)?;
                session.check_access(Access::Configure, Resource::Queue, &name)?;
                let message_count = match self.vhost.queue(&name, session.connection_id) {
                    Ok(queue) => queue.delete(m.if_unused, m.if_empty).await?,
                    // Deleting a queue that does not exist succeeds, as in RabbitMQ.
                    Err(e) if e.reply_code == reply_code::NOT_FOUND => 0,
                    Err(e) => return Err(e),
                };
                definitions_on_disk(session).await?;
                if !m.no_wait {
                    session.send_method(ch, QueueDeleteOk { message_count });
                }
            }
            Method::BasicQos(m) => self.handle_basic_qos(m, session)?,
            Method::BasicConsume(m) => self.handle_basic_consume(m, session).await?,
            Method::BasicCancel(m) => self.handle_basic_cancel(m, session),
            Method::BasicPublish(_)
            | Method::BasicAck(_)
            | Method::BasicNack(_)
            | Method::BasicReject(_) => self.handle_hot_method(method)?,
            Method::BasicGet(m) => self.handle_basic_get(m, session).await?,
            Method::BasicRecover(m) => {
                self.recover(m.requeue)?;
                session.send_method(ch, BasicRecoverOk {});
            }
            Method::BasicRecoverAsync(m) => self.recover(m.requeue)?,
            Method::TxSelect(_) => {
                if self.confirms.is_some() {
                    return Err(AmqpException::precondition_failed(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                self.tx.get_or_insert_with(Transaction::default);
                session.send_method(ch, TxSelectOk {});
            }
            Method::TxCommit(_) => {
                let tx = self.tx.take().ok_or_else(not_transactional)?;
                self.tx = Some(Transaction::default());
                for (unacked, how) in tx.acks {
                    self.apply_settle(vec![unacked], how);
                }
                for pending in tx.publishes {
                    let exchange = self.vhost.existing_exchange(&pending.publish.exchange)?;
                    self.route_and_enqueue(&exchange, pending.publish, pending.message, session);
                }
                session.send_method(ch, TxCommitOk {});
            }
            Method::TxRollback(_) => {
                let tx = self.tx.as_mut().ok_or_else(not_transactional)?;
                let acks = std::mem::take(&mut tx.acks);
                tx.publishes.clear();
                for (unacked, _) in acks {
                    let at = self
                        .unacked
                        .partition_point(|u| u.delivery_tag < unacked.delivery_tag);
                    self.unacked.insert(at, unacked);
                }
                session.send_method(ch, TxRollbackOk {});
            }
            Method::ConfirmSelect(m) => {
                if self.tx.is_some() {
                    return Err(AmqpException::precondition_failed(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                self.confirms.get_or_insert_with(Confirms::new);
                if !m.no_wait {
                    session.send_method(ch, ConfirmSelectOk {});
                }
            }
            other => {
                return Err(AmqpException::command_invalid(format!(
                    "unexpected method '{}' on channel {ch}",
                    other.name()
                )))
            }
        }
        Ok(())
    }

    /// An empty queue name means the queue last declared on this channel.
    fn queue_name(&self, name: &ShortStr) -> AmqpResult<ShortStr> {
        if !name.is_empty() {
            return Ok(name.clone());
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpException::not_found("no previously declared queue"))
    }

    fn existing_queue(&self, name: &ShortStr, session: &Session) -> AmqpResult<QueueRef> {
        let name = self.queue_name(name)?;
        self.vhost.queue(&name, session.connection_id)
    }

    fn handle_basic_qos(&mut self, m: BasicQos, session: &mut Session) -> AmqpResult<()> {
        if m.prefetch_size != 0 {
            return Err(AmqpException::not_implemented(format!(
                "prefetch_size!=0 ({})",
                m.prefetch_size
            )));
        }
        let limit = u32::from(m.prefetch_count);
        if m.global {
            self.channel_credit.set_limit(limit);
            self.wake_consumer_queues();
        } else {
            self.consumer_prefetch = limit;
        }
        session.send_method(self.id, BasicQosOk {});
        Ok(())
    }

    async fn handle_basic_consume(
        &mut self,
        m: BasicConsume,
        session: &mut Session,
    ) -> AmqpResult<()> {
        let consumer_tag = if m.consumer_tag.is_empty() {
            generate_name("amq.ctag-")
        } else {
            m.consumer_tag.clone()
        };
        if self.consumers.contains_key(&consumer_tag) {
            return Err(AmqpException::not_allowed(format!(
                "attempt to reuse consumer tag '{consumer_tag}'"
            )));
        }
        let window = if m.no_ack {
            NO_ACK_WINDOW
        } else {
            self.consumer_prefetch
        };
        let credit = Arc::new(Credit::new(window));
        if m.queue.as_str() == DIRECT_REPLY_TO {
            self.consume_direct_reply_to(&m, consumer_tag.clone(), session)?;
            self.consumers.insert(
                consumer_tag.clone(),
                ChannelConsumer {
                    queue: None,
                    credit,
                },
            );
        } else {
            session.check_access(Access::Read, Resource::Queue, &self.queue_name(&m.queue)?)?;
            let queue = self.existing_queue(&m.queue, session)?;
            let priority = self.vhost.consumer_priority(&m.arguments, &queue.name)?;
            let consumer = Consumer {
                connection_id: session.connection_id,
                channel_id: self.id,
                consumer_tag: consumer_tag.clone(),
                no_ack: m.no_ack,
                exclusive: m.exclusive,
                priority,
                credit: credit.clone(),
                channel_credit: self.channel_credit.clone(),
                sink: session.sink.clone(),
            };
            queue.consume(consumer).await?;
            self.info.consumer_added(ConsumerInfo {
                consumer_tag: consumer_tag.to_string(),
                queue: queue.name.to_string(),
                ack_required: !m.no_ack,
                exclusive: m.exclusive,
                prefetch_count: window,
                arguments: m.arguments.clone(),
            });
            self.consumers.insert(
                consumer_tag.clone(),
                ChannelConsumer {
                    queue: Some(queue),
                    credit,
                },
            );
        }
        if !m.no_wait {
            session.send_method(self.id, BasicConsumeOk { consumer_tag });
        }
        Ok(())
    }

    fn consume_direct_reply_to(
        &mut self,
        m: &BasicConsume,
        consumer_tag: ShortStr,
        session: &Session,
    ) -> AmqpResult<()> {
        if !m.no_ack {
            return Err(AmqpException::precondition_failed(
                "reply consumer cannot acknowledge",
            ));
        }
        if self.reply_to.is_some() {
            return Err(AmqpException::precondition_failed(
                "reply consumer already set",
            ));
        }
        let reply_to = generate_name(&format!("{DIRECT_REPLY_TO}."));
        session.broker.register_reply_consumer(
            reply_to.clone(),
            ReplyConsumer {
                channel_id: self.id,
                consumer_tag: consumer_tag.clone(),
                sink: session.sink.clone(),
            },
        );
        self.reply_to = Some((reply_to, consumer_tag));
        Ok(())
    }

    fn handle_basic_cancel(&mut self, m: BasicCancel, session: &mut Session) {
        self.cancel_consumer(&m.consumer_tag, session);
        if !m.no_wait {
            session.send_method(
                self.id,
                BasicCancelOk {
                    consumer_tag: m.consumer_tag,
                },
            );
        }
    }

    fn cancel_consumer(&mut self, consumer_tag: &ShortStr, session: &Session) {
        let Some(consumer) = self.consumers.remove(consumer_tag) else {
            return;
        };
        self.info.consumer_removed(consumer_tag);
        consumer.credit.close();
        match consumer.queue {
            Some(queue) => queue.send(QueueCommand::Cancel {
                connection_id: session.connection_id,
                channel_id: self.id,
                consumer_tag: consumer_tag.clone(),
            }),
            None => {
                if let Some((reply_to, _)) = self.reply_to.take() {
                    session.broker.unregister_reply_consumer(&reply_to);
                }
            }
        }
    }

    /// The queue of a consumer was deleted: forget the consumer and tell the client if it
    /// understands server-sent basic.cancel.
    pub fn consumer_cancelled_by_queue(&mut self, consumer_tag: ShortStr, session: &mut Session) {
        let Some(consumer) = self.consumers.remove(&consumer_tag) else {
            return;
        };
        self.info.consumer_removed(&consumer_tag);
        consumer.credit.close();
        if session.capabilities.consumer_cancel_notify && !self.closing {
            session.send_method(
                self.id,
                BasicCancel {
                    consumer_tag,
                    no_wait: true,
                },
            );
        }
    }

    async fn handle_basic_get(&mut self, m: BasicGet, session: &mut Session) -> AmqpResult<()> {
        session.check_access(Access::Read, Resource::Queue, &self.queue_name(&m.queue)?)?;
        let queue = self.existing_queue(&m.queue, session)?;
        match queue.get(m.no_ack).await? {
            None => {
                self.info.stats.get_empty.add(1);
                session.send_method(self.id, BasicGetEmpty {})
            }
            Some((queued, message_count)) => {
                let stats = &self.info.stats;
                let counter = if m.no_ack {
                    &stats.get_no_ack
                } else {
                    &stats.get
                };
                counter.add(1);
                stats.redeliver.add(u64::from(queued.redelivered));
                let delivery_tag = self.next_tag();
                if !m.no_ack {
                    self.unacked.push_back(Unacked {
                        delivery_tag,
                        queue: queue.clone(),
                        message_id: queued.id,
                        credit: None,
                    });
                }
                let message = &queued.message;
                encode_method_frame(
                    self.id,
                    &Method::BasicGetOk(BasicGetOk {
                        delivery_tag,
                        redelivered: queued.redelivered,
                        exchange: message.exchange.clone(),
                        routing_key: message.routing_key.clone(),
                        message_count,
                    }),
                    &mut session.out,
                );
                write_content(self.id, message, session);
            }
        }
        Ok(())
    }

    pub fn has_unacked(&self) -> bool {
        !self.unacked.is_empty()
    }

    /// One tick of the consumer timeout (RabbitMQ's `consumer_timeout`, or a queue's
    /// `x-consumer-timeout`): the 406 that closes this channel if a delivery has waited for its
    /// acknowledgement longer than that.
    pub fn check_consumer_timeout(
        &mut self,
        now: Instant,
        default_ms: u64,
    ) -> Option<AmqpException> {
        let Some(oldest) = self.unacked.front().map(|u| u.delivery_tag) else {
            self.delivery_clock.marks.clear();
            return None;
        };
        let clock = &mut self.delivery_clock;
        clock.marks.push_back((now, self.next_delivery_tag - 1));
        // A mark matters while a later one still covers no outstanding delivery.
        while clock.marks.len() > 2 && clock.marks[1].1 < oldest {
            clock.marks.pop_front();
        }
        let mut last_queue: Option<(&QueueRef, u64)> = None;
        for unacked in &self.unacked {
            let timeout_ms = match last_queue {
                Some((queue, ms)) if Arc::ptr_eq(queue, &unacked.queue) => ms,
                _ => {
                    let ms = unacked
                        .queue
                        .config
                        .arguments
                        .get("x-consumer-timeout")
                        .and_then(amqp::FieldValue::as_i64)
                        .and_then(|ms| u64::try_from(ms).ok())
                        .unwrap_or(default_ms);
                    last_queue = Some((&unacked.queue, ms));
                    ms
                }
            };
            if timeout_ms == 0 {
                continue;
            }
            let overdue = self
                .delivery_clock
                .delivered_before(now, Duration::from_millis(timeout_ms));
            if unacked.delivery_tag <= overdue {
                return Some(AmqpException::precondition_failed(format!(
                    "delivery acknowledgement on channel {} timed out. Timeout value used: {timeout_ms} ms. This timeout value can be configured, see consumers doc guide to learn more",
                    self.id
                )));
            }
        }
        None
    }

    fn next_tag(&mut self) -> u64 {
        let tag = self.next_delivery_tag;
        self.next_delivery_tag += 1;
        tag
    }

    /// basic.ack / nack / reject. The tag must be outstanding; `multiple` also settles every
    /// earlier one, and tag 0 with `multiple` settles everything (RabbitMQ's rules).
    fn settle(&mut self, delivery_tag: u64, multiple: bool, how: Settle) -> AmqpResult<()> {
        let settled: Vec<Unacked> = if multiple && delivery_tag == 0 {
            self.unacked.drain(..).collect()
        } else {
            let index = self
                .unacked
                .binary_search_by_key(&delivery_tag, |u| u.delivery_tag)
                .map_err(|_| {
                    AmqpException::precondition_failed(format!(
                        "unknown delivery tag {delivery_tag}"
                    ))
                })?;
            if multiple {
                self.unacked.drain(..=index).collect()
            } else {
                self.unacked.remove(index).into_iter().collect()
            }
        };
        if let Some(tx) = &mut self.tx {
            tx.acks.extend(settled.into_iter().map(|u| (u, how)));
            return Ok(());
        }
        self.apply_settle(settled, how);
        Ok(())
    }

    /// Tells queues about settled deliveries, one command per run of the same queue, and
    /// gives prefetch credit back.
    fn apply_settle(&mut self, settled: Vec<Unacked>, how: Settle) {
        if how == Settle::Ack {
            self.info.stats.ack.add(settled.len() as u64);
        }
        let mut starved = false;
        let mut batch: Vec<MessageId> = Vec::new();
        let mut batch_queue: Option<QueueRef> = None;
        let send = |queue: &QueueRef, ids: Vec<MessageId>| {
            queue.send(match how {
                Settle::Ack => QueueCommand::Ack(ids),
                Settle::Requeue => QueueCommand::Requeue {
                    ids,
                    redelivered: true,
                },
                Settle::Discard => QueueCommand::Discard(ids),
            })
        };
        for unacked in settled {
            if let Some(credit) = &unacked.credit {
                starved |= credit.release(1);
                starved |= self.channel_credit.release(1);
            }
            match &batch_queue {
                Some(q) if Arc::ptr_eq(q, &unacked.queue) => {}
                _ => {
                    if let Some(q) = batch_queue.take() {
                        send(&q, std::mem::take(&mut batch));
                    }
                    batch_queue = Some(unacked.queue.clone());
                }
            }
            batch.push(unacked.message_id);
        }
        if let Some(q) = batch_queue {
            send(&q, batch);
        }
        if starved {
            self.wake_consumer_queues();
        }
    }

    /// Credit came back: every queue this channel consumes from may deliver again.
    fn wake_consumer_queues(&self) {
        for consumer in self.consumers.values() {
            if let Some(queue) = &consumer.queue {
                queue.send(QueueCommand::CreditAvailable);
            }
        }
    }

    fn recover(&mut self, requeue: bool) -> AmqpResult<()> {
        if !requeue {
            return Err(AmqpException::not_implemented("requeue=false"));
        }
        let all: Vec<Unacked> = self.unacked.drain(..).collect();
        self.apply_settle(all, Settle::Requeue);
        Ok(())
    }

    pub fn handle_content_header(
        &mut self,
        header: ContentHeader,
        session: &mut Session,
    ) -> AmqpResult<()> {
        let publish = match std::mem::replace(&mut self.content, Content::Idle) {
            Content::AwaitingHeader(publish) => publish,
            Content::Idle => return Err(unexpected_content()),
            body @ Content::AwaitingBody { .. } => {
                self.content = body;
                return Err(self.unexpected_method_error());
            }
        };
        if header.class_id != CLASS_BASIC {
            return Err(AmqpException::unexpected_frame(format!(
                "expected content header for class 60, got one for class {} instead",
                header.class_id
            )));
        }
        let body_size = usize::try_from(header.body_size).unwrap_or(usize::MAX);
        let properties = header.property_bytes;
        // An oversized body is counted but not kept, and refused once it has all arrived.
        let body = if body_size > session.config.max_message_size_bytes {
            Body::Discarded(0)
        } else {
            Body::Empty
        };
        self.content = Content::AwaitingBody {
            publish,
            properties,
            body_size,
            body,
        };
        self.complete_if_whole(session)
    }

    pub fn handle_content_body(&mut self, payload: Bytes, session: &mut Session) -> AmqpResult<()> {
        match &mut self.content {
            Content::AwaitingBody {
                body, body_size, ..
            } => {
                let taken = std::mem::replace(body, Body::Empty);
                *body = taken.push(payload, *body_size);
            }
            Content::AwaitingHeader(_) => return Err(self.unexpected_method_error()),
            Content::Idle => return Err(unexpected_content()),
        }
        self.complete_if_whole(session)
    }

    fn complete_if_whole(&mut self, session: &mut Session) -> AmqpResult<()> {
        let Content::AwaitingBody {
            body, body_size, ..
        } = &self.content
        else {
            return Ok(());
        };
        if body.len() < *body_size {
            return Ok(());
        }
        let Content::AwaitingBody {
            publish,
            properties,
            body_size,
            body,
        } = std::mem::replace(&mut self.content, Content::Idle)
        else {
            return Ok(());
        };
        if body.len() > body_size {
            return Err(AmqpException::frame_error(format!(
                "body of {} bytes exceeds the {body_size} announced in the content header",
                body.len()
            )));
        }
        if let Body::Discarded(_) = body {
            let max = session.config.max_message_size_bytes;
            let limit = if max == Config::default().max_message_size_bytes {
                "max size"
            } else {
                "configured max size"
            };
            return Err(AmqpException::precondition_failed(format!(
                "message size {body_size} is larger than {limit} {max}"
            )));
        }
        self.publish(publish, properties, body.into_bytes(), session)
    }

    /// A complete message arrived: route it now, or hold it for tx.commit.
    fn publish(
        &mut self,
        publish: BasicPublish,
        mut properties: Bytes,
        body: Bytes,
        session: &mut Session,
    ) -> AmqpResult<()> {
        session.check_publish(&publish.exchange)?;
        let exchange = self
            .vhost
            .cached_exchange(&mut self.publish_exchange, &publish.exchange)?;
        if exchange.internal {
            return Err(AmqpException::access_refused(format!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                exchange.name,
                self.vhost.name()
            )));
        }
        let flags = property_flags(&properties);
        if flags & property_flag::USER_ID != 0 {
            check_user_id(&properties, &session.username)?;
        }
        if flags & property_flag::REPLY_TO != 0 {
            properties = self.rewrite_direct_reply_to(properties)?;
        }
        let message = Message::published(
            publish.exchange.clone(),
            publish.routing_key.clone(),
            properties,
            body,
        )?;
        if let Some(tx) = &mut self.tx {
            tx.publishes.push(PendingPublish { publish, message });
            return Ok(());
        }
        self.route_and_enqueue(&exchange, publish, message, session);
        Ok(())
    }

    /// A publisher asking for replies on `amq.rabbitmq.reply-to` gets this channel's
    /// generated reply name put in its place.
    fn rewrite_direct_reply_to(&self, properties: Bytes) -> AmqpResult<Bytes> {
        let Ok(mut decoded) = BasicProperties::decode(&properties) else {
            return Ok(properties);
        };
        if decoded.reply_to.as_ref().map(|r| r.as_str()) != Some(DIRECT_REPLY_TO) {
            return Ok(properties);
        }
        let Some((reply_to, _)) = &self.reply_to else {
            return Err(AmqpException::precondition_failed(
                "fast reply consumer does not exist",
            ));
        };
        decoded.reply_to = Some(reply_to.clone());
        let mut encoded = BytesMut::with_capacity(properties.len() + 32);
        decoded.encode(&mut encoded);
        Ok(encoded.freeze())
    }

    fn route_and_enqueue(
        &mut self,
        exchange: &Arc<Exchange>,
        publish: BasicPublish,
        message: Message,
        session: &mut Session,
    ) {
        self.info.stats.publish.add(1);
        let mut routed = std::mem::take(&mut self.routed);
        routed.clear();
        let mut held = std::mem::take(&mut self.held);
        held.clear();
        let mut delivered_directly = false;
        if exchange.is_default() && publish.routing_key.starts_with(DIRECT_REPLY_TO) {
            delivered_directly = self.deliver_direct_reply(&message, session);
        } else {
            self.vhost
                .route_publish(exchange, &message, &mut routed, &mut held);
        }
        // A message only held by a delayed exchange is returned too, as by RabbitMQ's plugin.
        if routed.is_empty() && !delivered_directly {
            let unroutable = if publish.mandatory {
                &self.info.stats.return_unroutable
            } else {
                &self.info.stats.drop_unroutable
            };
            unroutable.add(1);
            if publish.mandatory {
                encode_method_frame(
                    self.id,
                    &Method::BasicReturn(BasicReturn {
                        reply_code: reply_code::NO_ROUTE,
                        reply_text: ShortStr::from_static("NO_ROUTE"),
                        exchange: publish.exchange,
                        routing_key: publish.routing_key,
                    }),
                    &mut session.out,
                );
                write_content(self.id, &message, session);
            }
        }
        self.enqueue(&mut routed, &mut held, message, session);
        self.routed = routed;
        self.held = held;
    }

    /// Hands the message to its queues (through the per-read outbox) and to the delayed
    /// exchanges that hold it. In confirm mode, those that may refuse it or must write it to
    /// disk first get a token to answer with; if none must, it is confirmed at once.
    fn enqueue(
        &mut self,
        routed: &mut Vec<QueueRef>,
        held: &mut Vec<Hold>,
        message: Message,
        session: &Session,
    ) {
        let mut tokens = match &mut self.confirms {
            None => Vec::new(),
            Some(confirms) => {
                let waiting = routed
                    .iter()
                    .filter(|q| q.confirms_wait_for(&message))
                    .count()
                    + held
                        .iter()
                        .filter(|h| h.confirms_wait_for(&message))
                        .count();
                if waiting == 0 {
                    confirms.push(Outcome::Ack);
                    Vec::new()
                } else {
                    let seq = confirms.push(Outcome::Pending);
                    let key = ChannelKey {
                        channel_id: self.id,
                        serial: self.serial,
                    };
                    ConfirmToken::split(key, seq, waiting as u32, &session.sink)
                }
            }
        };
        // Tokens left over (a queue stopped refusing meanwhile) accept when dropped.
        if !held.is_empty() {
            for hold in held.drain(..) {
                let confirm = if !tokens.is_empty() && hold.confirms_wait_for(&message) {
                    tokens.pop()
                } else {
                    None
                };
                hold.hold(&message, confirm);
            }
        }
        if routed.is_empty() {
            return;
        }
        let message = Arc::new(message);
        for queue in routed.drain(..) {
            let confirm = if !tokens.is_empty() && queue.confirms_wait_for(&message) {
                tokens.pop()
            } else {
                None
            };
            self.outbox.stage(queue, message.clone(), confirm);
        }
    }

    /// Sends what this channel published since the last flush, one command per queue. Called
    /// at the end of each read and before any method that must see those publishes.
    pub fn flush_publishes(&mut self, session: &mut Session) {
        for (queue, staged) in self.outbox.batches.drain(..) {
            queue.send(match staged {
                Staged::One((message, confirm)) => QueueCommand::Publish { message, confirm },
                Staged::Many(batch) => QueueCommand::Publishes(batch),
            });
            hold_back_if_congested(&queue, session);
        }
    }

    fn deliver_direct_reply(&self, message: &Message, session: &Session) -> bool {
        let Some(consumer) = session.broker.reply_consumer(&message.routing_key) else {
            return false;
        };
        consumer
            .sink
            .send(ConnectionEvent::Deliver(DeliveryEvent {
                channel_id: consumer.channel_id,
                consumer_tag: consumer.consumer_tag.clone(),
                message: Arc::new(message.clone()),
                redelivered: false,
                source: None,
                credit: None,
            }))
            .is_ok()
    }

    /// Tells the client about every publish settled since the last flush. Called once per
    /// batch of input or events, so that a burst of publishes gets few acks.
    pub fn flush_confirms(&mut self, session: &mut Session) {
        self.show_state();
        if self.closing {
            return;
        }
        if let Some(confirms) = &mut self.confirms {
            let before = confirms.first_unsent;
            confirms.flush(self.id, session);
            self.info.stats.confirm.add(confirms.first_unsent - before);
        }
    }

    /// Refreshes what the management API shows of this channel; once per batch, so cheap.
    fn show_state(&self) {
        let gauges = &self.info.gauges;
        gauges.prefetch_count.set(u64::from(self.consumer_prefetch));
        gauges
            .global_prefetch_count
            .set(u64::from(self.channel_credit.limit()));
        gauges.consumer_count.set(self.consumers.len() as u64);
        gauges
            .messages_unacknowledged
            .set(self.unacked.len() as u64);
        let unconfirmed = self.confirms.as_ref().map_or(0, |c| c.unsent.len());
        gauges.messages_unconfirmed.set(unconfirmed as u64);
        let (publishes, acks) = self
            .tx
            .as_ref()
            .map_or((0, 0), |tx| (tx.publishes.len(), tx.acks.len()));
        gauges.messages_uncommitted.set(publishes as u64);
        gauges.acks_uncommitted.set(acks as u64);
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        gauges.confirm.store(self.confirms.is_some(), relaxed);
        gauges.transactional.store(self.tx.is_some(), relaxed);
    }

    /// Every queue of a pending confirm has answered.
    pub fn confirm_settled(&mut self, serial: u64, seq: u64, ack: bool) {
        if serial != self.serial {
            return;
        }
        if let Some(confirms) = &mut self.confirms {
            confirms.settle(seq, ack);
        }
    }

    /// A delivery from a queue (or a direct reply) for one of this channel's consumers.
    pub fn deliver(&mut self, delivery: DeliveryEvent, session: &mut Session) {
        let live = match &delivery.credit {
            Some(credit) => (!credit.is_closed()).then(|| credit.clone()),
            None => self
                .consumers
                .get(&delivery.consumer_tag)
                .map(|c| c.credit.clone()),
        };
        let credit = match live {
            Some(credit) if !self.closing => Some(credit),
            _ => {
                // The queue took channel credit for it; the consumer's own window died with it.
                if delivery.source.is_some() {
                    self.channel_credit.release(1);
                }
                Self::return_undelivered(delivery);
                return;
            }
        };
        let stats = &self.info.stats;
        let counter = if delivery.source.is_some() {
            &stats.deliver
        } else {
            &stats.deliver_no_ack
        };
        counter.add(1);
        stats.redeliver.add(u64::from(delivery.redelivered));
        let delivery_tag = self.next_tag();
        let message = delivery.message;
        encode_method_frame(
            self.id,
            &Method::BasicDeliver(BasicDeliver {
                consumer_tag: delivery.consumer_tag,
                delivery_tag,
                redelivered: delivery.redelivered,
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
            }),
            &mut session.out,
        );
        write_content(self.id, &message, session);
        let Some((queue, message_id)) = delivery.source else {
            // No ack will come: the no-ack window opens again as soon as it is written.
            if let Some(credit) = credit {
                if credit.release(1) {
                    self.wake_consumer_queues();
                }
            }
            return;
        };
        self.unacked.push_back(Unacked {
            delivery_tag,
            queue,
            message_id,
            credit,
        });
    }

    /// A delivery that reached no client goes back to its queue as if never sent.
    pub fn return_undelivered(delivery: DeliveryEvent) {
        if let Some((queue, message_id)) = delivery.source {
            queue.send(QueueCommand::Requeue {
                ids: vec![message_id],
                redelivered: false,
            });
        }
    }

    /// The channel is going away: put its unacknowledged messages back in their queues and
    /// stop its consumers. Their windows close first, so the requeued messages don't come
    /// back here; the requeues go before the cancels, so a single-active-consumer queue hands
    /// them to the next consumer ahead of newer messages, as RabbitMQ does.
    pub fn release(&mut self, session: &mut Session) {
        // Publishes already taken in still go to their queues.
        self.flush_publishes(session);
        for consumer in self.consumers.values() {
            consumer.credit.close();
        }
        if let Some(tx) = self.tx.take() {
            self.unacked.extend(tx.acks.into_iter().map(|(u, _)| u));
            self.unacked
                .make_contiguous()
                .sort_by_key(|u| u.delivery_tag);
        }
        let all: Vec<Unacked> = self.unacked.drain(..).collect();
        self.apply_settle(all, Settle::Requeue);
        let tags: Vec<ShortStr> = self.consumers.keys().cloned().collect();
        for tag in tags {
            self.cancel_consumer(&tag, session);
        }
        self.content = Content::Idle;
    }
}

/// A message may claim only the user that published it (RabbitMQ's validated user-id).
fn check_user_id(properties: &Bytes, username: &str) -> AmqpResult<()> {
    let claimed = BasicProperties::decode(properties)
        .ok()
        .and_then(|p| p.user_id);
    match claimed {
        Some(user_id) if user_id.as_str() != username => Err(AmqpException::precondition_failed(
            format!("user_id property set to '{user_id}' but authenticated user was '{username}'"),
        )),
        _ => Ok(()),
    }
}

/// Stops reading from this connection while a queue it publishes to is swamped.
fn hold_back_if_congested(queue: &QueueRef, session: &mut Session) {
    if session.throttled_by.is_none() && queue.is_congested() {
        session.throttled_by = Some(queue.clone());
    }
}

/// Waits until the definitions changed by the method being handled are on disk, so that its
/// -ok promises a durable result.
async fn definitions_on_disk(session: &Session) -> AmqpResult<()> {
    session.broker.definitions_synced().await.map_err(|error| {
        AmqpException::internal_error(format!("cannot write definitions: {error}"))
    })
}

fn not_transactional() -> AmqpException {
    AmqpException::precondition_failed("channel is not transactional")
}

/// The content header and body frames of a message going to the client.
fn write_content(channel: u16, message: &Message, session: &mut Session) {
    encode_content_header_frame(
        channel,
        CLASS_BASIC,
        message.body_size(),
        &message.properties,
        &mut session.out,
    );
    session
        .out
        .put_body(channel, &message.body, session.frame_max);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_counts_as_old_only_once_a_tick_after_it_is_that_old() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut clock = DeliveryClock::default();
        // Tags 1-3 went out before the tick at 0 ms, 4-6 before the one at 1000 ms.
        clock.marks.push_back((at(0), 3));
        clock.marks.push_back((at(1000), 6));
        let age = Duration::from_millis(500);
        assert_eq!(clock.delivered_before(at(400), age), 0);
        assert_eq!(clock.delivered_before(at(500), age), 3);
        assert_eq!(clock.delivered_before(at(1499), age), 3);
        assert_eq!(clock.delivered_before(at(1500), age), 6);
    }
}
