//! Frames: the 7-byte header, payload and frame-end octet; splitting bodies by frame_max.
//! Knows nothing of channel state or of which frame may follow which.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::methods::Method;
use crate::properties::{BasicProperties, ContentHeader, CLASS_BASIC};

/// What a client sends first: "AMQP", 0, then protocol version 0-9-1.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// 7-byte frame header plus the frame-end octet.
pub const FRAME_OVERHEAD: usize = 8;
/// Smallest frame_max a peer may negotiate (spec: frame-min-size).
pub const FRAME_MIN_SIZE: u32 = 4096;

const HEADER_LEN: usize = 7;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Method { channel: u16, method: Method },
    Header { channel: u16, header: ContentHeader },
    Body { channel: u16, payload: Bytes },
    Heartbeat { channel: u16 },
}

impl Frame {
    /// Decodes one frame from the front of `buf`, removing its bytes (split_to + freeze, so
    /// bodies and strings share the read buffer). `frame_max` is the negotiated maximum total
    /// frame size including the 8 bytes of overhead (0 = no limit).
    ///
    /// On `Incomplete { need }` (`need` = bytes still missing) `buf` is untouched, as it is on
    /// every error found in the frame header. Errors inside the payload (malformed method,
    /// header or heartbeat) come after the frame was removed from `buf`.
    pub fn decode(buf: &mut BytesMut, frame_max: u32) -> Result<Frame, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Incomplete {
                need: HEADER_LEN + 1 - buf.len(),
            });
        }
        let frame_type = buf[0];
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
        // Checked before waiting for the payload so a hostile size can't make us buffer it.
        if frame_max != 0 && u64::from(size) + FRAME_OVERHEAD as u64 > u64::from(frame_max) {
            return Err(DecodeError::FrameTooLarge {
                size,
                max: frame_max,
            });
        }
        let total = HEADER_LEN + size as usize + 1;
        if buf.len() < total {
            return Err(DecodeError::Incomplete {
                need: total - buf.len(),
            });
        }
        if buf[total - 1] != FRAME_END {
            return Err(DecodeError::FrameEndMissing);
        }
        if !matches!(
            frame_type,
            FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
        ) {
            return Err(DecodeError::UnknownFrameType(frame_type));
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(size as usize).freeze();
        buf.advance(1);
        match frame_type {
            FRAME_METHOD => Ok(Frame::Method {
                channel,
                method: Method::decode(payload)?,
            }),
            FRAME_HEADER => Ok(Frame::Header {
                channel,
                header: ContentHeader::decode(payload)?,
            }),
            FRAME_BODY => Ok(Frame::Body { channel, payload }),
            _ if payload.is_empty() => Ok(Frame::Heartbeat { channel }),
            _ => Err(DecodeError::malformed("heartbeat frame with a payload")),
        }
    }

    /// Writes the whole frame. A body is written as one frame whatever its size (use
    /// `encode_body_frames` to split by frame_max).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Method { channel, method } => encode_method_frame(*channel, method, out),
            Frame::Header { channel, header } => {
                let at = begin_frame(FRAME_HEADER, *channel, out);
                header.encode(out);
                end_frame(at, out);
            }
            Frame::Body { channel, payload } => {
                encode_body_frame_header(*channel, payload.len(), out);
                out.put_slice(payload);
                out.put_u8(FRAME_END);
            }
            Frame::Heartbeat { channel } => {
                begin_frame(FRAME_HEARTBEAT, *channel, out);
                out.put_u8(FRAME_END);
            }
        }
    }

    pub fn channel(&self) -> u16 {
        match *self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => channel,
        }
    }
}

/// Writes the frame header with a zero size; returns where the size goes.
#[inline]
fn begin_frame(frame_type: u8, channel: u16, out: &mut BytesMut) -> usize {
    out.put_u8(frame_type);
    out.put_u16(channel);
    let at = out.len();
    out.put_u32(0);
    at
}

/// Patches the size written by `begin_frame` and appends the frame end.
#[inline]
fn end_frame(size_at: usize, out: &mut BytesMut) {
    crate::wire::patch_len32(out, size_at);
    out.put_u8(FRAME_END);
}

/// A method frame, without building anything but the bytes.
pub fn encode_method_frame(channel: u16, method: &Method, out: &mut BytesMut) {
    let at = begin_frame(FRAME_METHOD, channel, out);
    method.encode(out);
    end_frame(at, out);
}

/// A content header frame with weight 0 around already-encoded property bytes
/// (flags word onwards).
pub fn encode_content_header_frame(
    channel: u16,
    class_id: u16,
    body_size: u64,
    property_bytes: &[u8],
    out: &mut BytesMut,
) {
    out.reserve(HEADER_LEN + 12 + property_bytes.len() + 1);
    out.put_u8(FRAME_HEADER);
    out.put_u16(channel);
    out.put_u32((12 + property_bytes.len()) as u32);
    out.put_u16(class_id);
    out.put_u16(0);
    out.put_u64(body_size);
    out.put_slice(property_bytes);
    out.put_u8(FRAME_END);
}

/// A basic-class content header frame encoding `properties` directly into `out`.
pub fn encode_basic_header_frame(
    channel: u16,
    body_size: u64,
    properties: &BasicProperties,
    out: &mut BytesMut,
) {
    let at = begin_frame(FRAME_HEADER, channel, out);
    out.put_u16(CLASS_BASIC);
    out.put_u16(0);
    out.put_u64(body_size);
    properties.encode(out);
    end_frame(at, out);
}

/// Body frames of at most `frame_max` bytes each (0 = no limit); nothing for an empty body.
pub fn encode_body_frames(channel: u16, body: &[u8], frame_max: u32, out: &mut BytesMut) {
    if body.is_empty() {
        return;
    }
    let chunk = body_frame_payload_max(frame_max, body.len());
    out.reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD);
    for piece in body.chunks(chunk) {
        encode_body_frame_header(channel, piece.len(), out);
        out.put_slice(piece);
        out.put_u8(FRAME_END);
    }
}

/// How many body bytes one body frame carries under `frame_max` (0 = no limit).
pub fn body_frame_payload_max(frame_max: u32, body_len: usize) -> usize {
    if frame_max == 0 {
        body_len.max(1)
    } else {
        // A frame_max at or below the overhead is a caller bug; one byte per frame still ends.
        (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1)
    }
}

/// The 7-byte header of a body frame, for a writer that sends the payload from where it
/// already is and then `FRAME_END`.
#[inline]
pub fn encode_body_frame_header(channel: u16, payload_len: usize, out: &mut BytesMut) {
    out.put_u8(FRAME_BODY);
    out.put_u16(channel);
    out.put_u32(payload_len as u32);
}

/// A heartbeat frame (channel 0, empty payload).
pub fn encode_heartbeat_frame(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}
