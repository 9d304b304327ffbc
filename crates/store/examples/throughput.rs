//! Throughput sanity run of the store on real files (not a test): appends of 1 KiB messages
//! without fsync, with one fsync per message, with group commit across queues, and recovery
//! and read-back speed. `cargo run -p store --release --example throughput [dir]`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use store::{FsStorage, LogConfig, QueueLog, Storage, Syncer};

const BODY: [u8; 1024] = [0x42; 1024];

fn open(storage: &Arc<dyn Storage>, dir: PathBuf, syncer: &Syncer) -> (QueueLog, store::Recovered) {
    QueueLog::open(storage.clone(), dir, syncer.handle(), LogConfig::default()).expect("open")
}

fn rate(n: u64, t: Instant) -> String {
    let s = t.elapsed().as_secs_f64();
    format!("{:>10.0}/s ({n} in {s:.2}s)", n as f64 / s)
}

fn main() {
    let base = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let root = tempfile::tempdir_in(base).expect("temp dir");
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new());
    let syncer = Syncer::start().expect("syncer");

    // 1. No fsync (transient, or persistent without commit): buffered appends.
    let n = 1_000_000u64;
    let dir = root.path().join("nofsync");
    let (mut log, _) = open(&storage, dir.clone(), &syncer);
    let t = Instant::now();
    for id in 0..n {
        log.append(id, true, &[b"amq.direct", b"key", b"\x90\x00", &BODY])
            .expect("append");
    }
    log.flush().expect("flush");
    println!("append 1 KiB, no fsync:              {}", rate(n, t));
    let t = Instant::now();
    log.commit().expect("commit").wait().expect("fsync");
    println!(
        "  then one fsync of ~1 GiB took {:.2}s",
        t.elapsed().as_secs_f64()
    );
    drop(log);

    // Recovery and read-back of those 1M messages.
    let t = Instant::now();
    let (mut log, r) = open(&storage, dir, &syncer);
    println!(
        "recover {} messages:             {}",
        r.messages.len(),
        rate(r.messages.len() as u64, t)
    );
    let t = Instant::now();
    let mut out = Vec::with_capacity(1024);
    let mut bytes = 0usize;
    for chunk in r.messages.chunks(1024) {
        let positions: Vec<_> = chunk.iter().map(|m| m.position).collect();
        out.clear();
        log.read_many(&positions, &mut out).expect("read");
        bytes += out
            .iter()
            .map(|p| p.part(3).map_or(0, |b| b.len()))
            .sum::<usize>();
    }
    println!(
        "read back (read_many, 1024 a call):  {}",
        rate(r.messages.len() as u64, t)
    );
    assert_eq!(bytes, r.messages.len() * 1024);
    let t = Instant::now();
    let acks: Vec<_> = r.messages.iter().map(|m| (m.id, m.position)).collect();
    log.ack(&acks).expect("ack");
    log.flush().expect("flush");
    println!(
        "ack all (deletes the segments):      {}",
        rate(acks.len() as u64, t)
    );
    drop(log);

    // 2. One queue, one fsync per message: the disk's fsync rate.
    let n = 300u64;
    let (mut log, _) = open(&storage, root.path().join("each"), &syncer);
    let t = Instant::now();
    for id in 0..n {
        log.append(id, true, &[b"amq.direct", b"key", b"\x90\x00", &BODY])
            .expect("append");
        log.commit().expect("commit").wait().expect("fsync");
    }
    println!("append 1 KiB + commit each, 1 queue: {}", rate(n, t));
    drop(log);

    // 3. Group commit: many queues, each appending and waiting on its commit in a loop.
    for queues in [16usize, 64] {
        let before = syncer.stats();
        let per_queue = 200u64;
        let t = Instant::now();
        std::thread::scope(|scope| {
            for q in 0..queues {
                let storage = storage.clone();
                let dir = root.path().join(format!("g{queues}-{q}"));
                let syncer = &syncer;
                scope.spawn(move || {
                    let (mut log, _) = open(&storage, dir, syncer);
                    for id in 0..per_queue {
                        log.append(id, true, &[b"amq.direct", b"key", b"\x90\x00", &BODY])
                            .expect("append");
                        log.commit().expect("commit").wait().expect("fsync");
                    }
                });
            }
        });
        let after = syncer.stats();
        println!(
            "append + commit each, {queues:>2} queues:    {}  [{} rounds, {} file fsyncs]",
            rate(per_queue * queues as u64, t),
            after.rounds - before.rounds,
            after.file_syncs - before.file_syncs
        );
    }

    // 4. One queue committing per batch of 100 (a reader's batch of publishes).
    let n = 100_000u64;
    let (mut log, _) = open(&storage, root.path().join("batch"), &syncer);
    let t = Instant::now();
    for id in 0..n {
        log.append(id, true, &[b"amq.direct", b"key", b"\x90\x00", &BODY])
            .expect("append");
        if id % 100 == 99 {
            log.commit().expect("commit").wait().expect("fsync");
        }
    }
    println!("append 1 KiB, commit per 100:        {}", rate(n, t));
}
