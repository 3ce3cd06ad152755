//! The identity signature, version 2: the jwt plugin (request_filter) hands an
//! [`IdentitySigner`] on, the gateway signs every upstream attempt
//! (upstream_request_filter, after the path rewrite), and a service checks it with
//! [`verify_signature`].
//!
//! Header: `X-Gateway-Signature: t=<unix secs>,h=<name>;<name>...,v2=<hex HMAC-SHA256>`
//! over this canonical string, every line ending in `\n`:
//!
//! ```text
//! gateway-identity-v2
//! <t>
//! <METHOD>
//! <path and query, as sent to the service>
//! <service name>
//! <X-Request-Id>
//! <name>:<value>        one line per name of h=, in that order (lowercase, sorted);
//!                       an absent header as an empty value
//! ```
//!
//! No field can contain `\n` (methods, request targets, header names and values cannot;
//! a service name or request id that does is never signed), so the string is
//! unambiguous. The signature binds the identity to one request: another method,
//! path, service or request id does not verify, and `t` limits it in time.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The default signature header name.
pub const SIGNATURE_HEADER: &str = "x-gateway-signature";
/// The request id header the signature covers (the gateway always sets it).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// How far in the future a signature time may be (clocks of two hosts differ a little).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);
/// First line of the canonical string: names the format.
const VERSION_LINE: &[u8] = b"gateway-identity-v2\n";

/// What a signature binds besides the identity headers: the request as the service
/// receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The request target's path and query exactly as sent upstream (after
    /// `strip_prefix`/`rewrite`), e.g. `/orders/7?expand=items`.
    pub path_and_query: &'a str,
    /// The gateway's name of the target service (`services.<name>`).
    pub service: &'a str,
    /// The `X-Request-Id` sent with the request.
    pub request_id: &'a str,
}

fn one_line(s: &str) -> bool {
    !s.bytes().any(|b| b == b'\n' || b == b'\r')
}

/// Write the canonical string to `out`; `None` when a field cannot be one line.
fn canonical<'v>(
    mut out: impl FnMut(&[u8]),
    t: u64,
    b: &Binding<'_>,
    names: impl IntoIterator<Item = &'v str>,
    value_of: impl Fn(&str) -> &'v [u8],
) -> Option<()> {
    let fields = [b.method, b.path_and_query, b.service, b.request_id];
    if !fields.iter().all(|f| one_line(f)) {
        return None;
    }
    out(VERSION_LINE);
    let mut digits = [0u8; 20];
    out(format_u64(t, &mut digits));
    out(b"\n");
    for f in fields {
        out(f.as_bytes());
        out(b"\n");
    }
    for name in names {
        let value = value_of(name);
        if !one_line(name) || value.iter().any(|&c| c == b'\n' || c == b'\r') {
            return None;
        }
        out(name.as_bytes());
        out(b":");
        out(value);
        out(b"\n");
    }
    Some(())
}

/// Decimal digits of `n` in `buf` (no allocation on the request path).
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The canonical string itself, for documentation and for services that want to log
/// what they verified. `headers` are the signed (name, value) pairs in signing order.
pub fn canonical_string(t: u64, binding: &Binding<'_>, headers: &[(&str, &str)]) -> Option<String> {
    let mut buf = Vec::new();
    let value_of = |n: &str| {
        headers
            .iter()
            .find(|(h, _)| *h == n)
            .map_or(&b""[..], |(_, v)| v.as_bytes())
    };
    canonical(
        |b| buf.extend_from_slice(b),
        t,
        binding,
        headers.iter().map(|(n, _)| *n),
        value_of,
    )?;
    String::from_utf8(buf).ok()
}

/// Signs identity headers for one upstream attempt. Built once per config; the key
/// is prepared once (HMAC key schedule) and cloned per signature.
#[derive(Clone)]
pub struct IdentitySigner {
    header: HeaderName,
    key: HmacSha256,
    /// Signed header names, lowercase and sorted.
    names: Vec<HeaderName>,
    /// `names` joined with `;`, for the `h=` field.
    names_list: String,
}

impl fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // never the key
        f.debug_struct("IdentitySigner")
            .field("header", &self.header)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl IdentitySigner {
    /// `None` only if HMAC refuses the key (it accepts any length).
    pub fn new(header: HeaderName, secret: &[u8], mut names: Vec<HeaderName>) -> Option<Self> {
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        let names_list = names
            .iter()
            .map(HeaderName::as_str)
            .collect::<Vec<_>>()
            .join(";");
        Some(Self {
            header,
            key: HmacSha256::new_from_slice(secret).ok()?,
            names,
            names_list,
        })
    }

    /// The signature header's name.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The signature header's value over `identity` (the headers as set upstream) for
    /// the request `binding` at `t` (unix seconds). `None` when a field is not one line.
    pub fn sign(
        &self,
        identity: &[(HeaderName, HeaderValue)],
        binding: &Binding<'_>,
        t: u64,
    ) -> Option<HeaderValue> {
        let mut mac = self.key.clone();
        let value_of = |n: &str| {
            identity
                .iter()
                .find(|(h, _)| h.as_str() == n)
                .map_or(&b""[..], |(_, v)| v.as_bytes())
        };
        canonical(
            |b| mac.update(b),
            t,
            binding,
            self.names.iter().map(HeaderName::as_str),
            value_of,
        )?;
        let tag = hex::encode(mac.finalize().into_bytes());
        let v = format!("t={t},h={},v2={tag}", self.names_list);
        HeaderValue::from_str(&v).ok()
    }
}

/// A request as the service received it: what [`verify_signature`] checks.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedRequest<'a> {
    pub method: &'a str,
    /// The request target's path and query (`/orders/7?expand=items`).
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
}

impl<'a> ReceivedRequest<'a> {
    /// From the `http` types every Rust server framework exposes.
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        Self {
            method: method.as_str(),
            path_and_query: uri.path_and_query().map_or("/", |pq| pq.as_str()),
            headers,
        }
    }
}

/// The verified identity a service reads after [`verify_signature`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// When the gateway signed (unix seconds).
    pub signed_at: u64,
    /// The request id the signature covers.
    pub request_id: String,
    /// The signed headers (lowercase name, value); absent headers have empty values.
    pub headers: Vec<(String, String)>,
}

impl Identity {
    /// A signed header's value (case-insensitive name); `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Whether every one of `names` is covered by the signature (present or not).
    pub fn covers(&self, names: &[&str]) -> bool {
        names
            .iter()
            .all(|n| self.headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n)))
    }
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no identity signature header")]
    Missing,
    /// Unparsable, an older version (`v1`), no single `X-Request-Id`, or a signed
    /// header sent more than once.
    #[error("the identity signature header is malformed")]
    Malformed,
    #[error("the identity signature is too old")]
    Expired,
    #[error("the identity signature is dated in the future")]
    FromTheFuture,
    /// Wrong key, or another method, path, service, request id or identity.
    #[error("the identity signature does not match this request")]
    Mismatch,
}

/// Verify the gateway's identity signature (header `X-Gateway-Signature`) on `req`,
/// for the service named `service` (as in the gateway's `services:`), with the shared
/// `secret`. Refuses signatures older than `max_age` or more than [`MAX_CLOCK_SKEW`]
/// in the future. The one helper a service calls before it reads identity headers.
pub fn verify_signature(
    req: &ReceivedRequest<'_>,
    service: &str,
    secret: &[u8],
    max_age: Duration,
) -> Result<Identity, SignatureError> {
    let now = crate::clock::unix_secs();
    verify_signature_at(req, service, SIGNATURE_HEADER, secret, max_age, now)
}

/// [`verify_signature`] with an explicit signature header name and clock.
pub fn verify_signature_at(
    req: &ReceivedRequest<'_>,
    service: &str,
    header: &str,
    secret: &[u8],
    max_age: Duration,
    now: u64,
) -> Result<Identity, SignatureError> {
    let headers = req.headers;
    let raw = single(headers, header)
        .map_err(|n| {
            if n == 0 {
                SignatureError::Missing
            } else {
                SignatureError::Malformed
            }
        })?
        .to_str()
        .map_err(|_| SignatureError::Malformed)?;
    let (mut t, mut h, mut tag) = (None, None, None);
    for field in raw.split(',') {
        match field.trim().split_once('=') {
            Some(("t", x)) if t.is_none() => t = Some(parse_secs(x)?),
            Some(("h", x)) if h.is_none() => h = Some(x),
            Some(("v2", x)) if tag.is_none() => {
                tag = Some(hex::decode(x).map_err(|_| SignatureError::Malformed)?);
            }
            _ => return Err(SignatureError::Malformed),
        }
    }
    let (Some(t), Some(h), Some(tag)) = (t, h, tag) else {
        return Err(SignatureError::Malformed);
    };
    if t > now.saturating_add(MAX_CLOCK_SKEW.as_secs()) {
        return Err(SignatureError::FromTheFuture);
    }
    if now.saturating_sub(t) > max_age.as_secs() {
        return Err(SignatureError::Expired);
    }
    let request_id = single(headers, REQUEST_ID_HEADER)
        .ok()
        .and_then(|v| v.to_str().ok())
        .ok_or(SignatureError::Malformed)?;
    let names: Vec<&str> = h.split(';').filter(|n| !n.is_empty()).collect();
    // a signed header sent twice: the service might read the copy that was not signed
    let mut values = Vec::with_capacity(names.len());
    for n in &names {
        match single(headers, n) {
            Ok(v) => values.push(v.as_bytes()),
            Err(0) => values.push(b""),
            Err(_) => return Err(SignatureError::Malformed),
        }
    }
    let binding = Binding {
        method: req.method,
        path_and_query: req.path_and_query,
        service,
        request_id,
    };
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    let value_of = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .and_then(|i| values.get(i).copied())
            .unwrap_or(b"")
    };
    canonical(
        |b| mac.update(b),
        t,
        &binding,
        names.iter().copied(),
        value_of,
    )
    .ok_or(SignatureError::Mismatch)?;
    // constant-time comparison
    mac.verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)?;
    let headers = names
        .iter()
        .zip(&values)
        .map(|(n, v)| {
            let v = String::from_utf8_lossy(v).into_owned();
            (n.to_ascii_lowercase(), v)
        })
        .collect();
    Ok(Identity {
        signed_at: t,
        request_id: request_id.to_string(),
        headers,
    })
}

/// The one value of header `name`; `Err(count)` when absent (0) or repeated.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h HeaderValue, usize> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Ok(v),
        (None, _) => Err(0),
        (Some(_), Some(_)) => Err(2),
    }
}

fn parse_secs(x: &str) -> Result<u64, SignatureError> {
    // digits only: `+5` or ` 5` would parse but are not what the gateway writes
    if x.is_empty() || x.len() > 20 || !x.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    x.parse().map_err(|_| SignatureError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"signature-test-secret-0123456789";
    const T: u64 = 1_750_000_000;

    fn signer() -> IdentitySigner {
        let names = ["x-user-id", "authenticated-user"]
            .map(HeaderName::from_static)
            .to_vec();
        IdentitySigner::new(HeaderName::from_static(SIGNATURE_HEADER), SECRET, names).unwrap()
    }

    fn binding() -> Binding<'static> {
        Binding {
            method: "GET",
            path_and_query: "/orders/7?expand=items",
            service: "order",
            request_id: "req-1",
        }
    }

    fn identity() -> Vec<(HeaderName, HeaderValue)> {
        vec![
            (
                HeaderName::from_static("authenticated-user"),
                HeaderValue::from_static("ada@example.com"),
            ),
            (
                HeaderName::from_static("x-user-id"),
                HeaderValue::from_static("42"),
            ),
        ]
    }

    /// The headers a service receives for `binding()` signed at `t`.
    fn received(t: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in identity() {
            h.insert(n, v);
        }
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("req-1"));
        let sig = signer().sign(&identity(), &binding(), t).unwrap();
        h.insert(SIGNATURE_HEADER, sig);
        h
    }

    fn check(
        method: &str,
        pq: &str,
        service: &str,
        h: &HeaderMap,
        now: u64,
    ) -> Result<Identity, SignatureError> {
        let req = ReceivedRequest {
            method,
            path_and_query: pq,
            headers: h,
        };
        let max = Duration::from_secs(60);
        verify_signature_at(&req, service, SIGNATURE_HEADER, SECRET, max, now)
    }

    const PQ: &str = "/orders/7?expand=items";

    #[test]
    fn a_signature_verifies_on_the_request_it_was_made_for() {
        let h = received(T);
        let id = check("GET", PQ, "order", &h, T + 10).unwrap();
        assert_eq!(id.get("Authenticated-User"), Some("ada@example.com"));
        assert_eq!(id.get("x-user-id"), Some("42"));
        assert_eq!(id.request_id, "req-1");
        assert_eq!(id.signed_at, T);
        assert!(id.covers(&["authenticated-user", "X-User-Id"]));
        assert!(!id.covers(&["x-user-roles"]));
    }

    #[test]
    fn a_replayed_header_set_is_refused_on_another_request() {
        let h = received(T);
        let now = T + 1;
        let mismatch = Err(SignatureError::Mismatch);
        // another method, path, query, service
        assert_eq!(check("DELETE", PQ, "order", &h, now), mismatch);
        assert_eq!(check("POST", PQ, "order", &h, now), mismatch);
        assert_eq!(
            check("GET", "/orders/8?expand=items", "order", &h, now),
            mismatch
        );
        assert_eq!(check("GET", "/orders/7", "order", &h, now), mismatch);
        assert_eq!(
            check("GET", "/orders/7?expand=all", "order", &h, now),
            mismatch
        );
        assert_eq!(check("GET", PQ, "member", &h, now), mismatch);
        // another request id
        let mut other = h.clone();
        other.insert(REQUEST_ID_HEADER, HeaderValue::from_static("req-2"));
        assert_eq!(check("GET", PQ, "order", &other, now), mismatch);
        // another identity
        let mut other = h.clone();
        other.insert("x-user-id", HeaderValue::from_static("1"));
        assert_eq!(check("GET", PQ, "order", &other, now), mismatch);
        // another key
        let req = ReceivedRequest {
            method: "GET",
            path_and_query: PQ,
            headers: &h,
        };
        let max = Duration::from_secs(60);
        assert_eq!(
            verify_signature_at(&req, "order", SIGNATURE_HEADER, b"another key", max, now),
            mismatch
        );
    }

    #[test]
    fn time_is_bounded_both_ways() {
        let h = received(T);
        // up to max_age in the past, up to the skew in the future
        assert!(check("GET", PQ, "order", &h, T + 60).is_ok());
        assert!(check("GET", PQ, "order", &h, T - MAX_CLOCK_SKEW.as_secs()).is_ok());
        assert_eq!(
            check("GET", PQ, "order", &h, T + 61),
            Err(SignatureError::Expired)
        );
        // a signature dated in the future (a captured header set made to last longer,
        // or a gateway clock far ahead) is refused
        assert_eq!(
            check("GET", PQ, "order", &h, T - MAX_CLOCK_SKEW.as_secs() - 1),
            Err(SignatureError::FromTheFuture)
        );
        let later = received(T + 3600);
        assert_eq!(
            check("GET", PQ, "order", &later, T),
            Err(SignatureError::FromTheFuture)
        );
    }

    #[test]
    fn ambiguous_or_old_forms_are_refused() {
        let now = T + 1;
        let h = received(T);
        let mut no_id = h.clone();
        no_id.remove(REQUEST_ID_HEADER);
        assert_eq!(
            check("GET", PQ, "order", &no_id, now),
            Err(SignatureError::Malformed)
        );
        // a second copy of a signed header: the service could read the unsigned one
        let mut twice = h.clone();
        twice.append(
            "authenticated-user",
            HeaderValue::from_static("mallory@evil.test"),
        );
        assert_eq!(
            check("GET", PQ, "order", &twice, now),
            Err(SignatureError::Malformed)
        );
        let mut two_sigs = h.clone();
        let sig = h.get(SIGNATURE_HEADER).unwrap().clone();
        two_sigs.append(SIGNATURE_HEADER, sig.clone());
        assert_eq!(
            check("GET", PQ, "order", &two_sigs, now),
            Err(SignatureError::Malformed)
        );
        let mut no_sig = h.clone();
        no_sig.remove(SIGNATURE_HEADER);
        assert_eq!(
            check("GET", PQ, "order", &no_sig, now),
            Err(SignatureError::Missing)
        );
        // the old unbound format, and garbage, are not signatures
        let v1 = sig.to_str().unwrap().replace("v2=", "v1=");
        for bad in [
            v1.as_str(),
            "garbage",
            "t=+1750000000,h=x-user-id,v2=00",
            "t=1750000000,t=1750000000,h=x-user-id,v2=00",
            "t=1750000000,h=x-user-id,v2=zz",
        ] {
            let mut m = h.clone();
            m.insert(SIGNATURE_HEADER, HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                check("GET", PQ, "order", &m, now),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn fields_that_span_lines_are_never_signed() {
        let s = signer();
        for b in [
            Binding {
                service: "ord\ner",
                ..binding()
            },
            Binding {
                request_id: "a\rb",
                ..binding()
            },
        ] {
            assert!(s.sign(&identity(), &b, T).is_none());
        }
    }

    /// The worked example of docs/auth.md: keep them in step.
    #[test]
    fn the_documented_example_holds() {
        let b = Binding {
            method: "POST",
            path_and_query: "/orders?dry_run=1",
            service: "order",
            request_id: "0b6f2c1e-6a6f-4a43-9d36-2f3f1c9e8a10",
        };
        let signed = [
            ("authenticated-user", "ada@example.com"),
            ("x-user-id", "42"),
            ("x-user-roles", "USER"),
        ];
        let canonical = canonical_string(1_767_225_600, &b, &signed).unwrap();
        assert_eq!(
            canonical,
            "gateway-identity-v2\n1767225600\nPOST\n/orders?dry_run=1\norder\n\
             0b6f2c1e-6a6f-4a43-9d36-2f3f1c9e8a10\nauthenticated-user:ada@example.com\n\
             x-user-id:42\nx-user-roles:USER\n"
        );
        let names = signed.map(|(n, _)| HeaderName::from_static(n)).to_vec();
        let identity: Vec<_> = signed
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect();
        let s = IdentitySigner::new(
            HeaderName::from_static(SIGNATURE_HEADER),
            b"demo-only-gateway-signing-secret",
            names,
        )
        .unwrap();
        let v = s.sign(&identity, &b, 1_767_225_600).unwrap();
        let mut mac = HmacSha256::new_from_slice(b"demo-only-gateway-signing-secret").unwrap();
        mac.update(canonical.as_bytes());
        let tag = hex::encode(mac.finalize().into_bytes());
        assert_eq!(
            v.to_str().unwrap(),
            format!("t=1767225600,h=authenticated-user;x-user-id;x-user-roles,v2={tag}")
        );
        assert_eq!(tag, DOC_TAG, "update docs/auth.md with the new value");
    }

    const DOC_TAG: &str = "2a07fa3d90bd1b7e85abb9c45cec3590e27858fc2dddb2ffee3f106d68688a18";
}
