//! `FsStorage`: the `Storage` seam over the real file system (Unix). Knows nothing of what the
//! files hold.

use super::{Storage, StorageFile};
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Real files. Stateless: every method works on the paths it is given.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

impl FsStorage {
    pub fn new() -> FsStorage {
        FsStorage
    }
}

#[derive(Debug)]
struct FsFile {
    file: File,
}

fn append_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).append(true);
    o
}

impl StorageFile for FsFile {
    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        write_all_vectored(&self.file, bufs)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

/// `Write::write_all_vectored` is not stable: the same loop, tolerant of short writes.
fn write_all_vectored(mut file: &File, bufs: &[IoSlice<'_>]) -> io::Result<()> {
    let mut first = 0;
    let mut skip = 0; // bytes of bufs[first] already written
    while first < bufs.len() {
        if bufs[first].len() == skip {
            first += 1;
            skip = 0;
            continue;
        }
        let n = if skip == 0 {
            file.write_vectored(&bufs[first..])
        } else {
            // A short write ended inside a buffer: finish that one alone.
            file.write(&bufs[first][skip..])
        };
        let mut n = match n {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while n > 0 {
            let left = bufs[first].len() - skip;
            if n >= left {
                n -= left;
                first += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
    Ok(())
}

fn wrap(file: File) -> Arc<dyn StorageFile> {
    Arc::new(FsFile { file })
}

impl Storage for FsStorage {
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(wrap(append_options().create_new(true).open(path)?))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        // O_APPEND and O_TRUNC cannot be asked for together through OpenOptions.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        self.open_append(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(wrap(append_options().open(path)?))
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(wrap(File::open(path)?))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(raw) => {
                    tracing::warn!(dir = %path.display(), name = ?raw, "ignoring a file name that is not UTF-8")
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        match fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_truncate_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new();
        let p = dir.path().join("f");
        let f = s.create_new(&p).unwrap();
        assert!(
            s.create_new(&p).is_err(),
            "create_new must refuse an existing file"
        );
        f.append(&[
            IoSlice::new(b"hello "),
            IoSlice::new(b""),
            IoSlice::new(b"world"),
        ])
        .unwrap();
        f.sync().unwrap();
        assert_eq!(f.len().unwrap(), 11);
        let mut buf = [0u8; 5];
        f.read_exact_at(&mut buf, 6).unwrap();
        assert_eq!(&buf, b"world");
        f.set_len(5).unwrap();
        f.append(&[IoSlice::new(b"!")]).unwrap();
        let mut all = [0u8; 6];
        s.open_read(&p).unwrap().read_exact_at(&mut all, 0).unwrap();
        assert_eq!(&all, b"hello!");
        s.sync_dir(dir.path()).unwrap();
        assert_eq!(s.list_dir(dir.path()).unwrap(), vec!["f".to_string()]);
        let q = dir.path().join("g");
        s.rename(&p, &q).unwrap();
        assert!(!s.exists(&p).unwrap());
        assert!(s.exists(&q).unwrap());
        let c = s.create(&q).unwrap();
        assert_eq!(c.len().unwrap(), 0, "create empties an existing file");
        s.remove(&q).unwrap();
        assert!(s.list_dir(dir.path()).unwrap().is_empty());
    }
}
