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

/// Flag bits of the basic class's properties (bit 15 is the first property).
pub mod property_flag {
    pub const HEADERS: u16 = 1 << 13;
    pub const DELIVERY_MODE: u16 = 1 << 12;
    pub const REPLY_TO: u16 = 1 << 9;
    pub const EXPIRATION: u16 = 1 << 8;
    pub const USER_ID: u16 = 1 << 4;
}
