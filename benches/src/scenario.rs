//! The targets the harness compares and the scenarios it drives them through.

use http::Method;

/// One thing under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The backend itself: the physical floor.
    Direct,
    /// The gateway on a plain proxy route.
    Gateway,
    /// The gateway on the full pipeline route (JWT + revocation + identity headers).
    Pipeline,
    Nginx,
    Haproxy,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Direct,
        Target::Gateway,
        Target::Pipeline,
        Target::Nginx,
        Target::Haproxy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Gateway => "gateway",
            Target::Pipeline => "gateway-pipeline",
            Target::Nginx => "nginx",
            Target::Haproxy => "haproxy",
        }
    }

    pub fn parse(s: &str) -> Option<Target> {
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

pub struct Scenario {
    pub key: &'static str,
    pub title: &'static str,
    pub method: Method,
    pub paths: Paths,
    /// Request body size in bytes (0: none).
    pub body: usize,
    pub connections: usize,
    pub tokens: Tokens,
    pub targets: &'static [Target],
}

use Target::*;

/// Every scenario, in the order they run.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            key: "small-get",
            title: "GET, 13-byte response, 50 connections",
            method: Method::GET,
            paths: Paths::Small,
            body: 0,
            connections: 50,
            tokens: Tokens::One,
            targets: &[Direct, Gateway, Pipeline, Nginx, Haproxy],
        },
        Scenario {
            key: "get-64k",
            title: "GET, 64 KiB response, 50 connections",
            method: Method::GET,
            paths: Paths::Large,
            body: 0,
            connections: 50,
            tokens: Tokens::One,
            targets: &[Direct, Gateway, Nginx, Haproxy],
        },
        Scenario {
            key: "post-1m",
            title: "POST, 1 MiB request body, 16 connections",
            method: Method::POST,
            paths: Paths::Small,
            body: 1024 * 1024,
            connections: 16,
            tokens: Tokens::One,
            targets: &[Direct, Gateway, Nginx, Haproxy],
        },
        Scenario {
            key: "conns-1000",
            title: "GET, 13-byte response, 1,000 keep-alive connections",
            method: Method::GET,
            paths: Paths::Small,
            body: 0,
            connections: 1000,
            tokens: Tokens::One,
            targets: &[Direct, Gateway, Pipeline, Nginx, Haproxy],
        },
        Scenario {
            key: "routes-1000",
            title: "GET over a config with 1,000 routes, 50 connections",
            method: Method::GET,
            paths: Paths::ManyRoutes,
            body: 0,
            connections: 50,
            tokens: Tokens::One,
            targets: &[Direct, Gateway, Nginx, Haproxy],
        },
        Scenario {
            key: "jwt-tokens",
            title: "GET with a distinct JWT per request (full pipeline), 50 connections",
            method: Method::GET,
            paths: Paths::Small,
            body: 0,
            connections: 50,
            tokens: Tokens::Many,
            targets: &[Direct, Pipeline, Nginx],
        },
    ]
}
