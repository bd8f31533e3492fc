//! The fixed header: packet type, flags and the remaining-length varint; and with it,
//! where a frame ends.
//!
//! This is the only part of the decoder that looks at a buffer which may hold a partial
//! frame. Everything after it (`super::wire` and the packet files) sees exactly one
//! complete frame.

use bytes::BufMut;

use super::DecodeError;

/// The largest remaining length a four-byte varint can express.
pub(crate) const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// A parsed fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    /// Packet type, the high nibble of the first byte.
    pub(crate) packet_type: u8,
    /// The low nibble of the first byte.
    pub(crate) flags: u8,
    /// Length of the variable header plus payload.
    pub(crate) remaining_len: usize,
    /// Length of the fixed header itself (2..=5).
    pub(crate) header_len: usize,
}

impl FixedHeader {
    /// Reads the fixed header from the front of `buf`.
    ///
    /// `Ok(None)` when `buf` ends inside the header. Errors for a remaining length that
    /// runs past four bytes or is not minimally encoded; the packet type and flags are
    /// checked by the caller.
    pub(crate) fn parse(buf: &[u8]) -> Result<Option<Self>, DecodeError> {
        let Some((&first, rest)) = buf.split_first() else {
            return Ok(None);
        };
        let mut value: usize = 0;
        for (i, &byte) in rest.iter().take(4).enumerate() {
            value |= usize::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                // [MQTT-1.5.5-1] A trailing zero byte means a shorter encoding existed.
                if i > 0 && byte == 0 {
                    return Err(DecodeError::NonMinimalVarint);
                }
                return Ok(Some(Self {
                    packet_type: first >> 4,
                    flags: first & 0x0F,
                    remaining_len: value,
                    header_len: i + 2,
                }));
            }
            if i == 3 {
                return Err(DecodeError::RemainingLengthTooLong);
            }
        }
        Ok(None)
    }

    /// Total frame length (fixed header plus remaining length).
    pub(crate) fn frame_len(&self) -> usize {
        // header_len <= 5 and remaining_len <= MAX_REMAINING_LENGTH: cannot overflow.
        self.header_len + self.remaining_len
    }
}

/// Number of bytes `value` takes as a variable byte integer.
#[inline]
pub(crate) const fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` (at most [`MAX_REMAINING_LENGTH`]) as a variable byte integer.
#[inline]
pub(crate) fn put_varint(out: &mut impl BufMut, value: usize) {
    debug_assert!(value <= MAX_REMAINING_LENGTH);
    let mut value = value;
    loop {
        // Truncation to the low seven bits is the encoding.
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            return;
        }
    }
}

/// Writes a fixed header: `first` (type and flags) and the remaining length.
#[inline]
pub(crate) fn put_fixed_header(out: &mut impl BufMut, first: u8, remaining_len: usize) {
    out.put_u8(first);
    put_varint(out, remaining_len);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
        FixedHeader::parse(bytes)
    }

    #[test]
    fn reads_one_to_four_byte_remaining_lengths() {
        for (bytes, len) in [
            (&[0x30, 0x00][..], 0),
            (&[0x30, 0x7F], 127),
            (&[0x30, 0x80, 0x01], 128),
            (&[0x30, 0xFF, 0x7F], 16_383),
            (&[0x30, 0x80, 0x80, 0x01], 16_384),
            (&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], MAX_REMAINING_LENGTH),
        ] {
            let h = header(bytes).unwrap().unwrap();
            assert_eq!(h.remaining_len, len);
            assert_eq!(h.header_len, bytes.len());
            assert_eq!(h.packet_type, 3);
        }
    }

    #[test]
    fn partial_header_needs_more() {
        assert_eq!(header(&[]), Ok(None));
        assert_eq!(header(&[0x30]), Ok(None));
        assert_eq!(header(&[0x30, 0x80]), Ok(None));
        assert_eq!(header(&[0x30, 0xFF, 0xFF, 0xFF]), Ok(None));
    }

    #[test]
    fn rejects_remaining_length_of_five_bytes() {
        // Known to be too long as soon as the fourth byte has its continuation bit.
        assert_eq!(
            header(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::RemainingLengthTooLong)
        );
        assert_eq!(
            header(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(DecodeError::RemainingLengthTooLong)
        );
    }

    #[test]
    fn rejects_non_minimal_remaining_length() {
        assert_eq!(header(&[0x30, 0x80, 0x00]), Err(DecodeError::NonMinimalVarint));
        assert_eq!(header(&[0x30, 0x81, 0x80, 0x00]), Err(DecodeError::NonMinimalVarint));
    }

    #[test]
    fn varint_writes_what_it_reads() {
        for value in [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_REMAINING_LENGTH] {
            let mut out = Vec::new();
            put_fixed_header(&mut out, 0x30, value);
            assert_eq!(out.len(), 1 + varint_len(value));
            let h = header(&out).unwrap().unwrap();
            assert_eq!(h.remaining_len, value);
        }
    }
}
