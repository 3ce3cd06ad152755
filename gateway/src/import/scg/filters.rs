//! Spring Cloud Gateway filters -> our route keys: path rewrites (StripPrefix,
//! RewritePath, PrefixPath, SetPath), header rules, Retry, RequestRateLimiter
//! (cluster scope over Redis) and CircuitBreaker (on the target service). Anything
//! else, custom filter beans above all, is reported with a hint.

use super::emit::{OutRoute, RateLimit, Retries};
use super::predicates::{literal_prefix, path_regex};
use super::report::{custom_filter_hint, Note};
use super::routes::Item;

/// What a route's filters ask of things outside the route.
#[derive(Debug, Default, Clone, Copy)]
pub struct Effects {
    /// A CircuitBreaker filter: the target service gets `circuit_breaker:`.
    pub circuit_breaker: bool,
    /// A RequestRateLimiter: the file needs `rate_limits: {redis_url}`.
    pub redis: bool,
}

/// A path transformation, in filter order.
enum PathOp {
    Strip(usize),
    Rewrite(String, String),
    Prefix(String),
    Set(String),
}

/// Apply `items` (default filters first, then the route's) to `route`, whose
/// path condition came from the Spring pattern `path` (if any).
pub fn apply(
    route: &mut OutRoute,
    items: &[Item],
    path: Option<&str>,
    notes: &mut Vec<Note>,
) -> Effects {
    let mut effects = Effects::default();
    let mut ops: Vec<(PathOp, usize)> = Vec::new();
    for item in items {
        let subject = format!("route {}: filter {}", route.id, item.name);
        let mut note = |why: String| notes.push(Note::new(item.line, &subject, why));
        let known: &[&str] = match item.name.as_str() {
            "StripPrefix" => {
                match item
                    .arg(&["parts"], Some(0))
                    .map(|p| p.trim().parse::<usize>())
                {
                    Some(Ok(n)) if n > 0 => ops.push((PathOp::Strip(n), item.line)),
                    _ => note("`parts` is not a whole number of at least 1".into()),
                }
                &["parts"]
            }
            "RewritePath" => {
                let re = item.arg(&["regexp"], Some(0)).unwrap_or("");
                let with = item.arg(&["replacement"], Some(1)).unwrap_or("");
                // `$\{x}` is how Spring's docs escape `${x}` from property placeholders
                let with = with.replace("$\\{", "${");
                match regex::Regex::new(re) {
                    Ok(_) => ops.push((PathOp::Rewrite(re.to_string(), with), item.line)),
                    Err(e) => note(format!("regex {re:?} is not valid here: {e}")),
                }
                &["regexp", "replacement"]
            }
            "PrefixPath" => {
                let p = item.arg(&["prefix"], Some(0)).unwrap_or("").trim();
                ops.push((
                    PathOp::Prefix(p.trim_end_matches('/').to_string()),
                    item.line,
                ));
                &["prefix"]
            }
            "SetPath" => {
                let t = item.arg(&["template"], Some(0)).unwrap_or("/").trim();
                ops.push((PathOp::Set(t.to_string()), item.line));
                &["template"]
            }
            "AddRequestHeader" | "SetRequestHeader" | "AddResponseHeader" | "SetResponseHeader" => {
                let name = item.arg(&["name"], Some(0)).unwrap_or("").to_string();
                let value = item.arg(&["value"], Some(1)).unwrap_or("").to_string();
                if value.contains('{') {
                    note(
                        "values with `{variables}` are not supported; the header was left out"
                            .into(),
                    );
                } else {
                    let ops = if item.name.contains("Request") {
                        &mut route.request_headers
                    } else {
                        &mut route.response_headers
                    };
                    let list = if item.name.starts_with("Add") {
                        &mut ops.add
                    } else {
                        &mut ops.set
                    };
                    list.push((name, value));
                }
                &["name", "value"]
            }
            "RemoveRequestHeader" | "RemoveResponseHeader" => {
                let name = item.arg(&["name"], Some(0)).unwrap_or("").to_string();
                if item.name.contains("Request") {
                    route.request_headers.remove.push(name);
                } else {
                    route.response_headers.remove.push(name);
                }
                &["name"]
            }
            "Retry" => {
                route.retries = Some(retry(item, &mut note));
                &[
                    "retries",
                    "statuses",
                    "methods",
                    "series",
                    "backoff",
                    "exceptions",
                ]
            }
            "RequestRateLimiter" => {
                route.rate_limit = Some(rate_limit(item, &mut note));
                effects.redis = true;
                &["redisratelimiter", "keyresolver", "ratelimiter"]
            }
            "CircuitBreaker" => {
                effects.circuit_breaker = true;
                if let Some(uri) = item.arg(&["fallbackUri"], Some(1)) {
                    note(format!(
                        "fallbackUri {uri:?} is not supported: an open breaker answers 503 \
                         with Retry-After; the breaker itself is on the service \
                         (`circuit_breaker:` with default settings, tune them)"
                    ));
                }
                &["name", "fallbackuri"]
            }
            other => {
                note(builtin_hint(other).map_or_else(|| custom_filter_hint(other), str::to_string));
                continue;
            }
        };
        for (k, _) in &item.args {
            if !k.starts_with('_') && !known.iter().any(|n| k.starts_with(n)) {
                note(format!("argument `{k}` is not converted"));
            }
        }
    }
    path_ops(route, ops, path, notes);
    effects
}

/// Turn the path filters into `strip_prefix` or one `rewrite`.
fn path_ops(
    route: &mut OutRoute,
    ops: Vec<(PathOp, usize)>,
    path: Option<&str>,
    notes: &mut Vec<Note>,
) {
    let mut ops = ops.into_iter();
    let Some((first, _)) = ops.next() else { return };
    let second = ops.next();
    let strip_re = |n: usize| format!("^(?:/[^/]*){{{n}}}(/.*)?$");
    match (first, second) {
        (PathOp::Strip(n), None) => match path.map(literal_prefix) {
            Some(lit) if lit.len() >= n => route.strip_prefix = Some(format!("/{}", lit[..n].join("/"))),
            _ => route.rewrite = Some((strip_re(n), "$1".into())),
        },
        (PathOp::Strip(n), Some((PathOp::Prefix(p), _))) => {
            route.rewrite = Some((strip_re(n), format!("{p}$1")));
        }
        (PathOp::Prefix(p), None) => route.rewrite = Some(("^(/.*)$".into(), format!("{p}$1"))),
        (PathOp::Rewrite(re, with), None) => route.rewrite = Some((re, with)),
        (PathOp::Set(t), None) => {
            let re = path.map_or_else(|| "^.*$".to_string(), path_regex);
            route.rewrite = Some((re, t.replace('{', "${")));
        }
        (_, Some((_, line))) => notes.push(Note::new(
            line,
            format!("route {}: path filter", route.id),
            "a second path filter is not combined with the first (only StripPrefix then PrefixPath is); write one `rewrite: {regex, replacement}` by hand",
        )),
    }
    for (_, line) in ops {
        notes.push(Note::new(
            line,
            format!("route {}: path filter", route.id),
            "more than two path filters are not combined; write one `rewrite` by hand",
        ));
    }
}

fn retry(item: &Item, note: &mut impl FnMut(String)) -> Retries {
    let attempts: u32 = item
        .arg(&["retries"], Some(0))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or(3);
    if attempts > 10 {
        note(format!("{attempts} retries: at most 10 (set to 10)"));
    }
    let mut on_status = Vec::new();
    for s in list(item, "statuses") {
        match status_code(&s) {
            Some(c) => on_status.push(c),
            None => note(format!("status {s:?} is not known; left out")),
        }
    }
    let series = list(item, "series");
    if on_status.is_empty() && (series.is_empty() || series.iter().any(|s| s == "SERVER_ERROR")) {
        // SCG's default: retry on the 5xx series
        on_status.extend([500, 502, 503, 504]);
    }
    for s in series.iter().filter(|s| *s != "SERVER_ERROR") {
        note(format!(
            "series {s} is not converted (list the statuses instead)"
        ));
    }
    let methods = list(item, "methods");
    let non_idempotent = methods
        .iter()
        .any(|m| matches!(m.as_str(), "POST" | "PATCH"));
    for (k, _) in item
        .args
        .iter()
        .filter(|(k, _)| k.starts_with("backoff") || k.starts_with("exceptions"))
    {
        note(format!("`{k}` is not converted: retries go at once to another instance, on connect errors and the listed statuses"));
    }
    Retries {
        attempts: attempts.min(10),
        on_status,
        non_idempotent,
    }
}

/// A named list argument (`statuses[0]`, ... or one comma-separated value), uppercase.
fn list(item: &Item, name: &str) -> Vec<String> {
    item.args
        .iter()
        .filter(|(k, _)| k.starts_with(name))
        .flat_map(|(_, v)| v.split(','))
        .map(|v| v.trim().to_ascii_uppercase())
        .filter(|v| !v.is_empty())
        .collect()
}

fn rate_limit(item: &Item, note: &mut impl FnMut(String)) -> RateLimit {
    let num = |k: &str, default: u32| {
        item.arg(&[k], None)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(default)
    };
    let rate = num("redis-rate-limiter.replenishRate", 1).max(1);
    let burst = num("redis-rate-limiter.burstCapacity", rate).max(1);
    let tokens = num("redis-rate-limiter.requestedTokens", 1).max(1);
    match item.arg(&["key-resolver"], None) {
        Some(bean) => note(format!(
            "key resolver {bean} is a custom KeyResolver bean: the limit is keyed by \
             client_ip; if the bean reads a header or the user, use `key: {{header: NAME}}` \
             or `key: {{claim: sub}}` (with `auth: {{jwt: {{}}}}`)"
        )),
        None => note(
            "SCG's default key is the authenticated principal: keyed by client_ip here; \
             with `auth: {jwt: {}}` on the route use `key: {claim: sub}`"
                .into(),
        ),
    }
    if let Some(custom) = item.arg(&["rate-limiter"], None) {
        note(format!(
            "rate limiter bean {custom} is not converted; the Redis limiter's settings were used"
        ));
    }
    // `tokens` per request at `rate` per second: `rate` requests per `tokens` seconds
    RateLimit {
        requests: rate,
        per_secs: tokens,
        burst: (burst / tokens).max(1),
        key: "client_ip".into(),
    }
}

fn status_code(s: &str) -> Option<u16> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u16>() {
        return (100..=599).contains(&n).then_some(n);
    }
    Some(match s.to_ascii_uppercase().as_str() {
        "INTERNAL_SERVER_ERROR" => 500,
        "NOT_IMPLEMENTED" => 501,
        "BAD_GATEWAY" => 502,
        "SERVICE_UNAVAILABLE" => 503,
        "GATEWAY_TIMEOUT" => 504,
        "REQUEST_TIMEOUT" => 408,
        "CONFLICT" => 409,
        "TOO_MANY_REQUESTS" => 429,
        "NOT_FOUND" => 404,
        _ => return None,
    })
}

/// Why a built-in SCG filter we do not have is not converted.
fn builtin_hint(name: &str) -> Option<&'static str> {
    Some(match name {
        "AddRequestParameter" | "RemoveRequestParameter" => "query parameter rewriting is not supported",
        "SecureHeaders" => "not converted: set the headers you need with `response_headers: {set: {...}}`",
        "RequestSize" => "not converted: use `max_body_size:` on the route (e.g. \"5m\")",
        "PreserveHostHeader" | "SetRequestHostHeader" => "Host header rewriting is not supported",
        "DedupeResponseHeader" | "RewriteResponseHeader" | "RewriteLocationResponseHeader" | "MapRequestHeader" => "header value rewriting is not supported; `request_headers`/`response_headers` set, add and remove fixed values",
        "RedirectTo" | "SetStatus" => "local answers other than the gateway's own errors are not supported",
        "SaveSession" | "TokenRelay" => "OAuth2 sessions are not supported; the gateway verifies JWTs (`auth: {jwt: {}}`, docs/auth.md)",
        "ModifyRequestBody" | "ModifyResponseBody" | "CacheRequestBody" | "JsonToGrpc" | "LocalResponseCache" => "body transformation and caching are not supported",
        "Hystrix" | "FallbackHeaders" => "not converted: Hystrix is gone from SCG; the service's `circuit_breaker:` is the equivalent",
        _ => return None,
    })
}
