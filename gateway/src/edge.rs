//! Client header hygiene, the first thing `early_request_filter` does (before the
//! route is selected): what a client may not tell a service, and who the client is.
//!
//! The policy, in order:
//! 1. **Identity headers** (the ones the auth section injects, the signature, and
//!    `identity.strip`) are removed from every request, on every route, in every
//!    spelling a backend could fold into the same name: any case, and `_` or `.` in
//!    place of `-` (CGI/WSGI/PHP servers read `Authenticated_User` as
//!    `HTTP_AUTHENTICATED_USER`, the same variable as `Authenticated-User`).
//! 2. **Override headers** that make some frameworks act on another method or URL
//!    than the one routed (`X-HTTP-Method-Override`, `X-Original-URL`, ...) are
//!    removed from every request: a route's `methods` and path are what the service
//!    acts on.
//! 3. **Forwarded headers** (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, ...) are
//!    removed unless the peer is in `server.trusted_proxies`; the upstream stage then
//!    sets the gateway's own view. From a trusted peer they are kept, and the client
//!    address is taken from `X-Forwarded-For`: the right-most address that is not a
//!    trusted proxy (nginx's `real_ip_recursive on`).
//! 4. **Other names with `_`** follow `server.headers_with_underscores`: `drop`
//!    (default, as nginx's `underscores_in_headers off`), `reject` (400
//!    `invalid_header`) or `allow`.
//!
//! Matching never allocates on a request without such headers; a removal allocates
//! a small list only when there is something to remove.
//!
//! The same pass notes which of the headers later stages read the client sent
//! ([`Seen`]: `X-Request-Id`, `traceparent`, `tracestate`, `Content-Length`), so a
//! stage skips its own lookup of a header that is not there; most clients send none
//! of the first three, and a request without a body none of the last.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use pingora_http::RequestHeader;

/// What to do with a client header whose name contains `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnderscoreHeaders {
    /// Remove the header, keep serving the request (nginx's default).
    #[default]
    Drop,
    /// Refuse the request with 400 `invalid_header`.
    Reject,
    /// Forward it (identity and forwarded-header twins are still removed).
    Allow,
}

/// Headers that ask some frameworks to act on another method or URL than the
/// request line's (Express `method-override`, Jersey, Symfony/Zend, IIS rewrite).
const OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
];

/// The forwarded-for/host/proto family: trusted from trusted proxies only.
const FORWARDED_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-server",
    "x-real-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "true-client-ip",
    "x-original-forwarded-for",
];

/// The compiled header hygiene policy of one config.
#[derive(Debug, Clone)]
pub struct EdgePolicy {
    /// Removed from every request: identity headers and override headers.
    always: Vec<HeaderName>,
    /// Removed unless the peer is a trusted proxy.
    forwarded: Vec<HeaderName>,
    /// `always` and `forwarded` as one map, for the test each client header goes
    /// through: `http` hashes a standard name by its index and a custom one with
    /// FNV-1a, where scanning both lists compared every client header with ~20
    /// names. Complete unless the lists pass `http`'s map limit (32,768 names);
    /// then only the lists are used.
    classes: HeaderMap<Class>,
    classes_complete: bool,
    /// `always` and `forwarded` folded (lowercase, `_`/`.` as `-`), to catch twins.
    always_folded: Vec<String>,
    forwarded_folded: Vec<String>,
    trusted: Vec<IpNet>,
    underscores: UnderscoreHeaders,
}

/// Which list a header name is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Removed from every request.
    Always,
    /// Removed unless the peer is a trusted proxy.
    Forwarded,
    /// Kept, and noted for the stages that read it.
    Noted(Seen),
}

impl Class {
    /// Whether a client header of `class` (None: on no list) is removed from a
    /// request whose peer is trusted or not.
    fn removes(class: Option<&Class>, trusted_peer: bool) -> bool {
        match class {
            Some(Class::Always) => true,
            Some(Class::Forwarded) => !trusted_peer,
            Some(Class::Noted(_)) | None => false,
        }
    }
}

/// Which of the client headers later stages read are in a request, as the hygiene
/// pass saw them (after its removals). A header not seen is not in the request; a
/// header seen may be (look it up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen(u8);

impl Seen {
    pub const REQUEST_ID: Seen = Seen(1);
    pub const TRACEPARENT: Seen = Seen(2);
    pub const TRACESTATE: Seen = Seen(4);
    pub const CONTENT_LENGTH: Seen = Seen(8);
    /// Nothing is known: every header may be there.
    pub const ANY: Seen = Seen(15);

    /// Whether the client may have sent `header` (one of the constants).
    pub fn may_have(self, header: Seen) -> bool {
        self.0 & header.0 != 0
    }
}

/// The headers [`Seen`] notes, by name.
const NOTED_HEADERS: &[(&str, Seen)] = &[
    ("x-request-id", Seen::REQUEST_ID),
    ("traceparent", Seen::TRACEPARENT),
    ("tracestate", Seen::TRACESTATE),
    ("content-length", Seen::CONTENT_LENGTH),
];

/// A request refused by the header policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHeader {
    /// The offending header name, for the message.
    pub name: String,
}

impl EdgePolicy {
    /// `identity`: every header the auth section sets or strips.
    pub fn new(
        identity: &[HeaderName],
        trusted: Vec<IpNet>,
        underscores: UnderscoreHeaders,
    ) -> Self {
        let mut always: Vec<HeaderName> = identity.to_vec();
        always.extend(OVERRIDE_HEADERS.iter().map(|h| HeaderName::from_static(h)));
        always.dedup();
        let forwarded: Vec<HeaderName> = FORWARDED_HEADERS
            .iter()
            .map(|h| HeaderName::from_static(h))
            .collect();
        let fold_all = |v: &[HeaderName]| v.iter().map(|h| fold(h.as_str())).collect();
        // the noted names go in first and `always` last: a name on a list is removed
        // (and so never seen), and a name on both lists is removed from every request
        let mut classes = HeaderMap::<Class>::default();
        let noted = NOTED_HEADERS
            .iter()
            .map(|&(name, seen)| (HeaderName::from_static(name), Class::Noted(seen)));
        let classes_complete = noted
            .chain(forwarded.iter().map(|n| (n.clone(), Class::Forwarded)))
            .chain(always.iter().map(|n| (n.clone(), Class::Always)))
            .all(|(name, class)| classes.try_insert(name, class).is_ok());
        Self {
            always_folded: fold_all(&always),
            forwarded_folded: fold_all(&forwarded),
            always,
            forwarded,
            classes,
            classes_complete,
            trusted,
            underscores,
        }
    }

    /// Why a client header called `name` never reaches route matching, if it does not.
    pub fn never_reaches_routing(&self, name: &str) -> Option<&'static str> {
        let folded = fold(name);
        if self.always_folded.contains(&folded) {
            return Some("identity and method/URL override headers are removed from every client request before routing");
        }
        if self.trusted.is_empty() && self.forwarded_folded.contains(&folded) {
            return Some("forwarded headers are removed from clients that are not in `server.trusted_proxies`, and none is listed");
        }
        if name.contains('_') && self.underscores != UnderscoreHeaders::Allow {
            return Some(
                "headers with `_` are dropped or refused (`server.headers_with_underscores`)",
            );
        }
        None
    }

    /// Whether `ip` is one of `server.trusted_proxies`.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer, or (from a trusted proxy) the right-most
    /// `X-Forwarded-For` entry that is not itself a trusted proxy. Read it before
    /// [`sanitize`](Self::sanitize).
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.map(canonical)?;
        if self.trusted.is_empty() || !self.trusts(peer) {
            return Some(peer);
        }
        let mut client = peer;
        // the last header line holds the hops nearest to us
        let lines = headers.get_all(HeaderName::from_static("x-forwarded-for"));
        for line in lines.iter().rev() {
            let Ok(line) = line.to_str() else {
                return Some(client);
            };
            for entry in line.rsplit(',') {
                let Some(ip) = parse_hop(entry) else {
                    // garbage written by someone we do not trust: stop at the last good hop
                    return Some(client);
                };
                client = ip;
                if !self.trusts(ip) {
                    return Some(client);
                }
            }
        }
        Some(client)
    }

    /// Apply the policy to a client request; `trusted_peer` from [`trusts`](Self::trusts).
    /// `Ok` says which of the noted headers the request still carries.
    pub fn sanitize(
        &self,
        req: &mut RequestHeader,
        trusted_peer: bool,
    ) -> Result<Seen, InvalidHeader> {
        // one pass over what the client sent (a handful of names) instead of a removal
        // (two hash lookups) per name on the lists; most requests carry none of them
        let doomed = |n: &HeaderName| {
            if !self.classes_complete {
                return self.always.contains(n) || (!trusted_peer && self.forwarded.contains(n));
            }
            Class::removes(self.classes.get(n), trusted_peer)
        };
        let mut seen = Seen::default();
        let mut any_doomed = false;
        if self.classes_complete {
            for name in req.headers.keys() {
                let class = self.classes.get(name);
                any_doomed |= Class::removes(class, trusted_peer);
                if let Some(Class::Noted(s)) = class {
                    seen.0 |= s.0;
                }
            }
        } else {
            seen = Seen::ANY;
            any_doomed = req.headers.keys().any(doomed);
        }
        if any_doomed {
            let names: Vec<HeaderName> =
                req.headers.keys().filter(|n| doomed(n)).cloned().collect();
            for name in &names {
                req.remove_header(name);
            }
        }
        // twins and other names with `_` (or `.`): rare, so one scan and no allocation
        let odd = |n: &HeaderName| n.as_str().bytes().any(|b| b == b'_' || b == b'.');
        if !req.headers.keys().any(odd) {
            return Ok(seen);
        }
        let mut remove = Vec::new();
        for name in req.headers.keys().filter(|n| odd(n)) {
            let folded = fold(name.as_str());
            let twin = self.always_folded.contains(&folded)
                || (!trusted_peer && self.forwarded_folded.contains(&folded));
            let underscore = name.as_str().contains('_');
            if twin {
                remove.push(name.clone());
            } else if underscore {
                match self.underscores {
                    UnderscoreHeaders::Drop => remove.push(name.clone()),
                    UnderscoreHeaders::Reject => {
                        return Err(InvalidHeader {
                            name: name.as_str().to_string(),
                        })
                    }
                    UnderscoreHeaders::Allow => {}
                }
            }
        }
        for name in &remove {
            req.remove_header(name);
        }
        Ok(seen)
    }
}

/// The name a CGI-style server would see: lowercase, `_` and `.` read as `-`.
fn fold(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'_' | b'.' => '-',
            b => char::from(b.to_ascii_lowercase()),
        })
        .collect()
}

/// IPv4-mapped IPv6 peers (`::ffff:10.0.0.1` on a dual-stack socket) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` hop: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    e.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| canonical(s.ip()))
}

/// Parse `server.trusted_proxies` entries: CIDRs or single addresses.
pub fn parse_trusted(entries: &[String]) -> (Vec<IpNet>, Vec<(usize, String)>) {
    let mut nets = Vec::new();
    let mut errors = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match e.parse::<IpNet>() {
            Ok(n) => nets.push(n.trunc()),
            Err(_) => match e.parse::<IpAddr>() {
                Ok(ip) => nets.push(IpNet::from(canonical(ip))),
                Err(_) => errors.push((
                    i,
                    format!(
                        "{e:?} is not a CIDR or an IP address (e.g. \"10.0.0.0/8\", \"192.0.2.7\")"
                    ),
                )),
            },
        }
    }
    (nets, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(trusted: &[&str], u: UnderscoreHeaders) -> EdgePolicy {
        let (nets, errs) =
            parse_trusted(&trusted.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(errs.is_empty());
        EdgePolicy::new(
            &[
                HeaderName::from_static("authenticated-user"),
                HeaderName::from_static("x-user-id"),
            ],
            nets,
            u,
        )
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn names(r: &RequestHeader) -> Vec<String> {
        let mut v: Vec<String> = r.headers.keys().map(|k| k.as_str().to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn identity_twins_go_in_every_spelling_and_policy() {
        for u in [
            UnderscoreHeaders::Drop,
            UnderscoreHeaders::Allow,
            UnderscoreHeaders::Reject,
        ] {
            let p = policy(&[], u);
            let mut r = req(&[
                ("Authenticated_User", "admin@example.com"),
                ("AUTHENTICATED-USER", "admin@example.com"),
                ("authenticated.user", "admin@example.com"),
                ("X_USER_ID", "1"),
                ("x-user.id", "1"),
                ("accept", "*/*"),
            ]);
            let out = p.sanitize(&mut r, false);
            assert!(
                out.is_ok(),
                "{u:?}: a twin is removed, never a reason to refuse"
            );
            assert_eq!(names(&r), vec!["accept"], "{u:?}");
        }
    }

    #[test]
    fn other_underscore_headers_follow_the_setting() {
        let h = [("x_custom", "1"), ("accept", "*/*")];
        let mut r = req(&h);
        policy(&[], UnderscoreHeaders::Drop)
            .sanitize(&mut r, false)
            .unwrap();
        assert_eq!(names(&r), vec!["accept"]);
        let mut r = req(&h);
        policy(&[], UnderscoreHeaders::Allow)
            .sanitize(&mut r, false)
            .unwrap();
        assert_eq!(names(&r), vec!["accept", "x_custom"]);
        let mut r = req(&h);
        let e = policy(&[], UnderscoreHeaders::Reject)
            .sanitize(&mut r, false)
            .unwrap_err();
        assert_eq!(e.name, "x_custom");
    }

    #[test]
    fn forwarded_headers_only_from_trusted_peers() {
        let h = [
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil.example"),
            ("X_Forwarded_Proto", "https"),
            ("forwarded", "for=1.2.3.4;proto=https"),
            ("x-real-ip", "1.2.3.4"),
            ("x-http-method-override", "DELETE"),
            ("x-original-url", "/admin"),
        ];
        let p = policy(&["10.0.0.0/8"], UnderscoreHeaders::Allow);
        let mut r = req(&h);
        p.sanitize(&mut r, false).unwrap();
        assert!(names(&r).is_empty(), "{:?}", names(&r));
        let mut r = req(&h);
        p.sanitize(&mut r, true).unwrap();
        assert_eq!(
            names(&r),
            vec![
                "forwarded",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-real-ip",
                "x_forwarded_proto"
            ],
            "override headers go even from trusted proxies"
        );
    }

    #[test]
    fn an_identity_header_named_like_a_forwarded_one_goes_even_from_trusted_peers() {
        let (nets, _) = parse_trusted(&["10.0.0.0/8".to_string()]);
        let p = EdgePolicy::new(
            &[HeaderName::from_static("x-real-ip")],
            nets,
            UnderscoreHeaders::Drop,
        );
        let mut r = req(&[("x-real-ip", "1.2.3.4"), ("x-forwarded-for", "1.2.3.4")]);
        p.sanitize(&mut r, true).unwrap();
        assert_eq!(names(&r), vec!["x-forwarded-for"]);
    }

    #[test]
    fn the_pass_notes_the_headers_later_stages_read() {
        let p = policy(&["10.0.0.0/8"], UnderscoreHeaders::Drop);
        let all = [
            ("X-Request-Id", "abc"),
            (
                "TRACEPARENT",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "a=1"),
            ("Content-Length", "5"),
            ("accept", "*/*"),
        ];
        let mut r = req(&all);
        assert_eq!(p.sanitize(&mut r, false).unwrap(), Seen::ANY);
        // each alone, with and without removals around it
        for (i, (name, value)) in all[..4].iter().enumerate() {
            let mut r = req(&[
                (name, value),
                ("x-forwarded-for", "1.2.3.4"),
                ("x_custom", "1"),
            ]);
            let seen = p.sanitize(&mut r, false).unwrap();
            assert_eq!(seen, Seen(1 << i), "{name}");
        }
        let mut r = req(&[("accept", "*/*"), ("x-request_id", "abc")]);
        assert_eq!(p.sanitize(&mut r, true).unwrap(), Seen::default());
        // a noted name on the identity list is removed, so never seen
        let strip = EdgePolicy::new(
            &[HeaderName::from_static("x-request-id")],
            Vec::new(),
            UnderscoreHeaders::Drop,
        );
        let mut r = req(&[("x-request-id", "abc"), ("tracestate", "a=1")]);
        assert_eq!(strip.sanitize(&mut r, false).unwrap(), Seen::TRACESTATE);
        assert_eq!(names(&r), vec!["tracestate"]);
    }

    #[test]
    fn more_identity_headers_than_a_header_map_holds_are_still_all_removed() {
        // past `http`'s limit of 32,768 names the lists are scanned instead
        let mut identity: Vec<HeaderName> = (0..33_000)
            .map(|i| HeaderName::try_from(format!("x-id-{i}")).unwrap())
            .collect();
        // past the limit, and a forwarded name too: removed even from trusted peers
        identity.push(HeaderName::from_static("x-real-ip"));
        let (nets, _) = parse_trusted(&["10.0.0.0/8".to_string()]);
        let p = EdgePolicy::new(&identity, nets, UnderscoreHeaders::Drop);
        assert!(!p.classes_complete);
        let mut r = req(&[("x-real-ip", "1.2.3.4"), ("x-forwarded-for", "1.2.3.4")]);
        p.sanitize(&mut r, true).unwrap();
        assert_eq!(names(&r), vec!["x-forwarded-for"]);
        let mut r = req(&[
            ("x-id-0", "a"),
            ("x-id-32999", "b"),
            ("x-real-ip", "1.2.3.4"),
            ("x-http-method-override", "DELETE"),
            ("accept", "*/*"),
        ]);
        // past the limit nothing is noted: every later stage looks for itself
        assert_eq!(p.sanitize(&mut r, false).unwrap(), Seen::ANY);
        assert_eq!(names(&r), vec!["accept"]);
        let small = policy(&[], UnderscoreHeaders::Drop);
        assert!(small.classes_complete);
    }

    #[test]
    fn client_ip_walks_the_chain_from_the_right() {
        let p = policy(&["10.0.0.0/8", "192.0.2.7"], UnderscoreHeaders::Drop);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let hm = |lines: &[&str]| {
            let mut m = HeaderMap::new();
            for l in lines {
                m.append("x-forwarded-for", l.parse().unwrap());
            }
            m
        };
        // untrusted peer: the chain is ignored
        assert_eq!(
            p.client_ip(Some(ip("203.0.113.9")), &hm(&["1.1.1.1"])),
            Some(ip("203.0.113.9"))
        );
        // trusted peer: right-most untrusted hop
        assert_eq!(
            p.client_ip(
                Some(ip("10.1.1.1")),
                &hm(&["1.1.1.1, 198.51.100.4, 10.2.2.2"])
            ),
            Some(ip("198.51.100.4"))
        );
        // several header lines, ports and brackets
        assert_eq!(
            p.client_ip(
                Some(ip("10.1.1.1")),
                &hm(&["1.1.1.1", "[2001:db8::5]:443, 192.0.2.7:80"])
            ),
            Some(ip("2001:db8::5"))
        );
        // garbage stops the walk at the last trusted hop
        assert_eq!(
            p.client_ip(Some(ip("10.1.1.1")), &hm(&["1.1.1.1, garbage, 10.2.2.2"])),
            Some(ip("10.2.2.2"))
        );
        // all trusted, or no header: the left-most / the peer
        assert_eq!(
            p.client_ip(Some(ip("10.1.1.1")), &hm(&["10.3.3.3"])),
            Some(ip("10.3.3.3"))
        );
        assert_eq!(
            p.client_ip(Some(ip("10.1.1.1")), &HeaderMap::new()),
            Some(ip("10.1.1.1"))
        );
        // IPv4-mapped peers compare as IPv4
        assert!(p.trusts(ip("::ffff:10.9.9.9")));
    }

    #[test]
    fn trusted_entries_parse_or_say_why() {
        let (nets, errs) = parse_trusted(&[
            "10.0.0.0/8".into(),
            "192.0.2.7".into(),
            "2001:db8::/32".into(),
            "10.0.0.1/8".into(),
            "nope".into(),
            "10.0.0.0/33".into(),
        ]);
        assert_eq!(nets.len(), 4);
        assert_eq!(nets[3].to_string(), "10.0.0.0/8");
        assert_eq!(errs.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![4, 5]);
    }
}
