//! Group commit: one thread that fsyncs on behalf of every queue log. Each round takes every
//! request waiting at that moment, fsyncs each distinct file and directory once, then answers
//! all of them. Knows nothing of records or queues: it syncs handles and calls completions.

use crate::error::{poisoned, StoreError};
use crate::storage::{Storage, StorageFile};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// An open file's address, or a storage's address and a directory path.
type TargetKey = (usize, Option<PathBuf>);

/// What a commit must make durable.
pub(crate) enum SyncTarget {
    File(Arc<dyn StorageFile>),
    Dir(Arc<dyn Storage>, PathBuf),
}

impl SyncTarget {
    /// Identity for de-duplication within a round: the same open file or directory.
    fn key(&self) -> TargetKey {
        match self {
            SyncTarget::File(f) => (Arc::as_ptr(f) as *const () as usize, None),
            SyncTarget::Dir(s, p) => (Arc::as_ptr(s) as *const () as usize, Some(p.clone())),
        }
    }
}

type Callback = Box<dyn FnOnce(Result<(), StoreError>) + Send + 'static>;

pub(crate) enum Completion {
    Oneshot(oneshot::Sender<Result<(), StoreError>>),
    Callback(Callback),
}

impl Completion {
    pub(crate) fn complete(self, result: Result<(), StoreError>) {
        match self {
            // The receiver may be gone (the queue was deleted meanwhile): nothing to tell.
            Completion::Oneshot(tx) => {
                let _ = tx.send(result);
            }
            Completion::Callback(f) => {
                // A panicking callback must not take group commit down for every queue.
                let call = std::panic::AssertUnwindSafe(move || f(result));
                if std::panic::catch_unwind(call).is_err() {
                    tracing::error!("a commit callback panicked");
                }
            }
        }
    }
}

/// State a log shares with its requests in flight.
#[derive(Debug, Default)]
pub(crate) struct LogShared {
    /// Set when a write or fsync failed: the log must stop accepting writes.
    pub(crate) poison: AtomicBool,
    /// Requests submitted and not yet answered.
    pub(crate) outstanding: AtomicUsize,
}

pub(crate) struct SyncRequest {
    /// Empty for a commit with nothing new to sync that must still answer after the
    /// commits before it.
    pub(crate) targets: Vec<SyncTarget>,
    pub(crate) done: Completion,
    pub(crate) shared: Arc<LogShared>,
}

impl SyncRequest {
    fn answer(self, result: Result<(), StoreError>) {
        if result.is_err() {
            self.shared.poison.store(true, Ordering::Release);
        }
        self.done.complete(result);
        // After the completion: a commit made meanwhile queues behind this one.
        self.shared.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

enum Msg {
    Sync(SyncRequest),
    Stop,
}

/// Counters of the group-commit thread.
#[derive(Debug, Default)]
struct Stats {
    rounds: AtomicU64,
    requests: AtomicU64,
    file_syncs: AtomicU64,
    dir_syncs: AtomicU64,
}

/// A snapshot of the syncer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncerStats {
    /// Group-commit rounds run.
    pub rounds: u64,
    /// Commit requests answered.
    pub requests: u64,
    /// File fsyncs issued.
    pub file_syncs: u64,
    /// Directory fsyncs issued.
    pub dir_syncs: u64,
}

/// Files fsynced side by side in one round by default.
pub const DEFAULT_PARALLEL_FSYNCS: usize = 16;

/// Owns the group-commit thread. Dropping it answers the requests already sent, then stops
/// the thread; commits made after that fail.
pub struct Syncer {
    handle: SyncerHandle,
    thread: Option<JoinHandle<()>>,
}

/// A cheap, cloneable way to send commit requests to the `Syncer`.
#[derive(Clone)]
pub struct SyncerHandle {
    tx: mpsc::Sender<Msg>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for SyncerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncerHandle")
    }
}

impl Syncer {
    /// Starts the thread (named `warren-syncer`) with `DEFAULT_PARALLEL_FSYNCS`.
    pub fn start() -> io::Result<Syncer> {
        Syncer::start_with(DEFAULT_PARALLEL_FSYNCS)
    }

    /// Starts the thread; a round fsyncs up to `parallel_fsyncs` files at once.
    pub fn start_with(parallel_fsyncs: usize) -> io::Result<Syncer> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("warren-syncer".into())
            .spawn(move || run(rx, &thread_stats, parallel_fsyncs))?;
        Ok(Syncer {
            handle: SyncerHandle { tx, stats },
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> SyncerHandle {
        self.handle.clone()
    }

    pub fn stats(&self) -> SyncerStats {
        self.handle.stats()
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        let _ = self.handle.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the group-commit thread panicked");
            }
        }
    }
}

impl SyncerHandle {
    pub fn stats(&self) -> SyncerStats {
        SyncerStats {
            rounds: self.stats.rounds.load(Ordering::Relaxed),
            requests: self.stats.requests.load(Ordering::Relaxed),
            file_syncs: self.stats.file_syncs.load(Ordering::Relaxed),
            dir_syncs: self.stats.dir_syncs.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn submit(&self, req: SyncRequest) {
        req.shared.outstanding.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(Msg::Sync(req))) = self.tx.send(Msg::Sync(req)) {
            req.answer(Err(StoreError::Io(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the group-commit thread has stopped",
            ))));
        }
    }
}

fn sync_one(t: &SyncTarget, stats: &Stats) -> io::Result<()> {
    match t {
        SyncTarget::File(f) => {
            stats.file_syncs.fetch_add(1, Ordering::Relaxed);
            f.sync()
        }
        SyncTarget::Dir(s, p) => {
            stats.dir_syncs.fetch_add(1, Ordering::Relaxed);
            s.sync_dir(p)
        }
    }
}

fn run(rx: mpsc::Receiver<Msg>, stats: &Stats, parallel: usize) {
    let mut batch: Vec<SyncRequest> = Vec::new();
    let mut stopping = false;
    while !stopping {
        match rx.recv() {
            Ok(Msg::Sync(r)) => batch.push(r),
            Ok(Msg::Stop) | Err(_) => stopping = true,
        }
        // Everything that queued up while the previous round was fsyncing rides on this one.
        loop {
            match rx.try_recv() {
                Ok(Msg::Sync(r)) => batch.push(r),
                Ok(Msg::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            round(&mut batch, stats, parallel);
        }
    }
}

fn round(batch: &mut Vec<SyncRequest>, stats: &Stats, parallel: usize) {
    stats.rounds.fetch_add(1, Ordering::Relaxed);
    let mut unique: Vec<(TargetKey, &SyncTarget)> = Vec::new();
    let mut seen: HashSet<TargetKey> = HashSet::new();
    for req in batch.iter() {
        for t in &req.targets {
            let key = t.key();
            if seen.insert(key.clone()) {
                unique.push((key, t));
            }
        }
    }
    // Fsyncs of different files run side by side: the file system folds concurrent fsyncs
    // into one journal commit, so a round costs about one fsync, not one per queue.
    let lanes = parallel.clamp(1, unique.len().max(1));
    let results: Vec<(TargetKey, io::Result<()>)> = if lanes == 1 {
        unique
            .iter()
            .map(|(k, t)| (k.clone(), sync_one(t, stats)))
            .collect()
    } else {
        std::thread::scope(|scope| {
            let mut inline = Vec::new();
            let mut handles = Vec::new();
            for lane in 0..lanes {
                let mine: Vec<&(TargetKey, &SyncTarget)> =
                    unique.iter().skip(lane).step_by(lanes).collect();
                let work = move || {
                    mine.into_iter()
                        .map(|(k, t)| (k.clone(), sync_one(t, stats)))
                        .collect::<Vec<_>>()
                };
                // If no thread can be had, this lane runs here; the round is only slower.
                match std::thread::Builder::new()
                    .name("warren-fsync".into())
                    .spawn_scoped(scope, work)
                {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        tracing::warn!(error = %e, "no thread for an fsync lane");
                        let me = unique.iter().skip(lane).step_by(lanes);
                        inline.extend(me.map(|(k, t)| (k.clone(), sync_one(t, stats))));
                    }
                }
            }
            inline.extend(
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default()),
            );
            inline
        })
    };
    // Per target: `None` if its fsync worked, else the error's kind and text. A target with
    // no result (its lane panicked) counts as failed.
    let mut outcome: HashMap<TargetKey, Option<(io::ErrorKind, String)>> = unique
        .iter()
        .map(|(k, _)| {
            (
                k.clone(),
                Some((io::ErrorKind::Other, "fsync lane failed".to_owned())),
            )
        })
        .collect();
    for (key, result) in results {
        if let Err(e) = &result {
            tracing::error!(error = %e, "fsync failed; the queue logs waiting on it stop");
        }
        outcome.insert(key, result.err().map(|e| (e.kind(), e.to_string())));
    }
    drop(unique);
    for req in batch.drain(..) {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let failure = req
            .targets
            .iter()
            .find_map(|t| outcome.get(&t.key()).cloned().flatten());
        match failure {
            None => req.answer(Ok(())),
            Some((kind, text)) => req.answer(Err(StoreError::Io(io::Error::new(kind, text)))),
        }
    }
}

/// The answer to one `QueueLog::commit`: resolves once every persistent append made before
/// the commit is durable. Await it, or poll it with `try_result`, or block with `wait`
/// (never from inside an async task).
#[derive(Debug)]
pub struct Commit {
    state: CommitState,
}

#[derive(Debug)]
enum CommitState {
    Done(Option<Result<(), StoreError>>),
    Waiting(oneshot::Receiver<Result<(), StoreError>>),
}

impl Commit {
    pub(crate) fn done(result: Result<(), StoreError>) -> Commit {
        Commit {
            state: CommitState::Done(Some(result)),
        }
    }

    pub(crate) fn waiting(rx: oneshot::Receiver<Result<(), StoreError>>) -> Commit {
        Commit {
            state: CommitState::Waiting(rx),
        }
    }

    /// Blocks the calling thread until the commit is durable (or failed).
    pub fn wait(self) -> Result<(), StoreError> {
        match self.state {
            CommitState::Done(r) => r.unwrap_or_else(|| Err(poisoned())),
            CommitState::Waiting(rx) => rx.blocking_recv().unwrap_or_else(|_| Err(poisoned())),
        }
    }

    /// The result if it is known already; `None` while the fsync is still running.
    pub fn try_result(&mut self) -> Option<Result<(), StoreError>> {
        match &mut self.state {
            CommitState::Done(r) => r.take(),
            CommitState::Waiting(rx) => match rx.try_recv() {
                Ok(r) => {
                    self.state = CommitState::Done(None);
                    Some(r)
                }
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.state = CommitState::Done(None);
                    Some(Err(poisoned()))
                }
            },
        }
    }
}

impl Future for Commit {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            CommitState::Done(r) => Poll::Ready(r.take().unwrap_or_else(|| Err(poisoned()))),
            CommitState::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(poisoned()))),
        }
    }
}
