//! Helpers shared by the store's integration tests: a crashable storage, a syncer, and
//! messages whose every byte is derived from their id so a wrong payload is always noticed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::{LogConfig, MemStorage, Payload, Position, QueueLog, Recovered, Storage, Syncer};

pub const DIR: &str = "/data/queues/%2F/q";

pub fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

pub fn small_segments() -> LogConfig {
    LogConfig {
        segment_max_bytes: 2048,
        write_buffer_bytes: 4096,
    }
}

pub fn open(storage: &MemStorage, syncer: &Syncer, config: LogConfig) -> (QueueLog, Recovered) {
    let s: Arc<dyn Storage> = Arc::new(storage.clone());
    QueueLog::open(s, dir(), syncer.handle(), config).expect("open")
}

pub fn open_at(
    storage: &MemStorage,
    syncer: &Syncer,
    dir: &Path,
    config: LogConfig,
) -> (QueueLog, Recovered) {
    let s: Arc<dyn Storage> = Arc::new(storage.clone());
    QueueLog::open(s, dir, syncer.handle(), config).expect("open")
}

/// Body of message `id`: length and bytes depend on the id.
pub fn body(id: u64) -> Vec<u8> {
    let len = 20 + (id.wrapping_mul(37) % 300) as usize;
    (0..len)
        .map(|i| (id as usize).wrapping_mul(31).wrapping_add(i * 7) as u8)
        .collect()
}

pub fn routing_key(id: u64) -> Vec<u8> {
    format!("rk.{id}").into_bytes()
}

pub fn append(log: &mut QueueLog, id: u64, persistent: bool) -> Position {
    let rk = routing_key(id);
    let b = body(id);
    log.append(id, persistent, &[b"amq.direct", &rk, b"\x90\x00", &b])
        .expect("append")
}

/// Asserts that a payload is exactly what `append` wrote for `id`.
pub fn assert_payload(p: &Payload, id: u64) {
    assert_eq!(p.id(), id);
    let parts: Vec<_> = p.parts().collect();
    assert_eq!(parts.len(), 4, "message {id}");
    assert_eq!(&parts[0][..], b"amq.direct");
    assert_eq!(parts[1][..], routing_key(id)[..], "message {id}");
    assert_eq!(&parts[2][..], b"\x90\x00");
    assert_eq!(parts[3][..], body(id)[..], "message {id}");
}

pub fn ids(r: &Recovered) -> Vec<u64> {
    r.messages.iter().map(|m| m.id).collect()
}

/// Reads every recovered message back and checks its bytes.
pub fn verify_all(log: &mut QueueLog, r: &Recovered) {
    for m in &r.messages {
        let p = log.read(m.position).expect("read recovered message");
        assert!(p.persistent());
        assert_payload(&p, m.id);
    }
}

pub fn seg_files(storage: &MemStorage, dir: &Path) -> Vec<String> {
    storage
        .list_dir(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect()
}
