//! Behaviour of one queue log over `MemStorage`: appends and reads, acks and segment
//! deletion, ordering across roll-overs, recovery from torn, truncated and corrupted files,
//! group commit, failure handling.

mod common;

use common::*;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{LogConfig, MemStorage, Storage, StoreError, Syncer};

/// Closes the sync gate; opens it again when dropped, so a failing test does not leave the
/// syncer blocked forever (its drop would then hang).
struct Gate(MemStorage);

impl Gate {
    fn close(s: &MemStorage) -> Gate {
        s.close_sync_gate();
        Gate(s.clone())
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.0.open_sync_gate();
    }
}

fn poll_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn append_read_back_from_buffer_and_file() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, r) = open(&s, &syncer, LogConfig::default());
    assert!(r.messages.is_empty());
    assert_eq!(r.next_id, 0);
    let a = append(&mut log, 1, true);
    let b = append(&mut log, 2, false);
    // Still in the write buffer.
    assert_eq!(s.write_count(), 0);
    assert_payload(&log.read(a).unwrap(), 1);
    let pb = log.read(b).unwrap();
    assert_payload(&pb, 2);
    assert!(!pb.persistent());
    log.flush().unwrap();
    assert_eq!(s.write_count(), 1, "one write for the whole buffer");
    assert_payload(&log.read(a).unwrap(), 1);
    let mut out = Vec::new();
    log.read_many(&[a, b, a], &mut out).unwrap();
    assert_eq!(out.len(), 3);
    assert_payload(&out[0], 1);
    assert_payload(&out[1], 2);
    assert_payload(&out[2], 1);
    assert!(a < b, "positions order as appended");
}

#[test]
fn large_records_are_written_without_the_buffer() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let config = LogConfig {
        segment_max_bytes: 1 << 20,
        write_buffer_bytes: 4096,
    };
    let (mut log, _) = open(&s, &syncer, config.clone());
    let small = append(&mut log, 1, true);
    let big_body = vec![7u8; 10_000];
    let big = log.append(2, true, &[b"x", &big_body]).unwrap();
    // The buffered small record went first, then the big one straight from its slices.
    assert_eq!(s.write_count(), 2);
    assert_eq!(log.read(big).unwrap().part(1).unwrap(), &big_body[..]);
    assert_payload(&log.read(small).unwrap(), 1);
    log.close().unwrap();
    let (_log, r) = open(&s, &syncer, config);
    assert_eq!(ids(&r), vec![1, 2]);
}

#[test]
fn clean_restart_returns_live_persistent_messages_in_order() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, small_segments());
    let mut pos = Vec::new();
    for id in 0..100 {
        pos.push((id, append(&mut log, id, id % 5 != 0)));
    }
    let acked: Vec<_> = pos.iter().copied().filter(|(id, _)| id % 3 == 0).collect();
    log.ack(&acked).unwrap();
    assert!(log.stats().segments > 5, "small segments roll over");
    log.close().unwrap();

    let (mut log, r) = open(&s, &syncer, small_segments());
    let expected: Vec<u64> = (0..100).filter(|id| id % 5 != 0 && id % 3 != 0).collect();
    assert_eq!(
        ids(&r),
        expected,
        "order kept across segments, acked and transient gone"
    );
    assert_eq!(r.next_id, 100);
    assert!(r.messages.iter().all(|m| !m.redelivered));
    verify_all(&mut log, &r);
    assert_eq!(log.stats().live_messages, expected.len() as u64);

    // Appends after a restart go after the recovered ones.
    let p = append(&mut log, 100, true);
    assert!(r.messages.iter().all(|m| m.position < p));
    log.close().unwrap();
    let (_log, r2) = open(&s, &syncer, small_segments());
    let mut expected2 = expected.clone();
    expected2.push(100);
    assert_eq!(ids(&r2), expected2);
}

#[test]
fn fully_acked_segments_are_deleted_and_disk_reclaimed() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, small_segments());
    let mut pos = Vec::new();
    for id in 0..200 {
        pos.push((id, append(&mut log, id, true)));
    }
    log.commit().unwrap().wait().unwrap();
    let before = s.bytes_under(Path::new("/data"));
    assert!(before > 40_000, "{before}");
    let segments = log.stats().segments;
    // Everything but the last message.
    log.ack(&pos[..199]).unwrap();
    log.flush().unwrap();
    let after = s.bytes_under(Path::new("/data"));
    assert!(
        after < 2 * 2048 + 200,
        "only the tail is left: {after} bytes"
    );
    assert_eq!(log.stats().segments, 1);
    assert!(segments > 10);
    assert_eq!(seg_files(&s, &dir()).len(), 1);
    log.ack(&pos[199..]).unwrap();
    // The tail stays until it rolls over; then it goes too.
    assert_eq!(log.stats().live_messages, 0);
    let mut more = Vec::new();
    for id in 200..260 {
        more.push((id, append(&mut log, id, true)));
    }
    log.ack(&more).unwrap();
    assert_eq!(log.stats().segments, 1);
    log.close().unwrap();
    // Recovery deletes a tail with nothing live.
    let (log, r) = open(&s, &syncer, small_segments());
    assert!(r.messages.is_empty());
    assert_eq!(r.next_id, 260);
    assert_eq!(log.stats().segments, 0);
    assert!(seg_files(&s, &dir()).is_empty());
    assert!(
        s.list_dir(&dir()).unwrap().is_empty(),
        "no ack file left either"
    );
}

#[test]
fn acks_and_delivered_markers_survive_a_process_kill_once_flushed() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, small_segments());
    let pos: Vec<_> = (0..30).map(|id| (id, append(&mut log, id, true))).collect();
    log.commit().unwrap().wait().unwrap();
    for &(id, p) in &pos[..10] {
        log.mark_delivered(id, p).unwrap();
    }
    log.ack(&pos[..5]).unwrap();
    log.flush().unwrap();
    // Not flushed: lost with the process.
    log.ack(&pos[5..7]).unwrap();
    // kill -9: no destructor, no close; what reached the OS stays.
    std::mem::forget(log);
    let (mut log, r) = open(&s, &syncer, small_segments());
    assert_eq!(ids(&r), (5..30).collect::<Vec<_>>());
    for m in &r.messages {
        assert_eq!(m.redelivered, m.id < 10, "message {}", m.id);
    }
    verify_all(&mut log, &r);
}

#[test]
fn torn_tail_keeps_everything_before_it() {
    for keep in [0usize, 1, 7, 8, 20, 40, 100] {
        let s = MemStorage::new();
        let syncer = Syncer::start().unwrap();
        let (mut log, _) = open(&s, &syncer, LogConfig::default());
        for id in 0..10 {
            append(&mut log, id, true);
        }
        log.commit().unwrap().wait().unwrap();
        append(&mut log, 10, true);
        log.flush().unwrap();
        s.tear_last_write(keep);
        let img = s.crash();
        let (mut log, r) = open(&img, &syncer, LogConfig::default());
        assert_eq!(ids(&r), (0..10).collect::<Vec<_>>(), "keep {keep}");
        assert!(r.dropped_bytes > 0 || keep == 0, "keep {keep}");
        verify_all(&mut log, &r);
        // The torn bytes were cut: the file ends at the last good record.
        let seg = dir().join(&seg_files(&img, &dir())[0]);
        let last = r.messages.last().unwrap().position;
        assert_eq!(
            img.contents(&seg).unwrap().len() as u64,
            u64::from(last.offset() + last.len())
        );
        // Life goes on: new appends, another restart, nothing lost.
        append(&mut log, 11, true);
        log.close().unwrap();
        let (_log, r) = open(&img, &syncer, LogConfig::default());
        let mut expected: Vec<u64> = (0..10).collect();
        expected.push(11);
        assert_eq!(ids(&r), expected);
    }
}

#[test]
fn truncated_segment_recovers_the_records_before_the_cut() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, small_segments());
    let pos: Vec<_> = (0..40).map(|id| append(&mut log, id, true)).collect();
    log.close().unwrap();
    // Cut the second segment in the middle of its third record.
    let seg2: Vec<_> = pos.iter().filter(|p| p.segment() == 2).collect();
    assert!(seg2.len() > 3);
    let cut = seg2[2].offset() + seg2[2].len() / 2;
    let seg_path = dir().join(format!("{:016x}.seg", 2));
    s.chop(&seg_path, cut as usize).unwrap();
    let (mut log, r) = open(&s, &syncer, small_segments());
    let lost: Vec<u64> = (0..40)
        .filter(|&id| pos[id as usize].segment() == 2 && pos[id as usize] >= *seg2[2])
        .collect();
    let expected: Vec<u64> = (0..40).filter(|id| !lost.contains(id)).collect();
    assert_eq!(ids(&r), expected, "later segments are still recovered");
    verify_all(&mut log, &r);
}

#[test]
fn crc_flip_in_the_middle_keeps_the_records_before_it() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, LogConfig::default());
    let pos: Vec<_> = (0..20).map(|id| append(&mut log, id, true)).collect();
    log.close().unwrap();
    let seg_path = dir().join(&seg_files(&s, &dir())[0]);
    // A byte of message 12's body.
    s.flip_byte(&seg_path, (pos[12].offset() + pos[12].len() - 3) as usize)
        .unwrap();
    let (mut log, r) = open(&s, &syncer, LogConfig::default());
    assert_eq!(ids(&r), (0..12).collect::<Vec<_>>());
    assert!(r.dropped_bytes > 0);
    verify_all(&mut log, &r);
    assert_eq!(r.next_id, 12);
}

#[test]
fn read_detects_a_checksum_mismatch() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, LogConfig::default());
    let p = append(&mut log, 1, true);
    log.flush().unwrap();
    let seg_path = dir().join(&seg_files(&s, &dir())[0]);
    s.flip_byte(&seg_path, (p.offset() + p.len() - 1) as usize)
        .unwrap();
    match log.read(p) {
        Err(StoreError::ChecksumMismatch { file, offset }) => {
            assert_eq!(file, seg_path);
            assert_eq!(offset, u64::from(p.offset()));
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
}

#[test]
fn unreadable_header_sets_the_segment_aside_and_other_queues_start() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let other_dir = Path::new("/data/queues/%2F/other");
    let (mut other, _) = open_at(&s, &syncer, other_dir, small_segments());
    append(&mut other, 1, true);
    other.close().unwrap();

    let (mut log, _) = open(&s, &syncer, small_segments());
    let pos: Vec<_> = (0..40).map(|id| append(&mut log, id, true)).collect();
    log.close().unwrap();
    let seg1 = dir().join(format!("{:016x}.seg", 1));
    s.flip_byte(&seg1, 2).unwrap();
    let (mut log, r) = open(&s, &syncer, small_segments());
    let expected: Vec<u64> = (0..40)
        .filter(|&id| pos[id as usize].segment() != 1)
        .collect();
    assert_eq!(ids(&r), expected);
    verify_all(&mut log, &r);
    assert!(s
        .list_dir(&dir())
        .unwrap()
        .contains(&format!("{:016x}.seg.corrupt", 1)));
    drop(log);
    let (_other, r) = open_at(&s, &syncer, other_dir, small_segments());
    assert_eq!(ids(&r), vec![1]);
}

#[test]
fn unsupported_version_is_refused_without_touching_the_file() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, LogConfig::default());
    append(&mut log, 1, true);
    log.close().unwrap();
    let seg = dir().join(&seg_files(&s, &dir())[0]);
    let mut bytes = s.contents(&seg).unwrap();
    // Version 2 with a valid header CRC: a file from a newer Warren.
    bytes[4] = 2;
    let crc = crc32c::crc32c(&bytes[0..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    let f = s.create(&seg).unwrap();
    f.append(&[std::io::IoSlice::new(&bytes)]).unwrap();
    let st: Arc<dyn Storage> = Arc::new(s.clone());
    match store::QueueLog::open(st, dir(), syncer.handle(), LogConfig::default()) {
        Err(StoreError::Corrupted { file, offset }) => {
            assert_eq!(file, seg);
            assert_eq!(offset, 4);
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
    assert_eq!(s.contents(&seg).unwrap(), bytes);
}

#[test]
fn group_commit_serves_many_waiters_with_few_fsyncs() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let queues = 8;
    let mut logs: Vec<_> = (0..queues)
        .map(|q| {
            open_at(
                &s,
                &syncer,
                &dir().join(format!("q{q}")),
                LogConfig::default(),
            )
            .0
        })
        .collect();
    let base_files = s.file_sync_count();
    let base_dirs = s.dir_sync_count();
    let _gate = Gate::close(&s);
    // First commit: the syncer takes it and blocks inside fsync.
    append(&mut logs[0], 0, true);
    let first = logs[0].commit().unwrap();
    poll_until("the syncer to block", || s.syncs_waiting_at_gate() >= 1);
    // Meanwhile every queue commits message after message: 8 x 50 waiters.
    let mut commits = Vec::new();
    for id in 1..=50 {
        for log in logs.iter_mut() {
            append(log, id, true);
            commits.push(log.commit().unwrap());
        }
    }
    s.open_sync_gate();
    first.wait().unwrap();
    for c in commits {
        c.wait().unwrap();
    }
    let file_syncs = s.file_sync_count() - base_files;
    let dir_syncs = s.dir_sync_count() - base_dirs;
    // Round 1: queue 0's file and dir. Round 2: each queue's file once, each dir once.
    assert_eq!(file_syncs, 1 + queues as u64, "file fsyncs");
    assert_eq!(dir_syncs, queues as u64, "dir fsyncs");
    let stats = syncer.stats();
    assert_eq!(stats.rounds, 2);
    assert_eq!(stats.requests, 1 + 50 * queues as u64);
}

#[test]
fn transient_appends_are_never_fsynced() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, small_segments());
    let before = s.sync_attempts();
    for id in 0..100 {
        append(&mut log, id, false);
        let mut c = log.commit().unwrap();
        assert!(
            c.try_result().is_some(),
            "nothing to sync: resolved at once"
        );
    }
    assert_eq!(s.sync_attempts(), before);
    assert_eq!(syncer.stats().requests, 0);
}

#[test]
fn commit_then_calls_back_after_the_fsync() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, LogConfig::default());
    append(&mut log, 1, true);
    let seen = Arc::new(Mutex::new(None));
    let seen2 = seen.clone();
    let syncs_before = s.file_sync_count();
    let s2 = s.clone();
    log.commit_then(move |r| {
        *seen2.lock().unwrap() = Some((r.is_ok(), s2.file_sync_count()));
    });
    poll_until("the callback", || seen.lock().unwrap().is_some());
    let (ok, syncs_at_callback) = seen.lock().unwrap().unwrap();
    assert!(ok);
    assert_eq!(
        syncs_at_callback,
        syncs_before + 1,
        "called after the fsync"
    );
    // Nothing to sync: called right away on this thread.
    let direct = Arc::new(Mutex::new(false));
    let d2 = direct.clone();
    log.commit_then(move |r| *d2.lock().unwrap() = r.is_ok());
    assert!(*direct.lock().unwrap());
}

#[test]
fn a_failed_fsync_fails_the_commit_and_stops_the_log() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, LogConfig::default());
    append(&mut log, 1, true);
    s.crash_at_sync(1);
    assert!(matches!(
        log.commit().unwrap().wait(),
        Err(StoreError::Io(_))
    ));
    assert!(log.append(2, true, &[b"x"]).is_err());
    assert!(log.commit().is_err());
}

#[test]
fn commit_after_the_syncer_stopped_fails() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, LogConfig::default());
    drop(syncer);
    append(&mut log, 1, true);
    assert!(log.commit().unwrap().wait().is_err());
}

#[test]
fn caller_errors_are_refused() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, LogConfig::default());
    let parts: Vec<&[u8]> = vec![b"x"; 17];
    assert!(log.append(1, true, &parts).is_err());
    // The log is still usable: a refused append is not a failed write.
    let p = append(&mut log, 2, true);
    assert_payload(&log.read(p).unwrap(), 2);
}

#[test]
fn destroy_removes_the_queue_directory() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, LogConfig::default());
    append(&mut log, 1, true);
    log.commit().unwrap().wait().unwrap();
    log.destroy().unwrap();
    assert!(!s.exists(&dir()).unwrap());
    let img = s.crash();
    assert!(!img.exists(&dir()).unwrap(), "the removal is durable");
}

#[test]
fn works_on_real_files() {
    let tmp = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(store::FsStorage::new());
    let syncer = Syncer::start().unwrap();
    let qdir = store::queue_dir(tmp.path(), "/", "orders");
    let (mut log, r) =
        store::QueueLog::open(storage.clone(), &qdir, syncer.handle(), small_segments()).unwrap();
    assert!(r.messages.is_empty());
    let pos: Vec<_> = (0..50).map(|id| (id, append(&mut log, id, true))).collect();
    log.commit().unwrap().wait().unwrap();
    log.ack(&pos[..20]).unwrap();
    std::mem::forget(log); // a process kill after the commit
    let (mut log, r) =
        store::QueueLog::open(storage.clone(), &qdir, syncer.handle(), small_segments()).unwrap();
    // Fully acked segments were unlinked at once; the acks of the partly acked one were
    // never flushed, so its acked messages come back (at-least-once).
    let first = ids(&r)[0];
    assert!(first > 0 && first < 20, "first recovered id {first}");
    assert_eq!(ids(&r), (first..50).collect::<Vec<_>>());
    verify_all(&mut log, &r);
    let acks: Vec<_> = r.messages.iter().map(|m| (m.id, m.position)).collect();
    log.ack(&acks[..acks.len() - 1]).unwrap();
    log.close().unwrap();
    let (_log, r) =
        store::QueueLog::open(storage, &qdir, syncer.handle(), small_segments()).unwrap();
    assert_eq!(ids(&r), vec![49]);
    let segs = std::fs::read_dir(&qdir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count();
    assert_eq!(segs, 1, "acked segments deleted on disk");
}

#[test]
fn commits_of_one_log_resolve_in_order() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, LogConfig::default());
    let _gate = Gate::close(&s);
    append(&mut log, 1, true);
    let mut first = log.commit().unwrap();
    poll_until("the syncer to block", || s.syncs_waiting_at_gate() >= 1);
    // Nothing new to sync, but it must not overtake the first commit.
    append(&mut log, 2, false);
    let mut second = log.commit().unwrap();
    assert!(second.try_result().is_none());
    assert!(first.try_result().is_none());
    s.open_sync_gate();
    first.wait().unwrap();
    second.wait().unwrap();
    // With nothing in flight, an empty commit is answered at once.
    let mut third = log.commit().unwrap();
    poll_until("the answer", || third.try_result().is_some());
}

#[tokio::test]
async fn commit_is_a_future() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, LogConfig::default());
    append(&mut log, 1, true);
    let before = s.file_sync_count();
    log.commit().unwrap().await.unwrap();
    assert_eq!(s.file_sync_count(), before + 1);
}

#[test]
fn acks_spread_over_many_segments_survive_a_clean_close() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, small_segments());
    let pos: Vec<_> = (0..300)
        .map(|id| (id, append(&mut log, id, true)))
        .collect();
    assert!(log.stats().segments > 20);
    // One ack per segment per flush: more ack files than the log keeps open.
    for round in 0..3 {
        for chunk in pos.chunks(5) {
            if let Some(&a) = chunk.get(round) {
                log.ack(&[a]).unwrap();
                log.flush().unwrap();
            }
        }
    }
    log.close().unwrap();
    let (_log, r) = open(&s.crash(), &syncer, small_segments());
    let acked: Vec<u64> = pos
        .chunks(5)
        .flat_map(|c| c.iter().take(3).map(|p| p.0))
        .collect();
    let expected: Vec<u64> = (0..300).filter(|id| !acked.contains(id)).collect();
    assert_eq!(ids(&r), expected);
}
