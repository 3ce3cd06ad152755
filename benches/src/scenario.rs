//! The targets the harness compares and the scenarios it drives them through.

use http::Method;

/// One thing under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The backend itself: the physical floor.
    Direct,
    /// A bare Pingora `ProxyHttp` (the `pingora-floor` binary): the engine floor.
    Floor,
    /// The gateway on a plain proxy route.
    Gateway,
    /// The gateway on the full pipeline route (JWT + revocation + identity headers).
    Pipeline,
    Nginx,
    Haproxy,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Direct,
        Target::Floor,
        Target::Gateway,
        Target::Pipeline,
        Target::Nginx,
        Target::Haproxy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Floor => "pingora-floor",
            Target::Gateway => "gateway",
            Target::Pipeline => "gateway-pipeline",
            Target::Nginx => "nginx",
            Target::Haproxy => "haproxy",
        }
    }

    /// A target by its name (`floor` is short for `pingora-floor`).
    pub fn parse(s: &str) -> Option<Target> {
        if s == "floor" {
            return Some(Target::Floor);
        }
        Target::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// Which request targets a scenario sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paths {
    /// `/small`: a 13-byte answer.
    Small,
    /// `/64k`: a 64 KiB answer.
    Large,
    /// `/svc{i}/item` over a 1,000-route config.
    ManyRoutes,
}

/// Which `Authorization` header requests carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    /// One token on every request (what a single client sends).
    One,
    /// A different token on (nearly) every request: no cache can hide verification.
    Many,
}

/// What a scenario measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Requests back to back on `connections` connections for each round: CPU per
    /// request, throughput, latency.
    Load,
    /// `connections` clients each send one request and stay connected, idle: the
    /// target's memory growth (see `idle.rs`).
    Idle,
}

/// How the load generator uses its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Keep-alive: every connection carries requests back to back.
    KeepAlive,
    /// A new connection (and, over TLS, a full handshake) per request, closed after
    /// the answer: requests/s is connections/s.
    NewConnection,
}

pub struct Scenario {
    pub key: &'static str,
    pub title: &'static str,
    pub kind: Kind,
    /// TLS terminated at the target (a certificate made at run time).
    pub tls: bool,
    pub reuse: Reuse,
    pub method: Method,
    pub paths: Paths,
    /// Request body size in bytes (0: none).
    pub body: usize,
    pub connections: usize,
    pub tokens: Tokens,
    pub targets: &'static [Target],
}

use Target::*;

/// Clients of the `idle-10k` scenario (`--idle-conns` overrides it).
pub const IDLE_CONNECTIONS: usize = 10_000;

/// Every scenario, in the order they run.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            key: "small-get",
            title: "GET, 13-byte response, 50 connections",
            kind: Kind::Load,
            tls: false,
            reuse: Reuse::KeepAlive,
            method: Method::GET,
            paths: Paths::Small,
            body: 0,
            connections: 50,
            tokens: Tokens::One,
            targets: &[Direct, Floor, Gateway, Pipeline, Nginx, Haproxy],
        },
        Scenario {
            key: "get-64k",
            title: "GET, 64 KiB response, 50 connections",
            kind: Kind::Load,
            tls: false,
            reuse: Reuse::KeepAlive,
            method: Method::GET,
            paths: Paths::Large,
            body: 0,
            connections: 50,
            tokens: Tokens::One,
            targets: &[Direct, Floor, Gateway, Nginx, Haproxy],
        },
        Scenario {
            key: "post-1m",
            title: "POST, 1 MiB request body, 16 connections",
            kind: Kind::Load,
            tls: false,
            reuse: Reuse::KeepAlive,
            method: Method::POST,
            paths: Paths::Small,
            body: 1024 * 1024,
            connections: 16,
            tokens: Tokens::One,
            targets: &[Direct, Floor, Gateway, Nginx, Haproxy],
        },
        Scenario {
            key: "conns-1000",
            title: "GET, 13-byte response, 1,000 keep-alive connections",
            kind: Kind::Load,
            tls: false,
            reuse: Reuse::KeepAlive,
            method: Method::GET,
            paths: Paths::Small,
            body: 0,
            connections: 1000,
            tokens: Tokens::One,
            targets: &[Direct, Floor, Gateway, Pipeline, Nginx, Haproxy],
        },
        Scenario {
            key: "routes-1000",
            title: "GET over a config with 1,000 routes, 50 connections",
            kind: Kind::Load,
            tls: false,
            reuse: Reuse::KeepAlive,
            method: Method::GET,
            paths: Paths::ManyRoutes,
            body: 0,
            connections: 50,
            tokens: Tokens::One,
            targets: &[Direct, Floor, Gateway, Nginx, Haproxy],
        },
        Scenario {
            key: "jwt-tokens",
            title: "GET with a distinct JWT per request (full pipeline), 50 connections",
            kind: Kind::Load,
            tls: false,
            reuse: Reuse::KeepAlive,
            method: Method::GET,
            paths: Paths::Small,
            body: 0,
            connections: 50,
            tokens: Tokens::Many,
            targets: &[Direct, Floor, Pipeline, Nginx],
        },
        Scenario {
            key: "https-keepalive",
            title: "HTTPS (TLS at the target), GET, 13-byte response, 50 keep-alive connections",
            kind: Kind::Load,
            tls: true,
            reuse: Reuse::KeepAlive,
            method: Method::GET,
            paths: Paths::Small,
            body: 0,
            connections: 50,
            tokens: Tokens::One,
            targets: &[Floor, Gateway, Nginx, Haproxy],
        },
        Scenario {
            key: "https-handshake",
            title: "HTTPS, a new TLS connection (full handshake) per GET, 50 at a time: \
                    req/s = handshakes/s",
            kind: Kind::Load,
            tls: true,
            reuse: Reuse::NewConnection,
            method: Method::GET,
            paths: Paths::Small,
            body: 0,
            connections: 50,
            tokens: Tokens::One,
            targets: &[Floor, Gateway, Nginx, Haproxy],
        },
        Scenario {
            key: "idle-10k",
            title: "10,000 keep-alive clients, one GET each, then idle: memory per connection",
            kind: Kind::Idle,
            tls: false,
            reuse: Reuse::KeepAlive,
            method: Method::GET,
            paths: Paths::Small,
            body: 0,
            connections: IDLE_CONNECTIONS,
            tokens: Tokens::One,
            targets: &[Nginx, Haproxy, Floor, Gateway],
        },
    ]
}
