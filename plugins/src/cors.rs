//! CORS, early in a route's chain: answers preflight requests at the edge and
//! adds the `Access-Control-*` headers to responses for allowed origins.
//!
//! A request from an origin that is not allowed passes without CORS headers (the
//! browser then refuses it); its preflight gets `403 {"error":"cors_origin_denied"}`.

use std::sync::Arc;

use async_trait::async_trait;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::{ConfigIssue, Dur, Flow, Plugin, PluginOutput, Rejection, RequestView};

/// A route's `cors:` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`), or `"*"` for any.
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for.
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for; `"*"` allows whatever is asked.
    #[serde(default = "default_headers")]
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (needs explicit origins).
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer.
    #[serde(default = "default_max_age")]
    pub max_age: Dur,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .map(String::from)
        .to_vec()
}
fn default_headers() -> Vec<String> {
    ["Authorization", "Content-Type"].map(String::from).to_vec()
}
fn default_max_age() -> Dur {
    Dur::from_secs(600)
}

/// The compiled CORS policy of one route.
#[derive(Debug)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<HeaderValue>,
    methods: Vec<Method>,
    methods_value: HeaderValue,
    any_header: bool,
    headers: Vec<HeaderName>,
    headers_value: HeaderValue,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

impl Cors {
    /// Build the policy; `path` is the route's key path for errors.
    pub fn new(cfg: &CorsConfig, path: &str) -> Result<Arc<Self>, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let any_origin = cfg.allow_origins.iter().any(|o| o == "*");
        if cfg.allow_origins.is_empty() {
            issues.push(ConfigIssue::new(
                format!("{path}.allow_origins"),
                "list at least one origin, or \"*\"",
            ));
        }
        if any_origin && cfg.allow_credentials {
            issues.push(ConfigIssue::new(
                format!("{path}.allow_credentials"),
                "credentials need explicit origins: browsers refuse `*` with credentials",
            ));
        }
        let mut origins = Vec::new();
        for (k, o) in cfg
            .allow_origins
            .iter()
            .enumerate()
            .filter(|(_, o)| *o != "*")
        {
            let ok = (o.starts_with("http://") || o.starts_with("https://")) && !o.ends_with('/');
            match HeaderValue::from_str(o) {
                Ok(v) if ok => origins.push(v),
                _ => issues.push(ConfigIssue::new(
                    format!("{path}.allow_origins[{k}]"),
                    format!("{o:?} is not an origin (scheme://host[:port], no path)"),
                )),
            }
        }
        let mut methods = Vec::new();
        for (k, m) in cfg.allow_methods.iter().enumerate() {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => methods.push(m),
                Err(_) => issues.push(ConfigIssue::new(
                    format!("{path}.allow_methods[{k}]"),
                    format!("{m:?} is not a method"),
                )),
            }
        }
        let any_header = cfg.allow_headers.iter().any(|h| h == "*");
        let mut headers = Vec::new();
        for (k, h) in cfg
            .allow_headers
            .iter()
            .enumerate()
            .filter(|(_, h)| *h != "*")
        {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(h) => headers.push(h),
                Err(_) => issues.push(ConfigIssue::new(
                    format!("{path}.allow_headers[{k}]"),
                    format!("{h:?} is not a header name"),
                )),
            }
        }
        let join = |items: &[String]| HeaderValue::from_str(&items.join(", "));
        let methods_value = join(&methods.iter().map(|m| m.to_string()).collect::<Vec<_>>());
        let headers_value = join(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
        let expose = if cfg.expose_headers.is_empty() {
            Ok(None)
        } else {
            join(&cfg.expose_headers).map(Some)
        };
        let (Ok(methods_value), Ok(headers_value), Ok(expose)) =
            (methods_value, headers_value, expose)
        else {
            issues.push(ConfigIssue::new(
                path,
                "header values must be visible ASCII",
            ));
            return Err(issues);
        };
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Arc::new(Self {
            any_origin,
            origins,
            methods,
            methods_value,
            any_header,
            headers,
            headers_value,
            expose,
            credentials: cfg.allow_credentials,
            max_age: HeaderValue::from(cfg.max_age.get().as_secs()),
        }))
    }

    /// The `Access-Control-Allow-Origin` value for this origin, if it is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.origins.iter().any(|o| o == origin) {
            Some(origin.clone())
        } else if self.any_origin {
            Some(HeaderValue::from_static("*"))
        } else {
            None
        }
    }

    fn preflight(&self, req: &RequestView<'_>, allow: HeaderValue, asked: &HeaderValue) -> Flow {
        let method_ok =
            Method::from_bytes(asked.as_bytes()).is_ok_and(|m| self.methods.contains(&m));
        let asked_headers = req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
        let headers_ok = self.any_header
            || asked_headers
                .and_then(|v| v.to_str().ok())
                .is_none_or(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .all(|h| {
                            self.headers
                                .iter()
                                .any(|a| a.as_str().eq_ignore_ascii_case(h))
                        })
                });
        if !method_ok || !headers_ok {
            return Flow::Reject(Rejection::new(
                StatusCode::FORBIDDEN,
                "cors_preflight_denied",
                "this cross-origin request is not allowed",
            ));
        }
        let mut headers = vec![
            (ACCESS_CONTROL_ALLOW_ORIGIN, allow),
            (ACCESS_CONTROL_ALLOW_METHODS, self.methods_value.clone()),
            (ACCESS_CONTROL_MAX_AGE, self.max_age.clone()),
            (VARY, HeaderValue::from_static("Origin")),
        ];
        let allow_headers = match (self.any_header, asked_headers) {
            (true, Some(asked)) => Some(asked.clone()),
            (false, _) if !self.headers.is_empty() => Some(self.headers_value.clone()),
            _ => None,
        };
        if let Some(h) = allow_headers {
            headers.push((ACCESS_CONTROL_ALLOW_HEADERS, h));
        }
        if self.credentials {
            headers.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        Flow::Answer {
            status: StatusCode::NO_CONTENT,
            headers,
        }
    }
}

#[async_trait]
impl Plugin for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }

    async fn on_request(&self, req: &RequestView<'_>, out: &mut PluginOutput) -> Flow {
        let Some(origin) = req.headers.get(ORIGIN) else {
            return Flow::Continue;
        };
        let asked = (req.method == Method::OPTIONS)
            .then(|| req.headers.get(ACCESS_CONTROL_REQUEST_METHOD))
            .flatten();
        let Some(allow) = self.allow_origin(origin) else {
            if asked.is_some() {
                return Flow::Reject(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "cors_origin_denied",
                    "this origin may not call this route",
                ));
            }
            return Flow::Continue;
        };
        if let Some(asked) = asked {
            return self.preflight(req, allow, asked);
        }
        out.response_headers
            .push((ACCESS_CONTROL_ALLOW_ORIGIN, allow));
        out.response_headers
            .push((VARY, HeaderValue::from_static("Origin")));
        if self.credentials {
            out.response_headers.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        if let Some(e) = &self.expose {
            out.response_headers
                .push((ACCESS_CONTROL_EXPOSE_HEADERS, e.clone()));
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Uri};

    fn cors(json: &str) -> Arc<Cors> {
        Cors::new(&serde_json::from_str(json).unwrap(), "routes[0].cors").unwrap()
    }

    async fn call(c: &Cors, method: Method, headers: &[(&str, &str)]) -> (Flow, PluginOutput) {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let uri = Uri::from_static("/x");
        let view = RequestView {
            method: &method,
            uri: &uri,
            headers: &h,
            client_ip: None,
        };
        let mut out = PluginOutput::default();
        let flow = c.on_request(&view, &mut out).await;
        (flow, out)
    }

    #[tokio::test]
    async fn preflight_from_an_allowed_origin_is_answered() {
        let c =
            cors(r#"{"allow_origins": ["https://app.example.com"], "allow_credentials": true}"#);
        let (flow, _) = call(
            &c,
            Method::OPTIONS,
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
        )
        .await;
        let Flow::Answer { status, headers } = flow else {
            panic!("{flow:?}")
        };
        assert_eq!(status, StatusCode::NO_CONTENT);
        let get = |n: HeaderName| {
            headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            get(ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            get(ACCESS_CONTROL_ALLOW_CREDENTIALS).as_deref(),
            Some("true")
        );
        assert!(get(ACCESS_CONTROL_ALLOW_METHODS).unwrap().contains("POST"));
    }

    #[tokio::test]
    async fn refusals_and_simple_requests() {
        let c = cors(
            r#"{"allow_origins": ["https://app.example.com"], "expose_headers": ["X-Request-Id"]}"#,
        );
        let (flow, _) = call(
            &c,
            Method::OPTIONS,
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
        assert!(
            matches!(flow, Flow::Reject(ref r) if r.code == "cors_origin_denied"),
            "{flow:?}"
        );
        let (flow, _) = call(
            &c,
            Method::OPTIONS,
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "TRACE"),
            ],
        )
        .await;
        assert!(
            matches!(flow, Flow::Reject(ref r) if r.code == "cors_preflight_denied"),
            "{flow:?}"
        );
        let (flow, out) = call(&c, Method::GET, &[("origin", "https://app.example.com")]).await;
        assert!(matches!(flow, Flow::Continue));
        assert!(out
            .response_headers
            .iter()
            .any(|(k, v)| *k == ACCESS_CONTROL_EXPOSE_HEADERS && v == "X-Request-Id"));
        let (flow, out) = call(&c, Method::GET, &[("origin", "https://evil.example")]).await;
        assert!(matches!(flow, Flow::Continue) && out.response_headers.is_empty());
        let (_, out) = call(&c, Method::GET, &[]).await;
        assert!(out.response_headers.is_empty());
    }

    #[test]
    fn wildcard_with_credentials_is_an_error() {
        let e = Cors::new(
            &serde_json::from_str(r#"{"allow_origins": ["*"], "allow_credentials": true}"#)
                .unwrap(),
            "routes[1].cors",
        )
        .unwrap_err();
        assert_eq!(e[0].path, "routes[1].cors.allow_credentials");
        let e = Cors::new(
            &serde_json::from_str(r#"{"allow_origins": ["https://a.example/"]}"#).unwrap(),
            "p",
        )
        .unwrap_err();
        assert_eq!(e[0].path, "p.allow_origins[0]");
    }
}
