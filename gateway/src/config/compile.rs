//! Compile a parsed config into a [`RuntimeConfig`]: resolve names to `Arc`s,
//! build matchers, regexes, balancers and plugins, and collect every error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;

use super::file::{
    Algorithm, DiscoveryConfig, GatewayConfig, HeaderRulesConfig, InstanceConfig, MatchConfig,
    RouteConfig, ServiceConfig,
};
use super::ConfigError;
use crate::observe::RouteMetrics;
use crate::routing::matcher::{Glob, HeaderCond, HostMatch, PathMatch};
use crate::routing::{HeaderRules, PathRewrite, RetryPolicy, Route, RouteMatcher, RouteTable};
use crate::runtime::RuntimeConfig;
use crate::upstream::{Endpoint, Service};

/// What compiling needs besides the file.
pub struct CompileInput<'a> {
    pub file: GatewayConfig,
    /// Version string of the source text.
    pub version: String,
    /// The config being replaced: unchanged services and auth state carry over.
    pub previous: Option<&'a RuntimeConfig>,
    /// Where background tasks (health checks, revocation mirror, JWKS refresh) run.
    pub rt: &'a tokio::runtime::Handle,
}

/// Compile, or return every error found.
pub fn compile(input: CompileInput<'_>) -> Result<RuntimeConfig, Vec<ConfigError>> {
    let CompileInput {
        file,
        version,
        previous,
        rt,
    } = input;
    let mut errors = Vec::new();

    check_server(&file, &mut errors);

    let auth =
        match plugins::AuthRuntime::compile(file.auth.as_ref(), previous.map(|p| &p.auth), rt) {
            Ok(a) => Some(a),
            Err(issues) => {
                errors.extend(issues.into_iter().map(ConfigError::from));
                None
            }
        };

    let mut services: BTreeMap<String, Arc<Service>> = BTreeMap::new();
    for (name, cfg) in &file.services {
        let path = format!("services.{name}");
        if let Some(svc) =
            compile_service(name, cfg, &path, file.admin.as_ref(), previous, &mut errors)
        {
            services.insert(name.clone(), svc);
        }
    }

    let mut routes = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (k, rc) in file.routes.iter().enumerate() {
        let path = format!("routes[{k}]");
        let id = rc.id.clone().unwrap_or_else(|| format!("route-{k}"));
        if !ids.insert(id.clone()) {
            errors.push(ConfigError::new(
                format!("{path}.id"),
                format!("duplicate route id {id:?}: ids name routes in metrics and must be unique"),
            ));
        }
        if let Some(mut r) = compile_route(
            k,
            id,
            rc,
            &path,
            &file,
            &services,
            auth.as_deref(),
            &mut errors,
        ) {
            if let Some(cfg) = &rc.rate_limit {
                match rate_limiter(cfg, &r.id, &format!("{path}.rate_limit"), previous, rt) {
                    Ok(rl) => {
                        r.plugins.insert(0, rl.clone());
                        r.rate_limit = Some(rl);
                    }
                    Err(issues) => errors.extend(issues.into_iter().map(ConfigError::from)),
                }
            }
            if let Some(cfg) = &rc.cors {
                // first in the chain: a preflight is answered before any budget or token check
                match plugins::Cors::new(cfg, &format!("{path}.cors")) {
                    Ok(c) => r.plugins.insert(0, c),
                    Err(issues) => errors.extend(issues.into_iter().map(ConfigError::from)),
                }
            }
            routes.push(Arc::new(r));
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    let Some(auth) = auth else {
        return Err(vec![ConfigError::new(
            "auth",
            "the auth section did not compile",
        )]);
    };
    for svc in services.values() {
        crate::upstream::health::ensure_checker(svc, rt);
        crate::upstream::discovery::ensure_running(svc, rt);
    }
    Ok(RuntimeConfig {
        version,
        loaded_at: SystemTime::now(),
        strip_identity: auth.strip_headers().to_vec(),
        auth,
        routes: RouteTable::new(routes),
        services,
        file,
    })
}

fn check_server(file: &GatewayConfig, errors: &mut Vec<ConfigError>) {
    if file.server.threads == 0 || file.server.threads > 1024 {
        errors.push(ConfigError::new(
            "server.threads",
            format!(
                "{} worker threads is out of range (1..=1024)",
                file.server.threads
            ),
        ));
    }
    if file.listeners.is_empty() {
        errors.push(ConfigError::new(
            "listeners",
            "at least one listener is required, e.g. `listeners: [{address: \"0.0.0.0:8080\"}]`",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (k, l) in file.listeners.iter().enumerate() {
        let path = format!("listeners[{k}]");
        if l.address.parse::<SocketAddr>().is_err() {
            errors.push(ConfigError::new(
                format!("{path}.address"),
                format!(
                    "{:?} is not an ip:port address (e.g. \"0.0.0.0:8080\")",
                    l.address
                ),
            ));
        } else if !seen.insert(l.address.clone()) {
            errors.push(ConfigError::new(
                format!("{path}.address"),
                format!("{} is listed twice", l.address),
            ));
        }
        if let Some(tls) = &l.tls {
            for (key, file_path) in [("cert", &tls.cert), ("key", &tls.key)] {
                if let Err(e) = std::fs::File::open(file_path) {
                    errors.push(ConfigError::new(
                        format!("{path}.tls.{key}"),
                        format!("cannot read {file_path:?}: {e}"),
                    ));
                }
            }
        }
    }
    if let Some(admin) = &file.admin {
        if let Some(registry) = &admin.registry {
            crate::upstream::discovery::registry::validate_config(registry, errors);
        }
        if admin.address.parse::<SocketAddr>().is_err() {
            errors.push(ConfigError::new(
                "admin.address",
                format!(
                    "{:?} is not an ip:port address (e.g. \"127.0.0.1:9090\")",
                    admin.address
                ),
            ));
        } else if file.listeners.iter().any(|l| l.address == admin.address) {
            errors.push(ConfigError::new(
                "admin.address",
                "the admin address must differ from every listener",
            ));
        }
    }
}

fn compile_service(
    name: &str,
    cfg: &ServiceConfig,
    path: &str,
    admin: Option<&crate::config::file::AdminConfig>,
    previous: Option<&RuntimeConfig>,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<Service>> {
    let before = errors.len();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        errors.push(ConfigError::new(
            path,
            "service names use letters, digits, '-', '_' and '.' only",
        ));
    }
    let instances: &[InstanceConfig] = match (&cfg.instances, &cfg.discovery) {
        (Some(list), None) => list,
        (None, Some(DiscoveryConfig::Static { instances })) => instances,
        (None, Some(dynamic)) => {
            let dpath = format!("{path}.discovery");
            crate::upstream::discovery::validate(name, dynamic, admin, &dpath, errors);
            &[]
        }
        (Some(_), Some(_)) => {
            errors.push(ConfigError::new(
                path,
                "give either `instances` or `discovery`, not both",
            ));
            &[]
        }
        (None, None) => {
            errors.push(ConfigError::new(
                path,
                "no instances: add `instances: [\"host:port\"]` or a `discovery` section",
            ));
            &[]
        }
    };
    let mut endpoints = Vec::with_capacity(instances.len());
    for (k, inst) in instances.iter().enumerate() {
        let ipath = format!("{path}.instances[{k}]");
        match inst.address().parse::<SocketAddr>() {
            Ok(addr) => endpoints.push(Endpoint {
                addr,
                weight: inst.weight(),
            }),
            Err(_) => errors.push(ConfigError::new(
                ipath.clone(),
                format!(
                    "{:?} is not an ip:port address (static instances are IP addresses; use `discovery: {{type: dns}}` for host names)",
                    inst.address()
                ),
            )),
        }
        if inst.weight() == 0 || inst.weight() > 10_000 {
            errors.push(ConfigError::new(
                format!("{ipath}.weight"),
                "weight must be 1..=10000",
            ));
        }
    }
    let lb = &cfg.load_balancer;
    match (lb.algorithm, &lb.hash_on) {
        (Algorithm::ConsistentHash, None) => errors.push(ConfigError::new(
            format!("{path}.load_balancer.hash_on"),
            "consistent_hash needs `hash_on` (header: NAME, cookie: NAME or client_ip)",
        )),
        (alg, Some(_)) if alg != Algorithm::ConsistentHash => errors.push(ConfigError::new(
            format!("{path}.load_balancer.hash_on"),
            "`hash_on` only applies to `algorithm: consistent_hash`",
        )),
        (_, Some(crate::config::file::HashOn::Header(h)))
            if HeaderName::from_bytes(h.as_bytes()).is_err() =>
        {
            errors.push(ConfigError::new(
                format!("{path}.load_balancer.hash_on.header"),
                format!("{h:?} is not a valid header name"),
            ))
        }
        _ => {}
    }
    if let Some(hc) = &cfg.health_check {
        let hpath = format!("{path}.health_check");
        if !hc.path.starts_with('/') || hc.path.parse::<http::Uri>().is_err() {
            errors.push(ConfigError::new(
                format!("{hpath}.path"),
                "must be a path starting with '/'",
            ));
        }
        if hc.interval.get().is_zero() || hc.timeout.get().is_zero() {
            errors.push(ConfigError::new(
                hpath.clone(),
                "interval and timeout must be above zero",
            ));
        }
        if hc.healthy_threshold == 0 || hc.unhealthy_threshold == 0 {
            errors.push(ConfigError::new(
                hpath.clone(),
                "thresholds must be at least 1",
            ));
        }
        if !(100..=599).contains(&hc.expected_status) {
            errors.push(ConfigError::new(
                format!("{hpath}.expected_status"),
                "must be an HTTP status (100..=599)",
            ));
        }
    }
    if cfg.connect_timeout.get().is_zero()
        || cfg.read_timeout.get().is_zero()
        || cfg.write_timeout.get().is_zero()
    {
        errors.push(ConfigError::new(path, "timeouts must be above zero"));
    }
    if errors.len() != before {
        return None;
    }
    let prev = previous.and_then(|p| p.services.get(name));
    if let Some(prev) = prev {
        if prev.config == *cfg {
            return Some(prev.clone());
        }
    }
    if !matches!(cfg.discovery, None | Some(DiscoveryConfig::Static { .. })) {
        // a discovered service starts with what it had; its loop refreshes it
        endpoints = crate::upstream::discovery::initial_endpoints(prev.map(|p| &**p));
    }
    Some(Arc::new(Service::new(
        name,
        cfg.clone(),
        &endpoints,
        prev.map(|p| &**p),
    )))
}

#[allow(clippy::too_many_arguments)]
fn compile_route(
    index: usize,
    id: String,
    rc: &RouteConfig,
    path: &str,
    file: &GatewayConfig,
    services: &BTreeMap<String, Arc<Service>>,
    auth: Option<&plugins::AuthRuntime>,
    errors: &mut Vec<ConfigError>,
) -> Option<Route> {
    let before = errors.len();
    let matcher = compile_match(&rc.matcher, &format!("{path}.match"), errors);

    let service_name = rc.service.strip_prefix("lb://").unwrap_or(&rc.service);
    let service = services.get(service_name).cloned();
    if service.is_none() && !file.services.contains_key(service_name) {
        let known: Vec<&str> = file.services.keys().map(String::as_str).collect();
        errors.push(ConfigError::new(
            format!("{path}.service"),
            format!(
                "unknown service {service_name:?} (known: {})",
                if known.is_empty() {
                    "none defined".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }

    let rewrite = match (&rc.strip_prefix, &rc.rewrite) {
        (Some(_), Some(_)) => {
            errors.push(ConfigError::new(
                path,
                "use either `strip_prefix` or `rewrite`, not both",
            ));
            PathRewrite::Keep
        }
        (Some(p), None) if !p.starts_with('/') => {
            errors.push(ConfigError::new(
                format!("{path}.strip_prefix"),
                "must start with '/'",
            ));
            PathRewrite::Keep
        }
        (Some(p), None) => PathRewrite::StripPrefix(p.trim_end_matches('/').to_string()),
        (None, Some(rw)) => match Regex::new(&rw.regex) {
            Ok(re) => PathRewrite::Regex(re, rw.replacement.clone()),
            Err(e) => {
                errors.push(ConfigError::new(
                    format!("{path}.rewrite.regex"),
                    regex_problem(&rw.regex, &e),
                ));
                PathRewrite::Keep
            }
        },
        (None, None) => PathRewrite::Keep,
    };

    let request_headers = compile_header_rules(
        &rc.request_headers,
        &format!("{path}.request_headers"),
        errors,
    );
    let response_headers = compile_header_rules(
        &rc.response_headers,
        &format!("{path}.response_headers"),
        errors,
    );

    let retry = match &rc.retries {
        // by default a connect error (nothing was sent) is retried once elsewhere
        None => RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
        Some(r) => {
            if r.attempts > 10 {
                errors.push(ConfigError::new(
                    format!("{path}.retries.attempts"),
                    "at most 10 retries",
                ));
            }
            for (k, s) in r.on_status.iter().enumerate() {
                if !(100..=599).contains(s) {
                    errors.push(ConfigError::new(
                        format!("{path}.retries.on_status[{k}]"),
                        format!("{s} is not an HTTP status"),
                    ));
                }
            }
            RetryPolicy {
                attempts: r.attempts,
                on_status: r.on_status.clone(),
                non_idempotent: r.non_idempotent,
            }
        }
    };

    let plugins = match auth.map(|a| a.route_plugins(&rc.auth, &format!("{path}.auth"))) {
        Some(Ok(p)) => p,
        Some(Err(issues)) => {
            errors.extend(issues.into_iter().map(ConfigError::from));
            Vec::new()
        }
        None => Vec::new(),
    };

    if errors.len() != before {
        return None;
    }
    let (matcher, service) = (matcher?, service?);
    let timeouts = rc.timeouts.as_ref();
    let connect_timeout = timeouts
        .and_then(|t| t.connect)
        .map_or(service.peer.connect_timeout, |d| d.get());
    let read_timeout = timeouts
        .and_then(|t| t.read)
        .map_or(service.peer.read_timeout, |d| d.get());
    Some(Route {
        metrics: RouteMetrics::new(&id, &service.name),
        id: Arc::from(id.as_str()),
        index,
        matcher,
        service,
        rewrite,
        request_headers,
        response_headers,
        connect_timeout,
        read_timeout,
        retry,
        plugins,
        rate_limit: None,
    })
}

/// The route's limiter: the previous config's when its settings are unchanged
/// (so a reload does not hand every client a fresh budget), else a new one.
fn rate_limiter(
    cfg: &plugins::RateLimitConfig,
    route_id: &str,
    path: &str,
    previous: Option<&RuntimeConfig>,
    rt: &tokio::runtime::Handle,
) -> Result<Arc<plugins::RateLimit>, Vec<plugins::ConfigIssue>> {
    let kept = previous
        .and_then(|p| p.routes.routes().iter().find(|r| &*r.id == route_id))
        .and_then(|r| r.rate_limit.clone())
        .filter(|rl| rl.config() == cfg);
    if let Some(rl) = kept {
        return Ok(rl);
    }
    let rl = plugins::RateLimit::new(cfg, route_id, path)?;
    rl.spawn_cleanup(rt, std::time::Duration::from_secs(60));
    Ok(rl)
}

fn compile_match(
    m: &MatchConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<RouteMatcher> {
    let before = errors.len();
    let path_match = match (&m.path, &m.prefix, &m.regex) {
        (None, None, None) => PathMatch::Any,
        (Some(p), None, None) if p.contains('*') => match Glob::parse(p) {
            Ok(g) => PathMatch::Glob(g),
            Err(e) => {
                errors.push(ConfigError::new(format!("{path}.path"), e));
                PathMatch::Any
            }
        },
        (Some(p), None, None) => {
            if !p.starts_with('/') {
                errors.push(ConfigError::new(
                    format!("{path}.path"),
                    "must start with '/'",
                ));
            }
            PathMatch::Exact(p.clone())
        }
        (None, Some(p), None) => {
            if !p.starts_with('/') {
                errors.push(ConfigError::new(
                    format!("{path}.prefix"),
                    "must start with '/'",
                ));
            }
            PathMatch::Prefix(p.clone())
        }
        // check the pattern as written first, so an error points into the user's text
        (None, None, Some(r)) => {
            match Regex::new(r).and_then(|_| Regex::new(&format!("^(?:{r})$"))) {
                Ok(re) => PathMatch::Regex(re),
                Err(e) => {
                    errors.push(ConfigError::new(
                        format!("{path}.regex"),
                        regex_problem(r, &e),
                    ));
                    PathMatch::Any
                }
            }
        }
        _ => {
            errors.push(ConfigError::new(
                path,
                "use only one of `path`, `prefix` and `regex`",
            ));
            PathMatch::Any
        }
    };
    let host = match &m.host {
        None => HostMatch::Any,
        Some(h) => HostMatch::parse(h).unwrap_or_else(|e| {
            errors.push(ConfigError::new(format!("{path}.host"), e));
            HostMatch::Any
        }),
    };
    let mut methods = Vec::new();
    for (k, name) in m.methods.iter().enumerate() {
        const KNOWN: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
        ];
        let upper = name.to_ascii_uppercase();
        match Method::from_bytes(upper.as_bytes()) {
            Ok(method) if KNOWN.contains(&upper.as_str()) => methods.push(method),
            _ => errors.push(ConfigError::new(
                format!("{path}.methods[{k}]"),
                format!(
                    "{name:?} is not an HTTP method (one of {})",
                    KNOWN.join(", ")
                ),
            )),
        }
    }
    let mut headers = Vec::new();
    for (name, value) in &m.headers {
        let hpath = format!("{path}.headers.{name}");
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            errors.push(ConfigError::new(hpath, "not a valid header name"));
            continue;
        };
        let value = if value == "*" {
            None
        } else {
            match HeaderValue::from_str(value) {
                Ok(v) => Some(v),
                Err(_) => {
                    errors.push(ConfigError::new(hpath, "not a valid header value"));
                    continue;
                }
            }
        };
        headers.push(HeaderCond { name, value });
    }
    (errors.len() == before).then_some(RouteMatcher {
        path: path_match,
        host,
        methods,
        headers,
    })
}

fn compile_header_rules(
    cfg: &HeaderRulesConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> HeaderRules {
    let mut rules = HeaderRules::default();
    let mut pair = |section: &str, name: &str, value: &str| -> Option<(HeaderName, HeaderValue)> {
        let p = format!("{path}.{section}.{name}");
        let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
            errors.push(ConfigError::new(p, "not a valid header name"));
            return None;
        };
        match HeaderValue::from_str(value) {
            Ok(v) => Some((n, v)),
            Err(_) => {
                errors.push(ConfigError::new(
                    p,
                    "not a valid header value (visible ASCII only)",
                ));
                None
            }
        }
    };
    rules.set = cfg
        .set
        .iter()
        .filter_map(|(n, v)| pair("set", n, v))
        .collect();
    rules.add = cfg
        .add
        .iter()
        .filter_map(|(n, v)| pair("add", n, v))
        .collect();
    for (k, name) in cfg.remove.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => rules.remove.push(n),
            Err(_) => errors.push(ConfigError::new(
                format!("{path}.remove[{k}]"),
                "not a valid header name",
            )),
        }
    }
    rules
}

/// `invalid regex "/a/(": unclosed group` (the regex crate's reason, on one line).
fn regex_problem(pattern: &str, e: &regex::Error) -> String {
    let text = e.to_string();
    let reason = text
        .lines()
        .last()
        .map(|l| l.trim_start_matches("error: "))
        .unwrap_or(&text);
    format!("invalid regex {pattern:?}: {reason}")
}
