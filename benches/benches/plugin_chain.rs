//! The plugin chain: the cost of running a route's plugins through the
//! `Plugin` trait (a boxed future per plugin), against calling the same no-op
//! stages directly; and the real auth chain (JWT HS256 + identity headers) of a
//! compiled route, with one token and with a distinct token per request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion};
use gateway::config::{self, CompileInput};
use http::{HeaderMap, HeaderValue, Method, Uri};
use plugins::{Flow, Plugin, PluginOutput, RequestView};

use benches::configs::{self, GatewayBase};

struct Noop;

#[async_trait]
impl Plugin for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }
    async fn on_request(&self, req: &RequestView<'_>, _out: &mut PluginOutput) -> Flow {
        std::hint::black_box(req.uri);
        Flow::Continue
    }
}

#[inline(never)]
fn noop_direct(req: &RequestView<'_>) -> Flow {
    std::hint::black_box(req.uri);
    Flow::Continue
}

/// Poll once (plugins that need no IO finish at once); block only if it must wait.
fn run_now<F: Future>(f: F, rt: &tokio::runtime::Runtime) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => rt.block_on(f),
    }
}

async fn run_chain(
    chain: &[Arc<dyn Plugin>],
    view: &RequestView<'_>,
    out: &mut PluginOutput,
) -> bool {
    for p in chain {
        if let Flow::Reject(_) = p.on_request(view, out).await {
            return false;
        }
    }
    true
}

/// The auth route's compiled plugins, or why there are none.
fn auth_chain(rt: &tokio::runtime::Runtime) -> Result<Vec<Arc<dyn Plugin>>, String> {
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let base = GatewayBase {
        listen: addr(18080),
        admin: addr(19090),
        upstreams: [addr(18081), addr(18082)],
        threads: 1,
        work_stealing: true,
        access_log: false,
        tls: None,
    };
    // the pipeline config without the revocation section (no Redis in a micro bench)
    let text = configs::gateway_pipeline(&base, addr(6379))
        .lines()
        .filter(|l| !l.contains("revocation:"))
        .collect::<Vec<_>>()
        .join("\n");
    let file = config::parse(&text).map_err(|e| format!("{e:?}"))?;
    let _guard = rt.enter();
    let cfg = config::compile(CompileInput {
        file,
        version: "bench".into(),
        previous: None,
        rt: rt.handle(),
    })
    .map_err(|e| format!("{e:?}"))?
    .runtime;
    let route = cfg.routes.routes().first().ok_or("no route")?;
    if route.plugins.is_empty() {
        return Err("the route has no plugins (no auth support in this build)".into());
    }
    Ok(route.plugins.clone())
}

fn plugin_chain(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let uri: Uri = "/api/orders?page=2".parse().expect("uri");
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("api.example.com"));
    let view = RequestView {
        method: &Method::GET,
        uri: &uri,
        headers: &headers,
        client_ip: None,
    };

    let mut g = c.benchmark_group("plugin_chain");
    let chain: Vec<Arc<dyn Plugin>> = (0..4).map(|_| Arc::new(Noop) as Arc<dyn Plugin>).collect();
    g.bench_function("noop_x4_dyn_async", |b| {
        b.iter(|| {
            let mut out = PluginOutput::default();
            run_now(run_chain(&chain, &view, &mut out), &rt)
        })
    });
    g.bench_function("noop_x4_direct", |b| {
        b.iter(|| (0..4).all(|_| matches!(noop_direct(&view), Flow::Continue)))
    });

    match auth_chain(&rt) {
        Err(why) => eprintln!("plugin_chain/auth: skipped: {why}"),
        Ok(auth) => {
            let tokens: Vec<HeaderMap> =
                benches::tokens::mint_many(configs::JWT_SECRET, configs::JWT_ISSUER, 10_000)
                    .into_iter()
                    .filter_map(|t| {
                        let mut h = headers.clone();
                        h.insert(
                            "authorization",
                            HeaderValue::from_str(&format!("Bearer {t}")).ok()?,
                        );
                        Some(h)
                    })
                    .collect();
            let check = |h: &HeaderMap| {
                let v = RequestView {
                    method: &Method::GET,
                    uri: &uri,
                    headers: h,
                    client_ip: None,
                };
                let mut out = PluginOutput::default();
                run_now(run_chain(&auth, &v, &mut out), &rt)
            };
            assert!(
                check(&tokens[0]),
                "the bench token must pass the auth chain"
            );
            g.bench_function("jwt_identity_one_token", |b| b.iter(|| check(&tokens[0])));
            let mut k = 0usize;
            g.bench_function("jwt_identity_distinct_tokens", |b| {
                b.iter(|| {
                    k = (k + 1) % tokens.len();
                    check(&tokens[k])
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, plugin_chain);
criterion_main!(benches);
