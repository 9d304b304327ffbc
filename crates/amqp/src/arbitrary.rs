//! Test-only random values for every wire type, so generated method structs can be filled
//! without one hand-written strategy per method. Knows nothing of the wire format.

use bytes::Bytes;

use crate::field::{Decimal, FieldTable, FieldValue};
use crate::properties::BasicProperties;
use crate::strings::{LongStr, ShortStr};

/// Deterministic xorshift generator; a seed replays a failing case.
pub(crate) struct Gen {
    state: u64,
    depth: usize,
}

impl Gen {
    pub(crate) fn new(seed: u64) -> Gen {
        Gen {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            depth: 0,
        }
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Usually short, sometimes up to `max`, so both common and edge sizes appear.
    fn len(&mut self, max: u64) -> usize {
        match self.below(8) {
            0 => max as usize,
            1 => self.below(max + 1) as usize,
            _ => self.below(max.min(12) + 1) as usize,
        }
    }
}

pub(crate) trait Arb: Sized {
    fn arb(g: &mut Gen) -> Self;
}

impl Arb for bool {
    fn arb(g: &mut Gen) -> Self {
        g.next() & 1 == 1
    }
}

macro_rules! arb_int {
    ($($t:ty),*) => {$(
        impl Arb for $t {
            fn arb(g: &mut Gen) -> Self {
                // Edge values are as likely as random ones.
                match g.below(4) {
                    0 => <$t>::MIN,
                    1 => <$t>::MAX,
                    _ => g.next() as $t,
                }
            }
        }
    )*};
}

arb_int!(u8, u16, u32, u64, i8, i16, i32, i64);

impl Arb for ShortStr {
    fn arb(g: &mut Gen) -> Self {
        const CHARS: [char; 6] = ['a', 'Z', '.', 'é', '€', '😀'];
        let target = g.len(255);
        let mut s = String::new();
        loop {
            let c = CHARS[g.below(CHARS.len() as u64) as usize];
            if s.len() + c.len_utf8() > target {
                break;
            }
            s.push(c);
        }
        ShortStr::new(s).expect("generated within 255 bytes")
    }
}

fn arb_bytes(g: &mut Gen) -> Bytes {
    let len = g.len(300);
    (0..len).map(|_| g.next() as u8).collect::<Vec<u8>>().into()
}

impl Arb for LongStr {
    fn arb(g: &mut Gen) -> Self {
        LongStr(arb_bytes(g))
    }
}

impl Arb for FieldValue {
    fn arb(g: &mut Gen) -> Self {
        // Containers only while shallow, so values stay small.
        let kinds = if g.depth < 3 { 17 } else { 15 };
        match g.below(kinds) {
            0 => FieldValue::Bool(Arb::arb(g)),
            1 => FieldValue::I8(Arb::arb(g)),
            2 => FieldValue::U8(Arb::arb(g)),
            3 => FieldValue::I16(Arb::arb(g)),
            4 => FieldValue::U16(Arb::arb(g)),
            5 => FieldValue::I32(Arb::arb(g)),
            6 => FieldValue::U32(Arb::arb(g)),
            7 => FieldValue::I64(Arb::arb(g)),
            // From integers: NaN would break equality without being a codec bug.
            8 => FieldValue::F32(i16::arb(g) as f32 / 8.0),
            9 => FieldValue::F64(i32::arb(g) as f64 / 16.0),
            10 => FieldValue::Decimal(Decimal {
                scale: Arb::arb(g),
                value: Arb::arb(g),
            }),
            11 => FieldValue::LongStr(Arb::arb(g)),
            12 => FieldValue::ByteArray(arb_bytes(g)),
            13 => FieldValue::Timestamp(Arb::arb(g)),
            14 => FieldValue::Void,
            15 => {
                g.depth += 1;
                let n = g.below(4);
                let v = (0..n).map(|_| FieldValue::arb(g)).collect();
                g.depth -= 1;
                FieldValue::Array(v)
            }
            _ => {
                g.depth += 1;
                let t = FieldTable::arb(g);
                g.depth -= 1;
                FieldValue::Table(t)
            }
        }
    }
}

impl Arb for FieldTable {
    fn arb(g: &mut Gen) -> Self {
        let n = g.below(5);
        (0..n)
            .map(|_| (ShortStr::arb(g), FieldValue::arb(g)))
            .collect()
    }
}

fn maybe<T: Arb>(g: &mut Gen) -> Option<T> {
    bool::arb(g).then(|| T::arb(g))
}

impl Arb for BasicProperties {
    fn arb(g: &mut Gen) -> Self {
        BasicProperties {
            content_type: maybe(g),
            content_encoding: maybe(g),
            headers: maybe(g),
            delivery_mode: maybe(g),
            priority: maybe(g),
            correlation_id: maybe(g),
            reply_to: maybe(g),
            expiration: maybe(g),
            message_id: maybe(g),
            timestamp: maybe(g),
            kind: maybe(g),
            user_id: maybe(g),
            app_id: maybe(g),
            cluster_id: maybe(g),
        }
    }
}
