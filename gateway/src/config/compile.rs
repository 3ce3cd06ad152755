//! Compile a parsed config into a [`RuntimeConfig`]: resolve names to `Arc`s,
//! build matchers, regexes, balancers and plugins, and collect every error.

mod route;
mod service;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use route::{compile_route, plugin_chain, rate_limiter};
use service::compile_service;

use super::file::{GatewayConfig, UnderscoreHeadersConfig};
use super::ConfigError;
use crate::edge::{self, EdgePolicy, UnderscoreHeaders};
use crate::routing::RouteTable;
use crate::runtime::RuntimeConfig;
use crate::upstream::Service;

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

    let edge = edge_policy(&file, auth.as_deref(), &mut errors);

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
        check_match_headers(rc, &path, &edge, &mut errors);
        check_rule_headers(rc, &path, auth.as_deref(), &mut errors);
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
                    Ok(rl) => r.rate_limit = Some(rl),
                    Err(issues) => errors.extend(issues.into_iter().map(ConfigError::from)),
                }
            }
            let cors = match rc
                .cors
                .as_ref()
                .map(|c| plugins::Cors::new(c, &format!("{path}.cors")))
            {
                Some(Ok(c)) => Some(c),
                Some(Err(issues)) => {
                    errors.extend(issues.into_iter().map(ConfigError::from));
                    None
                }
                None => None,
            };
            let auth_plugins = std::mem::take(&mut r.plugins);
            r.plugins = plugin_chain(cors, r.rate_limit.clone(), auth_plugins);
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
        edge,
        auth,
        routes: RouteTable::new(routes),
        services,
        file,
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
    if file.server.client_header_timeout.get() < std::time::Duration::from_millis(100) {
        errors.push(ConfigError::new(
            "server.client_header_timeout",
            "must be at least 100ms (e.g. \"10s\"): a client needs time to send its header",
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
        if l.max_connections == 0 {
            errors.push(ConfigError::new(
                format!("{path}.max_connections"),
                "must be at least 1 (it is the number of connections served at once)",
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
        crate::admin::access::check_exposure(admin, errors);
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
