//! MQTT's primitive data types on the wire: integers, variable byte integers, UTF-8
//! strings, binary data, packet identifiers.
//!
//! [`Reader`] walks one complete frame (the fixed header and frame split are in
//! `super::header`); every read checks the bytes left first, so a short body is a
//! [`DecodeError::Truncated`], never a panic. The `put_*` functions write into a buffer
//! the caller has already sized.

use bytes::{BufMut, Bytes};

use super::header::MAX_REMAINING_LENGTH;
use super::{DecodeError, EncodeError};
use crate::protocol::{PacketId, ReasonCode};

/// Longest string or binary field: a two-byte length prefix.
pub(crate) const MAX_FIELD_BYTES: usize = u16::MAX as usize;

/// A cursor over `buf[pos..end]` of one frame.
///
/// A reader over a shared frame (`Reader::shared`) hands out binary fields as zero-copy
/// `Bytes` slices of it; one over a borrowed frame (`Reader::borrowed`, for packets
/// with no binary fields, so the frame never needs to leave the read buffer) copies the
/// rare binary field it meets.
///
/// # Invariants
/// `pos <= end <= buf.len()`, and `source`, when present, holds the same bytes as `buf`.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    source: Option<&'a Bytes>,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `frame[pos..]` that slices binary fields out of `frame`.
    pub(crate) fn shared(frame: &'a Bytes, pos: usize) -> Self {
        let mut r = Self::borrowed(frame, pos);
        r.source = Some(frame);
        r
    }

    /// A reader over `frame[pos..]` that copies binary fields.
    pub(crate) fn borrowed(frame: &'a [u8], pos: usize) -> Self {
        let pos = pos.min(frame.len());
        Self { buf: frame, source: None, pos, end: frame.len() }
    }

    /// Bytes not yet read.
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// Position in the frame.
    #[inline]
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The next `len` bytes, borrowed.
    #[inline]
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let start = self.pos;
        self.pos += len;
        self.buf.get(start..self.pos).ok_or(DecodeError::Truncated)
    }

    /// The next `len` bytes as a shared slice of the frame.
    #[inline]
    pub(crate) fn take_bytes(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let start = self.pos;
        self.pos += len;
        match self.source {
            Some(frame) => Ok(frame.slice(start..self.pos)),
            None => self
                .buf
                .get(start..self.pos)
                .map(Bytes::copy_from_slice)
                .ok_or(DecodeError::Truncated),
        }
    }

    /// Splits off a reader over the next `len` bytes (a property block); `overrun` is
    /// the error when they are not there.
    pub(crate) fn sub(&mut self, len: usize, overrun: DecodeError) -> Result<Self, DecodeError> {
        if len > self.remaining() {
            return Err(overrun);
        }
        let sub = Self { buf: self.buf, source: self.source, pos: self.pos, end: self.pos + len };
        self.pos += len;
        Ok(sub)
    }

    /// A single byte.
    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        match self.take(1)? {
            [b] => Ok(*b),
            _ => Err(DecodeError::Truncated),
        }
    }

    /// A big-endian two-byte integer.
    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        match self.take(2)? {
            [a, b] => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(DecodeError::Truncated),
        }
    }

    /// A big-endian four-byte integer.
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        match self.take(4)? {
            [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => Err(DecodeError::Truncated),
        }
    }

    /// A variable byte integer (at most four bytes, minimally encoded [MQTT-1.5.5-1]).
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(DecodeError::NonMinimalVarint);
                }
                return Ok(value);
            }
        }
        Err(DecodeError::VarintTooLong)
    }

    /// A variable byte integer used as a length within this frame.
    pub(crate) fn varint_len(&mut self) -> Result<usize, DecodeError> {
        // u32 -> usize is lossless on every target Rust supports with 32+ bit pointers.
        usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)
    }

    /// A non-zero packet identifier [MQTT-2.2.1-3].
    #[inline]
    pub(crate) fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        PacketId::new(self.u16()?).ok_or(DecodeError::ZeroPacketId)
    }

    /// Binary data: two-byte length then the bytes, borrowed.
    pub(crate) fn binary_slice(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// Binary data as a shared slice of the frame.
    #[inline]
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take_bytes(usize::from(len))
    }

    /// A UTF-8 encoded string, checked, borrowed.
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        check_str(self.binary_slice()?)
    }

    /// A UTF-8 encoded string, checked and copied.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_owned)
    }

    /// Errors unless every byte has been read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Checks a string field: well-formed UTF-8 [MQTT-1.5.4-1] without U+0000 [MQTT-1.5.4-2].
pub(crate) fn check_str(bytes: &[u8]) -> Result<&str, DecodeError> {
    let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    if memchr::memchr(0, bytes).is_some() {
        return Err(DecodeError::NullCharacter);
    }
    Ok(s)
}

/// Parses a reason code byte that must be one of `allowed` for its packet.
pub(crate) fn reason_code_in(value: u8, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
    if !allowed.contains(&value) {
        return Err(DecodeError::InvalidReasonCode);
    }
    ReasonCode::from_value(value).ok_or(DecodeError::InvalidReasonCode)
}

/// Wire length of a string or binary field (two-byte prefix included).
#[inline]
pub(crate) fn field_len(len: usize) -> Result<usize, EncodeError> {
    if len > MAX_FIELD_BYTES {
        return Err(EncodeError::FieldTooLong);
    }
    Ok(2 + len)
}

/// Writes a string or binary field whose length [`field_len`] has accepted.
#[inline]
pub(crate) fn put_field(out: &mut impl BufMut, bytes: &[u8]) {
    debug_assert!(bytes.len() <= MAX_FIELD_BYTES);
    // Lengths were checked by `field_len` before anything was written.
    out.put_u16(u16::try_from(bytes.len()).unwrap_or(u16::MAX));
    out.put_slice(bytes);
}

/// Checks a remaining length and returns the whole packet's size.
#[inline]
pub(crate) fn packet_len(remaining_len: usize) -> Result<usize, EncodeError> {
    if remaining_len > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge);
    }
    Ok(1 + super::header::varint_len(remaining_len) + remaining_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fail_cleanly_past_the_end() {
        let frame = Bytes::from_static(&[0x00, 0x05, b'a']);
        let mut r = Reader::shared(&frame, 0);
        assert_eq!(r.str(), Err(DecodeError::Truncated));
        let mut r = Reader::shared(&frame, 2);
        assert_eq!(r.u16(), Err(DecodeError::Truncated));
        assert_eq!(r.u8(), Ok(b'a'));
        assert_eq!(r.u8(), Err(DecodeError::Truncated));
    }

    #[test]
    fn binary_fields_are_shared_or_copied_by_reader_kind() {
        let frame = Bytes::from_static(&[0x00, 0x02, 0xAB, 0xCD]);
        let shared = Reader::shared(&frame, 0).binary().unwrap();
        assert_eq!(shared.as_ptr(), frame[2..].as_ptr());
        let copied = Reader::borrowed(&frame, 0).binary().unwrap();
        assert_eq!(copied, shared);
    }

    #[test]
    fn strings_reject_bad_utf8_and_null() {
        let bad = Bytes::from_static(&[0x00, 0x02, 0xC3, 0x28]);
        assert_eq!(Reader::shared(&bad, 0).str(), Err(DecodeError::InvalidUtf8));
        let null = Bytes::from_static(&[0x00, 0x03, b'a', 0x00, b'b']);
        assert_eq!(Reader::shared(&null, 0).str(), Err(DecodeError::NullCharacter));
    }

    #[test]
    fn property_varints_are_bounded_and_minimal() {
        let five = Bytes::from_static(&[0x80, 0x80, 0x80, 0x80, 0x01]);
        assert_eq!(Reader::shared(&five, 0).varint(), Err(DecodeError::VarintTooLong));
        let padded = Bytes::from_static(&[0x85, 0x00]);
        assert_eq!(Reader::shared(&padded, 0).varint(), Err(DecodeError::NonMinimalVarint));
        let ok = Bytes::from_static(&[0xFF, 0xFF, 0xFF, 0x7F]);
        assert_eq!(Reader::shared(&ok, 0).varint(), Ok(268_435_455));
    }
}
