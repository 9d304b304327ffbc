//! Field tables and field values with RabbitMQ's type tags, and their (bounded-depth) codec.
//! Knows nothing of which method or property carries a table.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::strings::{LongStr, ShortStr};
use crate::wire::{self, Reader, WireResult};

/// Most tables/arrays that may be nested inside each other, counting the outermost one.
/// Deeper input is rejected as malformed instead of recursing without bound.
pub const MAX_NESTING_DEPTH: usize = 64;

/// AMQP decimal: `value / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Decimal {
    pub scale: u8,
    pub value: u32,
}

/// One value of a field table or array. Tags are the ones RabbitMQ, pika and amqplib use
/// (which differ from the 0-9-1 spec's table for 's', 'u', 'i', 'l' and 'x').
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// 't'
    Bool(bool),
    /// 'b'
    I8(i8),
    /// 'B'
    U8(u8),
    /// 's'
    I16(i16),
    /// 'u'
    U16(u16),
    /// 'I'
    I32(i32),
    /// 'i'
    U32(u32),
    /// 'l'
    I64(i64),
    /// 'f'
    F32(f32),
    /// 'd'
    F64(f64),
    /// 'D'
    Decimal(Decimal),
    /// 'S'
    LongStr(LongStr),
    /// 'x'
    ByteArray(Bytes),
    /// 'A'
    Array(Vec<FieldValue>),
    /// 'T'
    Timestamp(u64),
    /// 'F'
    Table(FieldTable),
    /// 'V'
    Void,
}

impl FieldValue {
    /// The wire type tag of this value.
    /// The type's name as RabbitMQ spells it in error texts and definitions (`signedint`,
    /// `longstr`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldValue::Bool(_) => "bool",
            FieldValue::I8(_) => "byte",
            FieldValue::U8(_) => "unsignedbyte",
            FieldValue::I16(_) => "short",
            FieldValue::U16(_) => "unsignedshort",
            FieldValue::I32(_) => "signedint",
            FieldValue::U32(_) => "unsignedint",
            FieldValue::I64(_) => "long",
            FieldValue::F32(_) => "float",
            FieldValue::F64(_) => "double",
            FieldValue::Decimal(_) => "decimal",
            FieldValue::LongStr(_) => "longstr",
            FieldValue::ByteArray(_) => "binary",
            FieldValue::Array(_) => "array",
            FieldValue::Timestamp(_) => "timestamp",
            FieldValue::Table(_) => "table",
            FieldValue::Void => "void",
        }
    }

    pub fn tag(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal(_) => b'D',
            FieldValue::LongStr(_) => b'S',
            FieldValue::ByteArray(_) => b'x',
            FieldValue::Array(_) => b'A',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Table(_) => b'F',
            FieldValue::Void => b'V',
        }
    }

    /// A long string's text, when it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongStr(s) => s.as_str(),
            _ => None,
        }
    }

    /// Any integer type widened to i64 (not bool, not timestamp).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            FieldValue::I8(v) => Some(v.into()),
            FieldValue::U8(v) => Some(v.into()),
            FieldValue::I16(v) => Some(v.into()),
            FieldValue::U16(v) => Some(v.into()),
            FieldValue::I32(v) => Some(v.into()),
            FieldValue::U32(v) => Some(v.into()),
            FieldValue::I64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            FieldValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_table(&self) -> Option<&FieldTable> {
        match self {
            FieldValue::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[FieldValue]> {
        match self {
            FieldValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The raw bytes of a long string or byte array.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            FieldValue::LongStr(s) => Some(s.as_bytes()),
            FieldValue::ByteArray(b) => Some(b),
            _ => None,
        }
    }
}

macro_rules! field_value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for FieldValue {
            fn from(v: $t) -> FieldValue {
                FieldValue::$variant(v.into())
            }
        })*
    };
}

field_value_from! {
    bool => Bool, i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32,
    i64 => I64, f32 => F32, f64 => F64, Decimal => Decimal, LongStr => LongStr,
    &str => LongStr, String => LongStr, FieldTable => Table, Vec<FieldValue> => Array,
}

/// An AMQP field table. Keeps wire order, and duplicate keys as sent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldTable(pub Vec<(ShortStr, FieldValue)>);

impl FieldTable {
    pub fn new() -> FieldTable {
        FieldTable(Vec::new())
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Replaces the first value under `key`, or appends when there is none.
    pub fn insert(&mut self, key: ShortStr, value: FieldValue) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Removes every entry under `key` (so `get` then misses), returning the first value.
    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let first = self.0.iter().position(|(k, _)| k == key)?;
        let (_, value) = self.0.remove(first);
        self.0.retain(|(k, _)| k != key);
        Some(value)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, (ShortStr, FieldValue)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes the table as on the wire: 32-bit byte length, then the entries.
    pub fn encode(&self, out: &mut BytesMut) {
        write_table(out, self);
    }

    /// Decodes exactly one length-prefixed table that fills `bytes`; strings share `bytes`.
    pub fn decode(bytes: &Bytes) -> Result<FieldTable, DecodeError> {
        let mut r = Reader::new(bytes, 0);
        let table = r.table().map_err(DecodeError::malformed)?;
        r.finish().map_err(DecodeError::malformed)?;
        Ok(table)
    }
}

impl<'a> IntoIterator for &'a FieldTable {
    type Item = &'a (ShortStr, FieldValue);
    type IntoIter = std::slice::Iter<'a, (ShortStr, FieldValue)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for FieldTable {
    type Item = (ShortStr, FieldValue);
    type IntoIter = std::vec::IntoIter<(ShortStr, FieldValue)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<(ShortStr, FieldValue)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (ShortStr, FieldValue)>>(iter: I) -> Self {
        FieldTable(iter.into_iter().collect())
    }
}

const TOO_DEEP: &str = "field tables/arrays nested too deeply";

/// `depth` = number of tables/arrays already open around this one.
pub(crate) fn read_table(r: &mut Reader<'_>, depth: usize) -> WireResult<FieldTable> {
    if depth >= MAX_NESTING_DEPTH {
        return Err(TOO_DEEP);
    }
    let len = r.long()? as usize;
    let mut body = r.sub(len)?;
    // Grown as entries arrive: the length prefix is untrusted.
    let mut entries = Vec::new();
    while !body.is_empty() {
        let key = body.shortstr()?;
        let value = read_value(&mut body, depth + 1)?;
        entries.push((key, value));
    }
    Ok(FieldTable(entries))
}

fn read_array(r: &mut Reader<'_>, depth: usize) -> WireResult<Vec<FieldValue>> {
    if depth >= MAX_NESTING_DEPTH {
        return Err(TOO_DEEP);
    }
    let len = r.long()? as usize;
    let mut body = r.sub(len)?;
    let mut values = Vec::new();
    while !body.is_empty() {
        values.push(read_value(&mut body, depth + 1)?);
    }
    Ok(values)
}

fn read_value(r: &mut Reader<'_>, depth: usize) -> WireResult<FieldValue> {
    let tag = r.octet()?;
    Ok(match tag {
        // RabbitMQ reads any non-zero octet as true.
        b't' => FieldValue::Bool(r.octet()? != 0),
        b'b' => FieldValue::I8(r.octet()? as i8),
        b'B' => FieldValue::U8(r.octet()?),
        b's' => FieldValue::I16(r.short()? as i16),
        b'u' => FieldValue::U16(r.short()?),
        b'I' => FieldValue::I32(r.long()? as i32),
        b'i' => FieldValue::U32(r.long()?),
        // RabbitMQ also reads 'L' as signed 64-bit; it is written back as 'l'.
        b'l' | b'L' => FieldValue::I64(r.longlong()? as i64),
        b'f' => FieldValue::F32(f32::from_bits(r.long()?)),
        b'd' => FieldValue::F64(f64::from_bits(r.longlong()?)),
        b'D' => {
            let scale = r.octet()?;
            let value = r.long()?;
            FieldValue::Decimal(Decimal { scale, value })
        }
        b'S' => FieldValue::LongStr(r.longstr()?),
        b'x' => {
            let len = r.long()? as usize;
            FieldValue::ByteArray(r.bytes(len)?)
        }
        b'A' => FieldValue::Array(read_array(r, depth)?),
        b'T' => FieldValue::Timestamp(r.timestamp()?),
        b'F' => FieldValue::Table(read_table(r, depth)?),
        b'V' => FieldValue::Void,
        _ => return Err("unknown field value type"),
    })
}

pub(crate) fn write_table(out: &mut BytesMut, table: &FieldTable) {
    let at = out.len();
    out.put_u32(0);
    for (key, value) in &table.0 {
        wire::put_shortstr(out, key);
        write_value(out, value);
    }
    wire::patch_len32(out, at);
}

fn write_value(out: &mut BytesMut, value: &FieldValue) {
    out.put_u8(value.tag());
    match value {
        FieldValue::Bool(b) => out.put_u8(u8::from(*b)),
        FieldValue::I8(v) => out.put_i8(*v),
        FieldValue::U8(v) => out.put_u8(*v),
        FieldValue::I16(v) => out.put_i16(*v),
        FieldValue::U16(v) => out.put_u16(*v),
        FieldValue::I32(v) => out.put_i32(*v),
        FieldValue::U32(v) => out.put_u32(*v),
        FieldValue::I64(v) => out.put_i64(*v),
        FieldValue::F32(v) => out.put_f32(*v),
        FieldValue::F64(v) => out.put_f64(*v),
        FieldValue::Decimal(d) => {
            out.put_u8(d.scale);
            out.put_u32(d.value);
        }
        FieldValue::LongStr(s) => wire::put_longstr(out, s.as_bytes()),
        FieldValue::ByteArray(b) => wire::put_longstr(out, b),
        FieldValue::Array(values) => {
            let at = out.len();
            out.put_u32(0);
            for v in values {
                write_value(out, v);
            }
            wire::patch_len32(out, at);
        }
        FieldValue::Timestamp(t) => out.put_u64(*t),
        FieldValue::Table(t) => write_table(out, t),
        FieldValue::Void => {}
    }
}
