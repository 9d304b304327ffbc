//! The file-system seam: every byte the store reads or writes goes through `Storage` and
//! `StorageFile`, so tests can swap real files for `MemStorage` and crash it. Knows nothing of
//! segments, records or queues.

mod fs;
mod mem;

pub use fs::FsStorage;
pub use mem::MemStorage;

use std::fmt;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file. Writes always go to the end of the file; reads are positional, so one handle
/// serves the writer and readers alike. Shared (`Arc`) between a log and the syncer thread.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Writes every byte of `bufs`, in order, at the end of the file.
    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<()>;
    /// Reads up to `buf.len()` bytes at `offset`; returns 0 at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Makes the data written so far durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Cuts the file to `len` bytes (used by recovery on a file opened with `open_append`).
    fn set_len(&self, len: u64) -> io::Result<()>;

    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fills `buf` from `offset`, failing with `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A file system. Paths are used as given; nothing is durable until synced (file data by
/// `StorageFile::sync`, names — creation, rename, removal — by `sync_dir` of the parent).
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates a file that must not exist yet, open for appending and reading.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates a file or empties an existing one, open for appending and reading.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Opens an existing file for appending and reading.
    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Opens an existing file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of a directory, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Creates one directory; its parent must exist.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything below it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// Creates `dir` and any missing ancestors so that they survive a power cut: each created
/// directory and the first existing ancestor are synced.
pub fn create_dir_all_durably(storage: &dyn Storage, dir: &Path) -> io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut cursor = Some(dir);
    while let Some(p) = cursor {
        if p.as_os_str().is_empty() || storage.exists(p)? {
            break;
        }
        missing.push(p.to_path_buf());
        cursor = p.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    for p in missing.iter().rev() {
        match storage.create_dir(p) {
            Ok(()) => {}
            // Someone else (another queue of the same vhost) created it meanwhile.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    // The topmost created directory's entry lives in its parent; every other one lives in the
    // directory created just above it.
    let top = &missing[missing.len() - 1];
    if let Some(parent) = top.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        storage.sync_dir(parent)?;
    }
    for p in missing.iter().skip(1) {
        storage.sync_dir(p)?;
    }
    Ok(())
}
