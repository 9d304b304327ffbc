//! A published message as the broker holds it: shared, immutable, body never copied; how its
//! raw properties are read in place and, in one place, rewritten. Knows nothing of queues or
//! frames.

use amqp::{BasicProperties, FieldTable, FieldValue, LongStr, ShortStr};
use bytes::{Bytes, BytesMut};

use crate::error::{AmqpException, AmqpResult};

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
    /// Set only for the few messages that need it (CC/BCC, dead-lettered): the rest pay one
    /// null pointer.
    pub annotations: Option<Box<Annotations>>,
}

/// What the broker knows of a message besides its content, as RabbitMQ keeps it in message
/// annotations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    /// Routing keys besides `routing_key`: the CC and BCC keys of the publish, or those a
    /// dead-lettered message was dead-lettered with.
    pub extra_routing_keys: Vec<ShortStr>,
    /// The BCC keys among them, which x-death leaves out.
    pub bcc: Vec<ShortStr>,
    /// The x-death header was written by this broker. One a client republished with the
    /// header is a new message whose deaths start over, as in RabbitMQ 4.
    pub dead_lettered: bool,
}

const ANNOTATION_ROUTING_KEYS: &str = "routing-keys";
const ANNOTATION_BCC: &str = "bcc";
const ANNOTATION_DEAD_LETTERED: &str = "dead-lettered";

impl Annotations {
    /// The bytes a queue's log keeps them as (a field table).
    pub fn encode(&self) -> Bytes {
        let keys = |keys: &[ShortStr]| {
            FieldValue::Array(
                keys.iter()
                    .map(|k| FieldValue::LongStr(LongStr::from(k.clone())))
                    .collect(),
            )
        };
        let table = FieldTable(vec![
            (
                ShortStr::from_static(ANNOTATION_ROUTING_KEYS),
                keys(&self.extra_routing_keys),
            ),
            (ShortStr::from_static(ANNOTATION_BCC), keys(&self.bcc)),
            (
                ShortStr::from_static(ANNOTATION_DEAD_LETTERED),
                FieldValue::Bool(self.dead_lettered),
            ),
        ]);
        let mut out = BytesMut::new();
        table.encode(&mut out);
        out.freeze()
    }

    /// Reads back what `encode` wrote; `None` for anything else.
    pub fn decode(bytes: &Bytes) -> Option<Annotations> {
        let table = FieldTable::decode(bytes).ok()?;
        let keys = |name: &str| -> Option<Vec<ShortStr>> {
            table
                .get(name)?
                .as_array()?
                .iter()
                .map(|v| match v {
                    FieldValue::LongStr(s) => ShortStr::from_bytes(s.0.clone()).ok(),
                    _ => None,
                })
                .collect()
        };
        Some(Annotations {
            extra_routing_keys: keys(ANNOTATION_ROUTING_KEYS)?,
            bcc: keys(ANNOTATION_BCC)?,
            dead_lettered: table.get(ANNOTATION_DEAD_LETTERED)?.as_bool()?,
        })
    }
}

impl Message {
    /// A message with these parts and nothing else known of it.
    pub fn new(exchange: ShortStr, routing_key: ShortStr, properties: Bytes, body: Bytes) -> Self {
        let persistent = delivery_mode(&properties) == Some(2);
        Message {
            exchange,
            routing_key,
            properties,
            body,
            persistent,
            annotations: None,
        }
    }

    /// A message as a client published it, checked as RabbitMQ checks it (the `expiration`
    /// property, the types of the CC and BCC headers); its CC and BCC headers become extra
    /// routing keys and BCC is removed (sender-selected distribution). Properties without an
    /// expiration or headers are not looked into.
    pub fn published(
        exchange: ShortStr,
        routing_key: ShortStr,
        properties: Bytes,
        body: Bytes,
    ) -> AmqpResult<Message> {
        let flags = property_flags(&properties);
        if flags & property_flag::EXPIRATION != 0 {
            if let Some(raw) = expiration(&properties) {
                parse_expiration(raw).map_err(|reason| {
                    AmqpException::precondition_failed(format!(
                        "invalid expiration '{}': {reason}",
                        String::from_utf8_lossy(raw)
                    ))
                })?;
            }
        }
        let mut message = Message::new(exchange, routing_key, properties, body);
        if flags & property_flag::HEADERS != 0 && may_name_routing_headers(&message.properties) {
            message.take_routing_headers()?;
        }
        Ok(message)
    }

    fn take_routing_headers(&mut self) -> AmqpResult<()> {
        let Ok(mut decoded) = BasicProperties::decode(&self.properties) else {
            return Ok(());
        };
        let Some(headers) = decoded.headers.as_mut() else {
            return Ok(());
        };
        let cc = routing_header(headers, "CC")?;
        let bcc = routing_header(headers, "BCC")?;
        if headers.get("BCC").is_some() {
            headers.remove("BCC");
            self.properties = encode_properties(&decoded);
        }
        if cc.is_empty() && bcc.is_empty() {
            return Ok(());
        }
        let mut extra_routing_keys = cc;
        extra_routing_keys.extend(bcc.iter().cloned());
        self.annotations = Some(Box::new(Annotations {
            extra_routing_keys,
            bcc,
            dead_lettered: false,
        }));
        Ok(())
    }

    pub fn body_size(&self) -> u64 {
        self.body.len() as u64
    }

    /// Routing keys besides `routing_key` (CC and BCC).
    pub fn extra_routing_keys(&self) -> &[ShortStr] {
        self.annotations
            .as_ref()
            .map_or(&[], |a| a.extra_routing_keys.as_slice())
    }

    /// Whether an x-death header in the properties is this broker's record.
    pub fn dead_lettered(&self) -> bool {
        self.annotations.as_ref().is_some_and(|a| a.dead_lettered)
    }

    /// This message with an `x-delivery-count` header of `count` (quorum queues' redelivery
    /// count); `None` when its properties do not decode.
    pub fn with_delivery_count(&self, count: u64) -> Option<Message> {
        let properties = rewrite_properties(&self.properties, |p| {
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            p.headers.get_or_insert_with(FieldTable::new).insert(
                ShortStr::from_static("x-delivery-count"),
                FieldValue::I64(count),
            );
        })?;
        Some(Message {
            properties,
            ..self.clone()
        })
    }

    /// The `priority` property (0 when absent), read in place.
    pub fn priority(&self) -> u8 {
        priority(&self.properties).unwrap_or(0)
    }

    /// The per-message TTL (`expiration`) in milliseconds, read in place.
    pub fn ttl_ms(&self) -> Option<u64> {
        if property_flags(&self.properties) & property_flag::EXPIRATION == 0 {
            return None;
        }
        parse_expiration(expiration(&self.properties)?).ok()
    }
}

/// The routing keys of a CC or BCC header: an array whose long strings are the keys (other
/// elements are ignored, as RabbitMQ does); any other type refuses the message.
fn routing_header(headers: &FieldTable, name: &str) -> AmqpResult<Vec<ShortStr>> {
    match headers.get(name) {
        None => Ok(Vec::new()),
        Some(FieldValue::Array(values)) => Ok(values
            .iter()
            .filter_map(|v| match v {
                // A key too long or not UTF-8 can match no binding key anyway.
                FieldValue::LongStr(s) => ShortStr::from_bytes(s.0.clone()).ok(),
                _ => None,
            })
            .collect()),
        Some(other) => Err(AmqpException::precondition_failed(format!(
            "invalid message: {{unacceptable_type_in_header,\"{name}\",{}}}",
            other.type_name()
        ))),
    }
}

/// Whether a headers table may hold a CC or BCC entry: a byte search for the encoded keys,
/// so that other headers are never decoded on the publish path.
fn may_name_routing_headers(properties: &[u8]) -> bool {
    let Some(table) = headers_table(properties) else {
        return false;
    };
    table
        .windows(3)
        .any(|w| w == [2, b'C', b'C'] || w == [3, b'B', b'C'])
}

/// Why an `expiration` property is refused, in RabbitMQ's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpirationError {
    NoInteger,
    LeftoverString(Vec<u8>),
    Negative(String),
}

impl std::fmt::Display for ExpirationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpirationError::NoInteger => f.write_str("no_integer"),
            ExpirationError::LeftoverString(rest) => {
                write!(f, "{{leftover_string,{}}}", erlang_string(rest))
            }
            ExpirationError::Negative(n) => write!(f, "{{value_negative,{n}}}"),
        }
    }
}

/// A string as Erlang's `~p` prints it: quoted when printable, else a list of its bytes.
fn erlang_string(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        let mut out = String::from("\"");
        for &b in bytes {
            if b == b'"' || b == b'\\' {
                out.push('\\');
            }
            out.push(char::from(b));
        }
        out.push('"');
        out
    } else {
        let items: Vec<String> = bytes.iter().map(u8::to_string).collect();
        format!("[{}]", items.join(","))
    }
}

/// Reads an `expiration` property as RabbitMQ does (Erlang's `string:to_integer`: an optional
/// sign, digits, nothing after them; not negative). Milliseconds; absurdly large values
/// saturate.
pub fn parse_expiration(raw: &[u8]) -> Result<u64, ExpirationError> {
    let (negative, unsigned) = match raw.first() {
        Some(b'-') => (true, &raw[1..]),
        Some(b'+') => (false, &raw[1..]),
        _ => (false, raw),
    };
    let digits = unsigned.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err(ExpirationError::NoInteger);
    }
    if digits < unsigned.len() {
        return Err(ExpirationError::LeftoverString(unsigned[digits..].to_vec()));
    }
    let value = unsigned.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    if negative && value > 0 {
        return Err(ExpirationError::Negative(format!("-{value}")));
    }
    Ok(value)
}

/// Decodes the properties, lets `edit` change them, and encodes them again: the one place the
/// broker rewrites what a publisher sent (BCC removal, x-death, x-delivery-count, dead-letter
/// expiration removal). `None` when the properties do not decode.
pub fn rewrite_properties(
    properties: &Bytes,
    edit: impl FnOnce(&mut BasicProperties),
) -> Option<Bytes> {
    let mut decoded = BasicProperties::decode(properties).ok()?;
    edit(&mut decoded);
    Some(encode_properties(&decoded))
}

fn encode_properties(properties: &BasicProperties) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    properties.encode(&mut out);
    out.freeze()
}

/// Reads the property-flags word without decoding the properties.
pub fn property_flags(properties: &[u8]) -> u16 {
    match properties {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => 0,
    }
}

/// Where property `flag` starts, found by skipping only the properties before it; `None` if
/// it is absent or the bytes end first. Nothing is decoded or allocated.
fn property_at(properties: &[u8], flag: u16) -> Option<usize> {
    let flags = property_flags(properties);
    if flags & flag == 0 || flags & property_flag::CONTINUATION != 0 {
        return None;
    }
    let mut at = 2usize;
    for before in property_flag::IN_ORDER {
        if before == flag {
            return (at <= properties.len()).then_some(at);
        }
        if flags & before == 0 {
            continue;
        }
        at += match before {
            property_flag::HEADERS => {
                let len = properties.get(at..at + 4)?;
                4 + u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize
            }
            property_flag::DELIVERY_MODE | property_flag::PRIORITY => 1,
            _ => 1 + usize::from(*properties.get(at)?),
        };
    }
    None
}

/// The delivery-mode property, read in place.
pub fn delivery_mode(properties: &[u8]) -> Option<u8> {
    properties
        .get(property_at(properties, property_flag::DELIVERY_MODE)?)
        .copied()
}

/// The `priority` property, read in place.
pub fn priority(properties: &[u8]) -> Option<u8> {
    properties
        .get(property_at(properties, property_flag::PRIORITY)?)
        .copied()
}

/// The `expiration` property's text, read in place.
pub fn expiration(properties: &[u8]) -> Option<&[u8]> {
    let at = property_at(properties, property_flag::EXPIRATION)?;
    let len = usize::from(*properties.get(at)?);
    properties.get(at + 1..at + 1 + len)
}

/// The headers table's encoded entries, read in place.
fn headers_table(properties: &[u8]) -> Option<&[u8]> {
    let at = property_at(properties, property_flag::HEADERS)?;
    let len = properties.get(at..at + 4)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    properties.get(at + 4..at + 4 + len)
}

/// Flag bits of the basic class's properties (bit 15 is the first property).
pub mod property_flag {
    pub const CONTENT_TYPE: u16 = 1 << 15;
    pub const CONTENT_ENCODING: u16 = 1 << 14;
    pub const HEADERS: u16 = 1 << 13;
    pub const DELIVERY_MODE: u16 = 1 << 12;
    pub const PRIORITY: u16 = 1 << 11;
    pub const CORRELATION_ID: u16 = 1 << 10;
    pub const REPLY_TO: u16 = 1 << 9;
    pub const EXPIRATION: u16 = 1 << 8;
    pub const USER_ID: u16 = 1 << 4;
    /// Another flags word follows (never for the basic class's 14 properties).
    pub const CONTINUATION: u16 = 1;
    /// The properties up to `expiration`, in wire order.
    pub(crate) const IN_ORDER: [u16; 8] = [
        CONTENT_TYPE,
        CONTENT_ENCODING,
        HEADERS,
        DELIVERY_MODE,
        PRIORITY,
        CORRELATION_ID,
        REPLY_TO,
        EXPIRATION,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp::{BasicProperties, FieldTable, FieldValue, ShortStr};
    use bytes::BytesMut;

    fn encoded(p: &BasicProperties) -> Bytes {
        let mut out = BytesMut::new();
        p.encode(&mut out);
        out.freeze()
    }

    fn full(expiration_ms: &str) -> BasicProperties {
        let mut headers = FieldTable::new();
        headers.insert(ShortStr::from_static("k"), FieldValue::from("some value"));
        BasicProperties {
            content_type: Some(ShortStr::from_static("text/plain")),
            content_encoding: Some(ShortStr::from_static("gzip")),
            headers: Some(headers),
            delivery_mode: Some(2),
            priority: Some(5),
            correlation_id: Some(ShortStr::from_static("c")),
            reply_to: Some(ShortStr::from_static("r")),
            expiration: Some(ShortStr::new(expiration_ms).unwrap()),
            message_id: Some(ShortStr::from_static("m")),
            ..Default::default()
        }
    }

    #[test]
    fn delivery_mode_is_found_behind_the_properties_before_it() {
        assert_eq!(delivery_mode(&encoded(&full("1"))), Some(2));
        let bare = BasicProperties {
            delivery_mode: Some(1),
            ..Default::default()
        };
        assert_eq!(delivery_mode(&encoded(&bare)), Some(1));
        assert_eq!(delivery_mode(&encoded(&BasicProperties::default())), None);
        assert_eq!(delivery_mode(&[0x10, 0x00]), None, "truncated");
    }

    #[test]
    fn priority_is_read_in_place() {
        assert_eq!(priority(&encoded(&full("1"))), Some(5));
        assert_eq!(priority(&encoded(&BasicProperties::default())), None);
        assert_eq!(priority(&[0x08, 0x00]), None, "truncated");
    }

    #[test]
    fn expiration_is_read_in_place() {
        assert_eq!(expiration(&encoded(&full("1500"))), Some(&b"1500"[..]));
        assert_eq!(expiration(&encoded(&BasicProperties::default())), None);
        let bare = BasicProperties {
            expiration: Some(ShortStr::from_static("7")),
            ..Default::default()
        };
        assert_eq!(expiration(&encoded(&bare)), Some(&b"7"[..]));
        let mut truncated = encoded(&full("1500")).to_vec();
        truncated.truncate(truncated.len() - 6);
        assert_eq!(expiration(&truncated), None);
    }

    #[test]
    fn expiration_is_parsed_as_rabbitmq_does() {
        assert_eq!(parse_expiration(b"0"), Ok(0));
        assert_eq!(parse_expiration(b"+5"), Ok(5));
        assert_eq!(parse_expiration(b"05"), Ok(5));
        assert_eq!(parse_expiration(b"-0"), Ok(0));
        assert_eq!(parse_expiration(b"99999999999999999999999"), Ok(u64::MAX));
        let text = |raw: &[u8]| parse_expiration(raw).unwrap_err().to_string();
        assert_eq!(text(b"abc"), "no_integer");
        assert_eq!(text(b""), "no_integer");
        assert_eq!(text(b" 5"), "no_integer");
        assert_eq!(text(b"-1"), "{value_negative,-1}");
        assert_eq!(text(b"10abc"), "{leftover_string,\"abc\"}");
        assert_eq!(text(b"1.5"), "{leftover_string,\".5\"}");
    }

    fn publish(properties: &BasicProperties) -> AmqpResult<Message> {
        Message::published(
            ShortStr::from_static("x"),
            ShortStr::from_static("rk"),
            encoded(properties),
            Bytes::from_static(b"body"),
        )
    }

    fn with_headers(entries: Vec<(&'static str, FieldValue)>) -> BasicProperties {
        BasicProperties {
            headers: Some(FieldTable(
                entries
                    .into_iter()
                    .map(|(k, v)| (ShortStr::from_static(k), v))
                    .collect(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn cc_and_bcc_become_routing_keys_and_bcc_is_removed() {
        let keys = |names: &[&str]| {
            FieldValue::Array(names.iter().map(|n| FieldValue::from(*n)).collect())
        };
        let message = publish(&with_headers(vec![
            ("CC", keys(&["c1", "c2"])),
            ("other", FieldValue::I32(1)),
            ("BCC", keys(&["b1"])),
        ]))
        .unwrap();
        let names: Vec<&str> = message
            .extra_routing_keys()
            .iter()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(names, ["c1", "c2", "b1"]);
        let headers = BasicProperties::decode(&message.properties)
            .unwrap()
            .headers
            .unwrap();
        assert!(headers.get("BCC").is_none());
        assert!(headers.get("CC").is_some() && headers.get("other").is_some());
        assert!(!message.persistent && !message.dead_lettered());

        let plain = publish(&with_headers(vec![("xCC", FieldValue::I32(1))])).unwrap();
        assert!(plain.annotations.is_none());
    }

    #[test]
    fn a_routing_header_that_is_no_array_refuses_the_message() {
        let err = publish(&with_headers(vec![("CC", FieldValue::from("k"))])).unwrap_err();
        assert_eq!(
            err.reply_text,
            "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,\"CC\",longstr}"
        );
        let err = publish(&with_headers(vec![("BCC", FieldValue::I32(5))])).unwrap_err();
        assert_eq!(
            err.reply_text,
            "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,\"BCC\",signedint}"
        );
        let err = publish(&full("10abc")).unwrap_err();
        assert_eq!(
            err.reply_text,
            "PRECONDITION_FAILED - invalid expiration '10abc': {leftover_string,\"abc\"}"
        );
    }

    #[test]
    fn annotations_survive_their_encoding() {
        let annotations = Annotations {
            extra_routing_keys: vec![ShortStr::from_static("a"), ShortStr::from_static("b")],
            bcc: vec![ShortStr::from_static("b")],
            dead_lettered: true,
        };
        assert_eq!(
            Annotations::decode(&annotations.encode()),
            Some(annotations)
        );
        assert_eq!(Annotations::decode(&Bytes::from_static(b"junk")), None);
    }
}
