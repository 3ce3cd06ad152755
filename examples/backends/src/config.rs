//! Service settings from the environment: ports, data dir, Redis, registry, signing,
//! event log. Every value has a default that matches the demo (`config/gateway.yaml`),
//! except the signing secret: without `GATEWAY_SIGNING_SECRET` a service refuses to
//! start (fail closed) unless `INSECURE_TRUST_UNSIGNED_IDENTITY=1` asks for the
//! development mode explicitly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// A bad environment variable: which one and why.
#[derive(Debug, Error)]
#[error("{var}: {message}")]
pub struct EnvError {
    pub var: String,
    pub message: String,
}

fn env_err(var: &str, message: impl Into<String>) -> EnvError {
    EnvError {
        var: var.to_string(),
        message: message.into(),
    }
}

/// Which event log the saga runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventLogKind {
    /// Redis Streams with consumer groups (default: no broker needed).
    Redis,
    /// Kafka (needs the `kafka` cargo feature); the value is `bootstrap.servers`.
    Kafka { brokers: String },
}

/// How the service announces itself to the gateway's registry.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// e.g. `http://127.0.0.1:9090`
    pub admin_url: String,
    pub token: Option<String>,
    pub instance_id: String,
    /// Address the gateway should connect to.
    pub advertise_host: String,
    pub ttl: Duration,
}

/// What every sample service reads from its environment.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub name: &'static str,
    /// `HOST` (default 127.0.0.1) and `PORT` (default: the service's demo port).
    pub bind: SocketAddr,
    /// `DATA_DIR` (default `./data`): the SQLite file lives at `<DATA_DIR>/<name>.db`.
    pub data_dir: PathBuf,
    /// `REDIS_URL` (default `redis://127.0.0.1:6379`).
    pub redis_url: String,
    /// Set when `GATEWAY_ADMIN_URL` is set.
    pub registry: Option<RegistrySettings>,
    /// `GATEWAY_SIGNING_SECRET`: requests must carry the gateway's signature. Required:
    /// `None` only when [`insecure_unsigned_identity`](Self::insecure_unsigned_identity)
    /// was asked for explicitly.
    pub signing_secret: Option<String>,
    /// `INSECURE_TRUST_UNSIGNED_IDENTITY=1`: local development only, believe identity
    /// headers without a signature (anyone who reaches the port can claim any user).
    pub insecure_unsigned_identity: bool,
    /// `EVENT_LOG` = `redis` (default) or `kafka` (with `KAFKA_BROKERS`).
    pub event_log: EventLogKind,
    /// `EVENT_MAX_ATTEMPTS` (default 5): failures before a message is dead-lettered.
    pub event_max_attempts: u32,
    /// `EVENT_RETRY_BACKOFF` (default 200ms): first retry delay, doubled per attempt.
    pub event_retry_backoff: Duration,
}

impl ServiceSettings {
    /// Read the settings of service `name`, whose demo port is `default_port`.
    pub fn from_env(name: &'static str, default_port: u16) -> Result<Self, EnvError> {
        Self::from_lookup(name, default_port, |k| std::env::var(k).ok())
    }

    /// Same as [`from_env`](Self::from_env) with an explicit lookup (for tests).
    pub fn from_lookup(
        name: &'static str,
        default_port: u16,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, EnvError> {
        let non_empty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let host = non_empty("HOST").unwrap_or_else(|| "127.0.0.1".to_string());
        let port = match non_empty("PORT") {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| env_err("PORT", format!("not a port number: {p:?}")))?,
            None => default_port,
        };
        let bind: SocketAddr = format!("{host}:{port}")
            .parse()
            .map_err(|_| env_err("HOST", format!("not an IP address: {host:?}")))?;
        let advertise_host = non_empty("ADVERTISE_HOST").unwrap_or_else(|| {
            if bind.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                bind.ip().to_string()
            }
        });
        let registry = match non_empty("GATEWAY_ADMIN_URL") {
            Some(url) => Some(RegistrySettings {
                admin_url: url.trim_end_matches('/').to_string(),
                token: non_empty("GATEWAY_ADMIN_TOKEN"),
                instance_id: non_empty("INSTANCE_ID")
                    .unwrap_or_else(|| format!("{name}-{advertise_host}-{port}")),
                advertise_host: advertise_host.clone(),
                ttl: duration(&non_empty, "REGISTRY_TTL", Duration::from_secs(15))?,
            }),
            None => None,
        };
        let event_log = match non_empty("EVENT_LOG").as_deref() {
            None | Some("redis") => EventLogKind::Redis,
            Some("kafka") => EventLogKind::Kafka {
                brokers: non_empty("KAFKA_BROKERS").unwrap_or_else(|| "127.0.0.1:9092".into()),
            },
            Some(other) => {
                return Err(env_err(
                    "EVENT_LOG",
                    format!("unknown event log {other:?} (known: redis, kafka)"),
                ))
            }
        };
        let event_max_attempts = match non_empty("EVENT_MAX_ATTEMPTS") {
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| env_err("EVENT_MAX_ATTEMPTS", "expected a number >= 1"))?,
            None => 5,
        };
        let signing_secret = non_empty(SIGNING_SECRET_VAR);
        let insecure_unsigned_identity = flag(&non_empty, INSECURE_FLAG_VAR)?;
        if signing_secret.is_none() && !insecure_unsigned_identity {
            return Err(env_err(
                SIGNING_SECRET_VAR,
                format!(
                    "not set: without it {name} cannot tell the gateway's identity headers from \
                     a caller's forgery. Set it to the gateway's \
                     auth.identity.signature.secret, or for local development only set \
                     {INSECURE_FLAG_VAR}=1 to trust unsigned identity headers"
                ),
            ));
        }
        let signing_secret_is_none = signing_secret.is_none();
        Ok(Self {
            name,
            bind,
            data_dir: PathBuf::from(non_empty("DATA_DIR").unwrap_or_else(|| "data".into())),
            redis_url: non_empty("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            registry,
            signing_secret,
            insecure_unsigned_identity: insecure_unsigned_identity && signing_secret_is_none,
            event_log,
            event_max_attempts,
            event_retry_backoff: duration(
                &non_empty,
                "EVENT_RETRY_BACKOFF",
                Duration::from_millis(200),
            )?,
        })
    }

    /// Say at start how identity headers are trusted: a loud warning in the insecure
    /// development mode (the flag is ignored when a secret is set).
    pub fn log_identity_trust(&self) {
        if self.insecure_unsigned_identity {
            tracing::warn!(
                service = self.name,
                "INSECURE: {INSECURE_FLAG_VAR} is set and {SIGNING_SECRET_VAR} is not: identity \
                 headers are believed WITHOUT a gateway signature. Anyone who can reach this \
                 port can act as any user. Development only; never run like this in production."
            );
        } else {
            tracing::info!(
                service = self.name,
                "identity headers must carry the gateway's signature"
            );
        }
    }

    /// `<data_dir>/<name>.db`
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(format!("{}.db", self.name))
    }
}

/// The shared secret of the gateway's identity signature.
pub const SIGNING_SECRET_VAR: &str = "GATEWAY_SIGNING_SECRET";
/// The explicit development opt-out of signature checks.
pub const INSECURE_FLAG_VAR: &str = "INSECURE_TRUST_UNSIGNED_IDENTITY";

/// Read a boolean flag: `1`/`true`/`yes` or `0`/`false`/`no` (unset: false). Anything
/// else is an error, so a typo never silently picks a side.
pub fn flag(get: &impl Fn(&str) -> Option<String>, var: &str) -> Result<bool, EnvError> {
    match get(var).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("0") | Some("false") | Some("no") => Ok(false),
        Some("1") | Some("true") | Some("yes") => Ok(true),
        Some(other) => Err(env_err(
            var,
            format!("expected 1 or 0 (true/false, yes/no), got {other:?}"),
        )),
    }
}

/// Read a duration like `15s` or `250ms`.
pub fn duration(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
    default: Duration,
) -> Result<Duration, EnvError> {
    match get(var) {
        Some(v) => humantime::parse_duration(v.trim())
            .map_err(|e| env_err(var, format!("not a duration like \"15s\": {e}"))),
        None => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const SECRET: (&str, &str) = (SIGNING_SECRET_VAR, "a-test-secret-of-some-length");

    #[test]
    fn defaults_match_the_demo() {
        let s = ServiceSettings::from_lookup("order", 8083, lookup(&[SECRET])).unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:8083");
        assert!(s.registry.is_none());
        assert_eq!(s.event_log, EventLogKind::Redis);
        assert_eq!(s.db_path(), PathBuf::from("data/order.db"));
    }

    #[test]
    fn registry_and_port_from_env() {
        let s = ServiceSettings::from_lookup(
            "member",
            8081,
            lookup(&[
                ("PORT", "9999"),
                ("GATEWAY_ADMIN_URL", "http://127.0.0.1:9090/"),
                ("REGISTRY_TTL", "3s"),
                SECRET,
            ]),
        )
        .unwrap();
        let r = s.registry.unwrap();
        assert_eq!(r.admin_url, "http://127.0.0.1:9090");
        assert_eq!(r.instance_id, "member-127.0.0.1-9999");
        assert_eq!(r.ttl, Duration::from_secs(3));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e =
            ServiceSettings::from_lookup("x", 1, lookup(&[("PORT", "http"), SECRET])).unwrap_err();
        assert_eq!(e.var, "PORT");
        let e = ServiceSettings::from_lookup("x", 1, lookup(&[("EVENT_LOG", "nats"), SECRET]))
            .unwrap_err();
        assert!(e.to_string().contains("known: redis, kafka"), "{e}");
    }

    #[test]
    fn no_signing_secret_refuses_to_start_unless_explicitly_insecure() {
        let e = ServiceSettings::from_lookup("order", 1, lookup(&[])).unwrap_err();
        assert_eq!(e.var, SIGNING_SECRET_VAR);
        assert!(e.to_string().contains(INSECURE_FLAG_VAR), "{e}");
        // Blank is unset.
        let blank = lookup(&[(SIGNING_SECRET_VAR, "  ")]);
        assert!(ServiceSettings::from_lookup("order", 1, blank).is_err());
        // The flag off is the same as unset.
        let off = lookup(&[(INSECURE_FLAG_VAR, "0")]);
        assert!(ServiceSettings::from_lookup("order", 1, off).is_err());
        // A typo in the flag is an error naming the flag, never a silent choice.
        let typo = lookup(&[(INSECURE_FLAG_VAR, "ture")]);
        let e = ServiceSettings::from_lookup("order", 1, typo).unwrap_err();
        assert_eq!(e.var, INSECURE_FLAG_VAR);
        let s =
            ServiceSettings::from_lookup("order", 1, lookup(&[(INSECURE_FLAG_VAR, "1")])).unwrap();
        assert!(s.insecure_unsigned_identity && s.signing_secret.is_none());
        // With a secret the flag changes nothing.
        let both = lookup(&[SECRET, (INSECURE_FLAG_VAR, "true")]);
        let s = ServiceSettings::from_lookup("order", 1, both).unwrap();
        assert!(!s.insecure_unsigned_identity && s.signing_secret.is_some());
    }
}
