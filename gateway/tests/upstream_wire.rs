//! The request a service receives and the answer a client reads, byte for byte: a
//! backend that records the raw request head it read and writes a raw answer (no HTTP
//! library in between to merge, reorder or re-case anything), behind the real binary.
//!
//! The gateway builds the upstream request as plain `http` parts: every header the
//! client sent arrives once with its value intact, every header the gateway adds
//! (`X-Forwarded-*`, `X-Request-Id`, `traceparent`, the route's rules, the verified
//! identity and its signature) arrives exactly once, names go out lowercase except
//! the standard ones Pingora title-cases (`Host`, `Content-Type`, ...), and an
//! absolute-form target goes out in origin-form with its authority as `Host`. The
//! answer is edited the same way: the service's headers and reason phrase reach the
//! client intact, the route's rules and `X-Request-Id` apply once, names lowercase
//! but for Pingora's title-cased standard ones.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugins::auth::mint::{mint_token, MintOptions};
use testkit::config::{
    identity_headers, jwt_auth, AuthConfig, GatewayConfigBuilder, HeaderRulesConfig,
    IdentityConfig, RouteBuilder, ServiceBuilder, SignatureConfig,
};
use testkit::GatewayProcess;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const SECRET: &str = "wire-test-secret-0123456789abcdef0123";
const SIGNATURE: &str = "x-gateway-signature";

/// What the recorder answers unless told otherwise.
const ANSWER_OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A backend that answers every request with the same raw bytes (`200 ok` unless
/// told otherwise) and keeps the raw head of each (request line and header lines,
/// as read) with the body it declared.
struct Recorder {
    addr: String,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

#[derive(Clone, Debug)]
struct Recorded {
    /// The request line (an answer's status line).
    line: String,
    /// (name as written, value), in wire order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    /// Every value of `name`, matched without regard to case.
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The one value of `name`; fails when it is absent or repeated.
    fn one(&self, name: &str) -> &str {
        match self.all(name).as_slice() {
            [v] => v,
            other => panic!("{name}: expected one line, got {other:?} in {self:#?}"),
        }
    }

    /// The name as the service read it.
    fn spelling(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(n, _)| n.as_str())
            .unwrap_or_else(|| panic!("{name} not sent: {self:#?}"))
    }
}

impl Recorder {
    fn start() -> Self {
        Self::answering(ANSWER_OK)
    }

    fn answering(answer: &[u8]) -> Self {
        let answer: Arc<[u8]> = answer.into();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the recorder");
        let addr = listener.local_addr().expect("its address").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (log, answer) = (log.clone(), answer.clone());
                std::thread::spawn(move || serve(conn, &log, &answer));
            }
        });
        Recorder { addr, seen }
    }

    fn last(&self) -> Recorded {
        self.seen
            .lock()
            .expect("recorder lock")
            .last()
            .cloned()
            .expect("the service got no request")
    }

    fn count(&self) -> usize {
        self.seen.lock().expect("recorder lock").len()
    }
}

/// Keep-alive: requests on one connection are recorded in turn.
fn serve(conn: TcpStream, log: &Mutex<Vec<Recorded>>, answer: &[u8]) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').expect("a header line has a colon");
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0usize);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let line = line.trim_end().to_string();
        log.lock().expect("recorder lock").push(Recorded {
            line,
            headers,
            body,
        });
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

fn token(sub: &str) -> String {
    mint_token(&MintOptions {
        email: Some(format!("{sub}@example.com")),
        roles: vec!["USER".into()],
        ..MintOptions::hs256(SECRET, sub)
    })
    .expect("a dev token")
}

/// Write `request` on a new connection; the raw answer.
fn exchange(gw: &GatewayProcess, request: impl AsRef<[u8]>) -> String {
    let mut s = TcpStream::connect(gw.addr()).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    s.write_all(request.as_ref()).expect("write the request");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

fn gateway(recorder: &Recorder) -> GatewayProcess {
    let yaml = GatewayConfigBuilder::new()
        .admin()
        .service("rec", ServiceBuilder::instances([recorder.addr.clone()]))
        .auth(AuthConfig {
            identity: IdentityConfig {
                headers: identity_headers(),
                signature: Some(SignatureConfig::with_secret(
                    "wire-signature-secret-0123456789",
                )),
                ..IdentityConfig::default()
            },
            ..jwt_auth(SECRET)
        })
        .route(
            RouteBuilder::to("rec")
                .id("api")
                .prefix("/api/")
                .protected()
                .request_headers(|r| {
                    r.set.insert("X-Set".into(), "set-by-route".into());
                    r.add.insert("X-Add".into(), "added-by-route".into());
                    r.remove.push("X-Drop".into());
                }),
        )
        .route(RouteBuilder::to("rec").id("rest").prefix("/"))
        .yaml();
    GatewayProcess::start(BIN, &yaml)
}

/// Write `head` (and `body`) on a new connection; the status of the answer.
fn send(gw: &GatewayProcess, head: &str, body: &[u8]) -> u16 {
    let text = exchange(gw, [head.as_bytes(), body].concat());
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"))
}

/// The headers the gateway adds to every proxied request: each exactly once.
fn assert_gateway_headers(r: &Recorded) {
    assert_eq!(r.one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(r.one("x-forwarded-proto"), "http");
    let id = r.one("x-request-id");
    assert_eq!(id.len(), 36, "a generated UUID: {id}");
    let parent = r.one("traceparent");
    assert_eq!(parent.len(), 55, "{parent}");
    for name in ["x-forwarded-for", "x-request-id", "traceparent"] {
        assert_eq!(r.spelling(name), name, "added names go out lowercase");
    }
}

#[test]
fn every_client_header_arrives_once_and_every_added_header_once() {
    let rec = Recorder::start();
    let gw = gateway(&rec);

    // mixed-case names, a repeated header, a header the route removes, 60 more
    // than the engine's initial map holds
    let mut head = String::from(
        "GET /pub/items?x=1&y=2 HTTP/1.1\r\nHost: wire.test:8080\r\nUser-Agent: Wire/1\r\n\
         X-Mixed-Case: Keep-This-Value\r\naccept: */*\r\nX-List: a\r\nX-List: b\r\n\
         Content-Type: text/plain\r\nContent-Length: 5\r\n",
    );
    for i in 0..60 {
        head.push_str(&format!("X-Extra-{i}: value-{i}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    assert_eq!(send(&gw, &head, b"hello"), 200);

    let r = rec.last();
    assert_eq!(r.line, "GET /pub/items?x=1&y=2 HTTP/1.1");
    assert_eq!(r.one("host"), "wire.test:8080");
    assert_eq!(r.spelling("host"), "Host");
    assert_eq!(r.one("content-type"), "text/plain");
    assert_eq!(r.spelling("content-type"), "Content-Type");
    assert_eq!(r.one("x-forwarded-host"), "wire.test:8080");
    assert_eq!(r.one("user-agent"), "Wire/1");
    assert_eq!(
        r.one("x-mixed-case"),
        "Keep-This-Value",
        "values keep their case"
    );
    assert_eq!(r.one("accept"), "*/*");
    assert_eq!(
        r.all("x-list"),
        ["a", "b"],
        "repeated lines keep their order"
    );
    for i in 0..60 {
        assert_eq!(r.one(&format!("x-extra-{i}")), format!("value-{i}"));
    }
    assert_eq!(r.body, b"hello");
    assert_gateway_headers(&r);
    // the public route has no rules and no identity
    assert!(r.all("x-set").is_empty() && r.all("authenticated-user").is_empty());
    // nothing the client did not send and the gateway did not add
    // the client's lines (but `Connection`, hop-by-hop) and the five the gateway adds
    let expected = 8 + 60 + 5;
    assert_eq!(r.headers.len(), expected, "{:#?}", r.headers);
}

#[test]
fn rules_and_identity_go_out_once_beside_the_added_headers() {
    let rec = Recorder::start();
    let gw = gateway(&rec);
    let head = format!(
        "POST /api/orders HTTP/1.1\r\nHost: wire.test\r\nAuthorization: Bearer {}\r\n\
         X-Set: from-client\r\nX-Add: from-client\r\nX-Drop: gone\r\n\
         Authenticated-User: spoofed@example.com\r\nContent-Length: 2\r\n\
         Connection: close\r\n\r\n",
        token("ann")
    );
    assert_eq!(send(&gw, &head, b"{}"), 200);

    let r = rec.last();
    assert_eq!(r.line, "POST /api/orders HTTP/1.1");
    assert_gateway_headers(&r);
    assert_eq!(r.one("x-set"), "set-by-route", "set replaces the client's");
    assert_eq!(r.all("x-add"), ["from-client", "added-by-route"]);
    assert!(r.all("x-drop").is_empty(), "removed by the route");
    assert_eq!(r.one("authenticated-user"), "ann@example.com");
    assert!(!r.one(SIGNATURE).is_empty(), "the identity is signed");
    assert_eq!(r.body, b"{}");
}

#[test]
fn an_absolute_form_target_goes_out_in_origin_form() {
    let rec = Recorder::start();
    let gw = gateway(&rec);
    let head = "GET http://wire.test:9000/pub/a?b=c HTTP/1.1\r\nHost: wire.test:9000\r\n\
                Connection: close\r\n\r\n";
    assert_eq!(send(&gw, head, b""), 200);
    let r = rec.last();
    assert_eq!(r.line, "GET /pub/a?b=c HTTP/1.1");
    assert_eq!(r.one("host"), "wire.test:9000");
    assert_gateway_headers(&r);
}

#[test]
fn keep_alive_requests_each_get_their_own_headers() {
    let rec = Recorder::start();
    let gw = gateway(&rec);
    let mut s = TcpStream::connect(gw.addr()).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let mut reader = BufReader::new(s.try_clone().expect("a second handle"));
    let mut ids = Vec::new();
    for i in 0..3 {
        let head =
            format!("GET /pub/{i} HTTP/1.1\r\nHost: wire.test\r\nX-Request-Id: req-{i}\r\n\r\n");
        s.write_all(head.as_bytes()).expect("write");
        // the answer: status line, headers, `ok`
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("an answer line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().expect("a length");
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("the body");
        let r = rec.last();
        assert_eq!(r.line, format!("GET /pub/{i} HTTP/1.1"));
        ids.push(r.one("x-request-id").to_string());
        assert_eq!(r.all("x-forwarded-for"), ["127.0.0.1"]);
    }
    assert_eq!(ids, ["req-0", "req-1", "req-2"]);
    assert_eq!(rec.count(), 3);
}

/// The answer as the client read it: its status line, header lines and body.
fn parse_answer(raw: &str) -> Recorded {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer head");
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .map(|h| {
            let (name, value) = h.split_once(':').expect("a header line has a colon");
            (name.to_string(), value.trim().to_string())
        })
        .collect();
    Recorded {
        line,
        headers,
        body: body.as_bytes().to_vec(),
    }
}

/// A gateway with one route to `rec`, with `rules` for its answers.
fn answering_gateway(rec: &Recorder, rules: impl FnOnce(&mut HeaderRulesConfig)) -> GatewayProcess {
    let yaml = GatewayConfigBuilder::new()
        .service("rec", ServiceBuilder::instances([rec.addr.clone()]))
        .route(
            RouteBuilder::to("rec")
                .id("rest")
                .prefix("/")
                .response_headers(rules),
        )
        .yaml();
    GatewayProcess::start(BIN, &yaml)
}

#[test]
fn the_answer_keeps_the_services_headers_and_reason_and_gets_the_added_ones_once() {
    let rec = Recorder::answering(
        b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\nX-Service-Thing: Mixed-Value\r\n\
          Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Drop-Me: gone\r\nX-Replace-Me: old\r\n\
          X-Request-Id: from-the-service\r\nETag: \"v1\"\r\n\r\nok",
    );
    let gw = answering_gateway(&rec, |r| {
        r.set.insert("X-Replace-Me".into(), "by-route".into());
        r.add.insert("Set-Cookie".into(), "c=3".into());
        r.remove.push("x-drop-me".into());
    });
    let raw = exchange(
        &gw,
        "GET /x HTTP/1.1\r\nHost: wire.test\r\nX-Request-Id: client-7\r\nConnection: close\r\n\r\n",
    );
    let a = parse_answer(&raw);
    assert_eq!(
        a.line, "HTTP/1.1 200 Fine Thanks",
        "the service's reason phrase"
    );
    assert_eq!(
        a.one("x-service-thing"),
        "Mixed-Value",
        "values keep their case"
    );
    assert_eq!(a.one("etag"), "\"v1\"");
    assert_eq!(
        a.all("set-cookie"),
        ["a=1", "b=2", "c=3"],
        "repeated lines keep their order; the route's is added"
    );
    assert_eq!(
        a.one("x-replace-me"),
        "by-route",
        "set replaces the service's"
    );
    assert!(a.all("x-drop-me").is_empty(), "removed by the route: {raw}");
    assert_eq!(a.one("x-request-id"), "client-7", "the request's id, once");
    assert_eq!(a.one("content-length"), "2");
    assert_eq!(a.body, b"ok");
    // names: lowercase, but for the standard ones Pingora title-cases
    assert_eq!(a.spelling("content-length"), "Content-Length");
    assert_eq!(a.spelling("set-cookie"), "Set-Cookie");
    for name in ["x-service-thing", "x-request-id", "x-replace-me", "etag"] {
        assert_eq!(a.spelling(name), name);
    }

    // a status without a standard reason keeps the service's, and one with the
    // standard reason is written as it was
    for (answer, line) in [
        (
            &b"HTTP/1.1 599 Custom Trouble\r\nContent-Length: 0\r\n\r\n"[..],
            "HTTP/1.1 599 Custom Trouble",
        ),
        (
            &b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"[..],
            "HTTP/1.1 404 Not Found",
        ),
    ] {
        let rec = Recorder::answering(answer);
        let gw = answering_gateway(&rec, |_| {});
        let raw = exchange(
            &gw,
            "GET /x HTTP/1.1\r\nHost: wire.test\r\nConnection: close\r\n\r\n",
        );
        let a = parse_answer(&raw);
        assert_eq!(a.line, line);
        assert_eq!(a.one("x-request-id").len(), 36, "a generated id: {raw}");
    }
}

/// The gateway neither compresses nor decompresses: a service's encoded answer and
/// its plain one reach a client that accepts gzip byte for byte, with the service's
/// `Content-Encoding` (or none) and `Content-Length`.
#[test]
fn answers_keep_the_services_encoding_and_length() {
    let plain = "compressible text ".repeat(120);
    let plain_answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{plain}",
        plain.len()
    );
    let encoded_body = "gzip bytes as the service made them";
    let encoded_answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n\
         Vary: Accept-Encoding\r\nContent-Length: {}\r\n\r\n{encoded_body}",
        encoded_body.len()
    );
    for (answer, body, encoding) in [
        (plain_answer, plain.as_str(), None),
        (encoded_answer, encoded_body, Some("gzip")),
    ] {
        let rec = Recorder::answering(answer.as_bytes());
        let gw = answering_gateway(&rec, |_| {});
        let raw = exchange(
            &gw,
            "GET /x HTTP/1.1\r\nHost: wire.test\r\nAccept-Encoding: gzip, br, zstd\r\n\
             Connection: close\r\n\r\n",
        );
        let a = parse_answer(&raw);
        assert_eq!(a.line, "HTTP/1.1 200 OK", "{raw}");
        assert_eq!(
            rec.last().all("accept-encoding"),
            ["gzip, br, zstd"],
            "the client's Accept-Encoding reaches the service"
        );
        let got: Vec<&str> = a.all("content-encoding");
        assert_eq!(got, encoding.into_iter().collect::<Vec<_>>(), "{raw}");
        assert_eq!(a.one("content-length"), body.len().to_string());
        assert!(a.all("transfer-encoding").is_empty(), "{raw}");
        assert_eq!(a.body, body.as_bytes(), "the body as the service sent it");
    }
}

#[test]
fn the_gateways_own_answers_spell_their_headers_as_proxied_ones_do() {
    let rec = Recorder::start();
    let gw = gateway(&rec);
    // refused before any service: a dot segment in the path
    let raw = exchange(
        &gw,
        "GET /pub/../admin HTTP/1.1\r\nHost: wire.test\r\nConnection: close\r\n\r\n",
    );
    let a = parse_answer(&raw);
    assert!(a.line.starts_with("HTTP/1.1 400"), "{raw}");
    assert_eq!(a.spelling("x-request-id"), "x-request-id");
    assert_eq!(a.spelling("content-type"), "Content-Type");
    assert_eq!(a.one("content-type"), "application/json");
    let length: usize = a.one("content-length").parse().expect("a length");
    assert_eq!(a.body.len(), length, "{raw}");
    assert_eq!(rec.count(), 0, "nothing reached the service");
}
