//! Property test: random appends, acks, deliveries, flushes, commits and restarts (clean,
//! process kill, power cut with or without a torn write, crash at the N-th sync) against a
//! model of what each guarantee promises.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use store::{LogConfig, MemStorage, Position, QueueLog, Storage, StoreError, Syncer};

/// How far something got: buffered in the log, handed to the OS, or fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    None,
    Buffered,
    Flushed,
    Synced,
}

#[derive(Clone, Debug)]
struct Msg {
    size: usize,
    persistent: bool,
    data: Level,
    acked: Level,
    delivered: Level,
    pos: Position,
}

#[derive(Clone, Debug)]
enum Op {
    Append { persistent: bool, size: usize },
    Ack(usize),
    Deliver(usize),
    Flush,
    Commit,
    CleanRestart,
    Kill,
    PowerCut { tear: Option<usize> },
    CrashAtSync(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<bool>(), prop_oneof![0usize..200, 200usize..3000])
            .prop_map(|(persistent, size)| Op::Append { persistent, size }),
        4 => any::<usize>().prop_map(Op::Ack),
        2 => any::<usize>().prop_map(Op::Deliver),
        2 => Just(Op::Flush),
        4 => Just(Op::Commit),
        1 => Just(Op::CleanRestart),
        1 => Just(Op::Kill),
        1 => proptest::option::of(0usize..400).prop_map(|tear| Op::PowerCut { tear }),
        1 => (1u64..6).prop_map(Op::CrashAtSync),
    ]
}

fn body(id: u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (id as usize ^ (i * 131)).wrapping_mul(7) as u8)
        .collect()
}

fn config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 4096,
        write_buffer_bytes: 4096,
    }
}

struct Harness {
    storage: MemStorage,
    syncer: Syncer,
    dir: PathBuf,
    log: Option<QueueLog>,
    msgs: BTreeMap<u64, Msg>,
    live: Vec<u64>,
    next_id: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    Clean,
    Kill,
    PowerCut,
}

impl Harness {
    fn new() -> Harness {
        let mut h = Harness {
            storage: MemStorage::new(),
            syncer: Syncer::start().unwrap(),
            dir: PathBuf::from("/data/queues/v/q"),
            log: None,
            msgs: BTreeMap::new(),
            live: Vec::new(),
            next_id: 0,
        };
        h.reopen(Restart::Clean).unwrap();
        h
    }

    /// Recovers and checks the outcome; `Err` if the armed crash fired during recovery.
    fn reopen(&mut self, kind: Restart) -> Result<(), StoreError> {
        let s: Arc<dyn Storage> = Arc::new(self.storage.clone());
        let (log, r) = QueueLog::open(s, &self.dir, self.syncer.handle(), config())?;
        let got: Vec<u64> = r.messages.iter().map(|m| m.id).collect();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{kind:?}: order {got:?}"
        );
        for m in &r.messages {
            let model = self
                .msgs
                .get(&m.id)
                .unwrap_or_else(|| panic!("{kind:?}: unknown id {}", m.id));
            assert!(model.persistent, "{kind:?}: transient {} came back", m.id);
            let must_be_gone = match kind {
                Restart::Clean | Restart::PowerCut => model.acked == Level::Synced,
                Restart::Kill => model.acked >= Level::Flushed,
            };
            assert!(
                !must_be_gone,
                "{kind:?}: acked {} came back: {model:?}",
                m.id
            );
            if m.redelivered {
                assert!(
                    model.delivered > Level::None,
                    "{kind:?}: {} never delivered",
                    m.id
                );
            }
            let must_be_marked = match kind {
                Restart::Clean | Restart::PowerCut => model.delivered == Level::Synced,
                Restart::Kill => model.delivered >= Level::Flushed,
            };
            assert!(
                !must_be_marked || m.redelivered,
                "{kind:?}: {} lost redelivered",
                m.id
            );
        }
        for (id, model) in &self.msgs {
            let must_be_there = model.persistent
                && model.acked == Level::None
                && match kind {
                    Restart::Clean | Restart::PowerCut => model.data == Level::Synced,
                    Restart::Kill => model.data >= Level::Flushed,
                };
            assert!(
                !must_be_there || got.contains(id),
                "{kind:?}: message {id} lost: {model:?}"
            );
        }
        let mut log = log;
        let mut msgs = BTreeMap::new();
        for m in &r.messages {
            let p = log.read(m.position)?;
            let model = &self.msgs[&m.id];
            assert_eq!(p.id(), m.id);
            assert_eq!(p.part(0).unwrap(), &m.id.to_le_bytes()[..]);
            assert_eq!(
                p.part(1).unwrap(),
                body(m.id, model.size),
                "payload of {}",
                m.id
            );
            // Recovery fsyncs what it keeps.
            msgs.insert(
                m.id,
                Msg {
                    size: model.size,
                    persistent: true,
                    data: Level::Synced,
                    acked: Level::None,
                    delivered: if m.redelivered {
                        Level::Synced
                    } else {
                        Level::None
                    },
                    pos: m.position,
                },
            );
        }
        self.live = got;
        self.msgs = msgs;
        self.next_id = self.next_id.max(r.next_id);
        self.log = Some(log);
        Ok(())
    }

    fn raise(&mut self, from: Level, to: Level, persistent_data_only: bool) {
        for m in self.msgs.values_mut() {
            if m.data >= from && m.data < to && (m.persistent || !persistent_data_only) {
                m.data = to;
            }
            if m.acked >= from && m.acked < to {
                m.acked = to;
            }
            if m.delivered >= from && m.delivered < to {
                m.delivered = to;
            }
        }
    }

    /// Runs one operation; `Err` means the storage crashed under it.
    fn step(&mut self, op: &Op) -> Result<(), StoreError> {
        let Some(log) = self.log.as_mut() else {
            unreachable!("the log is always open between operations")
        };
        match *op {
            Op::Append { persistent, size } => {
                let id = self.next_id;
                self.next_id += 1;
                let b = body(id, size);
                let pos = log.append(id, persistent, &[&id.to_le_bytes(), &b])?;
                self.msgs.insert(
                    id,
                    Msg {
                        size,
                        persistent,
                        data: Level::Buffered,
                        acked: Level::None,
                        delivered: Level::None,
                        pos,
                    },
                );
                self.live.push(id);
            }
            Op::Ack(i) if !self.live.is_empty() => {
                let id = self.live.remove(i % self.live.len());
                let m = self.msgs.get_mut(&id).unwrap();
                log.ack(&[(id, m.pos)])?;
                m.acked = Level::Buffered;
            }
            Op::Deliver(i) if !self.live.is_empty() => {
                let id = self.live[i % self.live.len()];
                let m = self.msgs.get_mut(&id).unwrap();
                if m.delivered == Level::None {
                    log.mark_delivered(id, m.pos)?;
                    m.delivered = Level::Buffered;
                }
            }
            Op::Ack(_) | Op::Deliver(_) => {}
            Op::Flush => {
                log.flush()?;
                self.raise(Level::Buffered, Level::Flushed, false);
            }
            Op::Commit => {
                let c = log.commit()?;
                self.raise(Level::Buffered, Level::Flushed, false);
                c.wait()?;
                for m in self.msgs.values_mut() {
                    if m.persistent && m.data < Level::Synced {
                        m.data = Level::Synced;
                    }
                }
            }
            Op::CleanRestart => {
                let log = self.log.take().unwrap();
                if let Err(e) = log.close() {
                    self.log = None;
                    return Err(e);
                }
                self.raise(Level::Buffered, Level::Synced, false);
                self.reopen(Restart::Clean)?;
            }
            Op::Kill => {
                std::mem::forget(self.log.take());
                self.reopen(Restart::Kill)?;
            }
            Op::PowerCut { tear } => {
                if let Some(keep) = tear {
                    self.storage.tear_last_write(keep);
                }
                self.power_cut();
            }
            Op::CrashAtSync(n) => self.storage.crash_at_sync(n),
        }
        Ok(())
    }

    fn power_cut(&mut self) {
        let image = self.storage.crash();
        // Dropping the old log now only fails against the dead storage.
        self.log = None;
        self.storage = image;
        self.reopen(Restart::PowerCut)
            .expect("a rebooted storage always recovers");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn log_keeps_its_promises(ops in proptest::collection::vec(op(), 1..80)) {
        let mut h = Harness::new();
        for op in &ops {
            if h.step(op).is_err() {
                // The armed crash fired: reboot from what was durable.
                h.power_cut();
            }
        }
        // Whatever happened, a clean restart now returns exactly the live messages.
        let expected: Vec<u64> = h.live.iter().copied().filter(|id| h.msgs[id].persistent).collect();
        if h.step(&Op::CleanRestart).is_err() {
            h.power_cut();
        } else {
            prop_assert_eq!(h.live.clone(), expected);
        }
    }
}
