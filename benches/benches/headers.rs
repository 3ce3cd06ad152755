//! Header rewriting: a route's compiled header rules (names and values parsed
//! once, at config compile time) against parsing the same rules per request, and
//! `X-Forwarded-For` built with `format!` against a fixed-size buffer.

use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::routing::HeaderRules;
use http::{HeaderMap, HeaderName, HeaderValue};

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench/1"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en-US,en;q=0.9"),
        ("x-debug", "1"),
        ("cookie", "session=abc; theme=dark"),
        ("x-forwarded-for", "203.0.113.7"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

const SET: [(&str, &str); 2] = [("x-gateway", "bench"), ("x-env", "prod")];
const ADD: [(&str, &str); 1] = [("via", "1.1 gateway")];
const REMOVE: [&str; 2] = ["x-debug", "x-internal"];

fn compiled_rules() -> HeaderRules {
    let pair = |(k, v): (&'static str, &'static str)| {
        (HeaderName::from_static(k), HeaderValue::from_static(v))
    };
    HeaderRules {
        remove: REMOVE.iter().map(|k| HeaderName::from_static(k)).collect(),
        set: SET.into_iter().map(pair).collect(),
        add: ADD.into_iter().map(pair).collect(),
    }
}

/// The baseline: rules kept as strings and parsed on every request.
fn apply_from_strings(h: &mut HeaderMap) {
    for k in REMOVE {
        if let Ok(name) = HeaderName::from_bytes(k.as_bytes()) {
            h.remove(name);
        }
    }
    for (k, v) in SET {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(n, v);
        }
    }
    for (k, v) in ADD {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.append(n, v);
        }
    }
}

fn xff_format(prev: Option<&HeaderValue>, ip: IpAddr) -> HeaderValue {
    let ip = ip.to_string();
    let s = match prev.and_then(|v| v.to_str().ok()) {
        Some(p) if !p.is_empty() => format!("{p}, {ip}"),
        _ => ip,
    };
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn xff_buffer(prev: Option<&HeaderValue>, ip: IpAddr) -> HeaderValue {
    use std::io::Write;
    let mut buf = [0u8; 256];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let ok = match prev {
        Some(p) if !p.is_empty() => cur
            .write_all(p.as_bytes())
            .and_then(|()| write!(cur, ", {ip}")),
        _ => write!(cur, "{ip}"),
    };
    let n = cur.position() as usize;
    match ok {
        Ok(()) => {
            HeaderValue::from_bytes(&buf[..n]).unwrap_or_else(|_| HeaderValue::from_static("-"))
        }
        Err(_) => xff_format(prev, ip),
    }
}

fn headers(c: &mut Criterion) {
    let rules = compiled_rules();
    let base = request_headers();
    let mut g = c.benchmark_group("header_rules");
    g.bench_function("compiled", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |h| rules.apply(h),
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("parsed_per_request", |b| {
        b.iter_batched_ref(
            || base.clone(),
            apply_from_strings,
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();

    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let prev = base.get("x-forwarded-for").cloned();
    let mut g = c.benchmark_group("x_forwarded_for");
    g.bench_function("format", |b| b.iter(|| xff_format(prev.as_ref(), ip)));
    g.bench_function("stack_buffer", |b| b.iter(|| xff_buffer(prev.as_ref(), ip)));
    g.finish();
}

criterion_group!(benches, headers);
criterion_main!(benches);
