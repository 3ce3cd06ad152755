//! The YAML schema of a service's failure handling beyond health checks: its
//! circuit breaker (`services.<name>.circuit_breaker`). `config::compile` checks and
//! converts it into the runtime's `upstream::CircuitBreakerSpec`.

use serde::{Deserialize, Serialize};

use super::duration::Dur;

/// `circuit_breaker:` under a service: stop sending to a failing service for a while.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Open when at least this share of the window's calls failed (5xx from the
    /// instance, connect errors, timeouts); above 0, at most 1.
    #[serde(default = "default_failure_ratio")]
    pub failure_ratio: f64,
    /// Open when at least this share were slower than `slow_call_duration`; 1.0: off.
    #[serde(default = "default_slow_call_ratio")]
    pub slow_call_ratio: f64,
    #[serde(default = "default_slow_call_duration")]
    pub slow_call_duration: Dur,
    /// The rolling window the ratios are taken over (ten time buckets).
    #[serde(default = "default_window")]
    pub window: Dur,
    /// No decision with fewer calls than this in the window.
    #[serde(default = "default_minimum_calls")]
    pub minimum_calls: u32,
    /// Open -> half-open after this; also the `Retry-After` of refused requests.
    #[serde(default = "default_open_for")]
    pub open_for: Dur,
    /// Probes let through while half-open: all succeed -> closed, any fails -> open.
    #[serde(default = "default_half_open_calls")]
    pub half_open_calls: u32,
}

fn default_failure_ratio() -> f64 {
    0.5
}
fn default_slow_call_ratio() -> f64 {
    1.0
}
fn default_slow_call_duration() -> Dur {
    Dur::from_secs(2)
}
fn default_window() -> Dur {
    Dur::from_secs(10)
}
fn default_minimum_calls() -> u32 {
    20
}
fn default_open_for() -> Dur {
    Dur::from_secs(10)
}
fn default_half_open_calls() -> u32 {
    3
}

/// What an empty `circuit_breaker: {}` parses to.
impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_ratio: default_failure_ratio(),
            slow_call_ratio: default_slow_call_ratio(),
            slow_call_duration: default_slow_call_duration(),
            window: default_window(),
            minimum_calls: default_minimum_calls(),
            open_for: default_open_for(),
            half_open_calls: default_half_open_calls(),
        }
    }
}
