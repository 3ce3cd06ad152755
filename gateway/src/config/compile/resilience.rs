//! Compile a service's `passive_health` and `circuit_breaker` sections into the
//! runtime's [`PassiveHealth`] and [`CircuitBreakerSpec`], reporting every bad value with
//! its key path.

use super::super::file::PassiveHealthConfig;
use super::super::resilience::CircuitBreakerConfig;
use super::super::ConfigError;
use crate::upstream::policy::{CircuitBreakerSpec, PassiveHealth};

/// `passive_health`: the back-off of repeat ejections needs a cap no shorter than its start.
pub(super) fn passive_health(
    cfg: &PassiveHealthConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<PassiveHealth> {
    let (base, max) = (cfg.ejection_time.get(), cfg.max_ejection_time.get());
    if max < base {
        errors.push(ConfigError::new(
            format!("{path}.max_ejection_time"),
            format!(
                "must be at least ejection_time ({}): it caps the doubling of repeat ejections",
                cfg.ejection_time
            ),
        ));
        return None;
    }
    Some(PassiveHealth {
        consecutive_failures: cfg.consecutive_failures,
        ejection_time: base,
        max_ejection_time: max,
    })
}

/// `circuit_breaker`: ratios are shares of calls, counts and durations above zero.
pub(super) fn circuit_breaker(
    cfg: &CircuitBreakerConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<CircuitBreakerSpec> {
    let before = errors.len();
    let mut bad = |key: &str, message: &str| {
        errors.push(ConfigError::new(format!("{path}.{key}"), message));
    };
    for (key, ratio) in [
        ("failure_ratio", cfg.failure_ratio),
        ("slow_call_ratio", cfg.slow_call_ratio),
    ] {
        // written so that NaN fails too
        if !(ratio > 0.0 && ratio <= 1.0) {
            bad(
                key,
                "must be a share of calls above 0 and at most 1 (e.g. 0.5)",
            );
        }
    }
    for (key, d) in [
        ("slow_call_duration", cfg.slow_call_duration),
        ("window", cfg.window),
        ("open_for", cfg.open_for),
    ] {
        if d.get().is_zero() {
            bad(key, "must be above zero");
        }
    }
    if cfg.minimum_calls == 0 {
        bad(
            "minimum_calls",
            "must be at least 1 (no decision on an empty window)",
        );
    }
    if cfg.half_open_calls == 0 {
        bad(
            "half_open_calls",
            "must be at least 1 (a probe decides whether the service is back)",
        );
    }
    if errors.len() != before {
        return None;
    }
    Some(CircuitBreakerSpec {
        failure_ratio: cfg.failure_ratio,
        slow_call_ratio: cfg.slow_call_ratio,
        slow_call_duration: cfg.slow_call_duration.get(),
        window: cfg.window.get(),
        minimum_calls: cfg.minimum_calls,
        open_for: cfg.open_for.get(),
        half_open_calls: cfg.half_open_calls,
    })
}
