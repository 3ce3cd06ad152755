//! Compile a parsed config into a [`RuntimeConfig`] and a [`Startup`]: resolve
//! names to `Arc`s, build matchers, regexes, balancers and plugins, and collect
//! every error. This is the only reader of the file types, and it starts nothing:
//! background work starts when the result is activated (`RuntimeConfig::activate`).

mod discovery;
mod resilience;
mod route;
mod server;
mod service;
mod split;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use route::compile_route;
use service::compile_service;

use super::file::{GatewayConfig, UnderscoreHeadersConfig};
use super::ConfigError;
use crate::edge::{self, EdgePolicy, UnderscoreHeaders};
use crate::routing::RouteTable;
use crate::runtime::{RuntimeConfig, Startup};
use crate::upstream::Service;
use server::compile_server;

/// What compiling needs besides the file.
pub struct CompileInput<'a> {
    pub file: GatewayConfig,
    /// Version string of the source text.
    pub version: String,
    /// The config being replaced: unchanged services and auth state carry over.
    pub previous: Option<&'a RuntimeConfig>,
    /// Entered while lazy Redis clients are built (nothing is spawned on it).
    pub rt: &'a tokio::runtime::Handle,
}

/// A compiled config: what the request path reads, and what was bound at start.
pub struct Compiled {
    pub runtime: RuntimeConfig,
    pub startup: Startup,
}

/// Compile, or return every error found.
pub fn compile(input: CompileInput<'_>) -> Result<Compiled, Vec<ConfigError>> {
    let CompileInput {
        file,
        version,
        previous,
        rt,
    } = input;
    let mut errors = Vec::new();

    let server = compile_server(&file, &mut errors);

    let auth =
        match plugins::AuthRuntime::compile(file.auth.as_ref(), previous.map(|p| &p.auth), rt) {
            Ok(a) => Some(a),
            Err(issues) => {
                errors.extend(issues.into_iter().map(ConfigError::from));
                None
            }
        };

    let edge = edge_policy(&file, auth.as_deref(), &mut errors);

    let rate_limits = file.rate_limits.as_ref().and_then(|r| {
        let previous = previous.and_then(|p| p.rate_limits.as_ref());
        plugins::RateLimitStore::compile(r, previous, rt)
            .map_err(|issues| errors.extend(issues.into_iter().map(ConfigError::from)))
            .ok()
    });

    let span_export = file.server.tracing.otlp.as_ref().and_then(|otlp| {
        if !file.server.tracing.propagate {
            errors.push(ConfigError::new(
                "server.tracing.otlp",
                "needs `propagate: true`: the exported span is the one the service sees as its parent",
            ));
            return None;
        }
        let previous = previous.and_then(|p| p.span_export.as_ref());
        crate::otlp::SpanExport::compile(otlp, previous)
            .map_err(|issues| errors.extend(issues))
            .ok()
    });

    let mut services: BTreeMap<String, Arc<Service>> = BTreeMap::new();
    for (name, cfg) in &file.services {
        let path = format!("services.{name}");
        if let Some(svc) = compile_service(
            name,
            cfg,
            &path,
            file.admin.is_some(),
            previous,
            &mut errors,
        ) {
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
        check_match_headers(rc, &path, &edge, &mut errors);
        check_rule_headers(rc, &path, auth.as_deref(), &mut errors);
        if let Some(r) = compile_route(
            k,
            id,
            rc,
            &path,
            &file,
            &services,
            auth.as_deref(),
            rate_limits.as_ref(),
            previous,
            &mut errors,
        ) {
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
    Ok(Compiled {
        runtime: RuntimeConfig {
            version,
            loaded_at: SystemTime::now(),
            edge,
            auth,
            rate_limits,
            routes: RouteTable::new(routes),
            services,
            client: server.client,
            access_log: server.access_log,
            trace_propagation: server.trace_propagation,
            span_export,
            admin: server.admin,
        },
        startup: server.startup,
    })
}

/// The client header policy: identity headers from the auth section, trusted proxies,
/// underscores.
fn edge_policy(
    file: &GatewayConfig,
    auth: Option<&plugins::AuthRuntime>,
    errors: &mut Vec<ConfigError>,
) -> EdgePolicy {
    let (trusted, bad) = edge::parse_trusted(&file.server.trusted_proxies);
    for (i, msg) in bad {
        errors.push(ConfigError::new(
            format!("server.trusted_proxies[{i}]"),
            msg,
        ));
    }
    let underscores = match file.server.headers_with_underscores {
        UnderscoreHeadersConfig::Drop => UnderscoreHeaders::Drop,
        UnderscoreHeadersConfig::Reject => UnderscoreHeaders::Reject,
        UnderscoreHeadersConfig::Allow => UnderscoreHeaders::Allow,
    };
    let identity = auth.map_or(&[][..], |a| a.strip_headers());
    EdgePolicy::new(identity, trusted, underscores)
}

/// A route condition on a header the gateway removes before routing can never hold:
/// say so instead of compiling a route that never matches.
fn check_match_headers(
    rc: &super::file::RouteConfig,
    path: &str,
    edge: &EdgePolicy,
    errors: &mut Vec<ConfigError>,
) {
    for name in rc.matcher.headers.keys() {
        if let Some(why) = edge.never_reaches_routing(name) {
            errors.push(ConfigError::new(
                format!("{path}.match.headers.{name}"),
                format!("this condition can never hold: {why}"),
            ));
        }
    }
}

/// A route's `request_headers` rules may not set or add an identity header, in any
/// spelling a backend folds into one (`Authenticated_User`, `x.user.id`): on a public
/// route it would reach the service as if the gateway had vouched for it, and a twin
/// would even survive next to the verified header on a protected one. Removing one is
/// harmless and allowed.
fn check_rule_headers(
    rc: &super::file::RouteConfig,
    path: &str,
    auth: Option<&plugins::AuthRuntime>,
    errors: &mut Vec<ConfigError>,
) {
    let Some(auth) = auth else { return };
    let fold = |n: &str| -> String {
        n.bytes()
            .map(|b| match b {
                b'_' | b'.' => '-',
                b => char::from(b.to_ascii_lowercase()),
            })
            .collect()
    };
    let identity: Vec<String> = auth
        .strip_headers()
        .iter()
        .map(|h| fold(h.as_str()))
        .collect();
    let rules = &rc.request_headers;
    for (section, names) in [("set", &rules.set), ("add", &rules.add)] {
        for name in names.keys() {
            if let Some(ident) = identity.iter().find(|i| **i == fold(name)) {
                errors.push(ConfigError::new(
                    format!("{path}.request_headers.{section}.{name}"),
                    format!(
                        "names the identity header {ident:?} (or a spelling a backend folds into \
                         it); only the gateway sets identity headers, from a verified token: \
                         remove this rule"
                    ),
                ));
            }
        }
    }
}
