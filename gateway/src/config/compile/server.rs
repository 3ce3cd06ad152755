//! Compile the process-level sections (`server`, `listeners`, `admin`) into the
//! settings bound at start ([`Startup`]) and those a reload applies at once
//! (client timeouts, the access log switch, admin access and registry limits).

use std::net::SocketAddr;

use super::super::file::{AdminConfig, GatewayConfig};
use super::super::ConfigError;
use super::discovery;
use crate::runtime::{AdminSettings, ClientTimeouts, ListenerSpec, ListenerTls, Startup};

/// What the process-level sections compile to.
pub(super) struct ServerParts {
    pub startup: Startup,
    pub client: ClientTimeouts,
    pub access_log: bool,
    pub trace_propagation: bool,
    pub admin: AdminSettings,
}

pub(super) fn compile_server(file: &GatewayConfig, errors: &mut Vec<ConfigError>) -> ServerParts {
    let server = &file.server;
    if server.threads == 0 || server.threads > 1024 {
        errors.push(ConfigError::new(
            "server.threads",
            format!(
                "{} worker threads is out of range (1..=1024)",
                server.threads
            ),
        ));
    }
    if server.client_header_timeout.get() < std::time::Duration::from_millis(100) {
        errors.push(ConfigError::new(
            "server.client_header_timeout",
            "must be at least 100ms (e.g. \"10s\"): a client needs time to send its header",
        ));
    }
    let listeners = listeners(file, errors);
    let (admin_address, admin) = admin(file, errors);
    let (registry, registry_limits) = discovery::registry(
        file.admin.as_ref().and_then(|a| a.registry.as_ref()),
        errors,
    );
    ServerParts {
        startup: Startup {
            threads: server.threads,
            work_stealing: server.work_stealing,
            grace_period: server.grace_period.get(),
            shutdown_timeout: server.shutdown_timeout.get(),
            upstream_keepalive_pool: server.upstream_keepalive_pool,
            log_format: server.log.format,
            listeners,
            admin_address,
            registry,
        },
        client: ClientTimeouts {
            header: server.client_header_timeout.get(),
            keepalive: Some(server.keepalive_timeout.get()).filter(|d| !d.is_zero()),
        },
        access_log: server.log.access_log,
        trace_propagation: server.tracing.propagate,
        admin: AdminSettings {
            registry_limits,
            ..admin
        },
    }
}

fn listeners(file: &GatewayConfig, errors: &mut Vec<ConfigError>) -> Vec<ListenerSpec> {
    if file.listeners.is_empty() {
        errors.push(ConfigError::new(
            "listeners",
            "at least one listener is required, e.g. `listeners: [{address: \"0.0.0.0:8080\"}]`",
        ));
    }
    let mut out: Vec<ListenerSpec> = Vec::with_capacity(file.listeners.len());
    for (k, l) in file.listeners.iter().enumerate() {
        let path = format!("listeners[{k}]");
        let address = match l.address.parse::<SocketAddr>() {
            Ok(a) if out.iter().any(|o| o.address == a) => {
                errors.push(ConfigError::new(
                    format!("{path}.address"),
                    format!("{} is listed twice", l.address),
                ));
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(ConfigError::new(
                    format!("{path}.address"),
                    format!(
                        "{:?} is not an ip:port address (e.g. \"0.0.0.0:8080\")",
                        l.address
                    ),
                ));
                None
            }
        };
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
        if let Some(address) = address {
            out.push(ListenerSpec {
                address,
                tls: l.tls.as_ref().map(|t| ListenerTls {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    http2: t.http2,
                }),
                max_connections: l.max_connections,
                read_buffer: buffer_size(
                    l.read_buffer.get(),
                    &format!("{path}.read_buffer"),
                    errors,
                ),
                write_buffer: buffer_size(
                    l.write_buffer.get(),
                    &format!("{path}.write_buffer"),
                    errors,
                ),
            });
        }
    }
    out
}

/// A socket buffer size: at most 1 MiB (it is held by every connection).
fn buffer_size(bytes: u64, path: &str, errors: &mut Vec<ConfigError>) -> usize {
    const MAX: u64 = 1 << 20;
    if bytes > MAX {
        errors.push(ConfigError::new(
            path,
            format!("{bytes} bytes is over the 1MiB limit: every connection holds this buffer"),
        ));
    }
    usize::try_from(bytes.min(MAX)).unwrap_or(0)
}

/// `admin`: its address (bound at start) and who may call it (applied on reload).
fn admin(
    file: &GatewayConfig,
    errors: &mut Vec<ConfigError>,
) -> (Option<SocketAddr>, AdminSettings) {
    let Some(admin) = &file.admin else {
        return (None, AdminSettings::default());
    };
    let token = admin_token(admin, |var| std::env::var(var).ok(), errors);
    check_exposure(admin, token.as_deref(), errors);
    let address = match admin.address.parse::<SocketAddr>() {
        Err(_) => {
            errors.push(ConfigError::new(
                "admin.address",
                format!(
                    "{:?} is not an ip:port address (e.g. \"127.0.0.1:9090\")",
                    admin.address
                ),
            ));
            None
        }
        Ok(a) if file.listeners.iter().any(|l| l.address.parse() == Ok(a)) => {
            errors.push(ConfigError::new(
                "admin.address",
                "the admin address must differ from every listener",
            ));
            None
        }
        Ok(a) => Some(a),
    };
    let settings = AdminSettings {
        token,
        protect_reads: admin.protect_reads,
        ready_requires_instances: admin.ready_requires_instances,
        registry_limits: Default::default(),
    };
    (address, settings)
}

/// The admin token: `token`, or the value of the variable `token_env` names (from the
/// process environment, so a new value takes a restart).
fn admin_token(
    admin: &AdminConfig,
    get: impl Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    match (&admin.token, &admin.token_env) {
        (Some(_), Some(_)) => {
            errors.push(ConfigError::new(
                "admin.token_env",
                "set admin.token or admin.token_env, not both",
            ));
            None
        }
        (Some(t), None) => {
            if t.trim().is_empty() {
                errors.push(ConfigError::new(
                    "admin.token",
                    "is empty; set a long random value (e.g. `openssl rand -hex 32`) or remove the key",
                ));
            }
            Some(t.clone())
        }
        (None, Some(var)) => match get(var) {
            Some(t) if !t.trim().is_empty() => Some(t),
            found => {
                errors.push(ConfigError::new(
                    "admin.token_env",
                    format!(
                        "environment variable {var} is {}: set it to a long random value (e.g. \
                         `openssl rand -hex 32`)",
                        if found.is_some() { "empty" } else { "not set" }
                    ),
                ));
                // counts as set: the exposure rule need not report it a second time
                Some(String::new())
            }
        },
        (None, None) => None,
    }
}

/// The exposure rule: registry writes without a token only on a loopback address,
/// unless explicitly allowed (then warned about at every start and reload).
fn check_exposure(admin: &AdminConfig, token: Option<&str>, errors: &mut Vec<ConfigError>) {
    if admin.protect_reads && token.is_none() {
        errors.push(ConfigError::new(
            "admin.protect_reads",
            "needs admin.token: reads are protected by the same bearer token",
        ));
    }
    let Ok(addr) = admin.address.parse::<SocketAddr>() else {
        return; // reported with the address check
    };
    if token.is_some() || addr.ip().is_loopback() {
        return;
    }
    if admin.allow_unauthenticated_writes {
        tracing::warn!(
            address = %addr,
            "admin API reachable from other hosts WITHOUT a token: anyone who reaches {addr} can \
             register instances and receive traffic (admin.allow_unauthenticated_writes: true); \
             set admin.token"
        );
        return;
    }
    errors.push(ConfigError::new(
        "admin.token",
        format!(
            "the admin listener {addr} is not a loopback address and has no token, so anyone who \
             reaches it could register instances and receive traffic: set admin.token (clients send \
             `Authorization: Bearer <token>`), or bind admin.address to 127.0.0.1, or accept the \
             risk with admin.allow_unauthenticated_writes: true"
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(address: &str, token: Option<&str>, allow: bool) -> AdminConfig {
        AdminConfig {
            address: address.into(),
            token: token.map(Into::into),
            token_env: None,
            allow_unauthenticated_writes: allow,
            protect_reads: false,
            ready_requires_instances: true,
            registry: None,
        }
    }

    fn errors(a: &AdminConfig) -> Vec<ConfigError> {
        let mut e = Vec::new();
        let token = admin_token(a, |_| None, &mut e);
        check_exposure(a, token.as_deref(), &mut e);
        e
    }

    fn from_env(a: &AdminConfig, value: Option<&str>) -> (Option<String>, Vec<ConfigError>) {
        let mut e = Vec::new();
        let token = admin_token(
            a,
            |var| value.filter(|_| var == "ADMIN_TOKEN").map(Into::into),
            &mut e,
        );
        (token, e)
    }

    #[test]
    fn token_from_the_environment() {
        let mut a = admin("0.0.0.0:9090", None, false);
        a.token_env = Some("ADMIN_TOKEN".into());
        let (token, e) = from_env(&a, Some("s3cret-token"));
        assert_eq!((token.as_deref(), e.len()), (Some("s3cret-token"), 0));
        for missing in [None, Some("  ")] {
            let (_, e) = from_env(&a, missing);
            assert_eq!(e.len(), 1, "{e:?}");
            assert_eq!(e[0].path, "admin.token_env");
            assert!(e[0].message.contains("ADMIN_TOKEN"), "{}", e[0].message);
            // one error, not a second one from the exposure rule
            assert!(errors(&a).iter().all(|e| e.path == "admin.token_env"));
        }
        a.token = Some("inline".into());
        let (_, e) = from_env(&a, Some("s3cret-token"));
        assert_eq!(e[0].message, "set admin.token or admin.token_env, not both");
    }

    #[test]
    fn exposure_rule() {
        assert!(errors(&admin("127.0.0.1:9090", None, false)).is_empty());
        assert!(errors(&admin("[::1]:9090", None, false)).is_empty());
        assert!(errors(&admin("0.0.0.0:9090", Some("s3cret-token"), false)).is_empty());
        assert!(errors(&admin("0.0.0.0:9090", None, true)).is_empty());
        let e = errors(&admin("0.0.0.0:9090", None, false));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "admin.token");
        assert!(e[0].message.contains("allow_unauthenticated_writes"));
        assert_eq!(errors(&admin("10.0.0.1:9090", Some(" "), false)).len(), 1);
    }
}
