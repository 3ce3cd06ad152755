//! Routing stage: pick the route for a request from the compiled table.
//!
//! Precedence (documented in README): exact path, then prefix/glob by longest
//! literal part, then regex, then catch-all; within that, an exact host beats a
//! wildcard host beats no host, more method/header conditions win, then file order.
//! A `prefix:` matches at segment boundaries (`/member` matches `/member/x`, not
//! `/memberx`). Routes match the path as decoded by [`path_policy::check`], which
//! refuses first what a backend could resolve differently.

pub mod matcher;
pub mod path_policy;
pub mod rewrite;
pub mod split;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};

pub use matcher::RouteMatcher;
pub use rewrite::{HeaderRules, PathRewrite};
pub use split::{Split, Sticky, Target};

/// When a failed attempt is retried, compiled from `routes[].retries`. The decision
/// itself (the table of cases) is `RetryPolicy::decide` in `proxy::retry`, the one
/// place the request path asks.
#[derive(Debug, Clone, Default)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub attempts: u32,
    /// Upstream statuses that count as a failed attempt.
    pub on_status: Vec<u16>,
    /// Retry non-idempotent methods too.
    pub non_idempotent: bool,
}

/// A compiled route.
pub struct Route {
    pub id: Arc<str>,
    /// Position in the file (for precedence ties).
    pub index: usize,
    pub matcher: RouteMatcher,
    /// The target services (one for a plain `service:` route); each request picks
    /// one after its plugins ran and keeps it for every attempt.
    pub split: Split,
    pub rewrite: PathRewrite,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    /// The route's own timeouts (`timeouts:`); the chosen service's otherwise.
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub retry: RetryPolicy,
    /// Largest request body in bytes (the route's own, else `server.max_body_size`); 0: none.
    pub max_body_size: u64,
    /// The route's request plugins, in the order `config::compile` documents and
    /// builds in one place (`plugin_chain`): cors, rate limit, auth.
    pub plugins: Vec<Arc<dyn plugins::Plugin>>,
    /// The route's limiter, kept across reloads that leave its config unchanged.
    pub rate_limit: Option<Arc<plugins::RateLimit>>,
    /// What the admin config view shows of it (match and auth, as written).
    pub summary: serde_json::Value,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("id", &self.id)
            .field("matcher", &self.matcher)
            .field("targets", &self.split.targets().len())
            .finish_non_exhaustive()
    }
}

impl Route {
    /// The target a request picked (see [`Split::pick`]).
    pub fn target(&self, index: usize) -> &Target {
        self.split.target(index)
    }
}

/// All routes in precedence order, indexed by first path segment.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    /// First path segment -> candidate routes (this segment's plus the unindexed), in order.
    index: HashMap<Box<str>, Vec<u32>>,
    /// Routes that can match any first segment, in order.
    fallback: Vec<u32>,
}

impl RouteTable {
    /// Sort routes by precedence and build the index.
    pub fn new(mut routes: Vec<Arc<Route>>) -> Self {
        // every table is built before it serves a request: export the refusal counters
        path_policy::register_metrics();
        routes.sort_by_key(|r| {
            let m = &r.matcher;
            (
                m.path.rank(),
                std::cmp::Reverse(m.path.literal_len()),
                m.host.rank(),
                std::cmp::Reverse(m.methods.len().min(1) + m.headers.len()),
                r.index,
            )
        });
        let mut index: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut fallback = Vec::new();
        for (pos, r) in routes.iter().enumerate() {
            match r.matcher.path.index_key() {
                Some(key) => index.entry(key.into()).or_default().push(pos as u32),
                None => fallback.push(pos as u32),
            }
        }
        for list in index.values_mut() {
            list.extend_from_slice(&fallback);
            list.sort_unstable();
        }
        Self {
            routes,
            index,
            fallback,
        }
    }

    /// The first route (by precedence) whose conditions all hold.
    /// `host` is lowercase without port.
    pub fn select(
        &self,
        method: &Method,
        host: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<&Arc<Route>> {
        let seg = matcher::first_segment(path);
        let candidates = self.index.get(seg).unwrap_or(&self.fallback);
        candidates
            .iter()
            .map(|&k| &self.routes[k as usize])
            .find(|r| r.matcher.matches(method, host, path, headers))
    }

    /// Routes in precedence order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
