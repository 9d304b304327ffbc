//! `QueueLog`: one queue's message log — appends to segment files through a write buffer, ack
//! and delivered records, segment roll-over and deletion, reads by position, and commits
//! handed to the group-commit syncer. One writer: the queue's owner holds the `QueueLog`.
//! Knows nothing of AMQP: messages are an id and opaque parts.

use crate::error::{poisoned, StoreError};
use crate::format::{self, FileKind, Payload, HEADER_LEN, MAX_MESSAGE_HEAD_LEN, MAX_PARTS};
use crate::recovery::{self, Recovered, RecoveredMessage};
use crate::storage::{Storage, StorageFile};
use crate::syncer::{Commit, Completion, LogShared, SyncRequest, SyncTarget, SyncerHandle};
use crate::{MessageId, Position};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Ack files kept open at once; acks usually land in the oldest segment or two.
const ACK_HANDLES: usize = 8;
/// Segment files cached open for reading, besides the tail.
const READ_HANDLES: usize = 4;
/// Longest run of adjacent records `read_many` fetches with one read.
const READ_RUN_BYTES: usize = 4 << 20;
/// Most ids in one ack or delivered record.
const IDS_PER_RECORD: usize = 8192;

pub(crate) fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.seg"))
}

pub(crate) fn ack_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.ack"))
}

/// Tuning of one queue log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A new segment starts when the next record would pass this size (at most 4 GiB).
    pub segment_max_bytes: u64,
    /// Appends are gathered up to this many bytes before a write; records of half of it or
    /// more are written straight from the caller's slices.
    pub write_buffer_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_max_bytes: 64 << 20,
            write_buffer_bytes: 128 << 10,
        }
    }
}

/// A segment that exists on disk.
struct Segment {
    /// Messages appended (or recovered) and not yet acked.
    live: u64,
    /// Whether its `.ack` file exists.
    ack_exists: bool,
    /// Open only while among the last few written (see `ACK_HANDLES`).
    ack_file: Option<Arc<dyn StorageFile>>,
    /// Ack records were written since the last fsync of the ack file.
    ack_unsynced: bool,
    pending_acked: Vec<u64>,
    pending_delivered: Vec<u64>,
}

impl Segment {
    fn new(live: u64, ack_exists: bool) -> Segment {
        Segment {
            live,
            ack_exists,
            ack_file: None,
            ack_unsynced: false,
            pending_acked: Vec::new(),
            pending_delivered: Vec::new(),
        }
    }
}

/// The segment being appended to.
struct Tail {
    seq: u32,
    file: Arc<dyn StorageFile>,
    /// Bytes already handed to the file.
    written: u64,
    /// Bytes appended after `written`, not yet handed to the file.
    buf: Vec<u8>,
    /// A persistent record was appended since the last commit.
    needs_sync: bool,
}

impl Tail {
    fn size(&self) -> u64 {
        self.written + self.buf.len() as u64
    }
}

/// Live-message and disk figures of one log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Segment files on disk (the tail included).
    pub segments: usize,
    /// Messages appended or recovered and not acked.
    pub live_messages: u64,
}

/// One queue's message log. See the crate documentation for how the broker drives it.
pub struct QueueLog {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    syncer: SyncerHandle,
    config: LogConfig,
    shared: Arc<LogShared>,
    segments: BTreeMap<u32, Segment>,
    tail: Option<Tail>,
    next_seq: u64,
    /// Segments rolled over with persistent data that no commit has covered yet.
    to_sync: Vec<Arc<dyn StorageFile>>,
    /// A segment file was created since the last commit: its name must be synced too.
    dir_dirty: bool,
    /// Segments with ack or delivered ids waiting to be written.
    acks_pending: Vec<u32>,
    readers: Vec<(u32, Arc<dyn StorageFile>)>,
    /// Segments whose `ack_file` is open.
    ack_handles: usize,
    scratch: Vec<u8>,
    /// A spare write buffer kept across roll-overs.
    spare_buf: Vec<u8>,
}

impl std::fmt::Debug for QueueLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueLog")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .finish()
    }
}

fn invalid_input(what: &str) -> StoreError {
    StoreError::Io(io::Error::new(io::ErrorKind::InvalidInput, what.to_owned()))
}

impl QueueLog {
    /// Opens (creating if needed) the queue directory `dir`, recovers it, and returns the log
    /// with what survived. Blocking: call it from a blocking context at startup.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        syncer: SyncerHandle,
        config: LogConfig,
    ) -> Result<(QueueLog, Recovered), StoreError> {
        Self::open_recovering(storage, dir.into(), syncer, config, None)
    }

    /// As `open`, but hands each live message to `visit` as recovery reads it, with its
    /// payload, instead of collecting them in `Recovered::messages` (left empty): a caller
    /// that indexes a log too large for memory (the delayed-message exchange) needs no memory
    /// per message to start. Blocking, like `open`.
    pub fn open_visiting(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        syncer: SyncerHandle,
        config: LogConfig,
        mut visit: impl FnMut(RecoveredMessage, Payload),
    ) -> Result<(QueueLog, Recovered), StoreError> {
        let mut with_payload = |message: RecoveredMessage, record: &[u8]| {
            // The record passed its CRC check in the scan; a failure here cannot happen.
            if let Ok(payload) = Payload::from_record(Bytes::copy_from_slice(record)) {
                visit(message, payload);
            }
        };
        Self::open_recovering(storage, dir.into(), syncer, config, Some(&mut with_payload))
    }

    /// As `open`, but hands each live message to `visit` as recovery finds it, without its
    /// payload, instead of collecting them in `Recovered::messages` (left empty): a caller
    /// that keeps recovered messages in a compact form of its own needs no memory per message
    /// in between. Blocking, like `open`.
    pub fn open_each(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        syncer: SyncerHandle,
        config: LogConfig,
        mut visit: impl FnMut(RecoveredMessage),
    ) -> Result<(QueueLog, Recovered), StoreError> {
        let mut without_payload = |message: RecoveredMessage, _: &[u8]| visit(message);
        Self::open_recovering(
            storage,
            dir.into(),
            syncer,
            config,
            Some(&mut without_payload),
        )
    }

    fn open_recovering(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        syncer: SyncerHandle,
        config: LogConfig,
        visit: Option<&mut recovery::Visitor<'_>>,
    ) -> Result<(QueueLog, Recovered), StoreError> {
        let outcome = recovery::recover_visiting(&*storage, &dir, visit)?;
        let segments = outcome
            .segments
            .into_iter()
            .map(|(seq, s)| (seq, Segment::new(s.live, s.ack_exists)))
            .collect();
        let config = LogConfig {
            segment_max_bytes: config.segment_max_bytes.min(u64::from(u32::MAX)),
            write_buffer_bytes: config.write_buffer_bytes.max(4096),
        };
        let log = QueueLog {
            storage,
            dir,
            syncer,
            config,
            shared: Arc::new(LogShared::default()),
            segments,
            tail: None,
            next_seq: outcome.next_seq,
            to_sync: Vec::new(),
            dir_dirty: false,
            acks_pending: Vec::new(),
            readers: Vec::new(),
            ack_handles: 0,
            scratch: Vec::new(),
            spare_buf: Vec::new(),
        };
        Ok((log, outcome.recovered))
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.shared.poison.load(Ordering::Acquire) {
            Err(poisoned())
        } else {
            Ok(())
        }
    }

    /// Marks the log failed (a write's outcome on disk is unknown) and passes the error on.
    fn fail<T>(&self, e: io::Error) -> Result<T, StoreError> {
        tracing::error!(dir = %self.dir.display(), error = %e, "queue log write failed; the log stops");
        self.shared.poison.store(true, Ordering::Release);
        Err(StoreError::Io(e))
    }

    /// Appends a message made of `parts` (at most 16; the store keeps their boundaries) and
    /// returns where it is. `persistent` messages are recovered after a restart and made
    /// durable by the next `commit`; transient ones are written only to page them out of
    /// memory and are never fsynced or recovered. Ids are the caller's: unique among the
    /// queue's live messages.
    pub fn append(
        &mut self,
        id: MessageId,
        persistent: bool,
        parts: &[&[u8]],
    ) -> Result<Position, StoreError> {
        self.append_expiring(id, persistent, None, parts)
    }

    /// `append` with the time after which the message is no longer wanted (milliseconds
    /// since the Unix epoch): the store keeps it with the message and hands it back at
    /// recovery, and does nothing else with it.
    pub fn append_expiring(
        &mut self,
        id: MessageId,
        persistent: bool,
        expires_at: Option<u64>,
        parts: &[&[u8]],
    ) -> Result<Position, StoreError> {
        self.check()?;
        if parts.len() > MAX_PARTS {
            return Err(invalid_input("a message has at most 16 parts"));
        }
        let total = format::message_record_len(parts, expires_at.is_some());
        if total > u64::from(u32::MAX) - HEADER_LEN as u64 {
            return Err(invalid_input("a message record must be shorter than 4 GiB"));
        }
        let roll = match &self.tail {
            None => true,
            Some(t) => {
                let after = t.size() + total;
                (t.size() > HEADER_LEN as u64 && after > self.config.segment_max_bytes)
                    || after > u64::from(u32::MAX)
            }
        };
        if roll {
            self.roll()?;
        }
        let limit = self.config.write_buffer_bytes;
        let Some(tail) = self.tail.as_mut() else {
            return Err(poisoned());
        };
        let offset = tail.size();
        let mut head = [0u8; MAX_MESSAGE_HEAD_LEN];
        let head_len = format::encode_message_head(&mut head, id, persistent, expires_at, parts);
        let total = total as usize;
        let mut result = Ok(());
        if total >= limit / 2 {
            // Large: no copy. What is buffered goes first to keep the file in order.
            result = flush_tail(tail);
            if result.is_ok() {
                let mut slices = [IoSlice::new(&[]); MAX_PARTS + 1];
                slices[0] = IoSlice::new(&head[..head_len]);
                for (s, p) in slices[1..].iter_mut().zip(parts) {
                    *s = IoSlice::new(p);
                }
                result = tail.file.append(&slices[..=parts.len()]);
                if result.is_ok() {
                    tail.written += total as u64;
                }
            }
        } else {
            if tail.buf.len() + total > limit {
                result = flush_tail(tail);
            }
            tail.buf.extend_from_slice(&head[..head_len]);
            for p in parts {
                tail.buf.extend_from_slice(p);
            }
        }
        tail.needs_sync |= persistent;
        let seq = tail.seq;
        if let Err(e) = result {
            return self.fail(e);
        }
        if let Some(seg) = self.segments.get_mut(&seq) {
            seg.live += 1;
        }
        Ok(Position::new(seq, offset as u32, total as u32))
    }

    /// Starts a new tail segment; the old one is written out and kept for the next commit,
    /// or deleted if nothing in it is live.
    fn roll(&mut self) -> Result<(), StoreError> {
        if let Some(mut old) = self.tail.take() {
            if let Err(e) = flush_tail(&mut old) {
                self.tail = Some(old);
                return self.fail(e);
            }
            old.buf.clear();
            self.spare_buf = std::mem::take(&mut old.buf);
            let live = self.segments.get(&old.seq).map_or(0, |s| s.live);
            if live == 0 {
                self.delete_segment(old.seq)?;
            } else if old.needs_sync {
                self.to_sync.push(old.file);
            }
        }
        let Ok(seq) = u32::try_from(self.next_seq) else {
            return self.fail(io::Error::other("segment sequence numbers exhausted"));
        };
        let path = seg_path(&self.dir, self.next_seq);
        let file = match self.storage.create_new(&path) {
            Ok(f) => f,
            Err(e) => return self.fail(e),
        };
        self.next_seq += 1;
        self.dir_dirty = true;
        let mut buf = std::mem::take(&mut self.spare_buf);
        buf.extend_from_slice(&format::encode_header(FileKind::Segment, seq.into()));
        self.segments.insert(seq, Segment::new(0, false));
        self.tail = Some(Tail {
            seq,
            file,
            written: 0,
            buf,
            needs_sync: false,
        });
        Ok(())
    }

    /// Removes messages from the log for good (basic.ack, expiry, purge, length limit, …).
    /// Each message must be removed once: a second removal of the same message corrupts the
    /// segment's live count. A segment whose messages are all removed is deleted at once
    /// (unless it is the tail, which goes when it rolls over).
    pub fn ack(&mut self, acked: &[(MessageId, Position)]) -> Result<(), StoreError> {
        self.check()?;
        let tail_seq = self.tail.as_ref().map(|t| t.seq);
        for &(id, pos) in acked {
            let seq = pos.segment();
            let Some(seg) = self.segments.get_mut(&seq) else {
                continue;
            };
            seg.live = seg.live.saturating_sub(1);
            if seg.live == 0 && Some(seq) != tail_seq {
                self.delete_segment(seq)?;
                continue;
            }
            if seg.pending_acked.is_empty() && seg.pending_delivered.is_empty() {
                self.acks_pending.push(seq);
            }
            seg.pending_acked.push(id);
        }
        Ok(())
    }

    /// Records that a message was handed to a consumer, so that after a crash it comes back
    /// with redelivered=true. Call `flush` before the delivery leaves the process for the
    /// marker to survive a process kill.
    pub fn mark_delivered(&mut self, id: MessageId, pos: Position) -> Result<(), StoreError> {
        self.check()?;
        let seq = pos.segment();
        if let Some(seg) = self.segments.get_mut(&seq) {
            if seg.pending_acked.is_empty() && seg.pending_delivered.is_empty() {
                self.acks_pending.push(seq);
            }
            seg.pending_delivered.push(id);
        }
        Ok(())
    }

    fn delete_segment(&mut self, seq: u32) -> Result<(), StoreError> {
        let Some(seg) = self.segments.remove(&seq) else {
            return Ok(());
        };
        self.readers.retain(|(s, _)| *s != seq);
        self.acks_pending.retain(|s| *s != seq);
        // The segment first: an ack file without its segment is harmless, the reverse
        // would bring acked messages back.
        let path = seg_path(&self.dir, seq.into());
        if let Err(e) = self.storage.remove(&path) {
            return self.fail(e);
        }
        if seg.ack_file.is_some() {
            self.ack_handles -= 1;
        }
        if seg.ack_exists {
            let path = ack_path(&self.dir, seq.into());
            if let Err(e) = self.storage.remove(&path) {
                return self.fail(e);
            }
        }
        Ok(())
    }

    /// Hands buffered appends, acks and delivered markers to the operating system (they then
    /// survive a process kill, not a power cut). No fsync.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.check()?;
        if let Some(tail) = self.tail.as_mut() {
            if let Err(e) = flush_tail(tail) {
                return self.fail(e);
            }
        }
        while let Some(seq) = self.acks_pending.pop() {
            if let Err(e) = self.flush_acks(seq) {
                return self.fail(e);
            }
        }
        Ok(())
    }

    fn flush_acks(&mut self, seq: u32) -> io::Result<()> {
        let must_open = self
            .segments
            .get(&seq)
            .is_some_and(|s| s.ack_file.is_none());
        if must_open && self.ack_handles >= ACK_HANDLES {
            let victim = self
                .segments
                .iter_mut()
                .find(|(s, g)| **s != seq && g.ack_file.is_some());
            if let Some((_, g)) = victim {
                g.ack_file = None;
                self.ack_handles -= 1;
            }
        }
        let Some(seg) = self.segments.get_mut(&seq) else {
            return Ok(());
        };
        self.scratch.clear();
        let file = match &seg.ack_file {
            Some(f) => f.clone(),
            None => {
                let path = ack_path(&self.dir, seq.into());
                let f = if seg.ack_exists {
                    self.storage.open_append(&path)?
                } else {
                    let f = self.storage.create_new(&path)?;
                    seg.ack_exists = true;
                    self.scratch
                        .extend_from_slice(&format::encode_header(FileKind::Ack, seq.into()));
                    f
                };
                seg.ack_file = Some(f.clone());
                self.ack_handles += 1;
                f
            }
        };
        for chunk in seg.pending_acked.chunks(IDS_PER_RECORD) {
            format::encode_ids_record(&mut self.scratch, format::KIND_ACKED, chunk);
        }
        for chunk in seg.pending_delivered.chunks(IDS_PER_RECORD) {
            format::encode_ids_record(&mut self.scratch, format::KIND_DELIVERED, chunk);
        }
        seg.pending_acked.clear();
        seg.pending_delivered.clear();
        seg.ack_unsynced = true;
        file.append(&[IoSlice::new(&self.scratch)])
    }

    /// Writes everything out and gathers what the next fsync must cover; `None` if there is
    /// nothing to sync and nothing to wait for.
    fn prepare_commit(&mut self) -> Result<Option<Vec<SyncTarget>>, StoreError> {
        self.flush()?;
        let mut targets: Vec<SyncTarget> = self.to_sync.drain(..).map(SyncTarget::File).collect();
        if let Some(tail) = self.tail.as_mut() {
            if tail.needs_sync {
                tail.needs_sync = false;
                targets.push(SyncTarget::File(tail.file.clone()));
            }
        }
        if targets.is_empty() {
            // Nothing new, but an earlier commit is still running: answer after it, so that
            // commits of one log always resolve in order.
            if self.shared.outstanding.load(Ordering::Acquire) > 0 {
                return Ok(Some(targets));
            }
            return Ok(None);
        }
        if self.dir_dirty {
            self.dir_dirty = false;
            targets.push(SyncTarget::Dir(self.storage.clone(), self.dir.clone()));
        }
        Ok(Some(targets))
    }

    /// Asks the group-commit thread to make every persistent append so far durable. The
    /// returned `Commit` resolves when it is (one fsync round serves every log waiting at that
    /// moment); send the publisher confirms of those appends then. Commits of one log resolve
    /// in the order they were made; one with nothing to sync and no earlier commit still
    /// running is resolved at once.
    pub fn commit(&mut self) -> Result<Commit, StoreError> {
        match self.prepare_commit()? {
            None => Ok(Commit::done(Ok(()))),
            Some(targets) => {
                let (tx, rx) = oneshot::channel();
                self.syncer.submit(SyncRequest {
                    targets,
                    done: Completion::Oneshot(tx),
                    shared: self.shared.clone(),
                });
                Ok(Commit::waiting(rx))
            }
        }
    }

    /// As `commit`, but calls `done` instead of returning a future: on the group-commit
    /// thread (keep it short, never block), or right here if there is nothing to sync or the
    /// flush fails.
    pub fn commit_then(&mut self, done: impl FnOnce(Result<(), StoreError>) + Send + 'static) {
        match self.prepare_commit() {
            Err(e) => done(Err(e)),
            Ok(None) => done(Ok(())),
            Ok(Some(targets)) => self.syncer.submit(SyncRequest {
                targets,
                done: Completion::Callback(Box::new(done)),
                shared: self.shared.clone(),
            }),
        }
    }

    /// Reads a message back (from the write buffer if it is still there). Checks the CRC.
    pub fn read(&mut self, pos: Position) -> Result<Payload, StoreError> {
        if let Some(tail) = &self.tail {
            if tail.seq == pos.segment() && u64::from(pos.offset()) >= tail.written {
                let start = (u64::from(pos.offset()) - tail.written) as usize;
                let record = tail
                    .buf
                    .get(start..start + pos.len() as usize)
                    .ok_or_else(|| self.corrupted(pos))?;
                return self.check_record(pos, Bytes::copy_from_slice(record));
            }
        }
        let file = self.reader(pos.segment())?;
        let mut buf = vec![0u8; pos.len() as usize];
        self.read_into(&*file, pos, &mut buf)?;
        self.check_record(pos, Bytes::from(buf))
    }

    /// Reads several messages, fetching adjacent records of a segment with one read into one
    /// buffer that the payloads share. Payloads are pushed to `out` in the order of
    /// `positions`.
    pub fn read_many(
        &mut self,
        positions: &[Position],
        out: &mut Vec<Payload>,
    ) -> Result<(), StoreError> {
        let mut i = 0;
        while i < positions.len() {
            let first = positions[i];
            let in_buffer = self.tail.as_ref().is_some_and(|t| {
                t.seq == first.segment() && u64::from(first.offset()) >= t.written
            });
            let mut j = i + 1;
            let mut run_end = u64::from(first.offset()) + u64::from(first.len());
            while !in_buffer && j < positions.len() {
                let p = positions[j];
                let next_end = run_end + u64::from(p.len());
                if p.segment() != first.segment()
                    || u64::from(p.offset()) != run_end
                    || next_end - u64::from(first.offset()) > READ_RUN_BYTES as u64
                    || self
                        .tail
                        .as_ref()
                        .is_some_and(|t| t.seq == p.segment() && next_end > t.written)
                {
                    break;
                }
                run_end = next_end;
                j += 1;
            }
            if in_buffer || j == i + 1 {
                out.push(self.read(first)?);
                i += 1;
                continue;
            }
            let file = self.reader(first.segment())?;
            let run = Position::new(
                first.segment(),
                first.offset(),
                (run_end - u64::from(first.offset())) as u32,
            );
            let mut buf = vec![0u8; run.len() as usize];
            self.read_into(&*file, run, &mut buf)?;
            let buf = Bytes::from(buf);
            for p in &positions[i..j] {
                let at = (p.offset() - first.offset()) as usize;
                out.push(self.check_record(*p, buf.slice(at..at + p.len() as usize))?);
            }
            i = j;
        }
        Ok(())
    }

    fn read_into(
        &self,
        file: &dyn StorageFile,
        pos: Position,
        buf: &mut [u8],
    ) -> Result<(), StoreError> {
        match file.read_exact_at(buf, pos.offset().into()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.corrupted(pos)),
            Err(e) => Err(StoreError::Io(e)),
        }
    }

    fn corrupted(&self, pos: Position) -> StoreError {
        StoreError::Corrupted {
            file: seg_path(&self.dir, pos.segment().into()),
            offset: pos.offset().into(),
        }
    }

    fn check_record(&self, pos: Position, record: Bytes) -> Result<Payload, StoreError> {
        Payload::from_record(record).map_err(|crc| {
            let file = seg_path(&self.dir, pos.segment().into());
            let offset = pos.offset().into();
            if crc {
                StoreError::ChecksumMismatch { file, offset }
            } else {
                StoreError::Corrupted { file, offset }
            }
        })
    }

    fn reader(&mut self, seq: u32) -> Result<Arc<dyn StorageFile>, StoreError> {
        if let Some(tail) = &self.tail {
            if tail.seq == seq {
                return Ok(tail.file.clone());
            }
        }
        if let Some(i) = self.readers.iter().position(|(s, _)| *s == seq) {
            return Ok(self.readers[i].1.clone());
        }
        if !self.segments.contains_key(&seq) {
            return Err(StoreError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("segment {seq} of {} is gone", self.dir.display()),
            )));
        }
        let file = self.storage.open_read(&seg_path(&self.dir, seq.into()))?;
        if self.readers.len() == READ_HANDLES {
            self.readers.remove(0);
        }
        self.readers.push((seq, file.clone()));
        Ok(file)
    }

    /// Live messages and segment count.
    pub fn stats(&self) -> LogStats {
        LogStats {
            segments: self.segments.len(),
            live_messages: self.segments.values().map(|s| s.live).sum(),
        }
    }

    /// Clean shutdown: writes and fsyncs everything (segments, ack files, the directory) on
    /// the calling thread, so that nothing acked comes back and nothing appended is lost.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.flush()?;
        let mut files: Vec<Arc<dyn StorageFile>> = std::mem::take(&mut self.to_sync);
        if let Some(tail) = &self.tail {
            files.push(tail.file.clone());
        }
        for (seq, seg) in &self.segments {
            if seg.ack_unsynced {
                match &seg.ack_file {
                    Some(f) => files.push(f.clone()),
                    None => match self
                        .storage
                        .open_append(&ack_path(&self.dir, (*seq).into()))
                    {
                        Ok(f) => files.push(f),
                        Err(e) => return self.fail(e),
                    },
                }
            }
        }
        for f in &files {
            if let Err(e) = f.sync() {
                return self.fail(e);
            }
        }
        if let Err(e) = self.storage.sync_dir(&self.dir) {
            return self.fail(e);
        }
        self.tail = None;
        Ok(())
    }

    /// Deletes the queue's directory and everything in it (queue.delete of a durable queue).
    pub fn destroy(mut self) -> Result<(), StoreError> {
        self.tail = None;
        self.acks_pending.clear();
        self.storage.remove_dir_all(&self.dir)?;
        if let Some(parent) = self.dir.parent() {
            self.storage.sync_dir(parent)?;
        }
        Ok(())
    }
}

fn flush_tail(tail: &mut Tail) -> io::Result<()> {
    if tail.buf.is_empty() {
        return Ok(());
    }
    tail.file.append(&[IoSlice::new(&tail.buf)])?;
    tail.written += tail.buf.len() as u64;
    tail.buf.clear();
    Ok(())
}

impl Drop for QueueLog {
    fn drop(&mut self) {
        // Best effort, so a dropped log still survives a process kill; durability is `close`'s.
        if !self.shared.poison.load(Ordering::Acquire)
            && (self.tail.is_some() || !self.acks_pending.is_empty())
        {
            if let Err(e) = self.flush() {
                tracing::warn!(dir = %self.dir.display(), error = %e, "flush on drop failed");
            }
        }
    }
}
