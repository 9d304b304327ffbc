//! The headers exchange: a binding's arguments are compared with the message's headers,
//! as RabbitMQ's `rabbit_exchange_type_headers` does; the routing key plays no part.
//! Knows nothing of what a destination is.
//!
//! RabbitMQ's rules, checked against RabbitMQ 3.10.8:
//! - `x-match` is "all" (also when absent), "any", "all-with-x" or "any-with-x"; `bind`
//!   refuses other values (`validate_binding`), and an unknown one left over from elsewhere
//!   counts as "all".
//! - The binding key `x-match` is never compared. Other keys starting with "x-" are compared
//!   only by the "-with-x" kinds.
//! - A binding value of type void matches any value under that key (presence only).
//! - Values compare as Erlang's `==` compares the decoded terms: the type tag is dropped at
//!   the top level, so every integer type and timestamp are one class, 1 equals 1.0, a
//!   long string equals a byte array with the same bytes, f32 0.1 differs from f64 0.1; inside
//!   arrays and tables the type tag is kept, so [int 1] differs from [long 1]. Decimals are
//!   (scale, value) pairs, not numbers.
//! - "all" with no keys left to compare matches every message (even one without headers);
//!   "any" with no keys matches nothing.
//! - Both sides are sorted by key (stable) and walked like a merge, which decides what
//!   repeated keys do: binding {a:1,a:2} needs the message to carry a=1 then a=2.

use amqp::{FieldTable, FieldValue, ShortStr};

use super::table::BindingTable;
use super::{BindingKey, Destination, InvalidBinding, Router};

pub struct HeadersRouter<D> {
    table: BindingTable<D>,
}

impl<D: Destination> HeadersRouter<D> {
    pub fn new() -> Self {
        HeadersRouter {
            table: BindingTable::new(),
        }
    }
}

impl<D: Destination> Default for HeadersRouter<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Destination> Router<D> for HeadersRouter<D> {
    fn bind(&mut self, destination: D, routing_key: &ShortStr, arguments: &FieldTable) -> bool {
        self.table.insert(destination, routing_key, arguments)
    }

    fn unbind(&mut self, destination: &D, routing_key: &ShortStr, arguments: &FieldTable) -> bool {
        self.table.remove(destination, routing_key, arguments)
    }

    fn unbind_destination(&mut self, destination: &D) -> usize {
        self.table.remove_destination(destination).len()
    }

    /// Every binding is tried: there is no index over arbitrary header tables (RabbitMQ
    /// scans its bindings too).
    fn route(&self, _routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<D>) {
        let mut data: Vec<&(ShortStr, FieldValue)> =
            headers.map_or(Vec::new(), |h| h.iter().collect());
        data.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (destination, record) in self.table.iter() {
            if headers_match(&record.arguments, &data) {
                out.push(destination.clone());
            }
        }
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

    fn reads_properties(&self) -> bool {
        true
    }

    fn validate_binding(
        &self,
        _routing_key: &ShortStr,
        arguments: &FieldTable,
    ) -> Result<(), InvalidBinding> {
        let reason = match arguments.get("x-match") {
            None => return Ok(()),
            Some(FieldValue::LongStr(s)) => {
                if parse_x_match(s.as_bytes()).is_some() {
                    return Ok(());
                }
                format!(
                    "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
                    erlang::binary(s.as_bytes())
                )
            }
            Some(other) => format!(
                "Invalid x-match field type {} (value {}); expected longstr",
                other.type_name(),
                erlang::value(other)
            ),
        };
        Err(InvalidBinding { reason })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MatchKind {
    any: bool,
    with_x: bool,
}

fn parse_x_match(value: &[u8]) -> Option<MatchKind> {
    let (any, with_x) = match value {
        b"all" => (false, false),
        b"any" => (true, false),
        b"all-with-x" => (false, true),
        b"any-with-x" => (true, true),
        _ => return None,
    };
    Some(MatchKind { any, with_x })
}

fn match_kind(arguments: &FieldTable) -> MatchKind {
    const ALL: MatchKind = MatchKind {
        any: false,
        with_x: false,
    };
    match arguments.get("x-match") {
        Some(FieldValue::LongStr(s)) => parse_x_match(s.as_bytes()).unwrap_or(ALL),
        _ => ALL,
    }
}

/// `pattern` is a binding's arguments and `data` the message's headers, both sorted by key.
fn headers_match(pattern: &FieldTable, data: &[&(ShortStr, FieldValue)]) -> bool {
    let kind = match_kind(pattern);
    let mut all_matched = true;
    let mut any_matched = false;
    let mut data = data.iter().peekable();
    for (key, expected) in pattern.iter() {
        if kind.any && any_matched {
            return true;
        }
        if !kind.any && !all_matched {
            return false;
        }
        let key = key.as_bytes();
        if key == b"x-match" || (!kind.with_x && key.starts_with(b"x-")) {
            continue;
        }
        // Headers sorting before this key are not asked for.
        while data.next_if(|d| d.0.as_bytes() < key).is_some() {}
        match data.next_if(|d| d.0.as_bytes() == key) {
            Some((_, actual))
                if matches!(expected, FieldValue::Void) || erlang::equal(expected, actual) =>
            {
                any_matched = true;
            }
            _ => all_matched = false,
        }
    }
    if kind.any {
        any_matched
    } else {
        all_matched
    }
}

/// How RabbitMQ (Erlang) sees field values: equality of decoded terms, and `~p` printing for
/// error texts.
pub(super) mod erlang {
    use amqp::{FieldTable, FieldValue};

    /// A field value as the Erlang term RabbitMQ decodes it to, without its type tag.
    enum Term<'a> {
        Integer(i128),
        Float(f64),
        Atom(&'static str),
        Binary(&'a [u8]),
        Decimal(u8, u32),
        Array(&'a [FieldValue]),
        Table(&'a FieldTable),
    }

    fn term(v: &FieldValue) -> Term<'_> {
        match v {
            FieldValue::Bool(b) => Term::Atom(if *b { "true" } else { "false" }),
            FieldValue::I8(i) => Term::Integer((*i).into()),
            FieldValue::U8(i) => Term::Integer((*i).into()),
            FieldValue::I16(i) => Term::Integer((*i).into()),
            FieldValue::U16(i) => Term::Integer((*i).into()),
            FieldValue::I32(i) => Term::Integer((*i).into()),
            FieldValue::U32(i) => Term::Integer((*i).into()),
            FieldValue::I64(i) => Term::Integer((*i).into()),
            FieldValue::Timestamp(i) => Term::Integer((*i).into()),
            FieldValue::F32(f) => Term::Float((*f).into()),
            FieldValue::F64(f) => Term::Float(*f),
            FieldValue::Decimal(d) => Term::Decimal(d.scale, d.value),
            FieldValue::LongStr(s) => Term::Binary(s.as_bytes()),
            FieldValue::ByteArray(b) => Term::Binary(b),
            FieldValue::Array(a) => Term::Array(a),
            FieldValue::Table(t) => Term::Table(t),
            FieldValue::Void => Term::Atom("undefined"),
        }
    }

    /// Erlang's `==` (not `=:=`): numbers compare by value across integer and float.
    pub(super) fn equal(a: &FieldValue, b: &FieldValue) -> bool {
        match (term(a), term(b)) {
            (Term::Integer(x), Term::Integer(y)) => x == y,
            (Term::Float(x), Term::Float(y)) => x == y,
            (Term::Integer(i), Term::Float(f)) | (Term::Float(f), Term::Integer(i)) => {
                integer_equals_float(i, f)
            }
            (Term::Atom(x), Term::Atom(y)) => x == y,
            (Term::Binary(x), Term::Binary(y)) => x == y,
            (Term::Decimal(s1, v1), Term::Decimal(s2, v2)) => s1 == s2 && v1 == v2,
            // Array elements are {Type, Value} pairs.
            (Term::Array(x), Term::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| tagged_equal(x, y))
            }
            // Nested tables are {Key, Type, Value} lists in wire order (only the top level
            // is sorted).
            (Term::Table(x), Term::Table(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y.iter())
                        .all(|((kx, x), (ky, y))| kx == ky && tagged_equal(x, y))
            }
            _ => false,
        }
    }

    fn tagged_equal(a: &FieldValue, b: &FieldValue) -> bool {
        a.tag() == b.tag() && equal(a, b)
    }

    /// Exact comparison, as Erlang does for every integer and float in range.
    fn integer_equals_float(i: i128, f: f64) -> bool {
        // 2^100 is far outside every integer a field value holds, and i128 holds it exactly.
        f.is_finite() && f.fract() == 0.0 && f.abs() < 2f64.powi(100) && f as i128 == i
    }

    /// `~p` of the decoded value. Erlang breaks long terms over several lines; this does not.
    pub(super) fn value(v: &FieldValue) -> String {
        match term(v) {
            Term::Integer(i) => i.to_string(),
            Term::Float(f) => float(f),
            Term::Atom(a) => a.to_owned(),
            Term::Binary(b) => binary(b),
            Term::Decimal(scale, value) => format!("{{{scale},{value}}}"),
            Term::Array(items) => {
                let items: Vec<String> = items
                    .iter()
                    .map(|v| format!("{{{},{}}}", v.type_name(), value(v)))
                    .collect();
                format!("[{}]", items.join(","))
            }
            Term::Table(t) => {
                let items: Vec<String> = t
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{{{},{},{}}}",
                            binary(k.as_bytes()),
                            v.type_name(),
                            value(v)
                        )
                    })
                    .collect();
                format!("[{}]", items.join(","))
            }
        }
    }

    /// `~p` of a binary: quoted when every byte is printable Latin-1, else a list of bytes.
    /// Latin-1 bytes above 127 are written back as the raw bytes they were (RabbitMQ turns
    /// the printed characters into bytes again), so UTF-8 text comes out as itself.
    pub(in crate::exchange) fn binary(bytes: &[u8]) -> String {
        if bytes.is_empty() {
            return "<<>>".to_owned();
        }
        let printable = bytes
            .iter()
            .all(|&b| matches!(b, 32..=126 | 160..=255 | 8..=13 | 27));
        if !printable {
            let items: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
            return format!("<<{}>>", items.join(","));
        }
        let mut out = Vec::with_capacity(bytes.len() + 6);
        out.extend_from_slice(b"<<\"");
        for &b in bytes {
            let escaped: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                11 => b"\\v",
                8 => b"\\b",
                12 => b"\\f",
                27 => b"\\e",
                _ => {
                    out.push(b);
                    continue;
                }
            };
            out.extend_from_slice(escaped);
        }
        out.extend_from_slice(b"\">>");
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Erlang's shortest float printing: the shortest digits that read back the same, written
    /// plainly unless the exponent form is shorter or the value is 2^53 or more.
    pub(super) fn float(f: f64) -> String {
        if f == 0.0 {
            return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
        }
        if !f.is_finite() {
            // RabbitMQ's decoder rejects these; any spelling will do.
            return f.to_string();
        }
        let sign = if f < 0.0 { "-" } else { "" };
        let scientific = format!("{:e}", f.abs());
        let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
        let exponent: i64 = exponent.parse().unwrap_or(0);
        let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
        let (first, rest) = digits.split_at(1);
        let exp_form = format!(
            "{first}.{}e{exponent}",
            if rest.is_empty() { "0" } else { rest }
        );
        // The value is 0.DIGITS * 10^place.
        let place = exponent + 1;
        let len = digits.len() as i64;
        let plain = if place <= 0 {
            format!("0.{}{digits}", "0".repeat((-place) as usize))
        } else if place < len {
            let (int, frac) = digits.split_at(place as usize);
            format!("{int}.{frac}")
        } else {
            format!("{digits}{}.0", "0".repeat((place - len) as usize))
        };
        let body = if f.abs() >= 9_007_199_254_740_992.0 || exp_form.len() < plain.len() {
            exp_form
        } else {
            plain
        };
        format!("{sign}{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp::{Decimal, LongStr};
    use bytes::Bytes;

    fn key(s: &str) -> ShortStr {
        ShortStr::new(s).unwrap()
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::LongStr(LongStr::from(v))
    }

    fn table(pairs: &[(&str, FieldValue)]) -> FieldTable {
        FieldTable(pairs.iter().map(|(k, v)| (key(k), v.clone())).collect())
    }

    /// Routes one message through a router holding only `binding`.
    fn matches(binding: &[(&str, FieldValue)], headers: Option<&[(&str, FieldValue)]>) -> bool {
        let mut r = HeadersRouter::new();
        assert!(r.bind(1u8, &key(""), &table(binding)));
        let headers = headers.map(table);
        let mut out = Vec::new();
        r.route("ignored", headers.as_ref(), &mut out);
        !out.is_empty()
    }

    use FieldValue::{Void, F32, F64, I32, I64, I8, U32};

    /// (binding args, message headers, what RabbitMQ 3.10.8 answered).
    #[allow(clippy::type_complexity)]
    fn rabbitmq_cases() -> Vec<(
        &'static str,
        Vec<(&'static str, FieldValue)>,
        Option<Vec<(&'static str, FieldValue)>>,
        bool,
    )> {
        vec![
            ("no args, no headers", vec![], None, true),
            ("no args, empty headers", vec![], Some(vec![]), true),
            ("all a=1, no headers", vec![("a", I32(1))], None, false),
            (
                "all a=1, a=1",
                vec![("a", I32(1))],
                Some(vec![("a", I32(1))]),
                true,
            ),
            (
                "any, no keys, a=1",
                vec![("x-match", s("any"))],
                Some(vec![("a", I32(1))]),
                false,
            ),
            (
                "any, no keys, no headers",
                vec![("x-match", s("any"))],
                None,
                false,
            ),
            (
                "all, only x-foo, no headers",
                vec![("x-foo", s("bar"))],
                None,
                true,
            ),
            (
                "any, only x-foo, x-foo=bar",
                vec![("x-match", s("any")), ("x-foo", s("bar"))],
                Some(vec![("x-foo", s("bar"))]),
                false,
            ),
            (
                "all-with-x x-foo=bar, x-foo=bar",
                vec![("x-match", s("all-with-x")), ("x-foo", s("bar"))],
                Some(vec![("x-foo", s("bar"))]),
                true,
            ),
            (
                "all-with-x x-foo=bar, x-foo=baz",
                vec![("x-match", s("all-with-x")), ("x-foo", s("bar"))],
                Some(vec![("x-foo", s("baz"))]),
                false,
            ),
            (
                "all-with-x x-foo=bar, no headers",
                vec![("x-match", s("all-with-x")), ("x-foo", s("bar"))],
                None,
                false,
            ),
            (
                "all-with-x alone, no headers",
                vec![("x-match", s("all-with-x"))],
                None,
                true,
            ),
            (
                "all-with-x alone, b=1 (x-match itself is not compared)",
                vec![("x-match", s("all-with-x"))],
                Some(vec![("b", I32(1))]),
                true,
            ),
            (
                "any-with-x x-foo=bar, x-foo=bar",
                vec![("x-match", s("any-with-x")), ("x-foo", s("bar"))],
                Some(vec![("x-foo", s("bar"))]),
                true,
            ),
            (
                "any-with-x a=1 x-foo=bar, a=2 x-foo=bar",
                vec![
                    ("x-match", s("any-with-x")),
                    ("a", I32(1)),
                    ("x-foo", s("bar")),
                ],
                Some(vec![("a", I32(2)), ("x-foo", s("bar"))]),
                true,
            ),
            (
                "any-with-x alone, x-match=any-with-x",
                vec![("x-match", s("any-with-x"))],
                Some(vec![("x-match", s("any-with-x"))]),
                false,
            ),
            (
                "all-with-x a=1, a=1",
                vec![("x-match", s("all-with-x")), ("a", I32(1))],
                Some(vec![("a", I32(1))]),
                true,
            ),
            (
                "any a=1 b=2, b=2",
                vec![("x-match", s("any")), ("a", I32(1)), ("b", I32(2))],
                Some(vec![("b", I32(2))]),
                true,
            ),
            (
                "any a=1 b=2, b=3",
                vec![("x-match", s("any")), ("a", I32(1)), ("b", I32(2))],
                Some(vec![("b", I32(3))]),
                false,
            ),
            (
                "all a=1 b=2, c=3 b=2 a=1",
                vec![("a", I32(1)), ("b", I32(2))],
                Some(vec![("c", I32(3)), ("b", I32(2)), ("a", I32(1))]),
                true,
            ),
            (
                "all a=1 b=2, a=1",
                vec![("a", I32(1)), ("b", I32(2))],
                Some(vec![("a", I32(1))]),
                false,
            ),
            (
                "void binding, a=5",
                vec![("a", Void)],
                Some(vec![("a", I32(5))]),
                true,
            ),
            (
                "void binding, a=void",
                vec![("a", Void)],
                Some(vec![("a", Void)]),
                true,
            ),
            (
                "void binding, b=1",
                vec![("a", Void)],
                Some(vec![("b", I32(1))]),
                false,
            ),
            (
                "a=1, a=void",
                vec![("a", I32(1))],
                Some(vec![("a", Void)]),
                false,
            ),
            (
                "any void binding, a='x'",
                vec![("x-match", s("any")), ("a", Void)],
                Some(vec![("a", s("x"))]),
                true,
            ),
            (
                "int 1 vs long 1",
                vec![("a", I32(1))],
                Some(vec![("a", I64(1))]),
                true,
            ),
            (
                "int 1 vs byte 1",
                vec![("a", I32(1))],
                Some(vec![("a", I8(1))]),
                true,
            ),
            (
                "int 1 vs unsignedint 1",
                vec![("a", I32(1))],
                Some(vec![("a", U32(1))]),
                true,
            ),
            (
                "int 1 vs timestamp 1",
                vec![("a", I32(1))],
                Some(vec![("a", FieldValue::Timestamp(1))]),
                true,
            ),
            (
                "int 1 vs double 1.0",
                vec![("a", I32(1))],
                Some(vec![("a", F64(1.0))]),
                true,
            ),
            (
                "double 1.5 vs float 1.5",
                vec![("a", F64(1.5))],
                Some(vec![("a", F32(1.5))]),
                true,
            ),
            (
                "double 0.1 vs float 0.1",
                vec![("a", F64(0.1))],
                Some(vec![("a", F32(0.1))]),
                false,
            ),
            (
                "longstr abc vs bytearray abc",
                vec![("a", s("abc"))],
                Some(vec![(
                    "a",
                    FieldValue::ByteArray(Bytes::from_static(b"abc")),
                )]),
                true,
            ),
            (
                "bool true vs int 1",
                vec![("a", FieldValue::Bool(true))],
                Some(vec![("a", I32(1))]),
                false,
            ),
            (
                "bool true vs bool true",
                vec![("a", FieldValue::Bool(true))],
                Some(vec![("a", FieldValue::Bool(true))]),
                true,
            ),
            (
                "decimal 2/100 vs 2/100",
                vec![("a", dec(2, 100))],
                Some(vec![("a", dec(2, 100))]),
                true,
            ),
            (
                "decimal 2/100 vs 1/10",
                vec![("a", dec(2, 100))],
                Some(vec![("a", dec(1, 10))]),
                false,
            ),
            (
                "decimal 0/1 vs int 1",
                vec![("a", dec(0, 1))],
                Some(vec![("a", I32(1))]),
                false,
            ),
            (
                "[int 1] vs [int 1]",
                vec![("a", arr(I32(1)))],
                Some(vec![("a", arr(I32(1)))]),
                true,
            ),
            (
                "[int 1] vs [long 1]",
                vec![("a", arr(I32(1)))],
                Some(vec![("a", arr(I64(1)))]),
                false,
            ),
            (
                "[int 1] vs [double 1.0]",
                vec![("a", arr(I32(1)))],
                Some(vec![("a", arr(F64(1.0)))]),
                false,
            ),
            (
                "[longstr a] vs [bytearray a]",
                vec![("a", arr(s("a")))],
                Some(vec![(
                    "a",
                    arr(FieldValue::ByteArray(Bytes::from_static(b"a"))),
                )]),
                false,
            ),
            (
                "{k:int 1} vs {k:int 1}",
                vec![("a", tab(&[("k", I32(1))]))],
                Some(vec![("a", tab(&[("k", I32(1))]))]),
                true,
            ),
            (
                "{k:int 1} vs {k:long 1}",
                vec![("a", tab(&[("k", I32(1))]))],
                Some(vec![("a", tab(&[("k", I64(1))]))]),
                false,
            ),
            (
                "{p:1,q:2} vs {q:2,p:1}",
                vec![("a", tab(&[("p", I32(1)), ("q", I32(2))]))],
                Some(vec![("a", tab(&[("q", I32(2)), ("p", I32(1))]))]),
                false,
            ),
            (
                "'' vs void",
                vec![("a", s(""))],
                Some(vec![("a", Void)]),
                false,
            ),
            (
                "all a=1, headers a=2,a=1",
                vec![("a", I32(1))],
                Some(vec![("a", I32(2)), ("a", I32(1))]),
                false,
            ),
            (
                "all a=1, headers a=1,a=2",
                vec![("a", I32(1))],
                Some(vec![("a", I32(1)), ("a", I32(2))]),
                true,
            ),
            (
                "any a=1, headers a=2,a=1",
                vec![("x-match", s("any")), ("a", I32(1))],
                Some(vec![("a", I32(2)), ("a", I32(1))]),
                false,
            ),
            (
                "all a=1 b=1, headers a=1,a=2,b=1",
                vec![("a", I32(1)), ("b", I32(1))],
                Some(vec![("a", I32(1)), ("a", I32(2)), ("b", I32(1))]),
                true,
            ),
            (
                "binding a=1,a=2, headers a=1",
                vec![("a", I32(1)), ("a", I32(2))],
                Some(vec![("a", I32(1))]),
                false,
            ),
            (
                "binding a=1,a=2, headers a=1,a=2",
                vec![("a", I32(1)), ("a", I32(2))],
                Some(vec![("a", I32(1)), ("a", I32(2))]),
                true,
            ),
            (
                "binding a=2,a=1, headers a=1,a=2",
                vec![("a", I32(2)), ("a", I32(1))],
                Some(vec![("a", I32(1)), ("a", I32(2))]),
                false,
            ),
            (
                "x-match any then all (first wins), a=1",
                vec![
                    ("x-match", s("any")),
                    ("x-match", s("all")),
                    ("a", I32(1)),
                    ("b", I32(1)),
                ],
                Some(vec![("a", I32(1))]),
                true,
            ),
            (
                "keys are case-sensitive",
                vec![("A", I32(1))],
                Some(vec![("a", I32(1))]),
                false,
            ),
            (
                "bytewise key order ('B' < 'a')",
                vec![("B", I32(1)), ("a", I32(1))],
                Some(vec![("a", I32(1)), ("B", I32(1))]),
                true,
            ),
        ]
    }

    fn dec(scale: u8, value: u32) -> FieldValue {
        FieldValue::Decimal(Decimal { scale, value })
    }

    fn arr(v: FieldValue) -> FieldValue {
        FieldValue::Array(vec![v])
    }

    fn tab(pairs: &[(&str, FieldValue)]) -> FieldValue {
        FieldValue::Table(table(pairs))
    }

    #[test]
    fn matching_agrees_with_rabbitmq() {
        for (name, binding, headers, expected) in rabbitmq_cases() {
            assert_eq!(matches(&binding, headers.as_deref()), expected, "{name}");
        }
    }

    #[test]
    fn routes_each_matching_binding_and_ignores_the_routing_key() {
        let mut r = HeadersRouter::new();
        let red = table(&[("colour", s("red"))]);
        let any_big = table(&[
            ("x-match", s("any")),
            ("size", I32(10)),
            ("colour", s("blue")),
        ]);
        assert!(r.bind("red", &key("rk"), &red));
        assert!(r.bind("big", &key(""), &any_big));
        assert!(!r.bind("big", &key(""), &any_big));
        assert!(r.bind("everything", &key(""), &FieldTable::new()));
        fn route(r: &HeadersRouter<&'static str>, headers: &FieldTable) -> Vec<&'static str> {
            let mut out = Vec::new();
            r.route("whatever", Some(headers), &mut out);
            out.sort_unstable();
            out
        }
        assert_eq!(
            route(&r, &table(&[("colour", s("red")), ("size", I64(10))])),
            vec!["big", "everything", "red"]
        );
        assert_eq!(
            route(&r, &table(&[("colour", s("blue"))])),
            vec!["big", "everything"]
        );
        assert_eq!(route(&r, &FieldTable::new()), vec!["everything"]);
        assert!(r.unbind(&"big", &key(""), &any_big));
        assert_eq!(r.unbind_destination(&"red"), 1);
        assert_eq!(
            route(&r, &table(&[("colour", s("red"))])),
            vec!["everything"]
        );
    }

    #[test]
    fn validate_binding_gives_rabbitmqs_texts() {
        let r = HeadersRouter::<u8>::new();
        let check = |v: Option<FieldValue>| {
            let args = v.map_or(FieldTable::new(), |v| table(&[("x-match", v)]));
            r.validate_binding(&key(""), &args)
                .map_err(|e| e.to_string())
        };
        let value_err = |shown: &str| {
            Err(format!(
                "Invalid x-match field value {shown}; expected all, any, all-with-x, or any-with-x"
            ))
        };
        let type_err = |ty: &str, shown: &str| {
            Err(format!(
                "Invalid x-match field type {ty} (value {shown}); expected longstr"
            ))
        };
        for ok in ["all", "any", "all-with-x", "any-with-x"] {
            assert_eq!(check(Some(s(ok))), Ok(()));
        }
        assert_eq!(check(None), Ok(()));
        // What RabbitMQ 3.10.8 answered (after "PRECONDITION_FAILED - "):
        assert_eq!(check(Some(s("ALL"))), value_err("<<\"ALL\">>"));
        assert_eq!(check(Some(s("a\"b\\c"))), value_err("<<\"a\\\"b\\\\c\">>"));
        assert_eq!(check(Some(s("é"))), value_err("<<\"é\">>"));
        assert_eq!(check(Some(s("a\u{1}"))), value_err("<<97,1>>"));
        assert_eq!(check(Some(s(""))), value_err("<<>>"));
        assert_eq!(
            check(Some(FieldValue::Bool(true))),
            type_err("bool", "true")
        );
        assert_eq!(check(Some(I8(-1))), type_err("byte", "-1"));
        assert_eq!(
            check(Some(FieldValue::U8(200))),
            type_err("unsignedbyte", "200")
        );
        assert_eq!(check(Some(FieldValue::I16(-2))), type_err("short", "-2"));
        assert_eq!(
            check(Some(FieldValue::U16(3))),
            type_err("unsignedshort", "3")
        );
        assert_eq!(check(Some(I32(1))), type_err("signedint", "1"));
        assert_eq!(
            check(Some(U32(4_000_000_000))),
            type_err("unsignedint", "4000000000")
        );
        assert_eq!(check(Some(I64(-5))), type_err("long", "-5"));
        assert_eq!(check(Some(F32(1.5))), type_err("float", "1.5"));
        assert_eq!(check(Some(F64(1e20))), type_err("double", "1.0e20"));
        assert_eq!(check(Some(dec(2, 100))), type_err("decimal", "{2,100}"));
        assert_eq!(
            check(Some(FieldValue::ByteArray(Bytes::from_static(b"\x00\x01")))),
            type_err("binary", "<<0,1>>")
        );
        assert_eq!(
            check(Some(FieldValue::ByteArray(Bytes::from_static(b"any")))),
            type_err("binary", "<<\"any\">>")
        );
        assert_eq!(
            check(Some(FieldValue::Array(vec![I32(1), s("z")]))),
            type_err("array", "[{signedint,1},{longstr,<<\"z\">>}]")
        );
        assert_eq!(
            check(Some(FieldValue::Array(vec![]))),
            type_err("array", "[]")
        );
        assert_eq!(
            check(Some(tab(&[("k", I32(1))]))),
            type_err("table", "[{<<\"k\">>,signedint,1}]")
        );
        assert_eq!(
            check(Some(FieldValue::Timestamp(7))),
            type_err("timestamp", "7")
        );
        assert_eq!(check(Some(Void)), type_err("void", "undefined"));
    }

    #[test]
    fn floats_print_as_erlang_does() {
        // RabbitMQ 3.10.8's text for x-match set to each double.
        let cases: &[(f64, &str)] = &[
            (100.0, "100.0"),
            (1000.0, "1.0e3"),
            (10000.0, "1.0e4"),
            (123456.0, "123456.0"),
            (12345678.0, "12345678.0"),
            (1.5e21, "1.5e21"),
            (150000.0, "1.5e5"),
            (0.001, "0.001"),
            (0.0001, "0.0001"),
            (0.00001, "1.0e-5"),
            (0.5, "0.5"),
            (0.001234, "0.001234"),
            (0.0001234, "1.234e-4"),
            (1e15, "1.0e15"),
            (12345678901234567.0, "1.2345678901234568e16"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1.0, "1.0"),
            (-3.5, "-3.5"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e100, "1.0e100"),
            (5e-324, "5.0e-324"),
            (9007199254740991.0, "9007199254740991.0"),
            (9007199254740992.0, "9.007199254740992e15"),
            (4503599627370497.0, "4503599627370497.0"),
            (-1000.0, "-1.0e3"),
            (-100.0, "-100.0"),
            (120.0, "120.0"),
            (1200.0, "1.2e3"),
        ];
        for &(f, shown) in cases {
            assert_eq!(erlang::float(f), shown, "{f:?}");
        }
    }

    #[test]
    fn any_stops_at_first_match_and_all_at_first_miss() {
        let many: Vec<(String, FieldValue)> =
            (0..200).map(|i| (format!("k{i:03}"), I32(i))).collect();
        let pairs: Vec<(&str, FieldValue)> =
            many.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let mut headers = pairs.clone();
        headers.reverse();
        assert!(matches(&pairs, Some(&headers)));
        headers[0].1 = I32(-1);
        assert!(!matches(&pairs, Some(&headers)));
        let mut any = pairs.clone();
        any.push(("x-match", s("any")));
        assert!(matches(&any, Some(&headers)));
        assert!(!matches(&any, Some(&[("k000", I32(5))])));
    }
}
