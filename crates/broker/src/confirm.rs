//! Publisher confirms that wait on queues: a publish routed to queues that may refuse it or
//! must write it to disk first (and to delayed exchanges that must log it, which answer the
//! same way) is confirmed when every one of them has answered.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::consumer::{ConnectionEvent, ConnectionSink};

/// Identifies a channel across its reuse of a channel number within one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelKey {
    pub channel_id: u16,
    pub serial: u64,
}

struct PendingConfirm {
    channel: ChannelKey,
    seq: u64,
    remaining: AtomicU32,
    rejected: AtomicBool,
    sink: ConnectionSink,
}

impl PendingConfirm {
    fn settle_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.sink.send(ConnectionEvent::Confirm {
                channel: self.channel,
                seq: self.seq,
                ack: !self.rejected.load(Ordering::Acquire),
            });
        }
    }
}

/// One queue's (or delayed exchange's) share of a pending confirm. Dropping it accepts the
/// message (a queue that goes away without answering counts as accepting, like a deleted
/// RabbitMQ queue); `reject` makes the publisher get basic.nack.
pub struct ConfirmToken(Arc<PendingConfirm>);

impl ConfirmToken {
    /// Tokens for `queues` queues; the confirm goes to `sink` once all are settled.
    pub fn split(
        channel: ChannelKey,
        seq: u64,
        queues: u32,
        sink: &ConnectionSink,
    ) -> Vec<ConfirmToken> {
        let pending = Arc::new(PendingConfirm {
            channel,
            seq,
            remaining: AtomicU32::new(queues),
            rejected: AtomicBool::new(false),
            sink: sink.clone(),
        });
        (0..queues).map(|_| ConfirmToken(pending.clone())).collect()
    }

    pub fn reject(self) {
        self.0.rejected.store(true, Ordering::Release);
    }
}

impl Drop for ConfirmToken {
    fn drop(&mut self) {
        self.0.settle_one();
    }
}

impl std::fmt::Debug for ConfirmToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfirmToken(seq {})", self.0.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn confirms(rx: &mut mpsc::UnboundedReceiver<ConnectionEvent>) -> Vec<(u64, bool)> {
        let mut out = vec![];
        while let Ok(ConnectionEvent::Confirm { seq, ack, .. }) = rx.try_recv() {
            out.push((seq, ack));
        }
        out
    }

    #[test]
    fn confirm_is_sent_once_every_queue_answered() {
        let (sink, mut rx) = mpsc::unbounded_channel();
        let key = ChannelKey {
            channel_id: 1,
            serial: 1,
        };
        let mut tokens = ConfirmToken::split(key, 7, 2, &sink);
        drop(tokens.pop());
        assert!(confirms(&mut rx).is_empty());
        drop(tokens.pop());
        assert_eq!(confirms(&mut rx), vec![(7, true)]);
    }

    #[test]
    fn one_rejecting_queue_nacks_the_publish() {
        let (sink, mut rx) = mpsc::unbounded_channel();
        let key = ChannelKey {
            channel_id: 1,
            serial: 1,
        };
        let mut tokens = ConfirmToken::split(key, 3, 2, &sink);
        tokens.pop().unwrap().reject();
        drop(tokens);
        assert_eq!(confirms(&mut rx), vec![(3, false)]);
    }
}
