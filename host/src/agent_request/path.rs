//! Canonical agent paths: the one decoding step, the refusals, and the one
//! spelling that is classified, authorized and forwarded.
//!
//! Rules (each a refusal, never a silent fix):
//! - the path starts with `/` and has no empty segment (`//`, trailing `/`);
//! - no backslash and no control character, raw or percent-encoded;
//! - every `%` starts a valid `%XX` escape, and the decoded bytes are UTF-8;
//! - no segment decodes to `.` or `..`, or contains an encoded `/`;
//! - no segment contains `%` after decoding: a double-encoded path
//!   (`%252e%252e`) is refused rather than forwarded as the literal id
//!   `%2e%2e`, so an agent that decodes twice cannot see a different path.
//!
//! The canonical spelling percent-encodes every decoded byte except ASCII
//! letters, digits and `-._~:@`, so `t-%61lice` and `t-alice` are the same
//! path, and the agent decodes exactly the ids the authorizer was given.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Why a request path is refused; the message is shown to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an absolute path (e.g. `*`).
    #[error("the request path must start with `/`")]
    NotAbsolute,
    /// `//` or a trailing `/`.
    #[error("the request path has an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    /// A `.` or `..` segment, raw or percent-encoded.
    #[error("the request path has a `.` or `..` segment (raw or percent-encoded)")]
    DotSegment,
    /// A backslash, raw or `%5C`.
    #[error("the request path has a backslash (raw or percent-encoded)")]
    Backslash,
    /// `%2F` inside a segment.
    #[error("the request path has an encoded `/` (`%2F`)")]
    EncodedSlash,
    /// A control character, raw or percent-encoded (`%00`, `%0A`, ...).
    #[error("the request path has a control character (raw or percent-encoded)")]
    ControlCharacter,
    /// `%` not followed by two hex digits.
    #[error("the request path has invalid percent-encoding")]
    BadPercentEncoding,
    /// The decoded bytes are not UTF-8.
    #[error("the request path does not decode to UTF-8")]
    NotUtf8,
    /// A `%` left after decoding once.
    #[error("the request path is double-encoded (a segment still has `%` after decoding)")]
    DoubleEncoded,
}

/// Bytes the canonical spelling percent-encodes: all but ASCII letters,
/// digits and `-._~:@` (unreserved characters plus the two that AgentFlow
/// route names use, as in `/v1/graph:StateSchema`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':')
    .remove(b'@');

/// A request path after the one decoding step: its decoded segments and
/// the canonical spelling. The only way to get one is [`CanonicalPath::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    segments: Vec<String>,
    canonical: String,
}

impl CanonicalPath {
    /// Decodes and checks `raw` (the path of the request line, without the
    /// query); `/` alone has no segments.
    pub fn parse(raw: &str) -> Result<CanonicalPath, PathError> {
        let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
        if rest.is_empty() {
            return Ok(CanonicalPath {
                segments: Vec::new(),
                canonical: "/".into(),
            });
        }
        let mut segments = Vec::new();
        let mut canonical = String::with_capacity(raw.len());
        for raw_segment in rest.split('/') {
            let decoded = decode_segment(raw_segment)?;
            canonical.push('/');
            canonical.extend(utf8_percent_encode(&decoded, SEGMENT));
            segments.push(decoded);
        }
        Ok(CanonicalPath {
            segments,
            canonical,
        })
    }

    /// The canonical spelling: what is forwarded, byte for byte.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The decoded segments: what routes are matched on and ids are taken from.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

impl std::fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical)
    }
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    if raw.is_empty() {
        return Err(PathError::EmptySegment);
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|h| hex(*h));
            let lo = bytes.get(i + 2).and_then(|h| hex(*h));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadPercentEncoding);
            };
            decoded.push(hi << 4 | lo);
            i += 3;
        } else {
            // Raw backslashes and controls get their own answer (the
            // decoded check below would also catch them).
            if b == b'\\' {
                return Err(PathError::Backslash);
            }
            decoded.push(b);
            i += 1;
        }
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    if decoded == "." || decoded == ".." {
        return Err(PathError::DotSegment);
    }
    for c in decoded.chars() {
        match c {
            '/' => return Err(PathError::EncodedSlash),
            '\\' => return Err(PathError::Backslash),
            '%' => return Err(PathError::DoubleEncoded),
            c if c.is_control() => return Err(PathError::ControlCharacter),
            _ => {}
        }
    }
    Ok(decoded)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (String, Vec<String>) {
        let p = CanonicalPath::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        (p.as_str().to_owned(), p.segments().to_vec())
    }

    fn err(raw: &str) -> PathError {
        CanonicalPath::parse(raw).expect_err(raw)
    }

    #[test]
    fn decodes_once_and_respells_canonically() {
        assert_eq!(
            ok("/v1/threads/t-%61lice/state"),
            (
                "/v1/threads/t-alice/state".into(),
                vec![
                    "v1".into(),
                    "threads".into(),
                    "t-alice".into(),
                    "state".into()
                ]
            )
        );
        assert_eq!(ok("/v1/threads/a%20b").0, "/v1/threads/a%20b");
        assert_eq!(ok("/v1/threads/a;b=c").0, "/v1/threads/a%3Bb%3Dc");
        assert_eq!(ok("/v1/threads/%c3%a9t%C3%A9").1[2], "été");
        assert_eq!(ok("/v1/threads/été").0, "/v1/threads/%C3%A9t%C3%A9");
        assert_eq!(ok("/v1/graph:StateSchema").0, "/v1/graph:StateSchema");
        assert_eq!(
            ok("/v1/threads/...").0,
            "/v1/threads/...",
            "three dots are a name, not a dot segment"
        );
        assert_eq!(ok("/").0, "/");
        assert!(ok("/").1.is_empty());
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        for raw in [
            "/v1/threads/t-%61lice",
            "/v1/threads/a%20b%2Bc",
            "/v1/threads/%E2%80%AE",
            "/x/~y_z.w@h:i",
        ] {
            let once = ok(raw).0;
            assert_eq!(ok(&once).0, once, "{raw}");
        }
    }

    #[test]
    fn refuses_dot_segments_raw_or_encoded() {
        for raw in [
            "/v1/threads/../graph",
            "/v1/./graph",
            "/v1/threads/%2e%2e/state",
            "/v1/threads/.%2E/state",
            "/v1/%2e/graph",
            "/..",
        ] {
            assert_eq!(err(raw), PathError::DotSegment, "{raw}");
        }
    }

    #[test]
    fn refuses_backslashes_slashes_and_controls() {
        assert_eq!(err("/v1/threads/x\\..\\..\\graph"), PathError::Backslash);
        assert_eq!(err("/v1/threads/x%5c..%5Cgraph"), PathError::Backslash);
        assert_eq!(
            err("/v1/threads/x/..%2f..%2fgraph"),
            PathError::EncodedSlash
        );
        assert_eq!(err("/v1/threads/a%2Fb"), PathError::EncodedSlash);
        for raw in [
            "/v1/threads/a%00",
            "/v1/threads/a%0d%0aX-Evil:1",
            "/v1/threads/%7f",
            "/v1/threads/%c2%85",
        ] {
            assert_eq!(err(raw), PathError::ControlCharacter, "{raw}");
        }
    }

    #[test]
    fn refuses_bad_encoding_double_encoding_and_empty_segments() {
        for raw in [
            "/v1/threads/%zz",
            "/v1/threads/%2",
            "/v1/threads/%",
            "/v1/threads/a%g0",
        ] {
            assert_eq!(err(raw), PathError::BadPercentEncoding, "{raw}");
        }
        assert_eq!(err("/v1/threads/%ff%fe"), PathError::NotUtf8);
        assert_eq!(
            err("/v1/threads/%c0%ae%c0%ae"),
            PathError::NotUtf8,
            "overlong dots are not UTF-8"
        );
        assert_eq!(
            err("/v1/threads/%252e%252e/state"),
            PathError::DoubleEncoded
        );
        assert_eq!(err("/v1/threads/100%25"), PathError::DoubleEncoded);
        for raw in ["/v1//threads", "/v1/threads/", "//v1/graph"] {
            assert_eq!(err(raw), PathError::EmptySegment, "{raw}");
        }
        assert_eq!(err("*"), PathError::NotAbsolute);
        assert_eq!(err(""), PathError::NotAbsolute);
    }
}
