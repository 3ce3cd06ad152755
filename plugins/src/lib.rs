//! Request-pipeline plugins: the small trait every plugin implements, and the
//! plugins themselves (JWT auth, Redis revocation, identity headers).
//!
//! A plugin sees a read-only view of the request (no session, no IO handles), so
//! it can be unit-tested without sockets, and answers with a [`Flow`].

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod auth;
pub mod clock;
pub mod cors;
mod duration;
mod flow;
pub mod rate_limit;
pub mod redis_link;
pub mod revocation;

pub use auth::{AuthConfig, AuthRuntime, RouteAuthConfig};
pub use cors::{Cors, CorsConfig};
pub use duration::Dur;
pub use flow::{cookie, ConfigIssue, Flow, Plugin, PluginOutput, Rejection, RequestView};
pub use rate_limit::{RateLimit, RateLimitConfig, RateLimitStore, RateLimitsConfig};
