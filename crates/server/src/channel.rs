//! One AMQP channel: content assembly, the class handlers (exchange, queue, basic, tx,
//! confirm), delivery tags and unacknowledged deliveries, prefetch, confirms and transactions.
//! Holds no socket: handlers write replies into the session's output buffer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use amqp::{
    encode_body_frames, encode_content_header_frame, encode_method_frame, BasicAck, BasicCancel,
    BasicCancelOk, BasicConsume, BasicConsumeOk, BasicDeliver, BasicGet, BasicGetEmpty, BasicGetOk,
    BasicProperties, BasicPublish, BasicQos, BasicQosOk, BasicRecoverOk, BasicReturn,
    ChannelFlowOk, ConfirmSelectOk, ContentHeader, ExchangeBindOk, ExchangeDeclareOk,
    ExchangeDeleteOk, ExchangeUnbindOk, Method, QueueBindOk, QueueDeclareOk, QueueDeleteOk,
    QueuePurgeOk, QueueUnbindOk, ShortStr, TxCommitOk, TxRollbackOk, TxSelectOk, CLASS_BASIC,
};
use broker::consumer::{ConnectionEvent, Consumer, DeliveryEvent};
use broker::credit::Credit;
use broker::error::reply_code;
use broker::message::{property_flag, property_flags, Message};
use broker::names::generate_name;
use broker::queue::{MessageId, QueueCommand, QueueRef};
use broker::vhost::{Exchange, ExchangeDeclaration, QueueDeclaration, VHost, DIRECT_REPLY_TO};
use broker::{AmqpException, AmqpResult, ReplyConsumer};
use bytes::{Bytes, BytesMut};

use crate::connection::Session;

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
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(b) => b.len(),
            Body::Many(b) => b.len(),
        }
    }

    fn push(self, payload: Bytes, body_size: usize) -> Body {
        match self {
            Body::Empty => Body::One(payload),
            Body::One(first) => {
                let mut joined = BytesMut::with_capacity(body_size);
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
            Body::Empty => Bytes::new(),
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

struct ChannelConsumer {
    queue: Option<QueueRef>,
    credit: Arc<Credit>,
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

/// Publisher confirms: sequence numbers given and the range not yet acknowledged.
#[derive(Default)]
struct Confirms {
    next_seq: u64,
    /// First sequence number not yet confirmed to the client.
    unconfirmed_from: u64,
}

pub(crate) struct Channel {
    id: u16,
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
}

impl Channel {
    pub fn new(id: u16, vhost: Arc<VHost>, _session: &Session) -> Channel {
        Channel {
            id,
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
            routed: Vec::new(),
        }
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    pub fn mark_closing(&mut self) {
        self.closing = true;
    }

    fn session_id(&self, session: &Session) -> u64 {
        session.connection_id
    }

    pub async fn handle_method(&mut self, method: Method, session: &mut Session) -> AmqpResult<()> {
        if !matches!(self.content, Content::Idle) {
            return Err(AmqpException::unexpected_frame(
                "expected content header for class 60, got non content header frame instead",
            ));
        }
        let ch = self.id;
        match method {
            Method::ChannelFlow(flow) => {
                if !flow.active {
                    return Err(AmqpException::not_implemented("active=false"));
                }
                session.send_method(ch, ChannelFlowOk { active: true });
            }
            Method::ExchangeDeclare(m) => {
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
                if !m.no_wait {
                    session.send_method(ch, ExchangeDeclareOk {});
                }
            }
            Method::ExchangeDelete(m) => {
                self.vhost.delete_exchange(&m.exchange, m.if_unused)?;
                if !m.no_wait {
                    session.send_method(ch, ExchangeDeleteOk {});
                }
            }
            Method::ExchangeBind(m) => {
                self.vhost.bind_exchange(
                    &m.destination,
                    &m.source,
                    &m.routing_key,
                    &m.arguments,
                )?;
                if !m.no_wait {
                    session.send_method(ch, ExchangeBindOk {});
                }
            }
            Method::ExchangeUnbind(m) => {
                self.vhost.unbind_exchange(
                    &m.destination,
                    &m.source,
                    &m.routing_key,
                    &m.arguments,
                )?;
                if !m.no_wait {
                    session.send_method(ch, ExchangeUnbindOk {});
                }
            }
            Method::QueueDeclare(m) => {
                if m.passive && m.queue.as_str() == DIRECT_REPLY_TO {
                    session.send_method(
                        ch,
                        QueueDeclareOk {
                            queue: m.queue.clone(),
                            message_count: 0,
                            consumer_count: 0,
                        },
                    );
                    return Ok(());
                }
                let name = if m.passive {
                    self.queue_name(&m.queue)?
                } else {
                    m.queue.clone()
                };
                let queue = self.vhost.declare_queue(
                    QueueDeclaration {
                        name: &name,
                        durable: m.durable,
                        exclusive: m.exclusive,
                        auto_delete: m.auto_delete,
                        arguments: &m.arguments,
                    },
                    m.passive,
                    self.session_id(session),
                )?;
                self.last_queue = Some(queue.name.clone());
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
                let queue = self.existing_queue(&m.queue, session)?;
                self.vhost
                    .bind_queue(&queue, &m.exchange, &m.routing_key, &m.arguments)?;
                if !m.no_wait {
                    session.send_method(ch, QueueBindOk {});
                }
            }
            Method::QueueUnbind(m) => {
                let queue = self.existing_queue(&m.queue, session)?;
                self.vhost
                    .unbind_queue(&queue, &m.exchange, &m.routing_key, &m.arguments)?;
                session.send_method(ch, QueueUnbindOk {});
            }
            Method::QueuePurge(m) => {
                let queue = self.existing_queue(&m.queue, session)?;
                let message_count = queue.purge().await?;
                if !m.no_wait {
                    session.send_method(ch, QueuePurgeOk { message_count });
                }
            }
            Method::QueueDelete(m) => {
                let name = self.queue_name(&m.queue)?;
                let message_count = match self.vhost.queue(&name, self.session_id(session)) {
                    Ok(queue) => queue.delete(m.if_unused, m.if_empty).await?,
                    // Deleting a queue that does not exist succeeds, as in RabbitMQ.
                    Err(e) if e.reply_code == reply_code::NOT_FOUND => 0,
                    Err(e) => return Err(e),
                };
                if !m.no_wait {
                    session.send_method(ch, QueueDeleteOk { message_count });
                }
            }
            Method::BasicQos(m) => self.handle_basic_qos(m, session)?,
            Method::BasicConsume(m) => self.handle_basic_consume(m, session).await?,
            Method::BasicCancel(m) => self.handle_basic_cancel(m, session),
            Method::BasicPublish(m) => {
                if m.immediate {
                    return Err(AmqpException::not_implemented("immediate=true"));
                }
                self.content = Content::AwaitingHeader(m);
            }
            Method::BasicGet(m) => self.handle_basic_get(m, session).await?,
            Method::BasicAck(m) => self.settle(m.delivery_tag, m.multiple, Settle::Ack, session)?,
            Method::BasicNack(m) => {
                let how = if m.requeue {
                    Settle::Requeue
                } else {
                    Settle::Discard
                };
                self.settle(m.delivery_tag, m.multiple, how, session)?
            }
            Method::BasicReject(m) => {
                let how = if m.requeue {
                    Settle::Requeue
                } else {
                    Settle::Discard
                };
                self.settle(m.delivery_tag, false, how, session)?
            }
            Method::BasicRecover(m) => {
                self.recover(m.requeue, session)?;
                session.send_method(ch, BasicRecoverOk {});
            }
            Method::BasicRecoverAsync(m) => self.recover(m.requeue, session)?,
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
                    self.apply_settle(vec![unacked], how, session);
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
                self.confirms.get_or_insert(Confirms {
                    next_seq: 1,
                    unconfirmed_from: 1,
                });
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
        self.vhost.queue(&name, self.session_id(session))
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
        let credit = Arc::new(Credit::new(self.consumer_prefetch));
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
            let queue = self.existing_queue(&m.queue, session)?;
            let priority = m
                .arguments
                .get("x-priority")
                .and_then(|v| v.as_i64())
                .unwrap_or(0)
                .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
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
        if self.consumers.remove(&consumer_tag).is_some()
            && session.capabilities.consumer_cancel_notify
            && !self.closing
        {
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
        let queue = self.existing_queue(&m.queue, session)?;
        match queue.get(m.no_ack).await? {
            None => session.send_method(self.id, BasicGetEmpty {}),
            Some((queued, message_count)) => {
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

    fn next_tag(&mut self) -> u64 {
        let tag = self.next_delivery_tag;
        self.next_delivery_tag += 1;
        tag
    }

    /// basic.ack / nack / reject. The tag must be outstanding; `multiple` also settles every
    /// earlier one, and tag 0 with `multiple` settles everything (RabbitMQ's rules).
    fn settle(
        &mut self,
        delivery_tag: u64,
        multiple: bool,
        how: Settle,
        session: &mut Session,
    ) -> AmqpResult<()> {
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
        self.apply_settle(settled, how, session);
        Ok(())
    }

    /// Tells queues about settled deliveries, one command per run of the same queue, and
    /// gives prefetch credit back.
    fn apply_settle(&mut self, settled: Vec<Unacked>, how: Settle, _session: &mut Session) {
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

    fn recover(&mut self, requeue: bool, session: &mut Session) -> AmqpResult<()> {
        if !requeue {
            return Err(AmqpException::not_implemented("requeue=false"));
        }
        let all: Vec<Unacked> = self.unacked.drain(..).collect();
        self.apply_settle(all, Settle::Requeue, session);
        Ok(())
    }

    pub fn handle_content_header(
        &mut self,
        header: ContentHeader,
        session: &mut Session,
    ) -> AmqpResult<()> {
        let publish = match std::mem::replace(&mut self.content, Content::Idle) {
            Content::AwaitingHeader(publish) => publish,
            _ => {
                return Err(AmqpException::unexpected_frame(
                    "expected method frame, got non method frame instead",
                ))
            }
        };
        if header.class_id != CLASS_BASIC {
            return Err(AmqpException::unexpected_frame(format!(
                "content header for class {} does not match basic.publish",
                header.class_id
            )));
        }
        let max = session.config.max_message_size_bytes;
        if header.body_size > max as u64 {
            return Err(AmqpException::precondition_failed(format!(
                "message size {} is larger than configured max size {max}",
                header.body_size
            )));
        }
        let body_size = header.body_size as usize;
        let properties = header.property_bytes;
        if body_size == 0 {
            return self.publish(publish, properties, Bytes::new(), session);
        }
        self.content = Content::AwaitingBody {
            publish,
            properties,
            body_size,
            body: Body::Empty,
        };
        Ok(())
    }

    pub fn handle_content_body(&mut self, payload: Bytes, session: &mut Session) -> AmqpResult<()> {
        let Content::AwaitingBody {
            publish,
            properties,
            body_size,
            body,
        } = std::mem::replace(&mut self.content, Content::Idle)
        else {
            return Err(AmqpException::unexpected_frame(
                "expected method frame, got non method frame instead",
            ));
        };
        let body = body.push(payload, body_size);
        match body.len().cmp(&body_size) {
            std::cmp::Ordering::Less => {
                self.content = Content::AwaitingBody {
                    publish,
                    properties,
                    body_size,
                    body,
                };
                Ok(())
            }
            std::cmp::Ordering::Equal => {
                self.publish(publish, properties, body.into_bytes(), session)
            }
            std::cmp::Ordering::Greater => Err(AmqpException::frame_error(format!(
                "body of {} bytes exceeds the {body_size} announced in the content header",
                body.len()
            ))),
        }
    }

    /// A complete message arrived: route it now, or hold it for tx.commit.
    fn publish(
        &mut self,
        publish: BasicPublish,
        mut properties: Bytes,
        body: Bytes,
        session: &mut Session,
    ) -> AmqpResult<()> {
        let exchange = self.vhost.existing_exchange(&publish.exchange)?;
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
        let persistent = flags & property_flag::DELIVERY_MODE != 0
            && BasicProperties::decode(&properties)
                .map(|p| p.is_persistent())
                .unwrap_or(false);
        let message = Message {
            exchange: publish.exchange.clone(),
            routing_key: publish.routing_key.clone(),
            properties,
            body,
            persistent,
        };
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
        let mut routed = std::mem::take(&mut self.routed);
        routed.clear();
        let mut delivered_directly = false;
        if exchange.is_default() && publish.routing_key.starts_with(DIRECT_REPLY_TO) {
            delivered_directly = self.deliver_direct_reply(&message, session);
        } else {
            self.vhost.route(
                exchange,
                &publish.routing_key,
                &message.properties,
                &mut routed,
            );
        }
        if routed.is_empty() && !delivered_directly {
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
        } else if !routed.is_empty() {
            let message = Arc::new(message);
            for queue in routed.drain(..) {
                queue.send(QueueCommand::Publish(message.clone()));
            }
        }
        self.routed = routed;
        if let Some(confirms) = &mut self.confirms {
            confirms.next_seq += 1;
        }
    }

    fn deliver_direct_reply(&self, message: &Message, _session: &mut Session) -> bool {
        let Some(consumer) = self.reply_consumer(&message.routing_key, _session) else {
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
            }))
            .is_ok()
    }

    fn reply_consumer(&self, routing_key: &str, session: &Session) -> Option<ReplyConsumer> {
        session.broker.reply_consumer(routing_key)
    }

    /// Acknowledges, with one basic.ack, every publish confirmed since the last flush. Called
    /// once per batch of input so that a burst of publishes gets few acks.
    pub fn flush_confirms(&mut self, session: &mut Session) {
        let Some(confirms) = &mut self.confirms else {
            return;
        };
        let last = confirms.next_seq - 1;
        if last < confirms.unconfirmed_from || self.closing {
            return;
        }
        let multiple = last > confirms.unconfirmed_from;
        confirms.unconfirmed_from = last + 1;
        session.send_method(
            self.id,
            BasicAck {
                delivery_tag: last,
                multiple,
            },
        );
    }

    /// A delivery from a queue (or a direct reply) for one of this channel's consumers.
    pub fn deliver(&mut self, delivery: DeliveryEvent, session: &mut Session) {
        let credit = match self.consumers.get(&delivery.consumer_tag) {
            Some(consumer) if !self.closing => Some(consumer.credit.clone()),
            _ => {
                // The queue took channel credit for it; the consumer's own window died with it.
                if delivery.source.is_some() {
                    self.channel_credit.release(1);
                }
                Self::return_undelivered(delivery);
                return;
            }
        };
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
        if let Some((queue, message_id)) = delivery.source {
            self.unacked.push_back(Unacked {
                delivery_tag,
                queue,
                message_id,
                credit,
            });
        }
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

    /// The channel is going away: stop its consumers and put its unacknowledged messages back
    /// in their queues (consumers first, so the requeued messages don't come back here).
    pub fn release(&mut self, session: &mut Session) {
        let tags: Vec<ShortStr> = self.consumers.keys().cloned().collect();
        for tag in tags {
            self.cancel_consumer(&tag, session);
        }
        if let Some(tx) = self.tx.take() {
            self.unacked.extend(tx.acks.into_iter().map(|(u, _)| u));
            self.unacked
                .make_contiguous()
                .sort_by_key(|u| u.delivery_tag);
        }
        let all: Vec<Unacked> = self.unacked.drain(..).collect();
        self.apply_settle(all, Settle::Requeue, session);
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
    encode_body_frames(channel, &message.body, session.frame_max, &mut session.out);
}
