//! Content headers and the basic class's content properties (flag word + property list).
//! Knows nothing of frames around them or of what the broker does with the properties.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::field::FieldTable;
use crate::strings::ShortStr;
use crate::wire::{Reader, WireResult, Writer};

/// Class id of `basic`, the only class with content in 0-9-1.
pub const CLASS_BASIC: u16 = 60;

/// Content header payload: fixed part decoded, properties kept raw (the broker forwards
/// them untouched and decodes them only when it needs to look inside).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContentHeader {
    pub class_id: u16,
    pub weight: u16,
    pub body_size: u64,
    /// From the first property flags word to the end of the payload; shares the frame's buffer.
    pub property_bytes: Bytes,
}

impl ContentHeader {
    /// Reads class id, weight and body size; the properties are not validated here.
    pub fn decode(payload: Bytes) -> Result<ContentHeader, DecodeError> {
        let mut r = Reader::new(&payload, 0);
        let fixed =
            (|| -> WireResult<(u16, u16, u64)> { Ok((r.short()?, r.short()?, r.longlong()?)) })();
        let (class_id, weight, body_size) =
            fixed.map_err(|_| DecodeError::malformed("content header too short"))?;
        // The flags word is mandatory even when no property is present.
        if payload.len() < 14 {
            return Err(DecodeError::malformed(
                "content header without property flags",
            ));
        }
        Ok(ContentHeader {
            class_id,
            weight,
            body_size,
            property_bytes: payload.slice(12..),
        })
    }

    /// Writes the header payload (without frame header and end).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.class_id);
        out.put_u16(self.weight);
        out.put_u64(self.body_size);
        out.put_slice(&self.property_bytes);
    }
}

/// Properties of basic-class content; `None` means the flag bit is clear.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BasicProperties {
    pub content_type: Option<ShortStr>,
    pub content_encoding: Option<ShortStr>,
    pub headers: Option<FieldTable>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<ShortStr>,
    pub reply_to: Option<ShortStr>,
    pub expiration: Option<ShortStr>,
    pub message_id: Option<ShortStr>,
    pub timestamp: Option<u64>,
    /// The spec's `type`.
    pub kind: Option<ShortStr>,
    pub user_id: Option<ShortStr>,
    pub app_id: Option<ShortStr>,
    pub cluster_id: Option<ShortStr>,
}

const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const KIND: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;
const CONTINUATION: u16 = 1;

impl BasicProperties {
    /// Decodes from the first flags word to the end of `property_bytes`; strings share the buffer.
    pub fn decode(property_bytes: &Bytes) -> Result<BasicProperties, DecodeError> {
        decode_properties(&mut Reader::new(property_bytes, 0)).map_err(DecodeError::malformed)
    }

    /// Writes the flags word and the present properties.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.flags());
        let mut w = Writer::new(out);
        if let Some(v) = &self.content_type {
            w.shortstr(v);
        }
        if let Some(v) = &self.content_encoding {
            w.shortstr(v);
        }
        if let Some(v) = &self.headers {
            w.table(v);
        }
        if let Some(v) = &self.delivery_mode {
            w.octet(v);
        }
        if let Some(v) = &self.priority {
            w.octet(v);
        }
        for v in [
            &self.correlation_id,
            &self.reply_to,
            &self.expiration,
            &self.message_id,
        ]
        .into_iter()
        .flatten()
        {
            w.shortstr(v);
        }
        if let Some(v) = &self.timestamp {
            w.timestamp(v);
        }
        for v in [&self.kind, &self.user_id, &self.app_id, &self.cluster_id]
            .into_iter()
            .flatten()
        {
            w.shortstr(v);
        }
    }

    /// `delivery_mode == 2`.
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(2)
    }

    /// The first property flags word this value encodes to.
    pub fn flags(&self) -> u16 {
        let mut flags = 0;
        let mut set = |present: bool, bit: u16| {
            if present {
                flags |= bit;
            }
        };
        set(self.content_type.is_some(), CONTENT_TYPE);
        set(self.content_encoding.is_some(), CONTENT_ENCODING);
        set(self.headers.is_some(), HEADERS);
        set(self.delivery_mode.is_some(), DELIVERY_MODE);
        set(self.priority.is_some(), PRIORITY);
        set(self.correlation_id.is_some(), CORRELATION_ID);
        set(self.reply_to.is_some(), REPLY_TO);
        set(self.expiration.is_some(), EXPIRATION);
        set(self.message_id.is_some(), MESSAGE_ID);
        set(self.timestamp.is_some(), TIMESTAMP);
        set(self.kind.is_some(), KIND);
        set(self.user_id.is_some(), USER_ID);
        set(self.app_id.is_some(), APP_ID);
        set(self.cluster_id.is_some(), CLUSTER_ID);
        flags
    }
}

fn decode_properties(r: &mut Reader<'_>) -> WireResult<BasicProperties> {
    let flags = r.short().map_err(|_| "property flags missing")?;
    // Basic has only 14 properties, so further flag words (continuation bit) carry nothing
    // we know of; they are read so the property list starts at the right place.
    let mut more = flags & CONTINUATION != 0;
    while more {
        more = r.short()? & CONTINUATION != 0;
    }
    let has = |bit: u16| flags & bit != 0;
    let mut p = BasicProperties::default();
    if has(CONTENT_TYPE) {
        p.content_type = Some(r.shortstr()?);
    }
    if has(CONTENT_ENCODING) {
        p.content_encoding = Some(r.shortstr()?);
    }
    if has(HEADERS) {
        p.headers = Some(r.table()?);
    }
    if has(DELIVERY_MODE) {
        p.delivery_mode = Some(r.octet()?);
    }
    if has(PRIORITY) {
        p.priority = Some(r.octet()?);
    }
    if has(CORRELATION_ID) {
        p.correlation_id = Some(r.shortstr()?);
    }
    if has(REPLY_TO) {
        p.reply_to = Some(r.shortstr()?);
    }
    if has(EXPIRATION) {
        p.expiration = Some(r.shortstr()?);
    }
    if has(MESSAGE_ID) {
        p.message_id = Some(r.shortstr()?);
    }
    if has(TIMESTAMP) {
        p.timestamp = Some(r.timestamp()?);
    }
    if has(KIND) {
        p.kind = Some(r.shortstr()?);
    }
    if has(USER_ID) {
        p.user_id = Some(r.shortstr()?);
    }
    if has(APP_ID) {
        p.app_id = Some(r.shortstr()?);
    }
    if has(CLUSTER_ID) {
        p.cluster_id = Some(r.shortstr()?);
    }
    // RabbitMQ's decoder also refuses bytes after the last present property.
    r.finish()?;
    Ok(p)
}
