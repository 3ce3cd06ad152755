//! Config files for the targets: the gateway (plain, full pipeline, 1,000
//! routes), and nginx and haproxy as equivalent plain reverse proxies.
//!
//! Equivalent means: as many workers (nginx `worker_processes N`, haproxy
//! `nbthread N`, gateway `server.threads: N`; 1 unless `--workers`), round robin
//! over the same two backends with keep-alive upstream connections,
//! `X-Forwarded-For`/`-Proto` added, no access log.
//! With TLS, each terminates it with the same certificate and its own library's
//! defaults (nginx and haproxy: OpenSSL; the gateway: rustls), HTTP/1.1 only;
//! nginx 1.22 is told to offer TLS 1.3 (its default stops at 1.2; later versions
//! and the others offer 1.3), so every target negotiates the same protocol.
//! (The Pingora floor takes its few settings on the command line: `setup.rs`.)

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;

use crate::tls::TlsFiles;

/// HMAC secret of the benchmark's token issuer (loopback-only test value).
pub const JWT_SECRET: &str = "bench-only-secret-0123456789abcdef0123456789abcdef";
/// `iss` of the benchmark's tokens.
pub const JWT_ISSUER: &str = "bench";

/// What every gateway config shares.
pub struct GatewayBase {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstreams: [SocketAddr; 2],
    pub threads: usize,
    /// `server.work_stealing` (with more than one thread).
    pub work_stealing: bool,
    pub access_log: bool,
    /// Terminate TLS on the listener with these files (HTTP/1.1 only, like nginx's).
    pub tls: Option<(String, String)>,
}

impl GatewayBase {
    fn head(&self) -> String {
        let tls = match &self.tls {
            Some((cert, key)) => {
                format!(", tls: {{cert: \"{cert}\", key: \"{key}\", http2: false}}")
            }
            None => String::new(),
        };
        format!(
            "server: {{threads: {}, work_stealing: {}, log: {{access_log: {}}}}}\n\
             listeners: [{{address: \"{}\"{tls}}}]\n\
             admin: {{address: \"{}\"}}\n\
             services:\n  echo: {{instances: [\"{}\", \"{}\"]}}\n",
            self.threads,
            self.work_stealing,
            self.access_log,
            self.listen,
            self.admin,
            self.upstreams[0],
            self.upstreams[1]
        )
    }
}

/// (a) the plain route: everything to `echo`, round robin.
pub fn gateway_plain(base: &GatewayBase) -> String {
    format!(
        "{}routes:\n  - {{id: plain, match: {{path: \"/**\"}}, service: echo}}\n",
        base.head()
    )
}

/// A plain config with 1,000 routes (globs, prefixes, exact paths, method
/// conditions); `/svc{i}/item` matches route `r{i}`.
pub fn gateway_many_routes(base: &GatewayBase, n: usize) -> String {
    let mut out = base.head();
    out.push_str("routes:\n");
    for i in 0..n {
        let _ = match i % 4 {
            0 => writeln!(
                out,
                "  - {{id: r{i}, match: {{path: \"/svc{i}/**\"}}, service: echo}}"
            ),
            1 => writeln!(
                out,
                "  - {{id: r{i}, match: {{prefix: \"/svc{i}/\"}}, service: echo}}"
            ),
            2 => writeln!(
                out,
                "  - {{id: r{i}, match: {{path: \"/svc{i}/*\", methods: [GET, HEAD]}}, service: echo}}"
            ),
            _ => writeln!(
                out,
                "  - {{id: r{i}, match: {{path: \"/svc{i}/item\"}}, service: echo}}"
            ),
        };
    }
    out
}

/// Request paths for the 1,000-route scenario (spread over every route).
pub fn many_route_paths(n: usize) -> Vec<String> {
    // a stride co-prime with n visits every route in a scattered order
    (0..n)
        .map(|k| format!("/svc{}/item", (k * 7919) % n))
        .collect()
}

/// (b) the full pipeline: JWT HS256 + revocation mirror (Redis) + identity
/// headers + round robin + metrics.
pub fn gateway_pipeline(base: &GatewayBase, redis: SocketAddr) -> String {
    format!(
        "{}auth:\n\
         \x20 issuers:\n\
         \x20   - {{name: bench, issuer: {JWT_ISSUER}, algorithms: [HS256], secret: \"{JWT_SECRET}\"}}\n\
         \x20 revocation: {{redis_url: \"redis://{redis}\", mode: mirror}}\n\
         \x20 identity:\n\
         \x20   headers: {{authenticated-user: \"{{email}}\", x-user-id: \"{{sub}}\"}}\n\
         routes:\n\
         \x20 - id: pipeline\n\
         \x20   match: {{path: \"/**\"}}\n\
         \x20   service: echo\n\
         \x20   auth: {{jwt: {{issuers: [bench]}}}}\n\
         \x20   request_headers: {{set: {{x-gateway: bench}}, remove: [x-debug]}}\n",
        base.head()
    )
}

/// Stand-in for (b) while the gateway has no JWT support: header rules + round robin.
pub fn gateway_pipeline_fallback(base: &GatewayBase) -> String {
    format!(
        "{}routes:\n\
         \x20 - id: pipeline\n\
         \x20   match: {{path: \"/**\"}}\n\
         \x20   service: echo\n\
         \x20   request_headers: {{set: {{x-gateway: bench}}, remove: [x-debug]}}\n\
         \x20   response_headers: {{set: {{x-content-type-options: nosniff}}}}\n",
        base.head()
    )
}

/// Where a peer proxy (nginx, haproxy) listens and what it must hold.
pub struct PeerListen<'a> {
    pub addr: SocketAddr,
    /// Terminate TLS with these files.
    pub tls: Option<&'a TlsFiles>,
    /// Client connections it must accept at once (raises the defaults, never lowers them).
    pub connections: usize,
    /// nginx worker processes / haproxy threads.
    pub workers: usize,
}

/// nginx as a plain reverse proxy; `routes` > 0 adds that many prefix locations.
pub fn nginx(
    dir: &Path,
    listen: &PeerListen<'_>,
    upstreams: [SocketAddr; 2],
    routes: usize,
) -> String {
    let d = dir.display();
    // worker_connections counts client and upstream connections alike; each is
    // one descriptor, and 20,000 (the default hard limit here) leaves room
    let worker_connections = (listen.connections + 1024).max(8192);
    let nofile = (worker_connections + 1024).max(20000);
    let server_listen = match listen.tls {
        Some(t) => format!(
            "listen {} ssl;\n\
             \x20   ssl_certificate {};\n\
             \x20   ssl_certificate_key {};\n\
             \x20   ssl_protocols TLSv1.2 TLSv1.3;",
            listen.addr,
            t.cert.display(),
            t.key.display()
        ),
        None => format!("listen {};", listen.addr),
    };
    let proxy = "proxy_pass http://backend; proxy_http_version 1.1; \
                 proxy_set_header Connection \"\"; \
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; \
                 proxy_set_header X-Forwarded-Proto $scheme; \
                 proxy_buffering off; proxy_request_buffering off;";
    let mut locations = String::new();
    for i in 0..routes {
        let _ = writeln!(locations, "    location /svc{i}/ {{ {proxy} }}");
    }
    format!(
        "worker_processes {workers};\n\
         daemon off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log warn;\n\
         worker_rlimit_nofile {nofile};\n\
         events {{ worker_connections {worker_connections}; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 client_body_temp_path {d}/nginx-body;\n\
         \x20 proxy_temp_path {d}/nginx-proxy;\n\
         \x20 fastcgi_temp_path {d}/nginx-fastcgi;\n\
         \x20 uwsgi_temp_path {d}/nginx-uwsgi;\n\
         \x20 scgi_temp_path {d}/nginx-scgi;\n\
         \x20 keepalive_requests 1000000;\n\
         \x20 keepalive_timeout 60s;\n\
         \x20 client_max_body_size 8m;\n\
         \x20 upstream backend {{\n\
         \x20   server {};\n\
         \x20   server {};\n\
         \x20   keepalive 256;\n\
         \x20   keepalive_requests 1000000;\n\
         \x20 }}\n\
         \x20 server {{\n\
         \x20   {server_listen}\n\
         {locations}\
         \x20   location / {{ {proxy} }}\n\
         \x20 }}\n\
         }}\n",
        upstreams[0],
        upstreams[1],
        workers = listen.workers.max(1),
    )
}

/// haproxy as a plain reverse proxy; `routes_map` routes by a `map_beg` file.
pub fn haproxy(
    listen: &PeerListen<'_>,
    upstreams: [SocketAddr; 2],
    routes_map: Option<&Path>,
) -> String {
    let routing = match routes_map {
        Some(map) => format!("  use_backend %[path,map_beg({},be)]\n", map.display()),
        None => String::new(),
    };
    let maxconn = (listen.connections + 1024).max(4000);
    // haproxy sizes its open-files limit for two descriptors per connection and
    // by default refuses to start when it cannot raise it that far; idle clients
    // need one each, so past the default let it run with the limit it gets
    let strict = if maxconn > 4000 {
        "  no strict-limits\n"
    } else {
        ""
    };
    let (bind, proto) = match listen.tls {
        Some(t) => (
            format!("{} ssl crt {}", listen.addr, t.combined.display()),
            "https",
        ),
        None => (listen.addr.to_string(), "http"),
    };
    format!(
        "global\n\
         \x20 nbthread {workers}\n\
         \x20 maxconn {maxconn}\n\
         {strict}\
         defaults\n\
         \x20 mode http\n\
         \x20 timeout connect 2s\n\
         \x20 timeout client 30s\n\
         \x20 timeout server 30s\n\
         \x20 timeout http-keep-alive 60s\n\
         \x20 option http-keep-alive\n\
         \x20 option forwardfor\n\
         \x20 http-reuse always\n\
         frontend fe\n\
         \x20 bind {bind}\n\
         \x20 maxconn {maxconn}\n\
         \x20 http-request set-header X-Forwarded-Proto {proto}\n\
         {routing}\
         \x20 default_backend be\n\
         backend be\n\
         \x20 balance roundrobin\n\
         \x20 server b1 {}\n\
         \x20 server b2 {}\n",
        upstreams[0],
        upstreams[1],
        workers = listen.workers.max(1),
    )
}

/// The map file for haproxy's 1,000-route variant.
pub fn haproxy_routes_map(n: usize) -> String {
    (0..n).map(|i| format!("/svc{i}/ be\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(tls: Option<&TlsFiles>, connections: usize) -> PeerListen<'_> {
        PeerListen {
            addr: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls,
            connections,
            workers: 1,
        }
    }

    const UP: [SocketAddr; 2] = [
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1),
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2),
    ];

    #[test]
    fn peers_keep_their_limits_until_more_clients_need_more() {
        let dir = Path::new("/tmp");
        let nginx_50 = nginx(dir, &listen(None, 50), UP, 0);
        assert!(nginx_50.contains("worker_connections 8192;"));
        assert!(nginx_50.starts_with("worker_processes 1;\n"));
        assert!(nginx_50.contains("worker_rlimit_nofile 20000;"));
        let haproxy_50 = haproxy(&listen(None, 50), UP, None);
        assert!(haproxy_50.contains("maxconn 4000\n"));
        assert!(!haproxy_50.contains("strict-limits"));
        assert!(haproxy_50.contains("nbthread 1\n"));
        let two = PeerListen {
            workers: 2,
            ..listen(None, 50)
        };
        assert!(nginx(dir, &two, UP, 0).starts_with("worker_processes 2;\n"));
        assert!(haproxy(&two, UP, None).contains("nbthread 2\n"));

        assert!(nginx(dir, &listen(None, 10_000), UP, 0).contains("worker_connections 11024;"));
        let haproxy_10k = haproxy(&listen(None, 10_000), UP, None);
        assert!(haproxy_10k.contains("maxconn 11024\n"));
        assert!(haproxy_10k.contains("no strict-limits"));
    }

    #[test]
    fn tls_listeners_use_the_generated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = crate::tls::generate(dir.path()).expect("test certificate");
        let n = nginx(dir.path(), &listen(Some(&files), 50), UP, 0);
        assert!(n.contains("listen 127.0.0.1:8443 ssl;"));
        assert!(n.contains(&format!("ssl_certificate {};", files.cert.display())));
        assert!(n.contains("ssl_protocols TLSv1.2 TLSv1.3;"));
        let h = haproxy(&listen(Some(&files), 50), UP, None);
        assert!(h.contains(&format!(
            "bind 127.0.0.1:8443 ssl crt {}",
            files.combined.display()
        )));
        assert!(h.contains("X-Forwarded-Proto https"));
        let base = GatewayBase {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            upstreams: UP,
            threads: 1,
            work_stealing: true,
            access_log: false,
            tls: Some(("c.pem".into(), "k.pem".into())),
        };
        assert!(
            gateway_plain(&base).contains("tls: {cert: \"c.pem\", key: \"k.pem\", http2: false}")
        );
        let pem = std::fs::read_to_string(&files.combined).expect("combined PEM");
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "leaf and CA");
        assert!(pem.contains("PRIVATE KEY"));
    }
}
