//! Cursor-style reading and writing of AMQP primitive domains (octet .. table) with bit packing.
//! Knows nothing of which method has which arguments.

use bytes::{BufMut, Bytes, BytesMut};

use crate::field::{self, FieldTable};
use crate::strings::{LongStr, ShortStr};

/// Errors inside a payload are static reasons; the caller adds the class and method ids.
pub(crate) type WireResult<T> = Result<T, &'static str>;

pub(crate) const TRUNCATED: &str = "truncated";

/// Reads from `buf[pos..end]`, handing out strings as slices of `buf` (no copy).
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
    // Spec: consecutive bit fields share one octet, low bit first.
    bits: u8,
    bits_used: u8,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes, pos: usize) -> Reader<'a> {
        Reader {
            buf,
            pos,
            end: buf.len(),
            bits: 0,
            bits_used: 0,
        }
    }

    /// Claims the next `n` bytes, returning where they start; ends any run of bits.
    #[inline]
    fn take(&mut self, n: usize) -> WireResult<usize> {
        self.bits_used = 0;
        let start = self.pos;
        match start.checked_add(n) {
            Some(stop) if stop <= self.end => {
                self.pos = stop;
                Ok(start)
            }
            _ => Err(TRUNCATED),
        }
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> WireResult<[u8; N]> {
        let start = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[start..start + N]);
        Ok(a)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// A reader over the next `len` bytes, which this reader skips.
    pub(crate) fn sub(&mut self, len: usize) -> WireResult<Reader<'a>> {
        let start = self.take(len)?;
        Ok(Reader {
            buf: self.buf,
            pos: start,
            end: start + len,
            bits: 0,
            bits_used: 0,
        })
    }

    pub(crate) fn finish(&self) -> WireResult<()> {
        if self.pos == self.end {
            Ok(())
        } else {
            Err("unexpected bytes after the last argument")
        }
    }

    #[inline]
    pub(crate) fn octet(&mut self) -> WireResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    #[inline]
    pub(crate) fn short(&mut self) -> WireResult<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn long(&mut self) -> WireResult<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn longlong(&mut self) -> WireResult<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn timestamp(&mut self) -> WireResult<u64> {
        self.longlong()
    }

    #[inline]
    pub(crate) fn bit(&mut self) -> WireResult<bool> {
        if self.bits_used == 0 || self.bits_used == 8 {
            self.bits = self.octet()?;
        }
        let value = (self.bits >> self.bits_used) & 1 != 0;
        self.bits_used += 1;
        Ok(value)
    }

    #[inline]
    pub(crate) fn bytes(&mut self, len: usize) -> WireResult<Bytes> {
        let start = self.take(len)?;
        Ok(self.buf.slice(start..start + len))
    }

    #[inline]
    pub(crate) fn shortstr(&mut self) -> WireResult<ShortStr> {
        let len = self.octet()? as usize;
        let bytes = self.bytes(len)?;
        ShortStr::from_bytes(bytes).map_err(|_| crate::error::SHORTSTR_NOT_UTF8)
    }

    #[inline]
    pub(crate) fn longstr(&mut self) -> WireResult<LongStr> {
        let len = self.long()? as usize;
        Ok(LongStr(self.bytes(len)?))
    }

    pub(crate) fn table(&mut self) -> WireResult<FieldTable> {
        field::read_table(self, 0)
    }
}

/// Appends to a `BytesMut`, packing consecutive bits into one octet.
pub(crate) struct Writer<'a> {
    out: &'a mut BytesMut,
    bits_at: usize,
    bits_used: u8,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut BytesMut) -> Writer<'a> {
        Writer {
            out,
            bits_at: 0,
            bits_used: 0,
        }
    }

    // Arguments are taken by reference so that generated code can pass `&self.field` uniformly.

    #[inline]
    pub(crate) fn octet(&mut self, v: &u8) {
        self.bits_used = 0;
        self.out.put_u8(*v);
    }

    #[inline]
    pub(crate) fn short(&mut self, v: &u16) {
        self.bits_used = 0;
        self.out.put_u16(*v);
    }

    #[inline]
    pub(crate) fn long(&mut self, v: &u32) {
        self.bits_used = 0;
        self.out.put_u32(*v);
    }

    #[inline]
    pub(crate) fn longlong(&mut self, v: &u64) {
        self.bits_used = 0;
        self.out.put_u64(*v);
    }

    #[inline]
    pub(crate) fn timestamp(&mut self, v: &u64) {
        self.longlong(v)
    }

    #[inline]
    pub(crate) fn bit(&mut self, v: &bool) {
        if self.bits_used == 0 || self.bits_used == 8 {
            self.bits_at = self.out.len();
            self.out.put_u8(0);
            self.bits_used = 0;
        }
        if *v {
            self.out[self.bits_at] |= 1 << self.bits_used;
        }
        self.bits_used += 1;
    }

    #[inline]
    pub(crate) fn shortstr(&mut self, v: &ShortStr) {
        self.bits_used = 0;
        put_shortstr(self.out, v);
    }

    #[inline]
    pub(crate) fn longstr(&mut self, v: &LongStr) {
        self.bits_used = 0;
        put_longstr(self.out, v.as_bytes());
    }

    pub(crate) fn table(&mut self, v: &FieldTable) {
        self.bits_used = 0;
        field::write_table(self.out, v);
    }
}

#[inline]
pub(crate) fn put_shortstr(out: &mut BytesMut, v: &ShortStr) {
    // ShortStr's constructors guarantee len <= 255.
    out.put_u8(v.len() as u8);
    out.put_slice(v.as_bytes());
}

#[inline]
pub(crate) fn put_longstr(out: &mut BytesMut, v: &[u8]) {
    debug_assert!(v.len() <= u32::MAX as usize, "longstr over 4 GiB");
    out.put_u32(v.len() as u32);
    out.put_slice(v);
}

/// Writes a 32-bit big-endian length at `at` covering everything written after it.
#[inline]
pub(crate) fn patch_len32(out: &mut BytesMut, at: usize) {
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}
