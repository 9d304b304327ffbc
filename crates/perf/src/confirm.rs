//! Publisher-confirm bookkeeping: which publish sequence numbers the broker has settled
//! (basic.ack / basic.nack, single or multiple) and how many are still in flight. Knows
//! nothing of sockets.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Default)]
struct Window {
    /// Lowest sequence number not yet settled.
    base: u64,
    /// Sequence number the next publish gets.
    next: u64,
    /// Settled flags for base..next (out-of-order single acks leave gaps).
    settled: VecDeque<bool>,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub acked: u64,
    pub nacked: u64,
}

pub struct ConfirmTracker {
    window: Mutex<Window>,
    /// Woken each time the window shrinks.
    pub progress: Notify,
}

impl Default for ConfirmTracker {
    fn default() -> Self {
        ConfirmTracker {
            window: Mutex::new(Window {
                base: 1,
                next: 1,
                settled: VecDeque::new(),
            }),
            progress: Notify::new(),
        }
    }
}

impl ConfirmTracker {
    pub fn published(&self, n: u64) {
        let mut w = self.window.lock();
        w.next += n;
        w.settled.extend(std::iter::repeat_n(false, n as usize));
    }

    /// Sequence numbers published and not yet settled, counting any gap below the highest
    /// settled one (as a semaphore-based limiter would not, but the difference is brief).
    pub fn in_flight(&self) -> u64 {
        let w = self.window.lock();
        w.next - w.base
    }

    pub fn settle(&self, delivery_tag: u64, multiple: bool, nack: bool) -> Settled {
        let mut newly = 0;
        {
            let mut w = self.window.lock();
            if delivery_tag >= w.base {
                let last = delivery_tag.min(w.next.saturating_sub(1));
                let first = if multiple { w.base } else { delivery_tag };
                let base = w.base;
                for tag in first..=last {
                    if let Some(flag) = w.settled.get_mut((tag - base) as usize) {
                        if !*flag {
                            *flag = true;
                            newly += 1;
                        }
                    }
                }
                while w.settled.front() == Some(&true) {
                    w.settled.pop_front();
                    w.base += 1;
                }
            }
        }
        if newly > 0 {
            self.progress.notify_one();
        }
        if nack {
            Settled {
                acked: 0,
                nacked: newly,
            }
        } else {
            Settled {
                acked: newly,
                nacked: 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiple_and_out_of_order_acks() {
        let t = ConfirmTracker::default();
        t.published(10);
        assert_eq!(t.in_flight(), 10);
        assert_eq!(t.settle(3, false, false).acked, 1);
        assert_eq!(t.in_flight(), 10, "a gap below tag 3 keeps the window open");
        assert_eq!(t.settle(5, true, false).acked, 4);
        assert_eq!(t.in_flight(), 5);
        assert_eq!(t.settle(7, false, true).nacked, 1);
        assert_eq!(t.settle(6, false, false).acked, 1);
        assert_eq!(t.in_flight(), 3);
        // Repeats and tags beyond what was published settle nothing new.
        assert_eq!(t.settle(6, false, false), Settled::default());
        assert_eq!(t.settle(99, true, false).acked, 3);
        assert_eq!(t.in_flight(), 0);
    }
}
