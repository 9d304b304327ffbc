//! What a data directory holds, read from the filesystem: sizes, the segment files of a queue
//! (found by walking for `*.seg`, per docs/storage-format.md's directory layout), and the
//! damage the recovery tests do to them. Knows nothing of the record format beyond "a message
//! body is stored as its bytes".

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Every regular file under `root`, recursively, sorted by path.
pub fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// Bytes held by the files under `root` (their lengths; a file deleted while we walk counts 0).
pub fn dir_size(root: &Path) -> u64 {
    files(root)
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// One line per file with its size, relative to `root`: for failure messages.
pub fn describe(root: &Path) -> String {
    let listed: Vec<String> = files(root)
        .iter()
        .map(|p| {
            let len = fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let rel = p.strip_prefix(root).unwrap_or(p);
            format!("  {} ({len} bytes)", rel.display())
        })
        .collect();
    if listed.is_empty() {
        format!("{} is empty", root.display())
    } else {
        format!("{}:\n{}", root.display(), listed.join("\n"))
    }
}

/// The `*.seg` files of queue `queue`, oldest first. The tests name their queues with
/// characters the store keeps as they are (`[A-Za-z0-9_-]`), so the queue's directory has the
/// queue's own name; segment names are fixed-width hex, so name order is sequence order.
pub fn segments_of(data_dir: &Path, queue: &str) -> Vec<PathBuf> {
    assert!(
        queue
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "segments_of needs a queue name the store does not escape, got {queue:?}"
    );
    let mut segs: Vec<PathBuf> = files(data_dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .filter(|p| {
            p.parent()
                .and_then(Path::file_name)
                .is_some_and(|d| d == queue)
        })
        .collect();
    segs.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    segs
}

/// Offset of the first occurrence of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The segment file among `segments` whose bytes contain `body`, and where.
pub fn locate(segments: &[PathBuf], body: &[u8]) -> Option<(PathBuf, usize)> {
    segments.iter().find_map(|p| {
        let mut bytes = Vec::new();
        fs::File::open(p).ok()?.read_to_end(&mut bytes).ok()?;
        find(&bytes, body).map(|at| (p.clone(), at))
    })
}

/// Cuts `path` to `len` bytes: a write torn by a crash.
pub fn truncate(path: &Path, len: u64) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.set_len(len)
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
    f.sync_all().expect("fsync the damaged file");
}

/// Inverts every bit of the byte at `offset`: silent corruption on disk.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut b).expect("read the byte to flip");
    b[0] = !b[0];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&b).expect("write the flipped byte");
    f.sync_all().expect("fsync the damaged file");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_locates_needles() {
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"abc", b"x"), None);
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"abc", b""), None);
    }

    #[test]
    fn segments_are_found_by_queue_directory_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("queues").join("%2F").join("q-1");
        fs::create_dir_all(&q).unwrap();
        let other = dir.path().join("queues").join("%2F").join("q-2");
        fs::create_dir_all(&other).unwrap();
        for name in [
            "0000000000000002.seg",
            "0000000000000001.seg",
            "0000000000000001.ack",
        ] {
            fs::write(q.join(name), b"x").unwrap();
        }
        fs::write(other.join("0000000000000001.seg"), b"yy").unwrap();
        let segs = segments_of(dir.path(), "q-1");
        let names: Vec<_> = segs
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["0000000000000001.seg", "0000000000000002.seg"]);
        assert_eq!(dir_size(dir.path()), 5);

        let f = q.join("0000000000000001.seg");
        fs::write(&f, b"hello world").unwrap();
        flip_byte(&f, 0);
        truncate(&f, 4);
        assert_eq!(fs::read(&f).unwrap(), [!b'h', b'e', b'l', b'l']);
        assert_eq!(locate(&segs, b"ell"), Some((f, 1)));
    }
}
