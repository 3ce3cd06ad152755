//! Edge authentication: placeholder contract, filled in by the auth work.

use std::sync::Arc;

use http::HeaderName;
use serde::{Deserialize, Serialize};

use crate::{ConfigIssue, Plugin};

/// The top-level `auth:` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {}

/// A route's `auth:` policy.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum RouteAuthConfig {
    #[default]
    Public,
}

/// Compiled auth state shared by all routes of one config.
pub struct AuthRuntime {
    strip: Vec<HeaderName>,
}

impl AuthRuntime {
    /// Compile the `auth:` section. `previous` lets unchanged state (Redis
    /// connections, revocation mirror, JWKS caches) carry over a reload.
    pub fn compile(
        _cfg: Option<&AuthConfig>,
        _previous: Option<&Arc<AuthRuntime>>,
        _rt: &tokio::runtime::Handle,
    ) -> Result<Arc<AuthRuntime>, Vec<ConfigIssue>> {
        Ok(Arc::new(AuthRuntime { strip: Vec::new() }))
    }

    /// Build the plugins a route's policy needs. `path` is the route's key path for errors.
    pub fn route_plugins(
        &self,
        _route: &RouteAuthConfig,
        _path: &str,
    ) -> Result<Vec<Arc<dyn Plugin>>, Vec<ConfigIssue>> {
        Ok(Vec::new())
    }

    /// Identity headers a client must never be able to send: removed on every route.
    pub fn strip_headers(&self) -> &[HeaderName] {
        &self.strip
    }
}
