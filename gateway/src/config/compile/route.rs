//! Compile one `routes[i]` entry: matcher, target service, rewrites, header rules,
//! retries and the route's plugins, each error with its key path.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;

use super::super::file::{GatewayConfig, HeaderRulesConfig, MatchConfig, RouteConfig};
use super::super::ConfigError;
use super::split;
use crate::routing::matcher::{Glob, HeaderCond, HostMatch, PathMatch};
use crate::routing::{path_policy, rewrite};
use crate::routing::{HeaderRules, PathRewrite, RetryPolicy, Route, RouteMatcher};
use crate::runtime::RuntimeConfig;
use crate::upstream::Service;

#[allow(clippy::too_many_arguments)]
pub(super) fn compile_route(
    index: usize,
    id: String,
    rc: &RouteConfig,
    path: &str,
    file: &GatewayConfig,
    services: &BTreeMap<String, Arc<Service>>,
    auth: Option<&plugins::AuthRuntime>,
    rate_limits: Option<&Arc<plugins::RateLimitStore>>,
    previous: Option<&RuntimeConfig>,
    errors: &mut Vec<ConfigError>,
) -> Option<Route> {
    let before = errors.len();
    let matcher = compile_match(&rc.matcher, &format!("{path}.match"), errors);

    let targets = split::compile_targets(rc, path, file, services, errors);

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
        (Some(p), None) => {
            if let Err(e) = path_policy::check_config_path(p) {
                errors.push(ConfigError::new(format!("{path}.strip_prefix"), e));
            }
            PathRewrite::StripPrefix(p.trim_end_matches('/').to_string())
        }
        (None, Some(rw)) => match Regex::new(&rw.regex) {
            Ok(re) => {
                if let Err(e) = rewrite::check_replacement(&rw.replacement) {
                    errors.push(ConfigError::new(format!("{path}.rewrite.replacement"), e));
                }
                PathRewrite::Regex(re, rw.replacement.clone())
            }
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

    // a broken `rate_limits` section has its own error; its limits are not built
    let section_broken = file.rate_limits.is_some() && rate_limits.is_none();
    let (plugins, rate_limit) = plugin_chain(
        rc,
        &id,
        path,
        auth,
        rate_limits.ok_or(section_broken),
        previous,
        errors,
    );

    if errors.len() != before {
        return None;
    }
    let (matcher, targets) = (matcher?, targets?);
    let timeouts = rc.timeouts.as_ref();
    let connect_timeout = timeouts.and_then(|t| t.connect).map(|d| d.get());
    let read_timeout = timeouts.and_then(|t| t.read).map(|d| d.get());
    // what the admin view shows of the route, as written (the auth section holds no secrets)
    let summary = serde_json::json!({"match": &rc.matcher, "auth": &rc.auth});
    Some(Route {
        split: split::build(&id, targets),
        id: Arc::from(id.as_str()),
        index,
        matcher,
        rewrite,
        request_headers,
        response_headers,
        connect_timeout,
        read_timeout,
        retry,
        max_body_size: rc.max_body_size.unwrap_or(file.server.max_body_size).get(),
        plugins,
        rate_limit,
        summary,
    })
}

/// The route's request plugins, built here only, in the one order they run:
/// 1. `cors`: a preflight is answered before any budget or token is spent, and the
///    CORS headers it adds ride on every refusal further down, so a browser can read it;
/// 2. `rate_limit` keyed by client, route or header: a flood is refused before the
///    cost of verifying its tokens;
/// 3. auth (`jwt`: verification, revocation, identity headers), so only admitted
///    requests pay for it, and nothing after it can alter the identity;
/// 4. `rate_limit` keyed by a claim (`{claim: sub}`): it needs the verified token.
///
/// Returns the chain and the route's limiter (kept on the route so a reload can reuse it).
fn plugin_chain(
    rc: &RouteConfig,
    route_id: &str,
    path: &str,
    auth: Option<&plugins::AuthRuntime>,
    // Err(true): the section is there but did not compile
    rate_limits: Result<&Arc<plugins::RateLimitStore>, bool>,
    previous: Option<&RuntimeConfig>,
    errors: &mut Vec<ConfigError>,
) -> (
    Vec<Arc<dyn plugins::Plugin>>,
    Option<Arc<plugins::RateLimit>>,
) {
    let mut issues = Vec::new();
    let cors = rc.cors.as_ref().and_then(|c| {
        plugins::Cors::new(c, &format!("{path}.cors"))
            .map_err(|e| issues.extend(e))
            .ok()
    });
    let rate_limit = rc.rate_limit.as_ref().and_then(|c| {
        let rl_path = format!("{path}.rate_limit");
        if let (plugins::rate_limit::RateLimitKey::Claim(_), plugins::RouteAuthConfig::Public) =
            (&c.key, &rc.auth)
        {
            issues.push(plugins::ConfigIssue::new(
                format!("{rl_path}.key.claim"),
                "a claim key needs the verified token: protect the route with `auth: {jwt: {}}`, or key by client_ip, route or header",
            ));
        }
        if c.scope == plugins::rate_limit::RateLimitScope::Cluster && matches!(rate_limits, Err(true)) {
            return None;
        }
        rate_limiter(c, route_id, &rl_path, rate_limits.ok(), previous)
            .map_err(|e| issues.extend(e))
            .ok()
    });
    let auth = match auth.map(|a| a.route_plugins(&rc.auth, &format!("{path}.auth"))) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            issues.extend(e);
            Vec::new()
        }
        None => Vec::new(),
    };
    errors.extend(issues.into_iter().map(ConfigError::from));
    let mut chain: Vec<Arc<dyn plugins::Plugin>> = Vec::with_capacity(auth.len() + 2);
    if let Some(c) = cors {
        chain.push(c);
    }
    let (before_auth, after_auth) = match &rate_limit {
        Some(rl) if rl.after_auth() => (None, Some(rl.clone())),
        other => (other.clone(), None),
    };
    if let Some(rl) = before_auth {
        chain.push(rl);
    }
    chain.extend(auth);
    if let Some(rl) = after_auth {
        chain.push(rl);
    }
    (chain, rate_limit)
}

/// The route's limiter: the previous config's when its settings (and the Redis
/// section of a cluster limit) are unchanged, so a reload does not hand every
/// client a fresh budget; else a new one.
fn rate_limiter(
    cfg: &plugins::RateLimitConfig,
    route_id: &str,
    path: &str,
    rate_limits: Option<&Arc<plugins::RateLimitStore>>,
    previous: Option<&RuntimeConfig>,
) -> Result<Arc<plugins::RateLimit>, Vec<plugins::ConfigIssue>> {
    let kept = previous
        .and_then(|p| p.routes.routes().iter().find(|r| &*r.id == route_id))
        .and_then(|r| r.rate_limit.clone())
        .filter(|rl| rl.reusable(cfg, rate_limits));
    if let Some(rl) = kept {
        return Ok(rl);
    }
    plugins::RateLimit::new(cfg, route_id, path, rate_limits)
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
            Ok(g) => {
                if let Err(e) = path_policy::check_config_path(p) {
                    errors.push(ConfigError::new(format!("{path}.path"), e));
                }
                PathMatch::Glob(g)
            }
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
            } else if let Err(e) = path_policy::check_config_path(p) {
                errors.push(ConfigError::new(format!("{path}.path"), e));
            }
            PathMatch::Exact(p.clone())
        }
        (None, Some(p), None) => {
            if !p.starts_with('/') {
                errors.push(ConfigError::new(
                    format!("{path}.prefix"),
                    "must start with '/'",
                ));
            } else if let Err(e) = path_policy::check_config_path(p) {
                errors.push(ConfigError::new(format!("{path}.prefix"), e));
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
