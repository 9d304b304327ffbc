//! Where a queue's directory is: `<data dir>/queues/<vhost>/<queue>/` with both names escaped
//! into safe file names (docs/storage-format.md, "Directory layout"). Knows nothing of what is
//! inside.

use std::fmt::Write;
use std::path::{Path, PathBuf};

const MAX_NAME: usize = 200;
const CUT_AT: usize = 180;

/// The directory of a queue's log.
pub fn queue_dir(data_dir: &Path, vhost: &str, queue: &str) -> PathBuf {
    data_dir
        .join("queues")
        .join(escape_name(vhost))
        .join(escape_name(queue))
}

/// The directory holding the queue directories of a vhost.
pub fn vhost_dir(data_dir: &Path, vhost: &str) -> PathBuf {
    data_dir.join("queues").join(escape_name(vhost))
}

/// The directory of a durable delayed-message exchange: its message log and spill files
/// (docs/storage-format.md, "Delayed-message exchanges").
pub fn delayed_exchange_dir(data_dir: &Path, vhost: &str, exchange: &str) -> PathBuf {
    data_dir
        .join("delayed")
        .join(escape_name(vhost))
        .join(escape_name(exchange))
}

/// A file name for any string: `[A-Za-z0-9._-]` kept (a leading `.` escaped), every other
/// byte `%XX`; long results cut and suffixed with a hash of the whole name.
pub fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.is_empty() {
        // The default exchange's empty name must still be a directory name.
        out.push('%');
    }
    if out.len() > MAX_NAME {
        out.truncate(CUT_AT);
        let _ = write!(out, "~{:016x}", fnv1a(name.as_bytes()));
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape_name("/"), "%2F");
        assert_eq!(escape_name("orders.eu-1_x"), "orders.eu-1_x");
        assert_eq!(escape_name(".."), "%2E.");
        assert_eq!(escape_name("a b/é"), "a%20b%2F%C3%A9");
        assert_eq!(escape_name(""), "%");
        let long = "x".repeat(300);
        let e = escape_name(&long);
        assert_eq!(e.len(), CUT_AT + 17);
        assert_ne!(
            e,
            escape_name(&"x".repeat(301)),
            "the hash tells long names apart"
        );
        assert_eq!(
            queue_dir(Path::new("/d"), "/", "q"),
            Path::new("/d/queues/%2F/q")
        );
    }
}
