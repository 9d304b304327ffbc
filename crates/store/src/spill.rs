//! Spill files: fixed-size index entries (a caller's sort key, a message id, its position in a
//! log) that a caller keeps on disk instead of in memory, one file per group of its choosing
//! (docs/storage-format.md, "Spill files"). Appended, read back in chunks, removed. Never synced
//! and never recovered: they only index a log, so the caller rebuilds them from the log after a
//! restart and `SpillDir::create` empties the directory first. Knows nothing of what the keys
//! mean.

use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::StoreError;
use crate::storage::{create_dir_all_durably, Storage};
use crate::{MessageId, Position};

/// Bytes of one entry on disk: key u64, id u64, segment u32, offset u32, length u32.
pub const SPILL_ENTRY_LEN: usize = 28;

/// One index entry: `key` orders entries for the caller (the store does not look at it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpillEntry {
    pub key: u64,
    pub id: MessageId,
    pub position: Position,
}

impl SpillEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.position.segment().to_le_bytes());
        out.extend_from_slice(&self.position.offset().to_le_bytes());
        out.extend_from_slice(&self.position.len().to_le_bytes());
    }

    fn decode(b: &[u8]) -> SpillEntry {
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |at: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[at..at + 4]);
            u32::from_le_bytes(a)
        };
        SpillEntry {
            key: u64_at(0),
            id: u64_at(8),
            position: Position::new(u32_at(16), u32_at(20), u32_at(24)),
        }
    }
}

/// A directory of spill files, owned by one writer.
#[derive(Debug)]
pub struct SpillDir {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    scratch: Vec<u8>,
}

fn io_at(e: io::Error, path: &Path) -> StoreError {
    StoreError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl SpillDir {
    /// Creates `dir`, removing whatever an earlier run left in it. Blocking.
    pub fn create(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
    ) -> Result<SpillDir, StoreError> {
        let dir = dir.into();
        if storage.exists(&dir).map_err(|e| io_at(e, &dir))? {
            storage.remove_dir_all(&dir).map_err(|e| io_at(e, &dir))?;
        }
        create_dir_all_durably(&*storage, &dir).map_err(|e| io_at(e, &dir))?;
        Ok(SpillDir {
            storage,
            dir,
            scratch: Vec::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Appends `entries` to the file `name`, creating it if needed. On failure the file is
    /// cut back to its length before the call, so that a retry does not duplicate entries.
    pub fn append(&mut self, name: &str, entries: &[SpillEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let path = self.path(name);
        let file = match self.storage.open_append(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => self
                .storage
                .create_new(&path)
                .map_err(|e| io_at(e, &path))?,
            Err(e) => return Err(io_at(e, &path)),
        };
        let before = file.len().map_err(|e| io_at(e, &path))?;
        self.scratch.clear();
        for entry in entries {
            entry.encode(&mut self.scratch);
        }
        if let Err(e) = file.append(&[IoSlice::new(&self.scratch)]) {
            let _ = file.set_len(before);
            return Err(io_at(e, &path));
        }
        Ok(())
    }

    /// Reads up to `max` entries of file `name`, starting at entry number `from`, into `out`;
    /// returns how many it read (0 past the end, or when the file does not exist).
    pub fn read(
        &self,
        name: &str,
        from: u64,
        max: usize,
        out: &mut Vec<SpillEntry>,
    ) -> Result<usize, StoreError> {
        let path = self.path(name);
        let file = match self.storage.open_read(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_at(e, &path)),
        };
        let len = file.len().map_err(|e| io_at(e, &path))?;
        let start = from.saturating_mul(SPILL_ENTRY_LEN as u64);
        if start >= len {
            return Ok(0);
        }
        let available = ((len - start) / SPILL_ENTRY_LEN as u64) as usize;
        let count = available.min(max);
        let mut buf = vec![0u8; count * SPILL_ENTRY_LEN];
        file.read_exact_at(&mut buf, start)
            .map_err(|e| io_at(e, &path))?;
        out.extend(buf.chunks_exact(SPILL_ENTRY_LEN).map(SpillEntry::decode));
        Ok(count)
    }

    /// Removes the file `name`; a missing file is not an error.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let path = self.path(name);
        match self.storage.remove(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_at(e, &path)),
        }
    }

    /// Removes the directory and every file in it.
    pub fn destroy(self) -> Result<(), StoreError> {
        self.storage
            .remove_dir_all(&self.dir)
            .map_err(|e| io_at(e, &self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStorage;

    fn entry(n: u64) -> SpillEntry {
        SpillEntry {
            key: n * 10,
            id: n,
            position: Position::new(n as u32 + 1, n as u32 * 3, 100 + n as u32),
        }
    }

    #[test]
    fn entries_round_trip_in_chunks_and_files_go_away() {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        let dir = Path::new("/data/spill");
        let mut spill = SpillDir::create(storage.clone(), dir).unwrap();
        let first: Vec<SpillEntry> = (0..5).map(entry).collect();
        let second: Vec<SpillEntry> = (5..12).map(entry).collect();
        spill.append("a", &first).unwrap();
        spill.append("a", &second).unwrap();
        spill.append("b", &first[..1]).unwrap();
        let mut out = Vec::new();
        assert_eq!(spill.read("a", 0, 4, &mut out).unwrap(), 4);
        assert_eq!(spill.read("a", 4, 100, &mut out).unwrap(), 8);
        assert_eq!(spill.read("a", 12, 100, &mut out).unwrap(), 0);
        let all: Vec<SpillEntry> = (0..12).map(entry).collect();
        assert_eq!(out, all);
        spill.remove("a").unwrap();
        spill.remove("a").unwrap();
        assert_eq!(spill.read("a", 0, 10, &mut out).unwrap(), 0);
        drop(spill);
        // A new run starts empty: spill files are never recovered.
        let spill = SpillDir::create(storage.clone(), dir).unwrap();
        assert_eq!(spill.read("b", 0, 10, &mut Vec::new()).unwrap(), 0);
        spill.destroy().unwrap();
        assert!(!storage.exists(dir).unwrap());
    }
}
