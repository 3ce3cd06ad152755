//! JWT verification per algorithm (HS256, RS256, ES256), through the compiled
//! `jwt` route plugin (token lookup, verify, claims, identity headers), with and
//! without the verified-token cache; and the revocation check in mirror mode
//! (local map) against lookup mode (one Redis round trip), on a real
//! `redis-server` started on a free port (skipped when it is not installed).

use std::future::Future;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, Uri};
use plugins::auth::config::RevocationConfig;
use plugins::auth::mint::{mint_token, MintKey, MintOptions};
use plugins::revocation::Revocation;
use plugins::{AuthConfig, AuthRuntime, Flow, Plugin, PluginOutput, RequestView, RouteAuthConfig};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

fn root(rel: &str) -> String {
    format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// Poll once (static keys and the mirror never wait); block only if it must.
fn run_now<F: Future>(f: F, rt: &tokio::runtime::Runtime) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => rt.block_on(f),
    }
}

fn token(alg: &str, key: MintKey) -> String {
    mint_token(&MintOptions {
        alg: alg.into(),
        key,
        sub: "42".into(),
        email: Some("ada@example.com".into()),
        roles: vec!["USER".into(), "ADMIN".into()],
        ttl: Duration::from_secs(3600),
        iss: Some(format!("iss-{alg}")),
        aud: Some("gateway".into()),
        kid: None,
        jti: true,
        extra: Default::default(),
    })
    .expect("mint a bench token")
}

/// The `jwt` plugin of a route accepting issuers for HS256, RS256 and ES256.
fn plugin(rt: &tokio::runtime::Runtime, cache_entries: usize) -> Arc<dyn Plugin> {
    let cfg = serde_json::json!({
        "issuers": [
            {"name": "hs", "issuer": "iss-HS256", "audiences": ["gateway"], "algorithms": ["HS256"], "secret": SECRET},
            {"name": "rs", "issuer": "iss-RS256", "audiences": ["gateway"], "algorithms": ["RS256"],
             "public_key_file": root("config/demo-keys/member-public.pem")},
            {"name": "es", "issuer": "iss-ES256", "audiences": ["gateway"], "algorithms": ["ES256"],
             "public_key_file": root("gateway/tests/keys/es-a-public.pem")}
        ],
        "identity": {"headers": {"Authenticated-User": "{email}", "X-User-Id": "{sub}", "X-User-Roles": "{roles}"}},
        "cache": {"max_entries": cache_entries}
    });
    let cfg: AuthConfig = serde_json::from_value(cfg).expect("bench auth config");
    let auth = AuthRuntime::compile(Some(&cfg), None, rt.handle()).expect("compile auth");
    auth.activate(rt.handle());
    let route: RouteAuthConfig = serde_json::from_str(r#"{"jwt":{}}"#).expect("route policy");
    auth.route_plugins(&route, "bench")
        .expect("route plugins")
        .pop()
        .expect("one jwt plugin")
}

fn verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rsa = std::fs::read(root("config/demo-keys/member-private.pem")).expect("demo RSA key");
    let ec = std::fs::read(root("gateway/tests/keys/es-a-private.pem")).expect("test EC key");
    let tokens = [
        ("HS256", token("HS256", MintKey::Secret(SECRET.into()))),
        ("RS256", token("RS256", MintKey::PrivateKeyPem(rsa))),
        ("ES256", token("ES256", MintKey::PrivateKeyPem(ec))),
    ];
    let uri: Uri = "/api/orders".parse().expect("uri");
    let mut g = c.benchmark_group("jwt_verify");
    for (cache, label) in [(0, "no_cache"), (10_000, "cache")] {
        let p = plugin(&rt, cache);
        for (alg, t) in &tokens {
            let mut headers = HeaderMap::new();
            headers.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
            );
            let view = RequestView {
                method: &Method::GET,
                uri: &uri,
                headers: &headers,
                client_ip: None,
            };
            g.bench_function(format!("{alg}/{label}"), |b| {
                b.iter(|| {
                    let mut out = PluginOutput::default();
                    let flow = run_now(p.on_request(&view, &mut out), &rt);
                    assert!(matches!(flow, Flow::Continue));
                    std::hint::black_box(out);
                })
            });
        }
    }
    g.finish();
}

/// A throw-away `redis-server` on a free port.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Option<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let r = Redis(child, port);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(r)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn revocation(c: &mut Criterion) {
    let Some(redis) = Redis::start() else {
        eprintln!(
            "revocation_check: redis-server not available (apt-get install redis-server); skipped"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // lookup mode's timeout needs the runtime's timer, as on the gateway's workers
    let _enter = rt.enter();
    let t = token("HS256", MintKey::Secret(SECRET.into()));
    let mut g = c.benchmark_group("revocation_check");
    for mode in ["mirror", "lookup"] {
        let cfg: RevocationConfig = serde_json::from_value(serde_json::json!({
            "redis_url": format!("redis://127.0.0.1:{}", redis.1),
            "mode": mode,
        }))
        .expect("revocation config");
        let rev =
            Revocation::compile(&cfg, None, rt.handle(), "bench").expect("compile revocation");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rev.is_ready() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let iat = Some(1_700_000_000.0);
        g.bench_function(mode, |b| {
            b.iter(|| {
                let v = run_now(rev.check(&t, Some("jti-1"), Some("42"), iat), &rt);
                std::hint::black_box(v);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, verify, revocation);
criterion_main!(benches);
