//! Eureka discovery (control plane): poll `GET {server}/eureka/apps/{APP}` with
//! `Accept: application/json` on the Spring Cloud Netflix Eureka REST API, keep
//! the instances whose status is `UP`, weight them by a metadata key, and fail
//! over between servers.
//!
//! The JSON quirks of Eureka servers are accepted: `instance` as an array or a
//! single object, ports as `{"$": 8080, "@enabled": "true"}` (number or string)
//! or a bare number, metadata values as strings or numbers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use super::{clamp_weight, DiscoveryError, Refresh};
use crate::upstream::policy::EurekaSpec;
use crate::upstream::Endpoint;

/// Polls one application on a list of Eureka servers.
pub struct EurekaSource {
    app: String,
    urls: Vec<String>,
    /// The same URLs without credentials, for logs and the admin view.
    shown: Vec<String>,
    /// The server that answered last (tried first next time).
    preferred: usize,
    client: reqwest::Client,
    interval: Duration,
    weight_key: String,
    use_hostname: bool,
    secure: bool,
}

/// `{server}/eureka/apps/{APP}`; a server URL that already ends in `/eureka` gets `/apps/{APP}`.
pub fn app_url(server: &str, app: &str) -> String {
    let base = server.trim_end_matches('/');
    if base.ends_with("/eureka") || base.ends_with("/eureka/v2") {
        format!("{base}/apps/{app}")
    } else {
        format!("{base}/eureka/apps/{app}")
    }
}

impl EurekaSource {
    pub fn new(spec: &EurekaSpec, tls: bool) -> Result<Self, DiscoveryError> {
        let app = spec.app.clone();
        let client = reqwest::Client::builder()
            .timeout(spec.timeout)
            .connect_timeout(spec.timeout)
            .build()
            .map_err(|e| DiscoveryError::Eureka(format!("cannot build the HTTP client: {e}")))?;
        Ok(EurekaSource {
            urls: spec.servers.iter().map(|s| app_url(s, &app)).collect(),
            shown: spec
                .servers
                .iter()
                .map(|s| app_url(&redact(s), &app))
                .collect(),
            app,
            preferred: 0,
            client,
            interval: spec.interval,
            weight_key: spec.weight_key.clone(),
            use_hostname: spec.use_hostname,
            secure: tls,
        })
    }

    pub fn target(&self) -> String {
        self.app.clone()
    }

    pub fn retry_after(&self) -> Duration {
        self.interval.min(Duration::from_secs(5))
    }

    pub async fn refresh(&mut self) -> Result<Refresh, DiscoveryError> {
        let mut failures = Vec::new();
        for k in 0..self.urls.len() {
            let idx = (self.preferred + k) % self.urls.len();
            let (url, shown) = (&self.urls[idx], &self.shown[idx]);
            match self.fetch(url).await {
                Ok(instances) => {
                    if idx != self.preferred {
                        tracing::warn!(app = %self.app, server = %shown, "eureka: failed over to another server");
                    }
                    self.preferred = idx;
                    let endpoints = self.to_endpoints(&instances).await;
                    return Ok(Refresh {
                        endpoints,
                        next: self.interval,
                    });
                }
                Err(e) => failures.push(format!("{shown}: {e}")),
            }
        }
        Err(DiscoveryError::Eureka(failures.join("; ")))
    }

    /// The UP instances of the app; `Ok(empty)` when the server does not know the app.
    async fn fetch(&self, url: &str) -> Result<Vec<EurekaInstance>, String> {
        let resp = self
            .client
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            // Eureka's answer for an application with no registered instance
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| format!("not Eureka JSON: {}", e.without_url()))?;
        parse_application(&body, self.secure, &self.weight_key)
    }

    async fn to_endpoints(&self, instances: &[EurekaInstance]) -> Vec<Endpoint> {
        let mut out = Vec::with_capacity(instances.len());
        for i in instances {
            let host = if self.use_hostname {
                &i.host_name
            } else {
                &i.ip_addr
            };
            let host = if host.is_empty() { &i.host_name } else { host };
            match resolve(host, i.port).await {
                Some(addr) => out.push(Endpoint {
                    addr,
                    weight: i.weight,
                }),
                None => {
                    tracing::warn!(app = %self.app, instance = %i.id, host = %host, "eureka: cannot resolve an instance's host; skipped")
                }
            }
        }
        out.sort_by_key(|e| e.addr);
        out
    }
}

/// A server URL without its `user:password@` part.
fn redact(server: &str) -> String {
    match reqwest::Url::parse(server) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => server.to_string(),
    }
}

async fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    let lookup = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::lookup_host((host, port)),
    )
    .await;
    super::prefer_ipv4(lookup.ok()?.ok()?)
}

/// An UP instance as read from Eureka JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EurekaInstance {
    pub id: String,
    pub ip_addr: String,
    pub host_name: String,
    pub port: u16,
    pub weight: u32,
}

/// Read `{"application": {"instance": [...] | {...}}}`: the UP instances with an enabled port.
pub fn parse_application(
    body: &Value,
    secure: bool,
    weight_key: &str,
) -> Result<Vec<EurekaInstance>, String> {
    let app = body
        .get("application")
        .ok_or("no \"application\" object (is the server a Eureka server?)")?;
    let list: Vec<&Value> = match app.get("instance") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        Some(_) => return Err("\"instance\" is neither a list nor an object".into()),
    };
    let mut out = Vec::new();
    for inst in list {
        let status = text(inst.get("status")).unwrap_or_default();
        if !status.eq_ignore_ascii_case("UP") {
            continue;
        }
        let port_key = if secure { "securePort" } else { "port" };
        let Some(port) = port_of(inst.get(port_key)) else {
            continue;
        };
        let weight = inst
            .get("metadata")
            .and_then(|m| text(m.get(weight_key)))
            .and_then(|w| w.trim().parse::<u64>().ok())
            .map_or(1, clamp_weight);
        out.push(EurekaInstance {
            id: text(inst.get("instanceId")).unwrap_or_default(),
            ip_addr: text(inst.get("ipAddr")).unwrap_or_default(),
            host_name: text(inst.get("hostName")).unwrap_or_default(),
            port,
            weight,
        });
    }
    Ok(out)
}

/// A string, number or boolean as text.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `{"$": 8080, "@enabled": "true"}` (or a bare number); None when disabled or invalid.
fn port_of(v: Option<&Value>) -> Option<u16> {
    let v = v?;
    let (num, enabled) = match v {
        Value::Object(o) => (text(o.get("$")), text(o.get("@enabled"))),
        other => (text(Some(other)), None),
    };
    if enabled.is_some_and(|e| e.eq_ignore_ascii_case("false")) {
        return None;
    }
    num?.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TWO: &str = r#"{"application":{"name":"MEMBER","instance":[
      {"instanceId":"a:member:8080","hostName":"a.local","app":"MEMBER","ipAddr":"10.0.0.1","status":"UP",
       "port":{"$":8080,"@enabled":"true"},"securePort":{"$":8443,"@enabled":"false"},
       "metadata":{"weight":"3","management.port":"8080"}},
      {"instanceId":"b:member:8080","hostName":"b.local","app":"MEMBER","ipAddr":"10.0.0.2","status":"DOWN",
       "port":{"$":"8080","@enabled":"true"},"metadata":{"@class":"java.util.Collections$EmptyMap"}},
      {"instanceId":"c:member:8080","hostName":"c.local","app":"MEMBER","ipAddr":"10.0.0.3","status":"OUT_OF_SERVICE",
       "port":{"$":8080,"@enabled":"true"}},
      {"instanceId":"d:member:9090","hostName":"d.local","app":"MEMBER","ipAddr":"10.0.0.4","status":"UP",
       "port":{"$":"9090","@enabled":"true"},"metadata":{"weight":7}}]}}"#;

    #[test]
    fn keeps_up_instances_with_weights() {
        let v: Value = serde_json::from_str(TWO).unwrap();
        let got = parse_application(&v, false, "weight").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].ip_addr.as_str(), got[0].port, got[0].weight),
            ("10.0.0.1", 8080, 3)
        );
        assert_eq!(
            (got[1].ip_addr.as_str(), got[1].port, got[1].weight),
            ("10.0.0.4", 9090, 7)
        );
    }

    #[test]
    fn single_instance_object_and_secure_port() {
        let v: Value = serde_json::from_str(
            r#"{"application":{"name":"X","instance":{"instanceId":"x","ipAddr":"10.1.1.1","status":"UP",
               "port":{"$":80,"@enabled":"false"},"securePort":{"$":443,"@enabled":"true"}}}}"#,
        )
        .unwrap();
        assert!(parse_application(&v, false, "weight").unwrap().is_empty());
        let got = parse_application(&v, true, "weight").unwrap();
        assert_eq!(got[0].port, 443);
        assert_eq!(got[0].weight, 1);
    }

    #[test]
    fn no_instances_and_garbage() {
        let v: Value = serde_json::from_str(r#"{"application":{"name":"X"}}"#).unwrap();
        assert!(parse_application(&v, false, "weight").unwrap().is_empty());
        let v: Value = serde_json::from_str(r#"{"applications":{}}"#).unwrap();
        assert!(parse_application(&v, false, "weight").is_err());
    }

    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "(UP|DOWN|8080|true|false|\\$|@enabled|[a-z]{0,6})".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let keys =
                "(application|instance|status|port|securePort|\\$|@enabled|ipAddr|metadata|weight)";
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(keys, inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_json(body in json(), secure: bool) {
            let _ = parse_application(&body, secure, "weight");
            let wrapped = json!({"application": {"instance": body}});
            let _ = parse_application(&wrapped, secure, "weight");
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            app_url("http://e:8761/eureka/", "M"),
            "http://e:8761/eureka/apps/M"
        );
        assert_eq!(app_url("http://e:8761", "M"), "http://e:8761/eureka/apps/M");
        assert_eq!(
            redact("http://u:secret@e:8761/eureka/"),
            "http://e:8761/eureka/"
        );
    }
}
