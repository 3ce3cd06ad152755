//! W3C Trace Context (early_request_filter, upstream_request_filter, logging): read the
//! client's `traceparent`/`tracestate` once after the header hygiene, continue its
//! trace or start one, send the service a `traceparent` naming the gateway's span on
//! every attempt, and give the access log the trace id.
//!
//! A `traceparent` that breaks the spec (its length, a non-lowercase-hex field, an
//! all-zero id, version `ff`) is treated as absent: a new trace starts and the
//! client's `tracestate` is dropped with it, as the spec asks. A client's trace
//! context is honoured from any peer, trusted or not: it only names a trace, grants
//! nothing, and the spec (and most gateways) continue it; see docs/tracing.md.
//!
//! Cost: parsing reads the header bytes in place, ids come from `ids` (a per-thread
//! generator, no syscall), formatting writes into stack buffers; the only allocation
//! is the outgoing header value.

use http::{HeaderMap, HeaderName, HeaderValue};
use pingora_core::Result;
use pingora_http::RequestHeader;

use super::forward::insert;
use super::ids;

use crate::edge::Seen;
use crate::otlp::SpanExport;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `00-` + 32 hex + `-` + 16 hex + `-` + 2 hex.
const TRACEPARENT_LEN: usize = 55;
/// The longest `tracestate` passed on; a longer one is dropped whole. The spec asks
/// a vendor to pass at least 512 characters and lets it drop the rest.
const TRACESTATE_MAX: usize = 512;
/// The `sampled` bit of the trace flags.
const SAMPLED: u8 = 0x01;

/// One request's place in its trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TraceContext {
    pub trace_id: [u8; 16],
    /// The client's span (its `traceparent`'s parent id); None when the gateway
    /// started the trace.
    pub parent_id: Option<[u8; 8]>,
    /// The gateway's span: the parent id the service sees.
    pub span_id: [u8; 8],
    pub sampled: bool,
    /// The client's `tracestate`, kept with a valid `traceparent` only.
    pub tracestate: Option<HeaderValue>,
    /// Whether the client may have sent a `tracestate`: one not kept is removed
    /// from every attempt (the engine copies the client's request for each).
    pub client_state: bool,
}

impl TraceContext {
    /// Continue the client's trace when its `traceparent` is valid (sampled as the
    /// client says), else start one: sampled by `export`'s ratio when spans are
    /// exported, unsampled otherwise (nothing records the gateway's span).
    ///
    /// `seen`: which of the two headers the client may have sent (the hygiene pass
    /// notes them); one it did not send is not looked up.
    pub(super) fn start(req: &RequestHeader, seen: Seen, export: Option<&SpanExport>) -> Self {
        let span_id = ids::nonzero();
        let client_state = seen.may_have(Seen::TRACESTATE);
        let parent = if seen.may_have(Seen::TRACEPARENT) {
            client_parent(req)
        } else {
            None
        };
        match parent {
            Some(parent) => TraceContext {
                trace_id: parent.trace_id,
                parent_id: Some(parent.parent_id),
                span_id,
                sampled: parent.flags & SAMPLED != 0,
                tracestate: client_state.then(|| tracestate(req)).flatten(),
                client_state,
            },
            None => {
                let trace_id = ids::nonzero();
                TraceContext {
                    trace_id,
                    parent_id: None,
                    span_id,
                    sampled: export.is_some_and(|e| e.sample(&trace_id)),
                    tracestate: None,
                    client_state,
                }
            }
        }
    }

    /// Set the service's `traceparent` (the gateway's span as parent) and
    /// `tracestate` (the client's, or none), replacing whatever the client sent.
    pub(super) fn write(&self, headers: &mut HeaderMap) -> Result<()> {
        let mut buf = [0u8; TRACEPARENT_LEN];
        let value = HeaderValue::from_bytes(self.traceparent(&mut buf))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        insert(headers, TRACEPARENT.clone(), value)?;
        match &self.tracestate {
            Some(state) => insert(headers, TRACESTATE.clone(), state.clone())?,
            None if self.client_state => {
                headers.remove(&TRACESTATE);
            }
            None => {}
        }
        Ok(())
    }

    /// The `traceparent` naming the gateway's span, formatted into `buf`.
    fn traceparent<'b>(&self, buf: &'b mut [u8; TRACEPARENT_LEN]) -> &'b [u8] {
        buf[..3].copy_from_slice(b"00-");
        hex(&self.trace_id, &mut buf[3..35]);
        buf[35] = b'-';
        hex(&self.span_id, &mut buf[36..52]);
        buf[52] = b'-';
        hex(&[if self.sampled { SAMPLED } else { 0 }], &mut buf[53..55]);
        buf
    }

    /// The trace id in lowercase hex, formatted into `buf` (for the access log).
    pub(super) fn trace_id_hex<'b>(&self, buf: &'b mut [u8; 32]) -> &'b str {
        hex(&self.trace_id, buf);
        std::str::from_utf8(buf).unwrap_or("-")
    }
}

/// The fields of a valid client `traceparent`.
struct Parent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// The client's `traceparent` when there is exactly one and it is valid.
fn client_parent(req: &RequestHeader) -> Option<Parent> {
    let mut all = req.headers.get_all(&TRACEPARENT).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None; // two parents: neither is believable
    }
    parse_traceparent(value.as_bytes())
}

/// Parse a `traceparent` by the spec: version 00 is exactly 55 characters; a later
/// version is read by the 00 layout and may carry more fields after a `-`.
fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() < TRACEPARENT_LEN || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&v[0..2])?[0];
    match version {
        0xff => return None,
        0x00 if v.len() != TRACEPARENT_LEN => return None,
        _ if v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-' => return None,
        _ => {}
    }
    let trace_id = unhex::<16>(&v[3..35])?;
    let parent_id = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        parent_id,
        flags,
    })
}

/// The client's `tracestate`: one header kept as is (no copy); several joined by
/// commas as the spec says; dropped whole when over [`TRACESTATE_MAX`] or unusable.
fn tracestate(req: &RequestHeader) -> Option<HeaderValue> {
    let mut all = req.headers.get_all(&TRACESTATE).iter();
    let first = all.next()?;
    let Some(second) = all.next() else {
        return (!first.is_empty() && first.len() <= TRACESTATE_MAX).then(|| first.clone());
    };
    let mut joined = Vec::with_capacity(TRACESTATE_MAX);
    for v in [first, second].into_iter().chain(all) {
        if v.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(v.as_bytes());
        if joined.len() > TRACESTATE_MAX {
            return None;
        }
    }
    HeaderValue::from_bytes(&joined)
        .ok()
        .filter(|v| !v.is_empty())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes` into `out` (twice as long).
fn hex(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
}

/// `N` bytes from `2N` lowercase hex digits (the spec allows no uppercase).
fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    impl TraceContext {
        /// As a request the hygiene pass could say nothing about.
        fn start_any(req: &RequestHeader, export: Option<&SpanExport>) -> Self {
            TraceContext::start(req, Seen::ANY, export)
        }
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).expect("a request");
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).expect("a header");
        }
        r
    }

    fn sent(t: &TraceContext) -> String {
        let mut headers = HeaderMap::new();
        t.write(&mut headers).expect("written");
        headers[&TRACEPARENT].to_str().expect("ascii").to_string()
    }

    #[test]
    fn a_valid_parent_is_continued_with_a_new_span() {
        let t =
            TraceContext::start_any(&req(&[("traceparent", VALID), ("tracestate", "a=1")]), None);
        let mut buf = [0u8; 32];
        assert_eq!(t.trace_id_hex(&mut buf), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id, Some(*b"\x00\xf0\x67\xaa\x0b\xa9\x02\xb7"));
        assert!(t.sampled);
        let out = sent(&t);
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"), "{out}");
        assert!(parse_traceparent(out.as_bytes()).is_some(), "{out}");
        assert_ne!(&out[36..52], "00f067aa0ba902b7", "the gateway's own span");
        assert_eq!(
            t.tracestate.as_ref().map(|v| v.as_bytes()),
            Some(&b"a=1"[..])
        );
    }

    #[test]
    fn the_sampled_flag_follows_the_parent() {
        let unsampled = VALID.replace("-01", "-00");
        assert!(!TraceContext::start_any(&req(&[("traceparent", &unsampled)]), None).sampled);
        let other_bits = VALID.replace("-01", "-03");
        let t = TraceContext::start_any(&req(&[("traceparent", &other_bits)]), None);
        assert!(
            sent(&t).ends_with("-01"),
            "only the flags this version knows"
        );
    }

    #[test]
    fn an_invalid_parent_starts_a_new_trace_and_drops_tracestate() {
        for bad in [
            "",
            &VALID[..54],
            format!("{VALID}0").as_str(),
            format!("{VALID}-x").as_str(), // version 00 has no more fields
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad:?}");
            let t =
                TraceContext::start_any(&req(&[("traceparent", bad), ("tracestate", "a=1")]), None);
            assert_eq!(t.parent_id, None, "{bad:?}");
            assert_ne!(t.trace_id, [0; 16]);
            assert!(!t.sampled);
            assert_eq!(t.tracestate, None, "{bad:?}");
        }
        let two = req(&[("traceparent", VALID), ("traceparent", VALID)]);
        assert_eq!(TraceContext::start_any(&two, None).parent_id, None);
    }

    #[test]
    fn a_later_version_is_read_by_the_00_layout() {
        let v1 = VALID.replacen("00", "01", 1);
        assert!(parse_traceparent(v1.as_bytes()).is_some());
        assert!(parse_traceparent(format!("{v1}-more").as_bytes()).is_some());
        assert!(parse_traceparent(format!("{v1}more").as_bytes()).is_none());
        // the service gets the version the gateway speaks
        assert!(sent(&TraceContext::start_any(
            &req(&[("traceparent", &v1)]),
            None
        ))
        .starts_with("00-"));
    }

    #[test]
    fn a_new_trace_has_valid_random_ids() {
        let a = TraceContext::start_any(&req(&[]), None);
        let b = TraceContext::start_any(&req(&[]), None);
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
        let out = sent(&a);
        assert_eq!(out.len(), TRACEPARENT_LEN);
        assert!(out.ends_with("-00"), "{out}");
        assert!(parse_traceparent(out.as_bytes()).is_some(), "{out}");
    }

    #[test]
    fn a_client_tracestate_without_a_parent_is_removed_from_each_attempt() {
        let t = TraceContext::start(&req(&[("tracestate", "a=1")]), Seen::TRACESTATE, None);
        assert_eq!(t.parent_id, None);
        let mut attempt = HeaderMap::new();
        attempt.insert(&TRACESTATE, HeaderValue::from_static("a=1"));
        t.write(&mut attempt).expect("written");
        assert!(attempt.get(&TRACESTATE).is_none());
        // nothing noted: the headers are not read (the hygiene pass saw none)
        let t = TraceContext::start(&req(&[("traceparent", VALID)]), Seen::default(), None);
        assert_eq!(t.parent_id, None);
        assert!(!t.client_state);
    }

    #[test]
    fn tracestate_is_joined_bounded_and_replaced() {
        let t = TraceContext::start_any(
            &req(&[
                ("traceparent", VALID),
                ("tracestate", "a=1"),
                ("tracestate", "b=2"),
            ]),
            None,
        );
        assert_eq!(t.tracestate, Some(HeaderValue::from_static("a=1,b=2")));
        let long = format!("a={}", "x".repeat(TRACESTATE_MAX));
        let t =
            TraceContext::start_any(&req(&[("traceparent", VALID), ("tracestate", &long)]), None);
        assert_eq!(t.tracestate, None);
        // the client's copy does not reach the service when the gateway dropped it
        let mut headers = HeaderMap::new();
        headers.insert(&TRACESTATE, HeaderValue::from_static("c=3"));
        t.write(&mut headers).expect("written");
        assert!(headers.get(&TRACESTATE).is_none());
    }
}
