//! `QueueLog::open_visiting` and `open_each`: recovery hands each live message to the caller
//! (with its payload, or without) instead of collecting them, and the log works as after `open`.

mod common;

use common::*;
use std::sync::Arc;
use store::{QueueLog, Storage, Syncer};

#[test]
fn visiting_recovery_sees_exactly_what_open_would_return() {
    let storage = store::MemStorage::new();
    let syncer = Syncer::start().unwrap();
    {
        let (mut log, _) = open(&storage, &syncer, small_segments());
        let mut positions = Vec::new();
        for id in 0..40u64 {
            positions.push((id, append(&mut log, id, id % 5 != 0)));
        }
        let acked: Vec<_> = positions
            .iter()
            .copied()
            .filter(|(id, _)| id % 3 == 0)
            .collect();
        log.ack(&acked).unwrap();
        log.commit().unwrap().wait().unwrap();
        log.close().unwrap();
    }
    let (_, collected) = open(&storage, &syncer, small_segments());
    let expected = ids(&collected);
    assert!(!expected.is_empty());

    let s: Arc<dyn Storage> = Arc::new(storage.clone());
    let mut seen = Vec::new();
    let (mut log, recovered) =
        QueueLog::open_visiting(s, dir(), syncer.handle(), small_segments(), |m, payload| {
            assert_payload(&payload, m.id);
            seen.push(m);
        })
        .unwrap();
    assert!(recovered.messages.is_empty(), "nothing is collected");
    assert_eq!(recovered.next_id, collected.next_id);
    assert_eq!(seen, collected.messages);
    for m in &seen {
        assert_payload(&log.read(m.position).unwrap(), m.id);
    }
    let acks: Vec<_> = seen.iter().map(|m| (m.id, m.position)).collect();
    log.ack(&acks).unwrap();
    log.close().unwrap();
    let (_, after) = open(&storage, &syncer, small_segments());
    assert!(after.messages.is_empty());
}

#[test]
fn recovery_one_by_one_sees_what_open_would_return_without_payloads() {
    let storage = store::MemStorage::new();
    let syncer = Syncer::start().unwrap();
    {
        let (mut log, _) = open(&storage, &syncer, small_segments());
        let positions: Vec<_> = (0..30u64)
            .map(|id| (id, append(&mut log, id, id % 4 != 0)))
            .collect();
        log.ack(&positions[..5]).unwrap();
        log.close().unwrap();
    }
    let (_, collected) = open(&storage, &syncer, small_segments());
    assert!(!collected.messages.is_empty());

    let s: Arc<dyn Storage> = Arc::new(storage.clone());
    let mut seen = Vec::new();
    let (mut log, recovered) =
        QueueLog::open_each(s, dir(), syncer.handle(), small_segments(), |m| {
            seen.push(m)
        })
        .unwrap();
    assert!(recovered.messages.is_empty(), "nothing is collected");
    assert_eq!(recovered.next_id, collected.next_id);
    assert_eq!(seen, collected.messages);
    for m in &seen {
        assert_payload(&log.read(m.position).unwrap(), m.id);
    }
    log.close().unwrap();
}
