//! The bytes of docs/storage-format.md: file headers, record framing, message and ack record
//! bodies, CRC-32C. Pure functions over slices; knows nothing of files, queues or recovery
//! policy.

use bytes::Bytes;

pub(crate) const VERSION: u16 = 1;
pub(crate) const HEADER_LEN: usize = 20;
/// `body_len` u32 + CRC u32.
pub(crate) const PREFIX_LEN: usize = 8;
/// kind, flags, part_count, message id.
pub(crate) const MESSAGE_FIXED_LEN: usize = 12;
/// The expiry that follows the message id when `FLAG_EXPIRES` is set.
const EXPIRES_LEN: usize = 8;
/// kind + 3 reserved bytes.
pub(crate) const IDS_FIXED_LEN: usize = 4;
/// Most parts one message record may carry.
pub const MAX_PARTS: usize = 16;
/// Longest message record head: prefix, fixed fields, part lengths.
pub(crate) const MAX_MESSAGE_HEAD_LEN: usize =
    PREFIX_LEN + MESSAGE_FIXED_LEN + EXPIRES_LEN + 4 * MAX_PARTS;

pub(crate) const KIND_MESSAGE: u8 = 1;
pub(crate) const KIND_ACKED: u8 = 2;
pub(crate) const KIND_DELIVERED: u8 = 3;
const FLAG_PERSISTENT: u8 = 1;
const FLAG_EXPIRES: u8 = 2;

/// Bytes before the part lengths in a message body with these flags.
fn message_fixed_len(flags: u8) -> usize {
    if flags & FLAG_EXPIRES != 0 {
        MESSAGE_FIXED_LEN + EXPIRES_LEN
    } else {
        MESSAGE_FIXED_LEN
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Segment,
    Ack,
}

impl FileKind {
    fn magic(self) -> &'static [u8; 4] {
        match self {
            FileKind::Segment => b"WSEG",
            FileKind::Ack => b"WACK",
        }
    }
}

pub(crate) fn encode_header(kind: FileKind, seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(kind.magic());
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Fewer than `HEADER_LEN` bytes: the file was being created.
    Short,
    /// Wrong magic, CRC or sequence: unreadable.
    Damaged,
    /// A valid header of another format version.
    Version(u16),
}

pub(crate) fn check_header(bytes: &[u8], kind: FileKind, seq: u64) -> Result<(), HeaderError> {
    if bytes.len() < HEADER_LEN {
        return Err(HeaderError::Short);
    }
    let crc = u32_at(bytes, 16);
    if &bytes[0..4] != kind.magic() || crc != crc32c::crc32c(&bytes[0..16]) {
        return Err(HeaderError::Damaged);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(HeaderError::Version(version));
    }
    if u64_at(bytes, 8) != seq || bytes[6..8] != [0, 0] {
        return Err(HeaderError::Damaged);
    }
    Ok(())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Total record length (prefix included) of a message with these parts (and an expiry).
pub(crate) fn message_record_len(parts: &[&[u8]], expires: bool) -> u64 {
    let data: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let fixed = if expires {
        MESSAGE_FIXED_LEN + EXPIRES_LEN
    } else {
        MESSAGE_FIXED_LEN
    };
    (PREFIX_LEN + fixed + 4 * parts.len()) as u64 + data
}

/// Fills `head` with a message record's prefix, fixed fields and part lengths, the CRC
/// computed over the parts too; returns the head's length. The parts follow it on disk.
/// The caller has checked `parts.len() <= MAX_PARTS` and that the record fits in u32.
pub(crate) fn encode_message_head(
    head: &mut [u8; MAX_MESSAGE_HEAD_LEN],
    id: u64,
    persistent: bool,
    expires_at: Option<u64>,
    parts: &[&[u8]],
) -> usize {
    let mut flags = if persistent { FLAG_PERSISTENT } else { 0 };
    if expires_at.is_some() {
        flags |= FLAG_EXPIRES;
    }
    let fixed = message_fixed_len(flags);
    let head_len = PREFIX_LEN + fixed + 4 * parts.len();
    let body_len = message_record_len(parts, expires_at.is_some()) as usize - PREFIX_LEN;
    head[0..4].copy_from_slice(&(body_len as u32).to_le_bytes());
    head[8] = KIND_MESSAGE;
    head[9] = flags;
    head[10..12].copy_from_slice(&(parts.len() as u16).to_le_bytes());
    head[12..20].copy_from_slice(&id.to_le_bytes());
    if let Some(expires_at) = expires_at {
        head[20..28].copy_from_slice(&expires_at.to_le_bytes());
    }
    for (i, p) in parts.iter().enumerate() {
        let at = PREFIX_LEN + fixed + 4 * i;
        head[at..at + 4].copy_from_slice(&(p.len() as u32).to_le_bytes());
    }
    let mut crc = crc32c::crc32c(&head[0..4]);
    crc = crc32c::crc32c_append(crc, &head[PREFIX_LEN..head_len]);
    for p in parts {
        crc = crc32c::crc32c_append(crc, p);
    }
    head[4..8].copy_from_slice(&crc.to_le_bytes());
    head_len
}

/// Appends one acked (`KIND_ACKED`) or delivered (`KIND_DELIVERED`) record to `out`.
pub(crate) fn encode_ids_record(out: &mut Vec<u8>, kind: u8, ids: &[u64]) {
    let body_len = IDS_FIXED_LEN + 8 * ids.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&[kind, 0, 0, 0]);
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    let mut crc = crc32c::crc32c(&out[start..start + 4]);
    crc = crc32c::crc32c_append(crc, &out[start + PREFIX_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What `parse_record` found at the start of a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// The slice ends before the record does; `total` is the record length if known.
    Incomplete { total: Option<u64> },
    /// Not a valid record (bad CRC, unknown kind, impossible shape).
    Invalid,
    Message {
        total: usize,
        id: u64,
        persistent: bool,
        /// The caller's expiry, if the message was appended with one.
        expires_at: Option<u64>,
    },
    /// An acked or delivered record; its ids are `ids_of(&slice[..total])`.
    Ids { total: usize, kind: u8 },
}

pub(crate) fn parse_record(b: &[u8]) -> Parsed {
    if b.len() < PREFIX_LEN {
        return Parsed::Incomplete { total: None };
    }
    let body_len = u32_at(b, 0) as usize;
    let total = PREFIX_LEN + body_len;
    if b.len() < total {
        return Parsed::Incomplete {
            total: Some(total as u64),
        };
    }
    if body_len == 0 {
        return Parsed::Invalid;
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b[0..4]), &b[PREFIX_LEN..total]);
    if crc != u32_at(b, 4) {
        return Parsed::Invalid;
    }
    let body = &b[PREFIX_LEN..total];
    match body[0] {
        KIND_MESSAGE => match message_shape(body) {
            Some(shape) => Parsed::Message {
                total,
                id: shape.id,
                persistent: shape.persistent,
                expires_at: shape.expires_at,
            },
            None => Parsed::Invalid,
        },
        kind @ (KIND_ACKED | KIND_DELIVERED) => {
            if body_len > IDS_FIXED_LEN
                && (body_len - IDS_FIXED_LEN).is_multiple_of(8)
                && body[1..4] == [0, 0, 0]
            {
                Parsed::Ids { total, kind }
            } else {
                Parsed::Invalid
            }
        }
        _ => Parsed::Invalid,
    }
}

/// The fixed fields of a well-formed message body.
struct MessageShape {
    id: u64,
    persistent: bool,
    expires_at: Option<u64>,
}

fn message_shape(body: &[u8]) -> Option<MessageShape> {
    if body.len() < MESSAGE_FIXED_LEN || body[0] != KIND_MESSAGE {
        return None;
    }
    let flags = body[1];
    if flags & !(FLAG_PERSISTENT | FLAG_EXPIRES) != 0 {
        return None;
    }
    let fixed = message_fixed_len(flags);
    let parts = u16::from_le_bytes([body[2], body[3]]) as usize;
    if parts > MAX_PARTS || body.len() < fixed + 4 * parts {
        return None;
    }
    let data: u64 = (0..parts)
        .map(|i| u64::from(u32_at(body, fixed + 4 * i)))
        .sum();
    if data != (body.len() - fixed - 4 * parts) as u64 {
        return None;
    }
    Some(MessageShape {
        id: u64_at(body, 4),
        persistent: flags & FLAG_PERSISTENT != 0,
        expires_at: (flags & FLAG_EXPIRES != 0).then(|| u64_at(body, MESSAGE_FIXED_LEN)),
    })
}

/// The ids of a record that `parse_record` called `Ids`.
pub(crate) fn ids_of(record: &[u8]) -> impl Iterator<Item = u64> + '_ {
    record[PREFIX_LEN + IDS_FIXED_LEN..]
        .chunks_exact(8)
        .map(|c| u64_at(c, 0))
}

/// A message read back from a log: the caller's parts, sliced out of one buffer without
/// copying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// The record body (kind, flags, part count, id, part lengths, parts).
    body: Bytes,
}

impl Payload {
    /// Builds a payload from a whole record (prefix included), checking CRC and shape.
    /// `Err(true)` = CRC mismatch, `Err(false)` = anything else wrong.
    pub(crate) fn from_record(record: Bytes) -> Result<Payload, bool> {
        match parse_record(&record) {
            Parsed::Message { total, .. } if total == record.len() => Ok(Payload {
                body: record.slice(PREFIX_LEN..),
            }),
            Parsed::Invalid if record.len() >= PREFIX_LEN => {
                let body_len = u32_at(&record, 0) as usize;
                let total = PREFIX_LEN + body_len;
                let crc_ok = total == record.len()
                    && crc32c::crc32c_append(crc32c::crc32c(&record[0..4]), &record[PREFIX_LEN..])
                        == u32_at(&record, 4);
                Err(!crc_ok)
            }
            _ => Err(false),
        }
    }

    /// The message id given to `append`.
    pub fn id(&self) -> u64 {
        u64_at(&self.body, 4)
    }

    /// Whether it was appended as persistent.
    pub fn persistent(&self) -> bool {
        self.body[1] & FLAG_PERSISTENT != 0
    }

    /// The expiry given to `append_expiring`, if any.
    pub fn expires_at(&self) -> Option<u64> {
        (self.body[1] & FLAG_EXPIRES != 0).then(|| u64_at(&self.body, MESSAGE_FIXED_LEN))
    }

    pub fn part_count(&self) -> usize {
        u16::from_le_bytes([self.body[2], self.body[3]]) as usize
    }

    fn lengths_at(&self) -> usize {
        message_fixed_len(self.body[1])
    }

    /// Part `i` as given to `append`, sharing this payload's buffer.
    pub fn part(&self, i: usize) -> Option<Bytes> {
        let count = self.part_count();
        if i >= count {
            return None;
        }
        let lengths = self.lengths_at();
        let mut start = lengths + 4 * count;
        for j in 0..i {
            start += u32_at(&self.body, lengths + 4 * j) as usize;
        }
        let len = u32_at(&self.body, lengths + 4 * i) as usize;
        Some(self.body.slice(start..start + len))
    }

    /// Every part, in order.
    pub fn parts(&self) -> impl Iterator<Item = Bytes> + '_ {
        let count = self.part_count();
        let lengths = self.lengths_at();
        let mut start = lengths + 4 * count;
        (0..count).map(move |i| {
            let len = u32_at(&self.body, lengths + 4 * i) as usize;
            let part = self.body.slice(start..start + len);
            start += len;
            part
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnoli() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn header_golden_bytes() {
        let h = encode_header(FileKind::Segment, 0x0102);
        assert_eq!(
            &h[0..16],
            b"WSEG\x01\x00\x00\x00\x02\x01\x00\x00\x00\x00\x00\x00"
        );
        assert_eq!(check_header(&h, FileKind::Segment, 0x0102), Ok(()));
        assert_eq!(
            check_header(&h, FileKind::Ack, 0x0102),
            Err(HeaderError::Damaged)
        );
        assert_eq!(
            check_header(&h, FileKind::Segment, 7),
            Err(HeaderError::Damaged)
        );
        assert_eq!(
            check_header(&h[..19], FileKind::Segment, 0x0102),
            Err(HeaderError::Short)
        );
        let mut v2 = h;
        v2[4] = 2;
        let crc = crc32c::crc32c(&v2[0..16]);
        v2[16..20].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            check_header(&v2, FileKind::Segment, 0x0102),
            Err(HeaderError::Version(2))
        );
    }

    fn message(id: u64, persistent: bool, parts: &[&[u8]]) -> Vec<u8> {
        expiring_message(id, persistent, None, parts)
    }

    fn expiring_message(
        id: u64,
        persistent: bool,
        expires_at: Option<u64>,
        parts: &[&[u8]],
    ) -> Vec<u8> {
        let mut head = [0u8; MAX_MESSAGE_HEAD_LEN];
        let n = encode_message_head(&mut head, id, persistent, expires_at, parts);
        let mut v = head[..n].to_vec();
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    }

    #[test]
    fn message_record_golden_bytes_and_round_trip() {
        let rec = message(7, true, &[b"ex", b"", b"body"]);
        assert_eq!(
            rec.len() as u64,
            message_record_len(&[b"ex", b"", b"body"], false)
        );
        // body_len = 12 fixed + 3*4 lengths + 6 data
        assert_eq!(&rec[0..4], &30u32.to_le_bytes());
        assert_eq!(&rec[8..12], &[1, 1, 3, 0]);
        assert_eq!(&rec[12..20], &7u64.to_le_bytes());
        assert_eq!(&rec[20..32], &[2, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0]);
        assert_eq!(&rec[32..], b"exbody");
        assert_eq!(
            parse_record(&rec),
            Parsed::Message {
                total: 38,
                id: 7,
                persistent: true,
                expires_at: None,
            }
        );
        let p = Payload::from_record(Bytes::from(rec)).unwrap();
        assert_eq!(p.id(), 7);
        assert!(p.persistent());
        let parts: Vec<Bytes> = p.parts().collect();
        assert_eq!(parts, vec![&b"ex"[..], &b""[..], &b"body"[..]]);
        assert_eq!(p.part(2).unwrap(), &b"body"[..]);
        assert_eq!(p.part(3), None);
    }

    #[test]
    fn an_expiry_sits_after_the_id_and_moves_the_part_lengths() {
        let parts: [&[u8]; 2] = [b"ex", b"body"];
        let rec = expiring_message(9, true, Some(0x0102_0304_0506), &parts);
        assert_eq!(rec.len() as u64, message_record_len(&parts, true));
        assert_eq!(&rec[8..12], &[1, 3, 2, 0], "flags: persistent and expires");
        assert_eq!(&rec[20..28], &0x0102_0304_0506u64.to_le_bytes());
        assert_eq!(&rec[28..36], &[2, 0, 0, 0, 4, 0, 0, 0]);
        assert_eq!(
            parse_record(&rec),
            Parsed::Message {
                total: rec.len(),
                id: 9,
                persistent: true,
                expires_at: Some(0x0102_0304_0506),
            }
        );
        let p = Payload::from_record(Bytes::from(rec)).unwrap();
        assert_eq!(p.expires_at(), Some(0x0102_0304_0506));
        assert_eq!(
            p.parts().collect::<Vec<_>>(),
            vec![&b"ex"[..], &b"body"[..]]
        );
        assert_eq!(p.part(1).unwrap(), &b"body"[..]);
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_flip_is_detected() {
        let rec = message(1, false, &[b"abc", b"defgh"]);
        for cut in 0..rec.len() {
            assert!(matches!(
                parse_record(&rec[..cut]),
                Parsed::Incomplete { .. }
            ));
        }
        for i in 0..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x01;
            assert!(
                !matches!(parse_record(&bad), Parsed::Message { .. }),
                "flip at {i} went unnoticed"
            );
        }
        let mut bad = rec.clone();
        bad[20] ^= 1;
        assert_eq!(Payload::from_record(Bytes::from(bad)), Err(true));
    }

    #[test]
    fn ids_record_round_trip() {
        let mut out = Vec::new();
        encode_ids_record(&mut out, KIND_ACKED, &[3, 1 << 40]);
        assert_eq!(out.len(), 8 + 4 + 16);
        let Parsed::Ids { total, kind } = parse_record(&out) else {
            panic!("not parsed")
        };
        assert_eq!((total, kind), (out.len(), KIND_ACKED));
        assert_eq!(ids_of(&out).collect::<Vec<_>>(), vec![3, 1 << 40]);
        assert_eq!(
            parse_record(&[0u8; 64]),
            Parsed::Invalid,
            "zero fill is invalid"
        );
    }
}
