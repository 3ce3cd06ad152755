//! The converted config and its YAML text: what `gateway import scg` prints.
//! Every string is written double-quoted (JSON escaping is valid YAML), so regexes
//! and header values survive as written.

use std::fmt::Write;

/// A route path condition.
#[derive(Debug, Clone, PartialEq)]
pub enum PathCond {
    /// Exact or glob (`/a/*/b`, `/a/**`).
    Path(String),
    /// Whole-path regex.
    Regex(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderOps {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    pub attempts: u32,
    pub on_status: Vec<u16>,
    pub non_idempotent: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub requests: u32,
    /// The period of `requests`, in seconds.
    pub per_secs: u32,
    pub burst: u32,
    /// The `key:` value as YAML (`client_ip`, `{header: X-Api-Key}`).
    pub key: String,
}

/// One of our routes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutRoute {
    pub id: String,
    /// Where it came from (a comment in the output).
    pub line: usize,
    pub path: Option<PathCond>,
    pub host: Option<String>,
    pub methods: Vec<String>,
    pub headers: Vec<(String, String)>,
    pub service: String,
    /// A weighted split instead of `service` (from SCG `Weight` groups).
    pub targets: Vec<(String, u32)>,
    pub strip_prefix: Option<String>,
    pub rewrite: Option<(String, String)>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub retries: Option<Retries>,
    pub rate_limit: Option<RateLimit>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    /// Comments for the reader: what was not converted here (also on stderr).
    pub todo: Vec<String>,
}

/// Where a service's instances come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Instances {
    Eureka {
        servers: Vec<String>,
        app: String,
        /// `eureka.client.registry-fetch-interval-seconds`, as a duration.
        interval: Option<String>,
    },
    Static(String),
    Dns {
        host: String,
        port: u16,
    },
    /// `lb://` without a registry we know: a static instance to fill in.
    Placeholder,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutService {
    pub name: String,
    pub instances: Instances,
    pub tls: bool,
    pub circuit_breaker: bool,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
}

/// The whole converted file.
#[derive(Debug, Default)]
pub struct Output {
    pub source_name: String,
    pub listen_port: u16,
    pub redis_url: Option<String>,
    pub services: Vec<OutService>,
    pub routes: Vec<OutRoute>,
}

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The YAML text of `out`.
pub fn render(out: &Output) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Converted from {} by `gateway import scg`: check the notes it printed,\n# then `gateway check` this file. Keys: config/reference.yaml.",
        out.source_name
    );
    let _ = writeln!(
        y,
        "listeners:\n  - address: \"0.0.0.0:{}\"",
        out.listen_port
    );
    let admin = if out.listen_port == 9090 { 9091 } else { 9090 };
    let _ = writeln!(y, "admin:\n  address: \"127.0.0.1:{admin}\"");
    if let Some(url) = &out.redis_url {
        let _ = writeln!(y, "rate_limits:\n  redis_url: {}", q(url));
    }
    y.push_str(if out.services.is_empty() {
        "services: {}\n"
    } else {
        "services:\n"
    });
    for s in &out.services {
        render_service(&mut y, s);
    }
    y.push_str(if out.routes.is_empty() {
        "routes: []\n"
    } else {
        "routes:\n"
    });
    for r in &out.routes {
        render_route(&mut y, r);
    }
    y
}

fn render_service(y: &mut String, s: &OutService) {
    let _ = writeln!(y, "  {}:", q(&s.name));
    match &s.instances {
        Instances::Eureka {
            servers,
            app,
            interval,
        } => {
            let servers: Vec<String> = servers.iter().map(|s| q(s)).collect();
            let _ = writeln!(
                y,
                "    discovery:\n      type: eureka\n      servers: [{}]\n      app: {}",
                servers.join(", "),
                q(app)
            );
            if let Some(i) = interval {
                let _ = writeln!(y, "      interval: {}", q(i));
            }
        }
        Instances::Static(addr) => {
            let _ = writeln!(y, "    instances: [{}]", q(addr));
        }
        Instances::Dns { host, port } => {
            let _ = writeln!(
                y,
                "    discovery:\n      type: dns\n      host: {}\n      port: {port}",
                q(host)
            );
        }
        Instances::Placeholder => {
            let _ = writeln!(
                y,
                "    # TODO: the real instances (or a `discovery:` section, docs/discovery.md)\n    instances: [\"127.0.0.1:8080\"]"
            );
        }
    }
    if s.tls {
        y.push_str("    tls: true\n");
    }
    if let Some(t) = &s.connect_timeout {
        let _ = writeln!(y, "    connect_timeout: {}", q(t));
    }
    if let Some(t) = &s.read_timeout {
        let _ = writeln!(y, "    read_timeout: {}", q(t));
    }
    if s.circuit_breaker {
        // the shared defaults, written out so they can be tuned
        y.push_str(concat!(
            "    circuit_breaker:\n",
            "      failure_ratio: 0.5\n",
            "      slow_call_ratio: 1.0\n",
            "      slow_call_duration: 2s\n",
            "      window: 10s\n",
            "      minimum_calls: 20\n",
            "      open_for: 10s\n",
            "      half_open_calls: 3\n",
        ));
    }
}

fn render_route(y: &mut String, r: &OutRoute) {
    let _ = writeln!(y, "  - id: {}    # line {}", q(&r.id), r.line);
    for t in &r.todo {
        let _ = writeln!(y, "    # TODO: {t}");
    }
    let mut m = Vec::new();
    match &r.path {
        Some(PathCond::Path(p)) => m.push(format!("path: {}", q(p))),
        Some(PathCond::Regex(p)) => m.push(format!("regex: {}", q(p))),
        None => {}
    }
    if let Some(h) = &r.host {
        m.push(format!("host: {}", q(h)));
    }
    if !r.methods.is_empty() {
        let ms: Vec<String> = r.methods.iter().map(|x| q(x)).collect();
        m.push(format!("methods: [{}]", ms.join(", ")));
    }
    if !r.headers.is_empty() {
        let hs: Vec<String> = r
            .headers
            .iter()
            .map(|(n, v)| format!("{}: {}", q(n), q(v)))
            .collect();
        m.push(format!("headers: {{{}}}", hs.join(", ")));
    }
    if !m.is_empty() {
        let _ = writeln!(y, "    match: {{{}}}", m.join(", "));
    }
    if r.targets.is_empty() {
        let _ = writeln!(y, "    service: {}", q(&r.service));
    } else {
        y.push_str("    targets:\n");
        for (s, w) in &r.targets {
            let _ = writeln!(y, "      - {{service: {}, weight: {w}}}", q(s));
        }
    }
    if let Some(p) = &r.strip_prefix {
        let _ = writeln!(y, "    strip_prefix: {}", q(p));
    }
    if let Some((re, with)) = &r.rewrite {
        let _ = writeln!(
            y,
            "    rewrite: {{regex: {}, replacement: {}}}",
            q(re),
            q(with)
        );
    }
    header_ops(y, "request_headers", &r.request_headers);
    header_ops(y, "response_headers", &r.response_headers);
    if r.connect_timeout.is_some() || r.read_timeout.is_some() {
        let mut t = Vec::new();
        if let Some(c) = &r.connect_timeout {
            t.push(format!("connect: {}", q(c)));
        }
        if let Some(c) = &r.read_timeout {
            t.push(format!("read: {}", q(c)));
        }
        let _ = writeln!(y, "    timeouts: {{{}}}", t.join(", "));
    }
    if let Some(rt) = &r.retries {
        let st: Vec<String> = rt.on_status.iter().map(u16::to_string).collect();
        let _ = writeln!(
            y,
            "    retries: {{attempts: {}, on_status: [{}], non_idempotent: {}}}",
            rt.attempts,
            st.join(", "),
            rt.non_idempotent
        );
    }
    if let Some(rl) = &r.rate_limit {
        let _ = writeln!(
            y,
            "    rate_limit: {{scope: cluster, requests: {}, per: {}s, burst: {}, key: {}}}",
            rl.requests, rl.per_secs, rl.burst, rl.key
        );
    }
}

fn header_ops(y: &mut String, key: &str, ops: &HeaderOps) {
    if ops == &HeaderOps::default() {
        return;
    }
    let _ = writeln!(y, "    {key}:");
    for (section, pairs) in [("set", &ops.set), ("add", &ops.add)] {
        if !pairs.is_empty() {
            let ps: Vec<String> = pairs
                .iter()
                .map(|(n, v)| format!("{}: {}", q(n), q(v)))
                .collect();
            let _ = writeln!(y, "      {section}: {{{}}}", ps.join(", "));
        }
    }
    if !ops.remove.is_empty() {
        let rs: Vec<String> = ops.remove.iter().map(|x| q(x)).collect();
        let _ = writeln!(y, "      remove: [{}]", rs.join(", "));
    }
}
