//! The consistent-hash exchange, as RabbitMQ's bundled `rabbitmq_consistent_hash_exchange`
//! plugin: each message goes to exactly one destination, picked by hashing its routing key
//! (or the header named by the `hash-header` argument, or the property named by
//! `hash-property`), so that one key always lands on the same destination and destinations
//! get shares proportional to their binding weights. Knows nothing of what a destination is.
//!
//! The plugin's rules, checked against RabbitMQ 3.10.8 and its latest source:
//! - A binding key is the destination's weight: an integer as Erlang's `list_to_integer`
//!   reads it (an optional sign, then digits), at least 1.
//! - The ring has `sum of weights` buckets; a destination owns as many consecutive buckets as
//!   its weight, in the order destinations were first bound. A message goes to the bucket that
//!   jump consistent hashing (Lamping and Veach) picks for its hash, so adding a destination
//!   moves only the keys the new buckets take.
//! - A destination is on the ring once: a second binding to it (another weight) is listed
//!   but adds no buckets, and removing any binding to it takes all its buckets off the ring.
//! - A message without the hashed header or property hashes as "undefined": all such
//!   messages go to one destination.
//!
//! Warren's hash is its own (FNV-1a, then a 64-bit mixer), not Erlang's `phash2`: which
//! destination a given key picks differs from RabbitMQ's choice, but is stable across
//! restarts because the ring is rebuilt in the order the bindings are stored.

use amqp::{BasicProperties, FieldTable, FieldValue, ShortStr};
use bytes::BytesMut;

use super::headers::erlang;
use super::table::BindingTable;
use super::{BindingKey, Destination, InvalidBinding, InvalidExchange, Router};

/// Above this, a weight counts as this much: the plugin takes any integer, but a ring of
/// billions of buckets per destination distributes no better.
const MAX_WEIGHT: u64 = u32::MAX as u64;

const HASH_HEADER: &str = "hash-header";
const HASH_PROPERTY: &str = "hash-property";

#[derive(Debug, Clone, PartialEq, Eq)]
enum HashOn {
    RoutingKey,
    /// The header's name (a long string argument, so it may be longer than any header key).
    Header(Vec<u8>),
    MessageId,
    CorrelationId,
    Timestamp,
}

pub struct ConsistentHashRouter<D> {
    table: BindingTable<D>,
    /// Each destination on the ring once, with its weight, in the order it was first bound.
    ring: Vec<(D, u64)>,
    /// `ends[i]` is one past the last bucket of `ring[i]`: a running sum of the weights.
    ends: Vec<u64>,
    hash_on: HashOn,
}

impl<D: Destination> ConsistentHashRouter<D> {
    /// Reads `hash-header` / `hash-property` as the plugin's `validate` does.
    pub fn new(arguments: &FieldTable) -> Result<Self, InvalidExchange> {
        Ok(ConsistentHashRouter {
            table: BindingTable::new(),
            ring: Vec::new(),
            ends: Vec::new(),
            hash_on: hash_on(arguments)?,
        })
    }

    fn rebuild_ends(&mut self) {
        let mut end = 0u64;
        self.ends = self
            .ring
            .iter()
            .map(|(_, weight)| {
                end += weight;
                end
            })
            .collect();
    }

    fn remove_from_ring(&mut self, destination: &D) {
        let before = self.ring.len();
        self.ring.retain(|(d, _)| d != destination);
        if self.ring.len() != before {
            self.rebuild_ends();
        }
    }

    fn pick(&self, hash: u64, out: &mut Vec<D>) {
        let Some(&buckets) = self.ends.last() else {
            return;
        };
        let bucket = jump_consistent_hash(hash, buckets);
        let at = self.ends.partition_point(|&end| end <= bucket);
        if let Some((destination, _)) = self.ring.get(at) {
            out.push(destination.clone());
        }
    }

    fn header_hash(&self, name: &[u8], headers: Option<&FieldTable>) -> u64 {
        let value = headers.and_then(|h| h.iter().find(|(k, _)| k.as_bytes() == name));
        match value {
            Some((_, value)) => {
                // The value with its type, as the plugin hashes the {Type, Value} pair.
                let mut encoded = BytesMut::new();
                FieldTable(vec![(ShortStr::from_static(""), value.clone())]).encode(&mut encoded);
                hash_bytes(b'h', &encoded)
            }
            None => UNDEFINED_HASH,
        }
    }
}

/// What the plugin hashes for a message that lacks the header or property.
const UNDEFINED_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

fn hash_on(arguments: &FieldTable) -> Result<HashOn, InvalidExchange> {
    // The plugin matches both on `longstr` before anything else and crashes on other types.
    let string_argument = |name: &str| match arguments.get(name) {
        None => Ok(None),
        Some(FieldValue::LongStr(s)) => Ok(Some(s.as_bytes().to_vec())),
        Some(other) => Err(InvalidExchange::InternalError(format!(
            "'{name}' must be a long string, not {}",
            other.type_name()
        ))),
    };
    let header = string_argument(HASH_HEADER)?;
    let property = string_argument(HASH_PROPERTY)?;
    match (header, property) {
        (None, None) => Ok(HashOn::RoutingKey),
        (Some(header), None) => Ok(HashOn::Header(header)),
        (None, Some(property)) => match property.as_slice() {
            b"message_id" => Ok(HashOn::MessageId),
            b"correlation_id" => Ok(HashOn::CorrelationId),
            b"timestamp" => Ok(HashOn::Timestamp),
            other => Err(InvalidExchange::PreconditionFailed(format!(
                "Unsupported property: {}",
                String::from_utf8_lossy(other)
            ))),
        },
        (Some(_), Some(_)) => Err(InvalidExchange::PreconditionFailed(
            "hash-header and hash-property are mutually exclusive".to_owned(),
        )),
    }
}

/// A binding key's weight as the plugin reads it: Erlang's `list_to_integer` (optional sign,
/// then at least one digit), at least 1. Huge values saturate.
fn weight(routing_key: &ShortStr) -> Result<u64, InvalidBinding> {
    let bytes = routing_key.as_bytes();
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(InvalidBinding {
            reason: format!(
                "The binding key must be an integer: {}",
                erlang::binary(bytes)
            ),
        });
    }
    let magnitude = digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    if negative || magnitude < 1 {
        return Err(InvalidBinding {
            reason: "The binding key must be greater than 0".to_owned(),
        });
    }
    Ok(magnitude.min(MAX_WEIGHT))
}

/// FNV-1a over a tag and the bytes, then a 64-bit finalizer (splitmix64's) so that keys
/// differing in one byte spread over the whole range.
fn hash_bytes(tag: u8, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(&tag).chain(bytes) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Jump consistent hashing (Lamping and Veach, 2014): a bucket in `0..buckets` for `key`;
/// growing `buckets` by one moves only the keys that the new bucket takes.
fn jump_consistent_hash(mut key: u64, buckets: u64) -> u64 {
    let mut bucket: i128 = -1;
    let mut next: i128 = 0;
    while next < i128::from(buckets) {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let step = (1u64 << 31) as f64 / ((key >> 33) + 1) as f64;
        next = ((bucket + 1) as f64 * step) as i128;
    }
    bucket.max(0) as u64
}

fn optional_hash(value: Option<&[u8]>) -> u64 {
    value.map_or(UNDEFINED_HASH, |v| hash_bytes(b'p', v))
}

impl<D: Destination> Router<D> for ConsistentHashRouter<D> {
    fn bind(&mut self, destination: D, routing_key: &ShortStr, arguments: &FieldTable) -> bool {
        if !self
            .table
            .insert(destination.clone(), routing_key, arguments)
        {
            return false;
        }
        // A key that is not a weight only gets here unvalidated; it adds no buckets.
        if let Ok(weight) = weight(routing_key) {
            if !self.ring.iter().any(|(d, _)| *d == destination) {
                self.ring.push((destination, weight));
                self.rebuild_ends();
            }
        }
        true
    }

    fn unbind(&mut self, destination: &D, routing_key: &ShortStr, arguments: &FieldTable) -> bool {
        if !self.table.remove(destination, routing_key, arguments) {
            return false;
        }
        self.remove_from_ring(destination);
        true
    }

    fn unbind_destination(&mut self, destination: &D) -> usize {
        let removed = self.table.remove_destination(destination).len();
        self.remove_from_ring(destination);
        removed
    }

    fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<D>) {
        let hash = match &self.hash_on {
            HashOn::RoutingKey => hash_bytes(b'k', routing_key.as_bytes()),
            HashOn::Header(name) => self.header_hash(name, headers),
            // Properties are only seen through `route_message`.
            HashOn::MessageId | HashOn::CorrelationId | HashOn::Timestamp => UNDEFINED_HASH,
        };
        self.pick(hash, out);
    }

    fn reads_properties(&self) -> bool {
        self.hash_on != HashOn::RoutingKey
    }

    fn route_message(
        &self,
        routing_key: &str,
        properties: Option<&BasicProperties>,
        out: &mut Vec<D>,
    ) {
        let hash = match &self.hash_on {
            HashOn::RoutingKey | HashOn::Header(_) => {
                return self.route(
                    routing_key,
                    properties.and_then(|p| p.headers.as_ref()),
                    out,
                )
            }
            HashOn::MessageId => optional_hash(
                properties
                    .and_then(|p| p.message_id.as_ref())
                    .map(|s| s.as_bytes()),
            ),
            HashOn::CorrelationId => optional_hash(
                properties
                    .and_then(|p| p.correlation_id.as_ref())
                    .map(|s| s.as_bytes()),
            ),
            HashOn::Timestamp => {
                let text = properties.and_then(|p| p.timestamp).map(|t| t.to_string());
                optional_hash(text.as_deref().map(str::as_bytes))
            }
        };
        self.pick(hash, out);
    }

    fn bindings(&self) -> Vec<(D, BindingKey)> {
        self.table.bindings()
    }

    fn has_bindings(&self) -> bool {
        !self.table.is_empty()
    }

    fn has_destination(&self, destination: &D) -> bool {
        self.table.contains_destination(destination)
    }

    fn validate_binding(
        &self,
        routing_key: &ShortStr,
        _arguments: &FieldTable,
    ) -> Result<(), InvalidBinding> {
        weight(routing_key).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn key(s: &str) -> ShortStr {
        ShortStr::new(s).unwrap()
    }

    fn args(pairs: &[(&str, FieldValue)]) -> FieldTable {
        FieldTable(pairs.iter().map(|(k, v)| (key(k), v.clone())).collect())
    }

    fn router(weights: &[(&'static str, &str)]) -> ConsistentHashRouter<&'static str> {
        let mut r = ConsistentHashRouter::new(&FieldTable::new()).unwrap();
        for &(destination, weight) in weights {
            assert!(r.bind(destination, &key(weight), &FieldTable::new()));
        }
        r
    }

    fn routed(r: &ConsistentHashRouter<&'static str>, routing_key: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        r.route(routing_key, None, &mut out);
        out
    }

    fn shares(r: &ConsistentHashRouter<&'static str>, keys: u32) -> HashMap<&'static str, u32> {
        let mut counts = HashMap::new();
        for i in 0..keys {
            let picked = routed(r, &format!("key-{i}"));
            assert_eq!(picked.len(), 1, "exactly one destination per message");
            *counts.entry(picked[0]).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn binding_keys_are_weights_with_the_plugins_texts() {
        // RabbitMQ 3.10.8 answered these to queue.bind on an x-consistent-hash exchange.
        let r = router(&[]);
        let check = |k: &str| r.validate_binding(&key(k), &FieldTable::new());
        for ok in ["1", "+3", "007", "99999999999999999999"] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        let text = |k: &str| check(k).unwrap_err().reason;
        assert_eq!(
            text("abc"),
            "The binding key must be an integer: <<\"abc\">>"
        );
        assert_eq!(text(""), "The binding key must be an integer: <<>>");
        assert_eq!(text(" 1"), "The binding key must be an integer: <<\" 1\">>");
        assert_eq!(
            text("1.5"),
            "The binding key must be an integer: <<\"1.5\">>"
        );
        assert_eq!(text("+"), "The binding key must be an integer: <<\"+\">>");
        assert_eq!(text("0"), "The binding key must be greater than 0");
        assert_eq!(text("-1"), "The binding key must be greater than 0");
        assert_eq!(text("-0"), "The binding key must be greater than 0");
    }

    #[test]
    fn arguments_are_checked_as_the_plugin_does() {
        let new =
            |a: &[(&str, FieldValue)]| ConsistentHashRouter::<u8>::new(&args(a)).map(|r| r.hash_on);
        assert_eq!(new(&[]), Ok(HashOn::RoutingKey));
        assert_eq!(
            new(&[("hash-header", FieldValue::from("h"))]),
            Ok(HashOn::Header(b"h".to_vec()))
        );
        assert_eq!(
            new(&[("hash-property", FieldValue::from("timestamp"))]),
            Ok(HashOn::Timestamp)
        );
        assert_eq!(
            new(&[("hash-property", FieldValue::from("foo"))]),
            Err(InvalidExchange::PreconditionFailed(
                "Unsupported property: foo".into()
            ))
        );
        assert_eq!(
            new(&[
                ("hash-property", FieldValue::from("message_id")),
                ("hash-header", FieldValue::from("h")),
            ]),
            Err(InvalidExchange::PreconditionFailed(
                "hash-header and hash-property are mutually exclusive".into()
            ))
        );
        assert!(matches!(
            new(&[("hash-header", FieldValue::I32(5))]),
            Err(InvalidExchange::InternalError(_))
        ));
    }

    #[test]
    fn one_key_one_destination_and_shares_follow_weights() {
        let r = router(&[("q1", "1"), ("q2", "2"), ("q3", "1")]);
        for i in 0..200 {
            let k = format!("stable-{i}");
            let first = routed(&r, &k);
            assert_eq!(routed(&r, &k), first, "same key, same destination");
        }
        let counts = shares(&r, 8000);
        let (q1, q2, q3) = (counts["q1"], counts["q2"], counts["q3"]);
        assert!((1600..2400).contains(&q1), "{counts:?}");
        assert!((3400..4600).contains(&q2), "{counts:?}");
        assert!((1600..2400).contains(&q3), "{counts:?}");
    }

    #[test]
    fn a_new_destination_takes_keys_only_for_itself() {
        let before = router(&[("q1", "1"), ("q2", "1")]);
        let after = router(&[("q1", "1"), ("q2", "1"), ("q3", "1")]);
        for i in 0..2000 {
            let k = format!("k{i}");
            let (was, is) = (routed(&before, &k)[0], routed(&after, &k)[0]);
            assert!(was == is || is == "q3", "{k} moved from {was} to {is}");
        }
    }

    #[test]
    fn a_destination_is_on_the_ring_once_and_leaves_it_with_any_binding() {
        // RabbitMQ 3.10.8: cq1 bound with "1" then "5", cq2 with "2", cq3 with "1" split
        // 4000 keys about 1:2:1; after unbinding cq1's "5", cq1 got none at all.
        let mut r = router(&[("q1", "1"), ("q2", "2"), ("q1", "5"), ("q3", "1")]);
        assert_eq!(r.bindings().len(), 4);
        let counts = shares(&r, 4000);
        assert!((700..1300).contains(&counts["q1"]), "{counts:?}");
        assert!(r.unbind(&"q1", &key("5"), &FieldTable::new()));
        let counts = shares(&r, 4000);
        assert_eq!(counts.get("q1"), None, "{counts:?}");
        assert!(
            r.has_destination(&"q1"),
            "its other binding is still listed"
        );
        assert_eq!(r.unbind_destination(&"q2"), 1);
        assert_eq!(shares(&r, 100)["q3"], 100);
        assert_eq!(r.unbind_destination(&"q3"), 1);
        assert_eq!(
            routed(&r, "x"),
            Vec::<&str>::new(),
            "an empty ring routes nowhere"
        );
    }

    #[test]
    fn headers_and_properties_pick_the_destination() {
        let mut by_header: ConsistentHashRouter<u32> =
            ConsistentHashRouter::new(&args(&[("hash-header", FieldValue::from("user"))])).unwrap();
        let mut by_id: ConsistentHashRouter<u32> =
            ConsistentHashRouter::new(&args(&[("hash-property", FieldValue::from("message_id"))]))
                .unwrap();
        assert!(by_header.reads_properties() && by_id.reads_properties());
        for d in 0..8u32 {
            assert!(by_header.bind(d, &key("1"), &FieldTable::new()));
            assert!(by_id.bind(d, &key("1"), &FieldTable::new()));
        }
        let pick = |r: &ConsistentHashRouter<u32>, rk: &str, p: &BasicProperties| {
            let mut out = Vec::new();
            r.route_message(rk, Some(p), &mut out);
            assert_eq!(out.len(), 1);
            out[0]
        };
        let mut seen_header = std::collections::HashSet::new();
        let mut seen_id = std::collections::HashSet::new();
        for user in 0..64 {
            let props = BasicProperties {
                headers: Some(args(&[("user", FieldValue::I32(user))])),
                message_id: Some(key(&format!("m{user}"))),
                ..Default::default()
            };
            let header_pick = pick(&by_header, "rk-a", &props);
            assert_eq!(
                pick(&by_header, "rk-b", &props),
                header_pick,
                "routing key ignored"
            );
            seen_header.insert(header_pick);
            let id_pick = pick(&by_id, "rk-a", &props);
            assert_eq!(pick(&by_id, "rk-b", &props), id_pick);
            seen_id.insert(id_pick);
        }
        assert!(seen_header.len() > 4 && seen_id.len() > 4, "keys spread");
        // Without the header (or property), every message goes to one destination.
        let bare = BasicProperties::default();
        let first = pick(&by_header, "a", &bare);
        assert!((0..50).all(|i| pick(&by_header, &format!("k{i}"), &bare) == first));
        let first = pick(&by_id, "a", &bare);
        assert!((0..50).all(|i| pick(&by_id, &format!("k{i}"), &bare) == first));
    }

    #[test]
    fn jump_hash_stays_in_range_and_moves_few_keys() {
        for buckets in [1u64, 2, 7, 1000, MAX_WEIGHT * 3] {
            for k in 0..500u64 {
                assert!(
                    jump_consistent_hash(hash_bytes(b'k', &k.to_le_bytes()), buckets) < buckets
                );
            }
        }
        let moved = (0..10_000u64)
            .filter(|k| {
                let h = hash_bytes(b'k', &k.to_le_bytes());
                jump_consistent_hash(h, 10) != jump_consistent_hash(h, 11)
            })
            .count();
        assert!(
            (600..1300).contains(&moved),
            "about 1/11 of the keys move: {moved}"
        );
    }
}
