//! Crash at every sync of a workload (and with a torn last write): no confirmed message is
//! lost, no payload comes back wrong, order is kept, transient messages never return.

mod common;

use common::*;
use std::collections::BTreeSet;
use store::{MemStorage, Position, QueueLog, Syncer};

#[derive(Default, Debug)]
struct Outcome {
    persistent: BTreeSet<u64>,
    confirmed: BTreeSet<u64>,
    acked: BTreeSet<u64>,
    completed: bool,
}

/// Batches of appends with commits, acks, delivered markers and segment roll-overs; stops at
/// the first error (the storage crashed).
fn workload(s: &MemStorage, syncer: &Syncer, out: &mut Outcome) -> Result<(), store::StoreError> {
    let storage: std::sync::Arc<dyn store::Storage> = std::sync::Arc::new(s.clone());
    let (mut log, _) = QueueLog::open(storage, dir(), syncer.handle(), small_segments())?;
    let mut live: Vec<(u64, Position)> = Vec::new();
    let mut next = 0u64;
    for batch in 0..12u64 {
        let mut appended = Vec::new();
        for _ in 0..(batch % 4 + 2) {
            let id = next;
            next += 1;
            let persistent = id % 7 != 3;
            let p = append_checked(&mut log, id, persistent)?;
            if persistent {
                out.persistent.insert(id);
                appended.push(id);
            }
            live.push((id, p));
        }
        if batch % 3 == 1 {
            // Deliver and ack the two oldest.
            let n = live.len().min(2);
            let acks: Vec<_> = live.drain(..n).collect();
            for &(id, p) in &acks {
                log.mark_delivered(id, p)?;
            }
            log.ack(&acks)?;
            out.acked.extend(acks.iter().map(|a| a.0));
        }
        if batch % 5 == 4 {
            log.flush()?;
        }
        log.commit()?.wait()?;
        out.confirmed.extend(appended);
    }
    log.close()?;
    out.completed = true;
    Ok(())
}

fn append_checked(
    log: &mut QueueLog,
    id: u64,
    persistent: bool,
) -> Result<Position, store::StoreError> {
    let rk = routing_key(id);
    let b = body(id);
    log.append(id, persistent, &[b"amq.direct", &rk, b"\x90\x00", &b])
}

fn check_recovery(image: &MemStorage, syncer: &Syncer, out: &Outcome, label: &str) {
    let (mut log, r) = open(image, syncer, small_segments());
    let got = ids(&r);
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "{label}: order {got:?}"
    );
    for id in &got {
        assert!(
            out.persistent.contains(id),
            "{label}: {id} was never a persistent append"
        );
    }
    for id in out.confirmed.difference(&out.acked) {
        assert!(got.contains(id), "{label}: confirmed message {id} lost");
    }
    if out.completed {
        let expected: Vec<u64> = out.persistent.difference(&out.acked).copied().collect();
        assert_eq!(got, expected, "{label}: after a clean close");
    }
    verify_all(&mut log, &r);
    // The recovered log takes new appends and recovers again.
    let id = r.next_id;
    assert!(out.persistent.iter().all(|p| *p < id) || !out.completed);
    append(&mut log, id + 1000, true);
    log.close().unwrap();
    let (_l, r2) = open(image, syncer, small_segments());
    let mut expected = got.clone();
    expected.push(id + 1000);
    assert_eq!(ids(&r2), expected, "{label}: second recovery");
}

#[test]
fn crash_at_every_sync_of_a_workload() {
    let syncer = Syncer::start().unwrap();
    let s = MemStorage::new();
    let mut full = Outcome::default();
    workload(&s, &syncer, &mut full).unwrap();
    let total = s.sync_attempts();
    assert!(total > 15, "the workload syncs {total} times");
    check_recovery(&s.crash(), &syncer, &full, "no crash");

    for n in 1..=total {
        let s = MemStorage::new();
        s.crash_at_sync(n);
        let mut out = Outcome::default();
        assert!(
            workload(&s, &syncer, &mut out).is_err(),
            "sync {n} should crash"
        );
        check_recovery(&s.crash(), &syncer, &out, &format!("crash at sync {n}"));
    }
}

#[test]
fn crash_at_every_sync_with_a_torn_last_write() {
    let syncer = Syncer::start().unwrap();
    let s = MemStorage::new();
    workload(&s, &syncer, &mut Outcome::default()).unwrap();
    let total = s.sync_attempts();
    for n in 1..=total {
        for keep in [1usize, 9, 23, 61, 150] {
            let s = MemStorage::new();
            s.crash_at_sync(n);
            let mut out = Outcome::default();
            let _ = workload(&s, &syncer, &mut out);
            s.tear_last_write(keep);
            check_recovery(
                &s.crash(),
                &syncer,
                &out,
                &format!("crash at sync {n}, torn to {keep} bytes"),
            );
        }
    }
}
