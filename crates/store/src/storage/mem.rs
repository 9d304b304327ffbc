//! `MemStorage`: an in-memory `Storage` for tests that models what survives a power cut (only
//! synced file data under synced directory entries) and can crash at the N-th sync or tear the
//! last write. Knows nothing of what the files hold.

use super::{Storage, StorageFile};
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// In-memory file system. Clones share the same state. Paths must be absolute; `/` exists.
///
/// Durability model, as on a journaling file system without `data=journal`:
/// - a file's data survives a crash up to its last `sync` (bytes written after it are lost);
/// - a name (create, rename, remove) survives a crash once its parent directory is synced;
/// - after `crash_at_sync(n)` the n-th sync from then on fails, and from that moment every
///   operation fails as on a machine that lost power;
/// - `crash()` returns the state a reboot would find: a new, independent storage.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    gate: Condvar,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(u64),
}

#[derive(Debug, Default, Clone)]
struct FileData {
    content: Vec<u8>,
    synced: Vec<u8>,
    /// `content[..common] == synced[..common]` and `synced.len() >= common`.
    common: usize,
}

#[derive(Debug, Default)]
struct State {
    current: BTreeMap<PathBuf, Entry>,
    durable: BTreeMap<PathBuf, Entry>,
    files: HashMap<u64, FileData>,
    next_file: u64,
    crashed: bool,
    syncs_attempted: u64,
    file_syncs: u64,
    dir_syncs: u64,
    writes: u64,
    crash_at: Option<u64>,
    last_write: Option<(u64, usize, usize)>,
    tear_keep: Option<usize>,
    gate_closed: bool,
    waiting_at_gate: usize,
}

fn crashed_error() -> io::Error {
    io::Error::other("simulated crash: the storage is gone")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

fn is_root(path: &Path) -> bool {
    path.parent().is_none()
}

impl State {
    fn check(&self) -> io::Result<()> {
        if self.crashed {
            Err(crashed_error())
        } else {
            Ok(())
        }
    }

    fn parent_must_be_dir(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) => match self.current.get(parent) {
                Some(Entry::Dir) => Ok(()),
                _ => Err(not_found(parent)),
            },
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the root is not a file",
            )),
        }
    }

    fn new_file(&mut self, path: &Path) -> u64 {
        let id = self.next_file;
        self.next_file += 1;
        self.files.insert(id, FileData::default());
        self.current.insert(path.to_path_buf(), Entry::File(id));
        id
    }

    fn file_at(&self, path: &Path) -> io::Result<u64> {
        match self.current.get(path) {
            Some(Entry::File(id)) => Ok(*id),
            Some(Entry::Dir) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is a directory", path.display()),
            )),
            None => Err(not_found(path)),
        }
    }

    /// Counts a sync attempt; the one chosen by `crash_at_sync` crashes the storage.
    fn count_sync(&mut self) -> io::Result<()> {
        self.check()?;
        self.syncs_attempted += 1;
        if self.crash_at == Some(self.syncs_attempted) {
            self.crashed = true;
            return Err(crashed_error());
        }
        Ok(())
    }
}

impl MemStorage {
    pub fn new() -> MemStorage {
        let storage = MemStorage::default();
        {
            let mut st = storage.inner.state.lock();
            st.current.insert(PathBuf::from("/"), Entry::Dir);
            st.durable.insert(PathBuf::from("/"), Entry::Dir);
        }
        storage
    }

    /// The `n`-th sync (file or directory, counting from 1 at this call) fails and crashes the
    /// storage: it and everything after it fail, nothing it would have synced is durable.
    pub fn crash_at_sync(&self, n: u64) {
        let mut st = self.inner.state.lock();
        st.crash_at = Some(st.syncs_attempted + n.max(1));
    }

    /// In the image `crash()` returns, the file of the last write keeps that write's first
    /// `keep_bytes` bytes (and every byte written to that file before it), as if the disk had
    /// written part of the dirty pages when power went. Applies only if the write was not
    /// synced and the file's name is durable.
    pub fn tear_last_write(&self, keep_bytes: usize) {
        self.inner.state.lock().tear_keep = Some(keep_bytes);
    }

    /// Power cut now: this storage fails every operation from now on, and the returned one
    /// holds what a reboot finds (synced data under synced names, plus the torn write if
    /// `tear_last_write` was called).
    pub fn crash(&self) -> MemStorage {
        let mut st = self.inner.state.lock();
        st.crashed = true;
        let mut image = State {
            next_file: st.next_file,
            ..State::default()
        };
        for (path, entry) in &st.durable {
            // A name is reachable only if every directory above it is durable.
            let reachable = path
                .ancestors()
                .skip(1)
                .all(|a| is_root(a) || st.durable.get(a) == Some(&Entry::Dir));
            if !reachable {
                continue;
            }
            image.current.insert(path.clone(), *entry);
            image.durable.insert(path.clone(), *entry);
            if let Entry::File(id) = entry {
                let data = st.files.get(id).cloned().unwrap_or_default();
                let mut bytes = data.synced.clone();
                if let (Some(keep), Some((wid, start, len))) = (st.tear_keep, st.last_write) {
                    let end = (start + keep.min(len)).min(data.content.len());
                    if wid == *id && end > bytes.len() && start + len > data.common {
                        bytes = data.content[..end].to_vec();
                    }
                }
                image.files.insert(
                    *id,
                    FileData {
                        common: bytes.len(),
                        synced: bytes.clone(),
                        content: bytes,
                    },
                );
            }
        }
        MemStorage {
            inner: Arc::new(Inner {
                state: Mutex::new(image),
                gate: Condvar::new(),
            }),
        }
    }

    /// Successful file syncs so far.
    pub fn file_sync_count(&self) -> u64 {
        self.inner.state.lock().file_syncs
    }

    /// Successful directory syncs so far.
    pub fn dir_sync_count(&self) -> u64 {
        self.inner.state.lock().dir_syncs
    }

    /// Sync attempts so far (what `crash_at_sync` counts).
    pub fn sync_attempts(&self) -> u64 {
        self.inner.state.lock().syncs_attempted
    }

    /// Appends so far.
    pub fn write_count(&self) -> u64 {
        self.inner.state.lock().writes
    }

    /// While closed, every sync blocks (lets a test pile up waiters deterministically).
    pub fn close_sync_gate(&self) {
        self.inner.state.lock().gate_closed = true;
    }

    pub fn open_sync_gate(&self) {
        self.inner.state.lock().gate_closed = false;
        self.inner.gate.notify_all();
    }

    /// Syncs currently blocked at the closed gate.
    pub fn syncs_waiting_at_gate(&self) -> usize {
        self.inner.state.lock().waiting_at_gate
    }

    /// Current bytes of a file.
    pub fn contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.inner.state.lock();
        let id = st.file_at(path)?;
        Ok(st
            .files
            .get(&id)
            .map(|f| f.content.clone())
            .unwrap_or_default())
    }

    /// Damages a byte in place (current and durable copy alike), as bit rot would.
    pub fn flip_byte(&self, path: &Path, offset: usize) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        let id = st.file_at(path)?;
        let f = st.files.get_mut(&id).ok_or_else(|| not_found(path))?;
        if offset >= f.content.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        f.content[offset] ^= 0x5a;
        if offset < f.synced.len() {
            f.synced[offset] ^= 0x5a;
        }
        Ok(())
    }

    /// Cuts a file (current and durable copy alike), as a damaged disk would.
    pub fn chop(&self, path: &Path, len: usize) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        let id = st.file_at(path)?;
        let f = st.files.get_mut(&id).ok_or_else(|| not_found(path))?;
        f.content.truncate(len);
        f.synced.truncate(len);
        f.common = f.common.min(len);
        Ok(())
    }

    /// Sum of the current sizes of the files below `dir`.
    pub fn bytes_under(&self, dir: &Path) -> u64 {
        let st = self.inner.state.lock();
        st.current
            .iter()
            .filter(|(p, _)| p.starts_with(dir))
            .filter_map(|(_, e)| match e {
                Entry::File(id) => st.files.get(id).map(|f| f.content.len() as u64),
                Entry::Dir => None,
            })
            .sum()
    }

    fn handle(&self, id: u64) -> Arc<dyn StorageFile> {
        Arc::new(MemFile {
            inner: self.inner.clone(),
            id,
        })
    }
}

struct MemFile {
    inner: Arc<Inner>,
    id: u64,
}

impl std::fmt::Debug for MemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemFile({})", self.id)
    }
}

impl StorageFile for MemFile {
    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        st.check()?;
        st.writes += 1;
        let f = st.files.entry(self.id).or_default();
        let start = f.content.len();
        for b in bufs {
            f.content.extend_from_slice(b);
        }
        let len = f.content.len() - start;
        st.last_write = Some((self.id, start, len));
        Ok(())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let st = self.inner.state.lock();
        st.check()?;
        let content = st
            .files
            .get(&self.id)
            .map(|f| &f.content[..])
            .unwrap_or(&[]);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(content.len());
        let n = buf.len().min(content.len() - start);
        buf[..n].copy_from_slice(&content[start..start + n]);
        Ok(n)
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        while st.gate_closed && !st.crashed {
            st.waiting_at_gate += 1;
            self.inner.gate.wait(&mut st);
            st.waiting_at_gate -= 1;
        }
        st.count_sync()?;
        st.file_syncs += 1;
        let f = st.files.entry(self.id).or_default();
        let common = f.common;
        f.synced.truncate(common);
        let tail = f.content[common..].to_vec();
        f.synced.extend_from_slice(&tail);
        f.common = f.content.len();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let st = self.inner.state.lock();
        st.check()?;
        Ok(st.files.get(&self.id).map_or(0, |f| f.content.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        st.check()?;
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let f = st.files.entry(self.id).or_default();
        f.content.resize(len, 0);
        f.common = f.common.min(len);
        Ok(())
    }
}

impl Storage for MemStorage {
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = self.inner.state.lock();
        st.check()?;
        st.parent_must_be_dir(path)?;
        if st.current.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let id = st.new_file(path);
        drop(st);
        Ok(self.handle(id))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = self.inner.state.lock();
        st.check()?;
        st.parent_must_be_dir(path)?;
        let id = match st.current.get(path) {
            Some(Entry::File(id)) => {
                let id = *id;
                if let Some(f) = st.files.get_mut(&id) {
                    f.content.clear();
                    f.common = 0;
                }
                id
            }
            Some(Entry::Dir) => return Err(io::ErrorKind::InvalidInput.into()),
            None => st.new_file(path),
        };
        drop(st);
        Ok(self.handle(id))
    }

    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let st = self.inner.state.lock();
        st.check()?;
        let id = st.file_at(path)?;
        drop(st);
        Ok(self.handle(id))
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.open_append(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        st.check()?;
        let id = st.file_at(from)?;
        st.parent_must_be_dir(to)?;
        if st.current.get(to) == Some(&Entry::Dir) {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        st.current.remove(from);
        st.current.insert(to.to_path_buf(), Entry::File(id));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        st.check()?;
        st.file_at(path)?;
        st.current.remove(path);
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.inner.state.lock();
        st.check()?;
        if st.current.get(path) != Some(&Entry::Dir) {
            return Err(not_found(path));
        }
        let mut names: Vec<String> = st
            .current
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        st.check()?;
        st.parent_must_be_dir(path)?;
        if st.current.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        st.current.insert(path.to_path_buf(), Entry::Dir);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        st.check()?;
        if st.current.get(path) != Some(&Entry::Dir) {
            return Err(not_found(path));
        }
        st.current.retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let st = self.inner.state.lock();
        st.check()?;
        Ok(st.current.contains_key(path))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        while st.gate_closed && !st.crashed {
            st.waiting_at_gate += 1;
            self.inner.gate.wait(&mut st);
            st.waiting_at_gate -= 1;
        }
        if st.current.get(path) != Some(&Entry::Dir) {
            st.check()?;
            return Err(not_found(path));
        }
        st.count_sync()?;
        st.dir_syncs += 1;
        let children: Vec<(PathBuf, Entry)> = st
            .current
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .map(|(p, e)| (p.clone(), *e))
            .collect();
        st.durable.retain(|p, _| p.parent() != Some(path));
        st.durable.extend(children);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn only_synced_data_under_synced_names_survives() {
        let s = MemStorage::new();
        s.create_dir(&p("/d")).unwrap();
        s.sync_dir(&p("/")).unwrap();
        let a = s.create_new(&p("/d/a")).unwrap();
        a.append(&[IoSlice::new(b"synced")]).unwrap();
        a.sync().unwrap();
        a.append(&[IoSlice::new(b"-lost")]).unwrap();
        let b = s.create_new(&p("/d/b")).unwrap();
        b.append(&[IoSlice::new(b"no dir sync")]).unwrap();
        b.sync().unwrap();
        // a's name is not durable yet either.
        let img = s.crash();
        assert!(img.list_dir(&p("/d")).unwrap().is_empty());
        assert!(
            a.append(&[IoSlice::new(b"x")]).is_err(),
            "crashed storage fails"
        );

        let s = MemStorage::new();
        s.create_dir(&p("/d")).unwrap();
        s.sync_dir(&p("/")).unwrap();
        let a = s.create_new(&p("/d/a")).unwrap();
        a.append(&[IoSlice::new(b"synced")]).unwrap();
        a.sync().unwrap();
        s.sync_dir(&p("/d")).unwrap();
        a.append(&[IoSlice::new(b"-lost")]).unwrap();
        let img = s.crash();
        assert_eq!(img.contents(&p("/d/a")).unwrap(), b"synced");
    }

    #[test]
    fn tear_keeps_a_prefix_of_the_last_write() {
        let s = MemStorage::new();
        let a = s.create_new(&p("/a")).unwrap();
        s.sync_dir(&p("/")).unwrap();
        a.append(&[IoSlice::new(b"one")]).unwrap();
        a.sync().unwrap();
        a.append(&[IoSlice::new(b"two")]).unwrap();
        a.append(&[IoSlice::new(b"three")]).unwrap();
        s.tear_last_write(2);
        let img = s.crash();
        assert_eq!(img.contents(&p("/a")).unwrap(), b"onetwoth");
    }

    #[test]
    fn crash_at_the_nth_sync() {
        let s = MemStorage::new();
        let a = s.create_new(&p("/a")).unwrap();
        s.crash_at_sync(2);
        s.sync_dir(&p("/")).unwrap();
        a.append(&[IoSlice::new(b"x")]).unwrap();
        assert!(a.sync().is_err());
        assert!(s.exists(&p("/a")).is_err());
        let img = s.crash();
        assert_eq!(img.contents(&p("/a")).unwrap(), b"");
    }

    #[test]
    fn rename_is_durable_after_dir_sync() {
        let s = MemStorage::new();
        let t = s.create(&p("/t")).unwrap();
        t.append(&[IoSlice::new(b"new")]).unwrap();
        t.sync().unwrap();
        s.rename(&p("/t"), &p("/f")).unwrap();
        let before = s.crash();
        assert!(!before.exists(&p("/f")).unwrap());

        let s = MemStorage::new();
        let t = s.create(&p("/t")).unwrap();
        t.append(&[IoSlice::new(b"new")]).unwrap();
        t.sync().unwrap();
        s.rename(&p("/t"), &p("/f")).unwrap();
        s.sync_dir(&p("/")).unwrap();
        let after = s.crash();
        assert_eq!(after.contents(&p("/f")).unwrap(), b"new");
        assert!(!after.exists(&p("/t")).unwrap());
    }
}
