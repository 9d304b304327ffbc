//! What a queue knows of a consumer: whose it is, its credit, and where its deliveries go.
//! Also the events a queue sends to the connection that owns a consumer.

use std::sync::Arc;

use amqp::ShortStr;
use tokio::sync::mpsc;

use crate::confirm::ChannelKey;
use crate::credit::Credit;
use crate::message::Message;
use crate::queue::{MessageId, QueueRef};

/// Sent to a connection by queues (and by direct reply-to publishers).
#[derive(Debug)]
pub enum ConnectionEvent {
    Deliver(DeliveryEvent),
    /// The queue went away: tell the client with a server-sent basic.cancel.
    ConsumerCancelled {
        channel_id: u16,
        consumer_tag: ShortStr,
    },
    /// Every queue a confirmed publish went to has accepted it (`ack`) or one refused it.
    Confirm {
        channel: ChannelKey,
        seq: u64,
        ack: bool,
    },
}

#[derive(Debug)]
pub struct DeliveryEvent {
    pub channel_id: u16,
    pub consumer_tag: ShortStr,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// Where to send the ack; `None` for no-ack deliveries and direct reply-to.
    pub source: Option<(QueueRef, MessageId)>,
    /// The consumer's prefetch window, which also says whether it was cancelled meanwhile;
    /// `None` for direct reply-to, whose consumer the channel looks up by tag.
    pub credit: Option<Arc<Credit>>,
}

pub type ConnectionSink = mpsc::UnboundedSender<ConnectionEvent>;

pub struct Consumer {
    pub connection_id: u64,
    pub channel_id: u16,
    pub consumer_tag: ShortStr,
    pub no_ack: bool,
    pub exclusive: bool,
    /// From the `x-priority` consume argument; higher is served first.
    pub priority: i32,
    /// The consumer's own prefetch window (basic.qos global=false before basic.consume).
    pub credit: Arc<Credit>,
    /// The channel's shared window (basic.qos global=true).
    pub channel_credit: Arc<Credit>,
    pub sink: ConnectionSink,
}

/// Deliveries a no-ack consumer may have on their way to its connection (queued in the
/// connection's inbox, not yet written out). Prefetch does not limit no-ack consumers, as in
/// RabbitMQ, but without a window a queue would pour its whole backlog, paged-out messages
/// included, into the memory of a connection that writes slower than the queue reads.
pub const NO_ACK_WINDOW: u32 = 2048;

impl Consumer {
    /// Takes credit for one delivery: the consumer's window (prefetch, or the no-ack window)
    /// and, for acknowledging consumers, the channel's (global qos).
    pub fn try_acquire_credit(&self) -> bool {
        if !self.credit.try_acquire() {
            return false;
        }
        if self.no_ack {
            return true;
        }
        if !self.channel_credit.try_acquire() {
            self.credit.release(1);
            return false;
        }
        true
    }

    pub fn release_credit(&self) {
        self.credit.release(1);
        if !self.no_ack {
            self.channel_credit.release(1);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A consumer with prefetch `prefetch` whose deliveries go nowhere; returns its credit.
    pub(crate) fn test_consumer(tag: &str, prefetch: u32, no_ack: bool) -> (Consumer, Arc<Credit>) {
        let credit = Arc::new(Credit::new(prefetch));
        let (sink, _rx) = mpsc::unbounded_channel();
        let consumer = Consumer {
            connection_id: 1,
            channel_id: 1,
            consumer_tag: ShortStr::new(tag).unwrap(),
            no_ack,
            exclusive: false,
            priority: 0,
            credit: credit.clone(),
            channel_credit: Arc::new(Credit::new(0)),
            sink,
        };
        (consumer, credit)
    }
}
