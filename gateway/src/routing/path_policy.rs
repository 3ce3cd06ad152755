//! Path policy: runs once per request in `early_request_filter`, before route
//! selection, and again on the path a rewrite produced. It decides whether the path
//! is one every common backend resolves to the same thing the router matches, and
//! hands the router that thing: the path percent-decoded once.
//!
//! Rules, applied per `/`-separated segment of the raw path (query excluded), first
//! hit wins (the reason is the `reason` label of `gateway_invalid_path_total`):
//!
//! | rule | refused forms | reason |
//! |---|---|---|
//! | the path starts with `/` | `*`, `a/b` | `not_origin_form` |
//! | every `%` starts a `%XX` hex escape | `%`, `%2`, `%zz` | `bad_escape` |
//! | no `/` or `\` inside a segment | `%2f`, `%5c`, raw `\` | `encoded_slash`, `backslash` |
//! | no `;` path parameters | `..;`, `/a;jsessionid=1`, `%3b` | `path_parameter` |
//! | no control characters | raw or `%00`-`%1f`, `%7f` | `control_character` |
//! | no second decoding possible | `%25` before a (decoded) hex digit (`%252e`, `%25%32%65`) | `double_encoding` |
//! | the decoded segment is UTF-8 | `%c0%ae` (overlong `.`), `%ff` | `not_utf8` |
//! | no `.`/`..` segment, decoded | `..`, `%2e%2e`, `.%2E` | `dot_segment` |
//! | no empty segment but the last | `//`, `/a//b` (a trailing `/` is fine) | `empty_segment` |
//!
//! What passes is already in the form Tomcat/Spring, Go net/http, nginx and Python
//! servers reach after their own normalisation (decode once, resolve dot segments,
//! merge slashes, drop `;` parameters): none of those steps changes it, so the route
//! the gateway matched on the decoded path is the resource the backend serves. Node
//! and Express route on the raw path; segments still line up one to one with the
//! decoded path, so they can only fail to find a route, never find another one.
//!
//! `//` is refused rather than merged (Envoy's `merge_slashes`, off by default there
//! too): merging would forward a path other than the one the client sent, and Spring's
//! `StrictHttpFirewall` refuses it as well. The accepted path is forwarded byte for
//! byte; only a route's `strip_prefix`/`rewrite` changes it, and their output is
//! checked again by [`check`].

use std::borrow::Cow;
use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec};

/// Why a path was refused (400 `invalid_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    NotOriginForm,
    BadEscape,
    EncodedSlash,
    Backslash,
    PathParameter,
    ControlCharacter,
    DoubleEncoding,
    NotUtf8,
    DotSegment,
    EmptySegment,
}

impl PathRefusal {
    pub const ALL: [PathRefusal; 10] = [
        PathRefusal::NotOriginForm,
        PathRefusal::BadEscape,
        PathRefusal::EncodedSlash,
        PathRefusal::Backslash,
        PathRefusal::PathParameter,
        PathRefusal::ControlCharacter,
        PathRefusal::DoubleEncoding,
        PathRefusal::NotUtf8,
        PathRefusal::DotSegment,
        PathRefusal::EmptySegment,
    ];

    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            PathRefusal::NotOriginForm => "not_origin_form",
            PathRefusal::BadEscape => "bad_escape",
            PathRefusal::EncodedSlash => "encoded_slash",
            PathRefusal::Backslash => "backslash",
            PathRefusal::PathParameter => "path_parameter",
            PathRefusal::ControlCharacter => "control_character",
            PathRefusal::DoubleEncoding => "double_encoding",
            PathRefusal::NotUtf8 => "not_utf8",
            PathRefusal::DotSegment => "dot_segment",
            PathRefusal::EmptySegment => "empty_segment",
        }
    }

    /// What the client is told (no echo of the path: it goes to the log only).
    pub fn message(self) -> &'static str {
        match self {
            PathRefusal::NotOriginForm => "the path must start with `/`",
            PathRefusal::BadEscape => "the path has a `%` that does not start a `%XX` escape",
            PathRefusal::EncodedSlash => "the path has an encoded `/` (`%2F`) or `\\` (`%5C`)",
            PathRefusal::Backslash => "the path has a `\\`",
            PathRefusal::PathParameter => "the path has a `;` (path parameters are not accepted)",
            PathRefusal::ControlCharacter => "the path has a control character",
            PathRefusal::DoubleEncoding => "the path is percent-encoded twice (`%25XX`)",
            PathRefusal::NotUtf8 => "the decoded path is not UTF-8",
            PathRefusal::DotSegment => "the path has a `.` or `..` segment; send the resolved path",
            PathRefusal::EmptySegment => "the path has an empty segment (`//`)",
        }
    }

    /// Count one refusal in `gateway_invalid_path_total{reason}`.
    pub fn count(self) {
        let k = PathRefusal::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(0);
        REFUSALS[k].inc();
    }
}

/// One pre-resolved counter per reason, so the request path does no label lookup.
static REFUSALS: LazyLock<Vec<IntCounter>> = LazyLock::new(|| {
    let vec = IntCounterVec::new(
        prometheus::Opts::new(
            "gateway_invalid_path_total",
            "Requests refused with 400 invalid_path, by reason",
        ),
        &["reason"],
    )
    // the name and label are literals: construction cannot fail
    .expect("valid metric definition");
    // a second registration (never in the binary) leaves the counters unexported only
    let _ = prometheus::register(Box::new(vec.clone()));
    PathRefusal::ALL
        .iter()
        .map(|r| vec.with_label_values(&[r.reason()]))
        .collect()
});

/// Export every reason from zero (so alerts see the series before the first refusal).
pub fn register_metrics() {
    LazyLock::force(&REFUSALS);
}

/// Check a raw path (without the query) and return it percent-decoded once: the
/// path the router matches. Borrowed when the path has no escape.
pub fn check(raw: &str) -> Result<Cow<'_, str>, PathRefusal> {
    let Some(body) = raw.strip_prefix('/') else {
        return Err(PathRefusal::NotOriginForm);
    };
    let has_escape = raw.contains('%');
    let mut decoded = if has_escape {
        Some(String::with_capacity(raw.len()))
    } else {
        None
    };
    let mut segments = body.split('/').peekable();
    let mut buf = Vec::new();
    while let Some(seg) = segments.next() {
        if seg.is_empty() && segments.peek().is_some() {
            return Err(PathRefusal::EmptySegment);
        }
        let text = match decoded.as_mut() {
            // the common case: nothing to decode, nothing allocated
            None => {
                if let Some(refusal) = seg.bytes().find_map(refused_byte) {
                    return Err(refusal);
                }
                seg
            }
            Some(_) => {
                buf.clear();
                decode_segment(seg.as_bytes(), &mut buf)?;
                std::str::from_utf8(&buf).map_err(|_| PathRefusal::NotUtf8)?
            }
        };
        if text == "." || text == ".." {
            return Err(PathRefusal::DotSegment);
        }
        if let Some(out) = decoded.as_mut() {
            out.push('/');
            out.push_str(text);
        }
    }
    Ok(match decoded {
        Some(d) => Cow::Owned(d),
        None => Cow::Borrowed(raw),
    })
}

/// Why a byte, raw or decoded, may not be in a segment.
fn refused_byte(b: u8) -> Option<PathRefusal> {
    match b {
        // Tomcat and IIS split on `\`; Node's WHATWG URL turns it into `/`
        b'\\' => Some(PathRefusal::Backslash),
        // Tomcat/Jetty strip `;params` before resolving: `/pub/..;/admin` is `/admin`
        b';' => Some(PathRefusal::PathParameter),
        0..=0x1f | 0x7f => Some(PathRefusal::ControlCharacter),
        _ => None,
    }
}

/// Decode one segment into `out`, refusing what a backend could read as a separator,
/// a parameter, a control character or a second layer of encoding.
fn decode_segment(seg: &[u8], out: &mut Vec<u8>) -> Result<(), PathRefusal> {
    let mut i = 0;
    while i < seg.len() {
        let b = seg[i];
        let byte = if b == b'%' {
            let (Some(&h), Some(&l)) = (seg.get(i + 1), seg.get(i + 2)) else {
                return Err(PathRefusal::BadEscape);
            };
            let (Some(h), Some(l)) = (hex(h), hex(l)) else {
                return Err(PathRefusal::BadEscape);
            };
            i += 3;
            let v = (h << 4) | l;
            match v {
                b'/' => return Err(PathRefusal::EncodedSlash),
                // a `%25` a second decoder would turn into an escape: `%252e` and
                // `%25%32%65` both decode to `%2e`, then to `.`
                b'%' if next_decoded(&seg[i..]).is_some_and(|n| hex(n).is_some()) => {
                    return Err(PathRefusal::DoubleEncoding)
                }
                _ => {}
            }
            v
        } else {
            i += 1;
            b
        };
        match refused_byte(byte) {
            Some(PathRefusal::Backslash) if b == b'%' => return Err(PathRefusal::EncodedSlash),
            Some(refusal) => return Err(refusal),
            None => out.push(byte),
        }
    }
    Ok(())
}

/// The byte `rest` starts with once decoded (a malformed escape is reported later).
fn next_decoded(rest: &[u8]) -> Option<u8> {
    match rest {
        [b'%', h, l, ..] => Some((hex(*h)? << 4) | hex(*l)?),
        [b, ..] => Some(*b),
        [] => None,
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encode a decoded path for the wire: every byte that is not a path
/// character (RFC 3986 `pchar` or `/`) is escaped, and so is `%`, so decoding the
/// result once gives back `decoded` exactly. Used for a regex rewrite's output.
pub fn encode(decoded: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(decoded.len() + 8);
    for &b in decoded.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            );
        if keep {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

/// Check a path written in the config (`match.path`, `match.prefix`, `strip_prefix`):
/// it must be the decoded, resolved form the router sees, or the route can never match.
/// `Err` is the problem and the fix, for a `ConfigError` under the caller's key path.
pub fn check_config_path(path: &str) -> Result<(), String> {
    if path.contains('%') {
        return Err(format!(
            "{path:?} has a `%`: write the decoded path (requests are matched after decoding `%XX` once)"
        ));
    }
    match check(path) {
        Ok(_) => Ok(()),
        Err(r) => Err(format!(
            "{path:?}: {}; such requests are refused (400 invalid_path), so this could never match",
            r.message()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathRefusal::*;

    #[test]
    fn refused_forms_and_their_reasons() {
        for (path, want) in [
            ("*", NotOriginForm),
            ("a/b", NotOriginForm),
            ("/a/../b", DotSegment),
            ("/a/./b", DotSegment),
            ("/..", DotSegment),
            ("/a/..", DotSegment),
            ("/%2e%2e/x", DotSegment),
            ("/%2E%2E/x", DotSegment),
            ("/.%2e/x", DotSegment),
            ("/%2e/x", DotSegment),
            ("/pub/..;/admin", PathParameter),
            ("/pub/%2e%2e;/admin", PathParameter),
            ("/pub;x=1/a", PathParameter),
            ("/pub/%3b/a", PathParameter),
            ("/pub/..%2fadmin", EncodedSlash),
            ("/pub/..%2Fadmin", EncodedSlash),
            ("/pub/..%5cadmin", EncodedSlash),
            ("/pub/..\\admin", Backslash),
            ("/pub/%00", ControlCharacter),
            ("/pub/%0a", ControlCharacter),
            ("/pub/%7f", ControlCharacter),
            ("/pub/a\u{7f}", ControlCharacter),
            ("/pub/%252e%252e/admin", DoubleEncoding),
            ("/pub/%25%32%65", DoubleEncoding),
            ("/pub/%2541", DoubleEncoding),
            ("/pub/%", BadEscape),
            ("/pub/%2", BadEscape),
            ("/pub/%zz", BadEscape),
            ("/pub/%c0%ae%c0%ae/admin", NotUtf8),
            ("/pub/%ff", NotUtf8),
            ("//admin", EmptySegment),
            ("/pub//admin", EmptySegment),
        ] {
            assert_eq!(check(path), Err(want), "{path}");
        }
    }

    #[test]
    fn accepted_forms_decode_once() {
        for (path, want) in [
            ("/", "/"),
            ("/a/b/", "/a/b/"),
            ("/m%65mber/x", "/member/x"),
            ("/a%20b", "/a b"),
            ("/%40me", "/@me"),
            ("/caf%C3%A9", "/café"),
            ("/café", "/café"),
            ("/~user/a:b", "/~user/a:b"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/.../b", "/a/.../b"),
            ("/a..b/b.", "/a..b/b."),
            ("/100%25", "/100%"),
            ("/100%25x", "/100%x"),
            ("/100%25%C3%A9", "/100%é"),
            ("/%25%23", "/%#"),
            ("/q%3Fx", "/q?x"),
        ] {
            assert_eq!(check(path).as_deref(), Ok(want), "{path}");
        }
        assert!(matches!(check("/plain/path"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn encode_round_trips_through_check() {
        for decoded in ["/a b", "/100%", "/q?x#y", "/café/ü", "/a@b:c~d", "/x\"<>"] {
            let wire = encode(decoded);
            assert_eq!(check(&wire).as_deref(), Ok(decoded), "{wire}");
        }
    }

    #[test]
    fn config_paths_must_be_decoded_and_resolved() {
        assert!(check_config_path("/member").is_ok());
        assert!(check_config_path("/api/").is_ok());
        assert!(check_config_path("/").is_ok());
        let e = check_config_path("/a%20b").unwrap_err();
        assert!(e.contains("write the decoded path"), "{e}");
        let e = check_config_path("/a/../b").unwrap_err();
        assert!(e.contains("could never match"), "{e}");
        assert!(check_config_path("/a//b").is_err());
        assert!(check_config_path("/a;b").is_err());
    }
}
