//! The PROXY protocol header (versions 1 and 2, as HAProxy specifies them), without I/O.
//!
//! A load balancer in front of a listener with `proxy_protocol = true` opens each
//! connection with one header naming the client's real address; the broker then uses
//! that address instead of the balancer's. [`ProxyParser::decode`] is fed everything
//! received so far and answers "need more", the header and its length, or an error (the
//! connection is then closed: a listener configured for PROXY never guesses). The bytes
//! after the header belong to the next layer (TLS, WebSocket or MQTT); the connection
//! layers in `worker/link.rs` pass them on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature that opens a version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The start of a version 1 header.
const V1_PREFIX: &[u8] = b"PROXY ";

/// Longest version 1 header, CRLF included (from the specification).
const V1_MAX_BYTES: usize = 107;

/// Longest version 2 address block we accept (addresses plus TLVs). The protocol allows
/// 64 KiB; real balancers send well under this.
const V2_MAX_BLOCK_BYTES: usize = 4096;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A relayed client connection.
    Proxied {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// A connection of the balancer's own (v2 `LOCAL`, health checks) or of an unknown
    /// protocol (v1 `UNKNOWN`, v2 `AF_UNSPEC` or Unix sockets): keep the peer address.
    Local,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The connection does not start with a PROXY signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// A version 1 line that is too long, not ASCII, or not of the right shape.
    #[error("malformed PROXY v1 header")]
    BadV1,
    /// A version 2 header with a bad version, command, family or length.
    #[error("malformed PROXY v2 header")]
    BadV2,
}

/// Reads one PROXY header from the start of a connection.
#[derive(Debug, Clone, Default)]
pub struct ProxyParser {
    _private: (),
}

impl ProxyParser {
    /// A parser for a new connection.
    pub const fn new() -> Self {
        Self { _private: () }
    }

    /// Looks for a complete header at the start of `input`.
    ///
    /// Returns `Ok(None)` when more bytes are needed, or the header and how many bytes of
    /// `input` it took.
    ///
    /// # Errors
    /// A [`ProxyError`] as soon as the bytes can no longer become a valid header.
    pub fn decode(&self, input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
        if is_prefix_of(input, V2_SIGNATURE) {
            return if input.len() >= V2_SIGNATURE.len() { decode_v2(input) } else { Ok(None) };
        }
        if is_prefix_of(input, V1_PREFIX) {
            return if input.len() >= V1_PREFIX.len() { decode_v1(input) } else { Ok(None) };
        }
        Err(ProxyError::Missing)
    }
}

/// Whether `input` and `sig` agree on their common length.
fn is_prefix_of(input: &[u8], sig: &[u8]) -> bool {
    input.iter().zip(sig).all(|(a, b)| a == b)
}

fn decode_v1(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = input.get(..input.len().min(V1_MAX_BYTES)).unwrap_or_default();
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if input.len() >= V1_MAX_BYTES { Err(ProxyError::BadV1) } else { Ok(None) };
    };
    let line = window.get(..lf).ok_or(ProxyError::BadV1)?;
    let line = line.strip_suffix(b"\r").ok_or(ProxyError::BadV1)?;
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::BadV1)?;
    let mut parts = line.split(' ');
    let (Some("PROXY"), Some(proto)) = (parts.next(), parts.next()) else {
        return Err(ProxyError::BadV1);
    };
    let consumed = lf + 1;
    if proto == "UNKNOWN" {
        // The rest of the line is to be ignored.
        return Ok(Some((ProxyHeader::Local, consumed)));
    }
    let (Some(src), Some(dst), Some(sport), Some(dport), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProxyError::BadV1);
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            src.parse::<Ipv4Addr>().map_err(|_| ProxyError::BadV1)?.into(),
            dst.parse::<Ipv4Addr>().map_err(|_| ProxyError::BadV1)?.into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>().map_err(|_| ProxyError::BadV1)?.into(),
            dst.parse::<Ipv6Addr>().map_err(|_| ProxyError::BadV1)?.into(),
        ),
        _ => return Err(ProxyError::BadV1),
    };
    let port = |p: &str| {
        // Decimal without sign or leading zeros, as the specification writes them.
        if p.is_empty()
            || (p.len() > 1 && p.starts_with('0'))
            || !p.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ProxyError::BadV1);
        }
        p.parse::<u16>().map_err(|_| ProxyError::BadV1)
    };
    let header = ProxyHeader::Proxied {
        source: SocketAddr::new(src, port(sport)?),
        destination: SocketAddr::new(dst, port(dport)?),
    };
    Ok(Some((header, consumed)))
}

fn decode_v2(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(&[ver_cmd, family, len_hi, len_lo]) = input.get(12..16) else {
        return Ok(None);
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::BadV2);
    }
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if len > V2_MAX_BLOCK_BYTES {
        return Err(ProxyError::BadV2);
    }
    let consumed = 16 + len;
    let Some(block) = input.get(16..consumed) else {
        return Ok(None);
    };
    match ver_cmd & 0x0F {
        // LOCAL: the balancer's own connection; the address block is ignored.
        0x0 => return Ok(Some((ProxyHeader::Local, consumed))),
        0x1 => {}
        _ => return Err(ProxyError::BadV2),
    }
    // High nibble: address family; low nibble: transport (1 stream, 2 datagram).
    let header = match family {
        0x11 | 0x12 => {
            let b: &[u8; 12] =
                block.get(..12).and_then(|s| s.try_into().ok()).ok_or(ProxyError::BadV2)?;
            let ip = |o: usize| IpAddr::from([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([b[8], b[9]])),
                destination: SocketAddr::new(ip(4), u16::from_be_bytes([b[10], b[11]])),
            }
        }
        0x21 | 0x22 => {
            let b: &[u8; 36] =
                block.get(..36).and_then(|s| s.try_into().ok()).ok_or(ProxyError::BadV2)?;
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[o..o + 16]);
                IpAddr::from(a)
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([b[32], b[33]])),
                destination: SocketAddr::new(ip(16), u16::from_be_bytes([b[34], b[35]])),
            }
        }
        // AF_UNSPEC and Unix sockets carry no IP address to use.
        0x00 | 0x31 | 0x32 => ProxyHeader::Local,
        _ => return Err(ProxyError::BadV2),
    };
    Ok(Some((header, consumed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn v2(cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(family);
        h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    const V4_BLOCK: [u8; 12] = [
        192, 0, 2, 7, // source 192.0.2.7
        10, 0, 0, 1, // destination 10.0.0.1
        0x30, 0x39, // source port 12345
        0x07, 0x5B, // destination port 1883
    ];

    #[test]
    fn v1_tcp4_and_tcp6_give_the_client_address() {
        let p = ProxyParser::new();
        let input = b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 1883\r\n\x10rest";
        let (h, n) = p.decode(input).unwrap().unwrap();
        assert_eq!(n, input.len() - 5);
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: addr("192.0.2.7:12345"),
                destination: addr("10.0.0.1:1883")
            }
        );
        let input = b"PROXY TCP6 2001:db8::1 ::1 40000 8883\r\n";
        let (h, _) = p.decode(input).unwrap().unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: addr("[2001:db8::1]:40000"),
                destination: addr("[::1]:8883")
            }
        );
        assert_eq!(p.decode(b"PROXY UNKNOWN whatever\r\n").unwrap().unwrap().0, ProxyHeader::Local);
    }

    #[test]
    fn v2_ipv4_ipv6_local_and_tlvs() {
        let p = ProxyParser::new();
        let mut input = v2(1, 0x11, &V4_BLOCK);
        let header_len = input.len();
        input.extend_from_slice(b"\x10MQTT");
        let (h, n) = p.decode(&input).unwrap().unwrap();
        assert_eq!(n, header_len);
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: addr("192.0.2.7:12345"),
                destination: addr("10.0.0.1:1883")
            }
        );
        // TLVs after the addresses are skipped.
        let mut block = V4_BLOCK.to_vec();
        block.extend_from_slice(&[0x04, 0x00, 0x02, 0xAB, 0xCD]);
        let input = v2(1, 0x11, &block);
        assert_eq!(p.decode(&input).unwrap().unwrap().1, input.len());
        let mut v6 = [0u8; 36];
        v6[15] = 1; // source ::1
        v6[31] = 2; // destination ::2
        v6[32..36].copy_from_slice(&[0x9C, 0x40, 0x22, 0xB3]);
        let (h, _) = p.decode(&v2(1, 0x21, &v6)).unwrap().unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied { source: addr("[::1]:40000"), destination: addr("[::2]:8883") }
        );
        assert_eq!(p.decode(&v2(0, 0x11, &V4_BLOCK)).unwrap().unwrap().0, ProxyHeader::Local);
        assert_eq!(p.decode(&v2(1, 0x00, &[])).unwrap().unwrap().0, ProxyHeader::Local);
    }

    #[test]
    fn split_headers_need_more_at_every_cut() {
        let p = ProxyParser::new();
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 1883\r\n".to_vec();
        let v2 = v2(1, 0x11, &V4_BLOCK);
        for input in [v1, v2] {
            for cut in 0..input.len() {
                assert_eq!(p.decode(&input[..cut]), Ok(None), "cut at {cut}");
            }
            assert!(p.decode(&input).unwrap().is_some());
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        let p = ProxyParser::new();
        let bad_v1: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.7 10.0.0.1 12345\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 1883 extra\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 1883\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 0123 1883\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\n",
            b"PROXY \xff\r\n",
        ];
        for input in bad_v1 {
            assert_eq!(
                p.decode(input),
                Err(ProxyError::BadV1),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // No line end within 107 bytes.
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(p.decode(&long), Err(ProxyError::BadV1));
        // Plain MQTT (CONNECT) or an HTTP request where a header should be.
        assert_eq!(p.decode(&[0x10, 0x0C, 0x00]), Err(ProxyError::Missing));
        assert_eq!(p.decode(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing));
        assert_eq!(p.decode(b"PROXZ"), Err(ProxyError::Missing));
        // Version 1 in a v2 header, an unknown command, an unknown family, a short
        // address block, an oversized block.
        let mut wrong_version = v2(1, 0x11, &V4_BLOCK);
        wrong_version[12] = 0x11;
        assert_eq!(p.decode(&wrong_version), Err(ProxyError::BadV2));
        assert_eq!(p.decode(&v2(2, 0x11, &V4_BLOCK)), Err(ProxyError::BadV2));
        assert_eq!(p.decode(&v2(1, 0x41, &V4_BLOCK)), Err(ProxyError::BadV2));
        assert_eq!(p.decode(&v2(1, 0x11, &V4_BLOCK[..8])), Err(ProxyError::BadV2));
        assert_eq!(p.decode(&v2(1, 0x21, &V4_BLOCK)), Err(ProxyError::BadV2));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert_eq!(p.decode(&huge), Err(ProxyError::BadV2));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let p = ProxyParser::new();
        let mut seed = 0x1234_5678_u32;
        for _ in 0..2000 {
            let mut input = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let start: &[u8] = if seed % 2 == 0 { V2_SIGNATURE } else { V1_PREFIX };
            input.extend_from_slice(start);
            for _ in 0..(seed % 64) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                input.push((seed >> 8) as u8);
            }
            let _ = p.decode(&input);
        }
    }
}
