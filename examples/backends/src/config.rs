//! Service settings from the environment: ports, data dir, Redis, registry, signing,
//! event log. Every value has a default that matches the demo (`config/gateway.yaml`).

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
    /// `GATEWAY_SIGNING_SECRET`: when set, requests must carry the gateway's signature.
    pub signing_secret: Option<String>,
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
        Ok(Self {
            name,
            bind,
            data_dir: PathBuf::from(non_empty("DATA_DIR").unwrap_or_else(|| "data".into())),
            redis_url: non_empty("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            registry,
            signing_secret: non_empty("GATEWAY_SIGNING_SECRET"),
            event_log,
            event_max_attempts,
            event_retry_backoff: duration(
                &non_empty,
                "EVENT_RETRY_BACKOFF",
                Duration::from_millis(200),
            )?,
        })
    }

    /// `<data_dir>/<name>.db`
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(format!("{}.db", self.name))
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

    #[test]
    fn defaults_match_the_demo() {
        let s = ServiceSettings::from_lookup("order", 8083, lookup(&[])).unwrap();
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
        let e = ServiceSettings::from_lookup("x", 1, lookup(&[("PORT", "http")])).unwrap_err();
        assert_eq!(e.var, "PORT");
        let e = ServiceSettings::from_lookup("x", 1, lookup(&[("EVENT_LOG", "nats")])).unwrap_err();
        assert!(e.to_string().contains("known: redis, kafka"), "{e}");
    }
}
