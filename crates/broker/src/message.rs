//! A published message as the broker holds it: shared, immutable, body never copied.
//! Knows nothing of queues or frames.

use amqp::ShortStr;
use bytes::Bytes;

/// One published message. Queues share it through an `Arc`, so a fanout to N queues costs
/// N reference counts, not N copies.
#[derive(Debug, Clone)]
pub struct Message {
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    /// The content header's property flags and list exactly as the publisher sent them, so
    /// they go back out byte for byte without re-encoding.
    pub properties: Bytes,
    pub body: Bytes,
    pub persistent: bool,
}

impl Message {
    pub fn body_size(&self) -> u64 {
        self.body.len() as u64
    }
}

/// Reads the property-flags word without decoding the properties.
pub fn property_flags(properties: &[u8]) -> u16 {
    match properties {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => 0,
    }
}

/// The delivery-mode property, read in place: only the properties before it (content type,
/// content encoding, headers) are skipped, nothing is decoded or allocated.
pub fn delivery_mode(properties: &[u8]) -> Option<u8> {
    let flags = property_flags(properties);
    if flags & property_flag::DELIVERY_MODE == 0 {
        return None;
    }
    let mut at = 2usize;
    for shortstr in [property_flag::CONTENT_TYPE, property_flag::CONTENT_ENCODING] {
        if flags & shortstr != 0 {
            at += 1 + usize::from(*properties.get(at)?);
        }
    }
    if flags & property_flag::HEADERS != 0 {
        let len = properties.get(at..at + 4)?;
        at += 4 + u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    }
    properties.get(at).copied()
}

/// Flag bits of the basic class's properties (bit 15 is the first property).
pub mod property_flag {
    pub const CONTENT_TYPE: u16 = 1 << 15;
    pub const CONTENT_ENCODING: u16 = 1 << 14;
    pub const HEADERS: u16 = 1 << 13;
    pub const DELIVERY_MODE: u16 = 1 << 12;
    pub const REPLY_TO: u16 = 1 << 9;
    pub const EXPIRATION: u16 = 1 << 8;
    pub const USER_ID: u16 = 1 << 4;
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp::{BasicProperties, FieldTable, FieldValue, ShortStr};
    use bytes::BytesMut;

    fn encoded(p: &BasicProperties) -> Vec<u8> {
        let mut out = BytesMut::new();
        p.encode(&mut out);
        out.to_vec()
    }

    #[test]
    fn delivery_mode_is_found_behind_the_properties_before_it() {
        let mut headers = FieldTable::new();
        headers.insert(ShortStr::from_static("k"), FieldValue::from("some value"));
        let full = BasicProperties {
            content_type: Some(ShortStr::from_static("text/plain")),
            content_encoding: Some(ShortStr::from_static("gzip")),
            headers: Some(headers),
            delivery_mode: Some(2),
            priority: Some(5),
            ..Default::default()
        };
        assert_eq!(delivery_mode(&encoded(&full)), Some(2));
        let bare = BasicProperties {
            delivery_mode: Some(1),
            ..Default::default()
        };
        assert_eq!(delivery_mode(&encoded(&bare)), Some(1));
        assert_eq!(delivery_mode(&encoded(&BasicProperties::default())), None);
        assert_eq!(delivery_mode(&[0x10, 0x00]), None, "truncated");
    }
}
