//! The routing side of the delayed-message exchange (RabbitMQ's
//! `rabbitmq_delayed_message_exchange` plugin): it routes as the exchange type its
//! `x-delayed-type` argument names, and a publish's `x-delay` header says how long the
//! exchange holds the message first. Holding and the timer are not routing and live in
//! `crate::delayed`; this file knows nothing of queues, vhosts or time.
//!
//! The plugin's rules (its latest source):
//! - `x-delayed-type` must be a string naming an existing exchange type other than
//!   `x-delayed-message`; that type's own argument checks and binding checks apply.
//! - `x-delay` is read from integer headers as is (not signed bytes), from strings as a
//!   decimal integer, from floats truncated. A message is held only for 0 < delay ≤ 2^32 − 1
//!   ms; anything else (absent, zero, negative, too long, unreadable) routes at once, with
//!   its headers untouched.
//! - A held message goes out with `x-delay` turned into its negative (a signed 64-bit
//!   integer), so that a delayed exchange it meets next routes it at once, and consumers can
//!   tell it was delayed.

use amqp::{BasicProperties, FieldTable, FieldValue, ShortStr};

use super::{BindingKey, Destination, ExchangeKind, InvalidBinding, InvalidExchange, Router};

pub const X_DELAY: &str = "x-delay";
const X_DELAYED_TYPE: &str = "x-delayed-type";
/// The longest delay the plugin holds a message for (Erlang's timer limit); longer ones route
/// at once.
pub const MAX_DELAY_MS: u64 = u32::MAX as u64;

/// A delayed exchange's routing table: the table of its `x-delayed-type`.
pub struct DelayedRouter<D> {
    inner: Box<dyn Router<D>>,
}

impl<D: Destination> DelayedRouter<D> {
    pub fn new(arguments: &FieldTable) -> Result<Self, InvalidExchange> {
        let kind = delayed_type(arguments)?;
        Ok(DelayedRouter {
            inner: kind.router(arguments)?,
        })
    }
}

fn delayed_type(arguments: &FieldTable) -> Result<ExchangeKind, InvalidExchange> {
    let name = match arguments.get(X_DELAYED_TYPE) {
        Some(value @ (FieldValue::LongStr(_) | FieldValue::ByteArray(_))) => value.as_bytes(),
        _ => None,
    };
    let Some(name) = name else {
        return Err(InvalidExchange::PreconditionFailed(
            "Invalid argument, 'x-delayed-type' must be an existing exchange type".to_owned(),
        ));
    };
    let text = String::from_utf8_lossy(name);
    match ExchangeKind::parse(&text) {
        Some(ExchangeKind::DelayedMessage) => Err(InvalidExchange::PreconditionFailed(
            "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'".to_owned(),
        )),
        Some(kind) => Ok(kind),
        // What exchange.declare answers for an unknown type (see `VHost::declare_exchange`).
        None => Err(InvalidExchange::PreconditionFailed(format!(
            "unknown exchange type '{text}'"
        ))),
    }
}

/// The `x-delay` header as the plugin reads it, before any range check.
fn requested_delay(headers: &FieldTable) -> Option<i128> {
    match headers.get(X_DELAY)? {
        FieldValue::U8(v) => Some((*v).into()),
        FieldValue::I16(v) => Some((*v).into()),
        FieldValue::U16(v) => Some((*v).into()),
        FieldValue::I32(v) => Some((*v).into()),
        FieldValue::U32(v) => Some((*v).into()),
        FieldValue::I64(v) => Some((*v).into()),
        FieldValue::F32(f) => truncated(f64::from(*f)),
        FieldValue::F64(f) => truncated(*f),
        text @ (FieldValue::LongStr(_) | FieldValue::ByteArray(_)) => {
            erlang_integer(text.as_bytes()?)
        }
        _ => None,
    }
}

fn truncated(f: f64) -> Option<i128> {
    // Beyond this the value is out of range anyway; NaN and infinities are not numbers.
    (f.is_finite() && f.abs() < 1e30).then(|| f.trunc() as i128)
}

/// Erlang's `binary_to_integer`: an optional sign, then decimal digits only.
fn erlang_integer(bytes: &[u8]) -> Option<i128> {
    let text = std::str::from_utf8(bytes).ok()?;
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too many digits to fit is far beyond the longest delay: treat it as out of range.
    Some(text.parse::<i128>().unwrap_or(i128::MAX))
}

/// How long a message with these headers is held, in milliseconds; `None` routes it now.
pub fn delay_of(headers: Option<&FieldTable>) -> Option<u64> {
    let delay = requested_delay(headers?)?;
    (delay > 0 && delay <= i128::from(MAX_DELAY_MS)).then_some(delay as u64)
}

/// Turns the `x-delay` of a message that was held into its negative, as the plugin does when
/// it routes the message at its time. False if the properties had no readable `x-delay`.
pub fn swap_delay_header(properties: &mut BasicProperties) -> bool {
    let Some(headers) = properties.headers.as_mut() else {
        return false;
    };
    let Some(delay) = requested_delay(headers) else {
        return false;
    };
    let negative = i64::try_from(-delay).unwrap_or(i64::MIN);
    headers.insert(ShortStr::from_static(X_DELAY), FieldValue::I64(negative));
    true
}

impl<D: Destination> Router<D> for DelayedRouter<D> {
    fn bind(&mut self, destination: D, routing_key: &ShortStr, arguments: &FieldTable) -> bool {
        self.inner.bind(destination, routing_key, arguments)
    }

    fn unbind(&mut self, destination: &D, routing_key: &ShortStr, arguments: &FieldTable) -> bool {
        self.inner.unbind(destination, routing_key, arguments)
    }

    fn unbind_destination(&mut self, destination: &D) -> usize {
        self.inner.unbind_destination(destination)
    }

    fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<D>) {
        self.inner.route(routing_key, headers, out)
    }

    fn reads_properties(&self) -> bool {
        self.inner.reads_properties()
    }

    fn route_message(
        &self,
        routing_key: &str,
        properties: Option<&BasicProperties>,
        out: &mut Vec<D>,
    ) {
        self.inner.route_message(routing_key, properties, out)
    }

    fn bindings(&self) -> Vec<(D, BindingKey)> {
        self.inner.bindings()
    }

    fn has_bindings(&self) -> bool {
        self.inner.has_bindings()
    }

    fn has_destination(&self, destination: &D) -> bool {
        self.inner.has_destination(destination)
    }

    fn validate_binding(
        &self,
        routing_key: &ShortStr,
        arguments: &FieldTable,
    ) -> Result<(), InvalidBinding> {
        self.inner.validate_binding(routing_key, arguments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp::Decimal;
    use bytes::Bytes;

    fn key(s: &str) -> ShortStr {
        ShortStr::new(s).unwrap()
    }

    fn with_type(value: FieldValue) -> FieldTable {
        FieldTable(vec![(key(X_DELAYED_TYPE), value)])
    }

    fn delay(value: FieldValue) -> Option<u64> {
        delay_of(Some(&FieldTable(vec![(key(X_DELAY), value)])))
    }

    #[test]
    fn x_delayed_type_is_required_and_checked_with_the_plugins_texts() {
        let refused = |arguments: &FieldTable| match DelayedRouter::<u8>::new(arguments) {
            Err(InvalidExchange::PreconditionFailed(text)) => text,
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("accepted {arguments:?}"),
        };
        let must_exist = "Invalid argument, 'x-delayed-type' must be an existing exchange type";
        assert_eq!(refused(&FieldTable::new()), must_exist);
        assert_eq!(refused(&with_type(FieldValue::I32(1))), must_exist);
        assert_eq!(
            refused(&with_type(FieldValue::from("x-delayed-message"))),
            "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'"
        );
        assert_eq!(
            refused(&with_type(FieldValue::from("bogus"))),
            "unknown exchange type 'bogus'"
        );
        // The inner type's own checks apply.
        let mut hashed = with_type(FieldValue::from("x-consistent-hash"));
        hashed.insert(key("hash-property"), FieldValue::from("nope"));
        assert_eq!(refused(&hashed), "Unsupported property: nope");
        for kind in ["direct", "fanout", "topic", "headers", "x-consistent-hash"] {
            assert!(DelayedRouter::<u8>::new(&with_type(FieldValue::from(kind))).is_ok());
        }
        let bytes = with_type(FieldValue::ByteArray(Bytes::from_static(b"fanout")));
        assert!(DelayedRouter::<u8>::new(&bytes).is_ok());
    }

    #[test]
    fn routes_and_validates_as_its_delayed_type() {
        let mut topic = DelayedRouter::new(&with_type(FieldValue::from("topic"))).unwrap();
        assert!(topic.bind(1u8, &key("a.*"), &FieldTable::new()));
        let mut out = Vec::new();
        topic.route("a.b", None, &mut out);
        topic.route("b.b", None, &mut out);
        assert_eq!(out, vec![1]);
        let hashed =
            DelayedRouter::<u8>::new(&with_type(FieldValue::from("x-consistent-hash"))).unwrap();
        assert!(hashed
            .validate_binding(&key("x"), &FieldTable::new())
            .is_err());
        assert!(hashed
            .validate_binding(&key("3"), &FieldTable::new())
            .is_ok());
        let headers = DelayedRouter::<u8>::new(&with_type(FieldValue::from("headers"))).unwrap();
        assert!(headers.reads_properties());
    }

    #[test]
    fn x_delay_is_read_as_the_plugin_reads_it() {
        assert_eq!(delay_of(None), None);
        assert_eq!(delay_of(Some(&FieldTable::new())), None);
        assert_eq!(delay(FieldValue::I32(1500)), Some(1500));
        assert_eq!(delay(FieldValue::I64(1)), Some(1));
        assert_eq!(delay(FieldValue::U8(7)), Some(7));
        assert_eq!(delay(FieldValue::I16(300)), Some(300));
        assert_eq!(delay(FieldValue::U16(300)), Some(300));
        assert_eq!(delay(FieldValue::U32(u32::MAX)), Some(MAX_DELAY_MS));
        assert_eq!(
            delay(FieldValue::I64(MAX_DELAY_MS as i64 + 1)),
            None,
            "too long"
        );
        assert_eq!(delay(FieldValue::I32(0)), None);
        assert_eq!(delay(FieldValue::I32(-5)), None);
        assert_eq!(delay(FieldValue::from("2500")), Some(2500));
        assert_eq!(delay(FieldValue::from("+25")), Some(25));
        assert_eq!(delay(FieldValue::from("-25")), None);
        assert_eq!(delay(FieldValue::from("soon")), None);
        assert_eq!(
            delay(FieldValue::from(
                "99999999999999999999999999999999999999999"
            )),
            None
        );
        assert_eq!(delay(FieldValue::F64(1500.9)), Some(1500));
        assert_eq!(delay(FieldValue::F32(0.5)), None);
        assert_eq!(delay(FieldValue::F64(f64::NAN)), None);
        assert_eq!(
            delay(FieldValue::I8(100)),
            None,
            "signed bytes are not read"
        );
        assert_eq!(delay(FieldValue::Bool(true)), None);
        assert_eq!(delay(FieldValue::Timestamp(100)), None);
        assert_eq!(
            delay(FieldValue::Decimal(Decimal { scale: 0, value: 5 })),
            None
        );
        let bytes = FieldValue::ByteArray(Bytes::from_static(b"40"));
        assert_eq!(delay(bytes), Some(40));
    }

    #[test]
    fn a_held_message_goes_out_with_a_negative_x_delay_in_place() {
        let mut properties = BasicProperties {
            headers: Some(FieldTable(vec![
                (key("a"), FieldValue::I32(1)),
                (key(X_DELAY), FieldValue::from("1500")),
                (key("z"), FieldValue::I32(2)),
            ])),
            ..Default::default()
        };
        assert!(swap_delay_header(&mut properties));
        let headers = properties.headers.as_ref().unwrap();
        assert_eq!(headers.0[1], (key(X_DELAY), FieldValue::I64(-1500)));
        assert_eq!(headers.len(), 3);
        assert_eq!(delay_of(Some(headers)), None, "not held again");
        assert!(!swap_delay_header(&mut BasicProperties::default()));
    }
}
