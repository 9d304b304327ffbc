//! Prefetch credit: how many unacknowledged deliveries a consumer (or a whole channel, with
//! `basic.qos global=true`) may hold. Shared between a channel and the queues that deliver to it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// A prefetch window. A limit of 0 means unlimited, as in AMQP.
#[derive(Debug, Default)]
pub struct Credit {
    limit: AtomicU32,
    in_flight: AtomicU32,
    /// Set by a queue that skipped a delivery for lack of credit, so that the channel knows
    /// to wake the queues when credit comes back.
    starved: AtomicBool,
    /// Set when the consumer owning this window is cancelled: deliveries still on their way
    /// to it go back to their queue. (A consumer's window lives exactly as long as it does.)
    closed: AtomicBool,
}

impl Credit {
    pub fn new(limit: u32) -> Self {
        Credit {
            limit: AtomicU32::new(limit),
            ..Default::default()
        }
    }

    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Release);
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Acquire)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes one unit of credit if the window has room.
    pub fn try_acquire(&self) -> bool {
        let limit = self.limit();
        if limit == 0 {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        let mut current = self.in_flight.load(Ordering::Acquire);
        loop {
            if current >= limit {
                self.starved.store(true, Ordering::Release);
                return false;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Gives credit back; returns true if some queue went without for lack of it.
    pub fn release(&self, n: u32) -> bool {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            });
        self.starved.swap(false, Ordering::AcqRel)
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Raising the limit can unblock queues just like a release does.
    pub fn take_starved(&self) -> bool {
        self.starved.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_enforced_and_released() {
        let c = Credit::new(2);
        assert!(c.try_acquire());
        assert!(c.try_acquire());
        assert!(!c.try_acquire());
        assert!(c.release(1), "a refused acquire marks the window starved");
        assert!(c.try_acquire());
        assert!(!c.release(0));
    }

    #[test]
    fn zero_means_unlimited() {
        let c = Credit::new(0);
        for _ in 0..1000 {
            assert!(c.try_acquire());
        }
        assert_eq!(c.in_flight(), 1000);
    }
}
