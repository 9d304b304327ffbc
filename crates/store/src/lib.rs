//! Warren's durability engine: per-queue message logs in segment files, ack records, group
//! commit, crash recovery and the definitions file. Speaks in directories, message ids and
//! bytes; knows nothing of AMQP, frames or the broker's queue logic.
//!
//! The byte layout and the fsync rules are in `docs/storage-format.md`.
//!
//! # How the broker uses it
//!
//! At startup (blocking code, e.g. inside `tokio::task::spawn_blocking`):
//!
//! ```
//! use std::sync::Arc;
//! use store::{read_definitions, queue_dir, LogConfig, MemStorage, QueueLog, Storage, Syncer};
//!
//! # fn main() -> Result<(), store::StoreError> {
//! let storage: Arc<dyn Storage> = Arc::new(MemStorage::new()); // FsStorage in production
//! let data_dir = std::path::Path::new("/warren-data");
//! let syncer = Syncer::start()?; // one per process: the group-commit thread
//! let defs = read_definitions(&*storage, data_dir)?.unwrap_or_default();
//! // For each durable queue in `defs.queues`:
//! let dir = queue_dir(data_dir, "/", "orders");
//! let (mut log, recovered) =
//!     QueueLog::open(storage.clone(), dir, syncer.handle(), LogConfig::default())?;
//! let mut next_id = recovered.next_id;
//! for m in &recovered.messages {
//!     // keep (m.id, m.position, m.redelivered) as a ready message; read it when needed
//!     let payload = log.read(m.position)?;
//!     let _body = payload.part(3);
//! }
//!
//! // In the queue's owner task, per batch of publishes:
//! let pos = log.append(next_id, true, &[b"amq.direct", b"rk", b"props", b"body"])?;
//! next_id += 1;
//! let commit = log.commit()?; // one call per batch, not per message
//! // ... `commit.await` (or `commit_then(callback)`), then send the batch's confirms.
//! # commit.wait()?;
//!
//! // Deliveries: mark_delivered + flush before the frames leave (for redelivered=true
//! // after a crash); acks, expiries, purges: ack.
//! log.mark_delivered(next_id - 1, pos)?;
//! log.flush()?;
//! log.ack(&[(next_id - 1, pos)])?;
//!
//! // Clean shutdown (blocking):
//! log.close()?;
//! # Ok(()) }
//! ```
//!
//! # Threads and tokio
//!
//! - `Syncer::start` spawns one OS thread, `warren-syncer`, that runs the fsync rounds: each
//!   round takes every request queued at that moment, and fsyncs each distinct file and
//!   directory once, up to 16 side by side on short-lived scoped threads (`warren-fsync`) so
//!   that the file system folds them into one journal commit. Keep the `Syncer` alive for the
//!   life of the broker; dropping it answers what is queued, then stops the thread (later
//!   commits fail).
//! - `QueueLog` is `Send`, not shared: it belongs to the queue's owner task. Its methods do
//!   blocking file I/O (`append`/`flush`/`ack` are buffered writes — a `write(2)` now and then,
//!   never an fsync; `read` is a `pread(2)`); `open`, `close` and `destroy` fsync and must run
//!   in a blocking context.
//! - `Commit` is a future built on `tokio::sync::oneshot` (it works in any executor, and has
//!   `try_result` for polling and `wait` for blocking callers). `commit_then` runs the
//!   callback on the syncer thread instead. Commits of one log resolve in the order they were
//!   made, so confirms may use `multiple=true`.
//! - Call `commit` once per batch of publishes, not per message: one queue committing every
//!   message alone is held to the disk's fsync rate.
//!
//! # Guarantees
//!
//! - A persistent append followed by a commit that resolved `Ok` survives a power cut.
//! - Everything flushed (every commit flushes) survives a process kill.
//! - After `close`, acked messages never come back. After a crash, acked messages whose ack
//!   record did not reach the disk come back (at-least-once); with `mark_delivered` they come
//!   back marked redelivered.
//! - Recovery returns live persistent messages in append order; transient messages are never
//!   recovered. A torn or corrupt record costs that record and the rest of its segment,
//!   never the queue or another queue; only an I/O error or an unsupported format version
//!   makes `QueueLog::open` fail.
//! - After any failed write or fsync the log refuses further work (`StoreError::Io`): close
//!   the queue and reopen it, which recovers what is on disk.
//! - Each message must be acked (removed) once: the log keeps only per-segment live counts,
//!   so a double removal would let a segment be deleted while it still holds live messages.
//!
//! # Memory
//!
//! Per log: a write buffer that grows to `LogConfig::write_buffer_bytes` (128 KiB by
//! default), a few open file handles (the tail, up to four read handles, one per segment with
//! acks written this run) and about 100 bytes per segment. Nothing per message: the caller
//! keeps `(MessageId, Position)` — 20 bytes — per message it has not loaded.

mod definitions;
mod error;
mod format;
mod log;
mod paths;
mod recovery;
mod spill;
mod storage;
mod syncer;

pub use definitions::{
    read_definitions, write_definitions_atomically, BindingDef, Definitions, ExchangeDef,
    GlobalParameter, Parameter, Permission, Policy, QueueDef, TopicPermission, User, VHost,
    DEFINITIONS_FILE,
};
pub use error::StoreError;
pub use format::{Payload, MAX_PARTS};
pub use log::{LogConfig, LogStats, QueueLog};
pub use paths::{delayed_exchange_dir, escape_name, queue_dir, vhost_dir};
pub use recovery::{Recovered, RecoveredMessage};
pub use spill::{SpillDir, SpillEntry, SPILL_ENTRY_LEN};
pub use storage::{create_dir_all_durably, FsStorage, MemStorage, Storage, StorageFile};
pub use syncer::{Commit, Syncer, SyncerHandle, SyncerStats, DEFAULT_PARALLEL_FSYNCS};

/// A message's id within its queue, chosen by the broker (unique among live messages).
pub type MessageId = u64;

/// Where a message record is: segment, offset, length. 12 bytes; ordered as appended. The
/// default (all zero, `is_empty`) is never handed out, so callers may use it for "nowhere".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    segment: u32,
    offset: u32,
    len: u32,
}

impl Position {
    /// The record of `len` bytes at `offset` in segment `segment`: for a caller that keeps
    /// positions in a compact form of its own and makes them up again to read them.
    pub fn new(segment: u32, offset: u32, len: u32) -> Position {
        Position {
            segment,
            offset,
            len,
        }
    }

    /// Segment sequence number.
    pub fn segment(&self) -> u32 {
        self.segment
    }

    /// Byte offset of the record in its segment file.
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// Length of the whole record on disk (framing included).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Never true for a position the store handed out.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

const _: () = assert!(std::mem::size_of::<Position>() <= 16);

#[cfg(test)]
mod tests {
    #[test]
    fn the_broker_can_move_these_between_tasks() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<super::QueueLog>();
        send::<super::Commit>();
        send::<super::StoreError>();
        send_sync::<super::SyncerHandle>();
        send_sync::<super::Syncer>();
        send_sync::<super::FsStorage>();
        send_sync::<super::MemStorage>();
    }
}
