//! Recovery of one queue directory (docs/storage-format.md, "Recovery"): reads every segment
//! and ack file, keeps what is intact, truncates torn tails, sets unreadable files aside, and
//! hands the log its starting state. Knows nothing of appending or of the group commit.

use crate::error::StoreError;
use crate::format::{self, FileKind, HeaderError, Parsed, HEADER_LEN};
use crate::log::{ack_path, seg_path};
use crate::storage::{create_dir_all_durably, Storage, StorageFile};
use crate::{MessageId, Position};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};

/// Read chunk for scanning; records longer than this are read whole.
const SCAN_CHUNK: usize = 1 << 20;

/// A message that survived: still to be delivered (or redelivered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveredMessage {
    pub id: MessageId,
    pub position: Position,
    /// A delivered marker was recorded for it (`QueueLog::mark_delivered`): send it with
    /// redelivered=true.
    pub redelivered: bool,
    /// The expiry it was appended with (`QueueLog::append_expiring`).
    pub expires_at: Option<u64>,
}

/// What `QueueLog::open` found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Live persistent messages, in the order they were appended.
    pub messages: Vec<RecoveredMessage>,
    /// One more than the largest message id found on disk (live or not); 0 if none.
    pub next_id: MessageId,
    /// Bytes cut from torn or corrupt tails, plus bytes of files set aside as unreadable.
    pub dropped_bytes: u64,
}

/// Per-segment state recovery hands to the log.
pub(crate) struct RecoveredSegment {
    pub(crate) live: u64,
    pub(crate) ack_exists: bool,
}

pub(crate) struct RecoveryOutcome {
    pub(crate) recovered: Recovered,
    pub(crate) segments: BTreeMap<u32, RecoveredSegment>,
    pub(crate) next_seq: u64,
}

enum Name {
    Seg(u64),
    Ack(u64),
    Corrupt(u64),
}

fn parse_name(name: &str) -> Option<Name> {
    let (stem, rest) = name.split_at_checked(16)?;
    if !stem
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let seq = u64::from_str_radix(stem, 16).ok()?;
    match rest {
        ".seg" => Some(Name::Seg(seq)),
        ".ack" => Some(Name::Ack(seq)),
        ".seg.corrupt" | ".ack.corrupt" => Some(Name::Corrupt(seq)),
        _ => None,
    }
}

fn io_at(e: io::Error, path: &Path) -> StoreError {
    StoreError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Takes each live message as recovery finds it, with its whole record (framing included),
/// instead of `Recovered::messages` collecting it (when `recover_visiting` is given one).
pub(crate) type Visitor<'a> = dyn FnMut(RecoveredMessage, &[u8]) + 'a;

pub(crate) fn recover_visiting(
    storage: &dyn Storage,
    dir: &Path,
    mut visit: Option<&mut Visitor<'_>>,
) -> Result<RecoveryOutcome, StoreError> {
    create_dir_all_durably(storage, dir).map_err(|e| io_at(e, dir))?;
    let mut segs = BTreeSet::new();
    let mut acks = BTreeSet::new();
    let mut max_seq = 0u64;
    for name in storage.list_dir(dir).map_err(|e| io_at(e, dir))? {
        match parse_name(&name) {
            Some(Name::Seg(s)) => {
                segs.insert(s);
                max_seq = max_seq.max(s);
            }
            Some(Name::Ack(s)) => {
                acks.insert(s);
                max_seq = max_seq.max(s);
            }
            Some(Name::Corrupt(s)) => max_seq = max_seq.max(s),
            None => {
                tracing::warn!(dir = %dir.display(), %name, "ignoring an unknown file in a queue directory")
            }
        }
    }
    for orphan in acks.difference(&segs) {
        // Its segment was deleted (fully acked) and the crash came before the ack file went.
        let path = ack_path(dir, *orphan);
        tracing::info!(file = %path.display(), "removing the ack file of a deleted segment");
        storage.remove(&path).map_err(|e| io_at(e, &path))?;
    }

    let mut out = RecoveryOutcome {
        recovered: Recovered::default(),
        segments: BTreeMap::new(),
        next_seq: max_seq + 1,
    };
    let mut max_id: Option<u64> = None;
    for &seq in &segs {
        let path = seg_path(dir, seq);
        let Ok(seg32) = u32::try_from(seq) else {
            return Err(StoreError::Corrupted {
                file: path,
                offset: 8,
            });
        };
        let ack_exists = acks.contains(&seq);
        let (acked, delivered, ack_exists) = if ack_exists {
            read_ack_file(storage, dir, seq, &mut out.recovered)?
        } else {
            (HashSet::new(), HashSet::new(), false)
        };
        let live = scan_segment(
            storage,
            dir,
            seg32,
            (&acked, &delivered),
            &mut out.recovered,
            &mut max_id,
            &mut visit,
        )?;
        match live {
            Some(live) if live > 0 => {
                // What is handed back must be durable even if the crash was a process kill
                // that left it in the page cache: a later power cut must not undo recovery.
                sync_file(storage, &path)?;
                if ack_exists {
                    sync_file(storage, &ack_path(dir, seq))?;
                }
                out.segments
                    .insert(seg32, RecoveredSegment { live, ack_exists });
            }
            Some(_) => {
                // Nothing live: the segment was fully acked, or held only transient messages.
                storage.remove(&path).map_err(|e| io_at(e, &path))?;
                if ack_exists {
                    let a = ack_path(dir, seq);
                    storage.remove(&a).map_err(|e| io_at(e, &a))?;
                }
            }
            None => {
                // Set aside or removed by scan_segment; its ack file is meaningless now.
                if ack_exists {
                    let a = ack_path(dir, seq);
                    storage.remove(&a).map_err(|e| io_at(e, &a))?;
                }
            }
        }
    }
    // Removals and renames above are made durable too, so recovery is not redone differently.
    storage.sync_dir(dir).map_err(|e| io_at(e, dir))?;
    out.recovered.next_id = max_id.map_or(0, |m| m.saturating_add(1));
    Ok(out)
}

fn sync_file(storage: &dyn Storage, path: &Path) -> Result<(), StoreError> {
    storage
        .open_append(path)
        .and_then(|f| f.sync())
        .map_err(|e| io_at(e, path))
}

enum HeaderVerdict {
    Ok(std::sync::Arc<dyn StorageFile>, u64),
    /// The file was removed or set aside.
    Gone,
}

/// Opens a file and checks its header; removes a file too short to have one, renames an
/// unreadable one to `*.corrupt`, refuses another version.
fn open_checked(
    storage: &dyn Storage,
    path: &Path,
    kind: FileKind,
    seq: u64,
    recovered: &mut Recovered,
) -> Result<HeaderVerdict, StoreError> {
    let file = storage.open_append(path).map_err(|e| io_at(e, path))?;
    let len = file.len().map_err(|e| io_at(e, path))?;
    let mut header = [0u8; HEADER_LEN];
    let n = (len as usize).min(HEADER_LEN);
    file.read_exact_at(&mut header[..n], 0)
        .map_err(|e| io_at(e, path))?;
    match format::check_header(&header[..n], kind, seq) {
        Ok(()) => Ok(HeaderVerdict::Ok(file, len)),
        Err(HeaderError::Short) => {
            tracing::info!(file = %path.display(), len, "removing a file cut short while it was created");
            drop(file);
            storage.remove(path).map_err(|e| io_at(e, path))?;
            recovered.dropped_bytes += len;
            Ok(HeaderVerdict::Gone)
        }
        Err(HeaderError::Damaged) => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(".corrupt");
            let aside = PathBuf::from(aside);
            tracing::error!(file = %path.display(), moved_to = %aside.display(), len,
                "file header unreadable; its records are lost, the file is kept aside");
            drop(file);
            storage.rename(path, &aside).map_err(|e| io_at(e, path))?;
            recovered.dropped_bytes += len;
            Ok(HeaderVerdict::Gone)
        }
        Err(HeaderError::Version(v)) => {
            tracing::error!(file = %path.display(), version = v, "file of an unsupported format version; the queue is not recovered");
            Err(StoreError::Corrupted {
                file: path.to_path_buf(),
                offset: 4,
            })
        }
    }
}

/// Scans records from `HEADER_LEN` to `len`, calling `each(offset, record, parsed)` for each
/// valid one; returns the end of the last valid record.
fn scan_records(
    file: &dyn StorageFile,
    path: &Path,
    len: u64,
    mut each: impl FnMut(u64, &[u8], Parsed),
) -> Result<u64, StoreError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = HEADER_LEN as u64;
    let mut pos = 0usize;
    loop {
        match format::parse_record(&buf[pos..]) {
            p @ (Parsed::Message { total, .. } | Parsed::Ids { total, .. }) => {
                each(buf_start + pos as u64, &buf[pos..pos + total], p);
                pos += total;
            }
            Parsed::Invalid => return Ok(buf_start + pos as u64),
            Parsed::Incomplete { total } => {
                let here = buf_start + pos as u64;
                let loaded_end = buf_start + buf.len() as u64;
                let need = total.unwrap_or(format::PREFIX_LEN as u64);
                if here + need > len || loaded_end >= len {
                    // The record runs past the end of the file: a torn write.
                    return Ok(here);
                }
                buf.drain(..pos);
                buf_start = here;
                pos = 0;
                let want = (need as usize).max(SCAN_CHUNK);
                let avail = (len - loaded_end) as usize;
                let old = buf.len();
                let add = want.saturating_sub(old).min(avail);
                buf.resize(old + add, 0);
                file.read_exact_at(&mut buf[old..], loaded_end)
                    .map_err(|e| io_at(e, path))?;
            }
        }
    }
}

/// Cuts a file after its last valid record.
fn truncate_tail(
    file: &dyn StorageFile,
    path: &Path,
    valid_end: u64,
    len: u64,
    recovered: &mut Recovered,
) -> Result<(), StoreError> {
    if valid_end >= len {
        return Ok(());
    }
    tracing::warn!(file = %path.display(), offset = valid_end, dropped_bytes = len - valid_end,
        "torn or corrupt record: dropping the rest of the file");
    recovered.dropped_bytes += len - valid_end;
    file.set_len(valid_end).map_err(|e| io_at(e, path))?;
    file.sync().map_err(|e| io_at(e, path))?;
    Ok(())
}

type IdSets = (HashSet<u64>, HashSet<u64>, bool);

fn read_ack_file(
    storage: &dyn Storage,
    dir: &Path,
    seq: u64,
    recovered: &mut Recovered,
) -> Result<IdSets, StoreError> {
    let path = ack_path(dir, seq);
    let (file, len) = match open_checked(storage, &path, FileKind::Ack, seq, recovered)? {
        HeaderVerdict::Ok(f, len) => (f, len),
        HeaderVerdict::Gone => return Ok((HashSet::new(), HashSet::new(), false)),
    };
    let mut acked = HashSet::new();
    let mut delivered = HashSet::new();
    let end = scan_records(&*file, &path, len, |_, record, parsed| match parsed {
        Parsed::Ids {
            kind: format::KIND_ACKED,
            ..
        } => acked.extend(format::ids_of(record)),
        Parsed::Ids { .. } => delivered.extend(format::ids_of(record)),
        // A message record has no business in an ack file; its CRC was valid, so it was
        // written there on purpose by something else: ignore it.
        _ => {}
    })?;
    truncate_tail(&*file, &path, end, len, recovered)?;
    Ok((acked, delivered, true))
}

/// Returns the number of live persistent messages, or `None` if the segment is gone.
fn scan_segment(
    storage: &dyn Storage,
    dir: &Path,
    seq: u32,
    (acked, delivered): (&HashSet<u64>, &HashSet<u64>),
    recovered: &mut Recovered,
    max_id: &mut Option<u64>,
    visit: &mut Option<&mut Visitor<'_>>,
) -> Result<Option<u64>, StoreError> {
    let path = seg_path(dir, u64::from(seq));
    let (file, len) = match open_checked(storage, &path, FileKind::Segment, seq.into(), recovered)?
    {
        HeaderVerdict::Ok(f, len) => (f, len),
        HeaderVerdict::Gone => return Ok(None),
    };
    if len > u64::from(u32::MAX) {
        return Err(StoreError::Corrupted {
            file: path,
            offset: u64::from(u32::MAX),
        });
    }
    let mut live = 0u64;
    let messages = &mut recovered.messages;
    let end = scan_records(&*file, &path, len, |offset, record, parsed| {
        if let Parsed::Message {
            id,
            persistent,
            expires_at,
            ..
        } = parsed
        {
            *max_id = Some(max_id.map_or(id, |m| m.max(id)));
            if persistent && !acked.contains(&id) {
                live += 1;
                let message = RecoveredMessage {
                    id,
                    // Offsets and lengths fit: the file is shorter than 4 GiB.
                    position: Position::new(seq, offset as u32, record.len() as u32),
                    redelivered: delivered.contains(&id),
                    expires_at,
                };
                match visit {
                    Some(visit) => visit(message, record),
                    None => messages.push(message),
                }
            }
        }
        // An ack record in a segment is foreign (see read_ack_file): ignored.
    })?;
    truncate_tail(&*file, &path, end, len, recovered)?;
    Ok(Some(live))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(matches!(
            parse_name("000000000000000a.seg"),
            Some(Name::Seg(10))
        ));
        assert!(matches!(
            parse_name("000000000000000a.ack"),
            Some(Name::Ack(10))
        ));
        assert!(matches!(
            parse_name("000000000000000a.seg.corrupt"),
            Some(Name::Corrupt(10))
        ));
        assert!(parse_name("000000000000000A.seg").is_none());
        assert!(parse_name("x.seg").is_none());
        assert!(parse_name("000000000000000a.tmp").is_none());
        assert!(parse_name("é00000000000000a.seg").is_none());
    }
}
