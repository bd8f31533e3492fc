//! Minimal HTTP/1.1 for the admin listener: read one request from a blocking socket
//! with bounded head and body sizes, and write one response. One request per
//! connection (`Connection: close`): the admin listener serves a dashboard polling
//! once a second and a scraper, so keep-alive would buy nothing worth its states.
//!
//! The request head is parsed by `httparse`; everything else (limits, percent
//! decoding, query strings) is here. Routing is `api.rs`.

use std::io::{self, Read, Write};

/// Largest request head (request line plus headers) accepted.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body accepted (a publish payload travels in it).
pub(crate) const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most headers in a request.
const MAX_HEADERS: usize = 48;

/// HTTP methods the admin listener knows; anything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Delete,
    Other,
}

/// One parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: Method,
    /// Path without the query, still percent-encoded.
    pub(crate) path: String,
    /// Raw query string (after `?`), possibly empty.
    pub(crate) query: String,
    /// `Authorization` header value, if any.
    pub(crate) authorization: Option<String>,
    pub(crate) body: Vec<u8>,
}

/// Why no request could be read. Each maps to the response sent before closing (or to
/// none, when the peer is gone).
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed or timed out before a full request; nothing is answered.
    Io(io::Error),
    /// Unparseable head: 400.
    Malformed,
    /// The peer stopped sending (half-closed) in the middle of a head: 400.
    Incomplete,
    /// Head over [`MAX_HEAD_BYTES`] or too many headers: 431.
    HeadTooLarge,
    /// Body over [`MAX_BODY_BYTES`]: 413.
    BodyTooLarge,
    /// Chunked bodies are not accepted: 411 (send Content-Length).
    LengthRequired,
}

/// Reads one request head and its body from `stream`.
pub(crate) fn read_request(stream: &mut impl Read) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => {
                return Err(ReadError::Io(io::Error::from(io::ErrorKind::UnexpectedEof)));
            }
            Ok(0) => return Err(ReadError::Incomplete),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                if head_len > MAX_HEAD_BYTES {
                    return Err(ReadError::HeadTooLarge);
                }
                let parsed = head_fields(&req)?;
                let body_start = buf.get(head_len..).unwrap_or_default().to_vec();
                return finish(stream, parsed, body_start);
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(ReadError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(ReadError::HeadTooLarge),
            Err(_) => return Err(ReadError::Malformed),
        }
    }
}

/// The fields of a complete head, copied out of the borrowed parser.
struct Head {
    method: Method,
    target: String,
    authorization: Option<String>,
    content_length: usize,
}

fn head_fields(req: &httparse::Request<'_, '_>) -> Result<Head, ReadError> {
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        Some("DELETE") => Method::Delete,
        Some(_) => Method::Other,
        None => return Err(ReadError::Malformed),
    };
    let target = req.path.ok_or(ReadError::Malformed)?.to_owned();
    let mut authorization = None;
    let mut content_length = 0usize;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(String::from_utf8_lossy(h.value).into_owned());
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| ReadError::Malformed)?;
            content_length = v.trim().parse().map_err(|_| ReadError::Malformed)?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ReadError::LengthRequired);
        }
    }
    if content_length > MAX_BODY_BYTES {
        return Err(ReadError::BodyTooLarge);
    }
    Ok(Head { method, target, authorization, content_length })
}

fn finish(stream: &mut impl Read, head: Head, mut body: Vec<u8>) -> Result<Request, ReadError> {
    // Bytes beyond Content-Length (a pipelined request) are ignored: one request per
    // connection.
    body.truncate(head.content_length);
    if body.len() < head.content_length {
        let start = body.len();
        body.resize(head.content_length, 0);
        stream.read_exact(body.get_mut(start..).unwrap_or_default()).map_err(ReadError::Io)?;
    }
    let (path, query) = match head.target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (head.target, String::new()),
    };
    Ok(Request { method: head.method, path, query, authorization: head.authorization, body })
}

/// One response, written with `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
    /// Extra header lines, each without CRLF.
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A JSON response.
    pub(crate) fn json(status: u16, value: &impl serde::Serialize) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::raw(status, "application/json", body),
            Err(e) => Response::error(500, &format!("cannot encode response: {e}")),
        }
    }

    /// `{"error": message}` with `status`.
    pub(crate) fn error(status: u16, message: &str) -> Response {
        let body = serde_json::json!({ "error": message, "status": status });
        Response::raw(status, "application/json", body.to_string().into_bytes())
    }

    /// Any body.
    pub(crate) fn raw(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response { status, content_type, body, headers: Vec::new() }
    }

    /// No body.
    pub(crate) fn empty(status: u16) -> Response {
        Response::raw(status, "text/plain", Vec::new())
    }

    /// Adds a header line.
    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// Serialises head and body.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`, for query strings).
///
/// # Errors
/// `None` for a bad escape or bytes that are not UTF-8.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits a query string into decoded `(key, value)` pairs.
///
/// # Errors
/// `None` if any part fails to decode.
pub(crate) fn parse_query(q: &str) -> Option<Vec<(String, String)>> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Request, ReadError> {
        read_request(&mut &bytes[..])
    }

    #[test]
    fn reads_a_request_with_query_auth_and_body() {
        let r = read(
            b"POST /api/publish?x=1 HTTP/1.1\r\nHost: a\r\nauthorization: Bearer t\r\n\
              Content-Length: 4\r\n\r\nbodyEXTRA",
        )
        .unwrap();
        assert_eq!(r.method, Method::Post);
        assert_eq!((r.path.as_str(), r.query.as_str()), ("/api/publish", "x=1"));
        assert_eq!(r.authorization.as_deref(), Some("Bearer t"));
        assert_eq!(r.body, b"body");
    }

    #[test]
    fn refuses_oversized_heads_bodies_and_chunked() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 10, b'a');
        assert!(matches!(read(&big), Err(ReadError::HeadTooLarge)));
        let r = read(
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY_BYTES + 1).as_bytes(),
        );
        assert!(matches!(r, Err(ReadError::BodyTooLarge)));
        let r = read(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(r, Err(ReadError::LengthRequired)));
        let r = read(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n");
        assert!(matches!(r, Err(ReadError::Malformed)));
        assert!(matches!(read(b"\x00\x01garbage\r\n\r\n"), Err(ReadError::Malformed)));
        assert!(matches!(read(b"GET / HTTP/1.1\r\n"), Err(ReadError::Incomplete)));
        assert!(matches!(read(b""), Err(ReadError::Io(_))));
    }

    #[test]
    fn percent_decoding_handles_bad_escapes_without_panicking() {
        assert_eq!(percent_decode("a%2Fb%20c+d", true).as_deref(), Some("a/b c d"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%", false), None);
        assert_eq!(percent_decode("%4", false), None);
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%ff", false), None); // not UTF-8
        assert_eq!(percent_decode("%C3%A9", false).as_deref(), Some("é"));
        let q = parse_query("search=a%26b&limit=5&flag&").unwrap();
        assert_eq!(
            q,
            vec![
                ("search".into(), "a&b".into()),
                ("limit".into(), "5".into()),
                ("flag".into(), String::new())
            ]
        );
    }

    #[test]
    fn response_has_length_and_close() {
        let r = Response::error(404, "no such path").to_bytes();
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("{\"error\":\"no such path\",\"status\":404}"));
    }
}
