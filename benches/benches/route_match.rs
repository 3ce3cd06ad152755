//! Route matching over 10 and 1,000 routes: the compiled table (first-segment
//! index, precedence order) against a naive linear scan over the same routes.

use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gateway::config::{self, CompileInput};
use gateway::runtime::RuntimeConfig;
use http::{HeaderMap, HeaderValue, Method};

use benches::configs::{self, GatewayBase};

fn compiled(n: usize, rt: &tokio::runtime::Runtime) -> RuntimeConfig {
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
    let text = configs::gateway_many_routes(&base, n);
    let file = config::parse(&text).expect("bench config parses");
    let _guard = rt.enter();
    config::compile(CompileInput {
        file,
        version: "bench".into(),
        previous: None,
        rt: rt.handle(),
    })
    .expect("bench config compiles")
    .runtime
}

fn route_match(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("bench/1"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    let mut group = c.benchmark_group("route_match");
    for n in [10usize, 1000] {
        let cfg = compiled(n, &rt);
        let table = &cfg.routes;
        // a spread of hits plus one miss
        let mut paths = configs::many_route_paths(n);
        paths.truncate(64);
        paths.push("/nowhere/at/all".into());
        // the naive model must agree with the table before we time either
        for p in &paths {
            let indexed = table.select(&Method::GET, "bench.local", p, &headers);
            let linear = table
                .routes()
                .iter()
                .find(|r| r.matcher.matches(&Method::GET, "bench.local", p, &headers));
            assert_eq!(indexed.map(|r| &r.id), linear.map(|r| &r.id), "{p}");
        }
        group.bench_with_input(BenchmarkId::new("table", n), &paths, |b, paths| {
            b.iter(|| {
                for p in paths {
                    std::hint::black_box(table.select(&Method::GET, "bench.local", p, &headers));
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("linear_scan", n), &paths, |b, paths| {
            b.iter(|| {
                for p in paths {
                    std::hint::black_box(
                        table
                            .routes()
                            .iter()
                            .find(|r| r.matcher.matches(&Method::GET, "bench.local", p, &headers)),
                    );
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, route_match);
criterion_main!(benches);
