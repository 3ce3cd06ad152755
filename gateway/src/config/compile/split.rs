//! Compile a route's target services: `service:` (one) or `targets:` (a weighted
//! split) and `sticky:`, each error with its key path and the fix.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderName;

use super::super::file::{GatewayConfig, RouteConfig, StickyConfig};
use super::super::ConfigError;
use crate::observe::RouteMetrics;
use crate::routing::{Split, Sticky, Target};
use crate::upstream::Service;

/// A route's resolved targets and stickiness, before metric handles exist.
pub(super) struct Resolved {
    targets: Vec<(Arc<Service>, u32)>,
    sticky: Option<Sticky>,
}

/// The route's targets, resolved (`None` after an error, which is in `errors`).
pub(super) fn compile_targets(
    rc: &RouteConfig,
    path: &str,
    file: &GatewayConfig,
    services: &BTreeMap<String, Arc<Service>>,
    errors: &mut Vec<ConfigError>,
) -> Option<Resolved> {
    let before = errors.len();
    let sticky = rc
        .sticky
        .as_ref()
        .and_then(|s| compile_sticky(s, &format!("{path}.sticky"), errors));
    let mut resolved = Vec::new();
    match (&rc.service, rc.targets.is_empty()) {
        (Some(_), false) => errors.push(ConfigError::new(
            path,
            "use either `service` or `targets`, not both (`targets: [{service: a, weight: 90}, {service: b, weight: 10}]` splits traffic)",
        )),
        (None, true) => errors.push(ConfigError::new(
            path,
            "missing `service` (or `targets` for a weighted split)",
        )),
        (Some(name), true) => {
            if rc.sticky.is_some() {
                errors.push(ConfigError::new(
                    format!("{path}.sticky"),
                    "`sticky` needs `targets` (a route with one service has nothing to stick to)",
                ));
            }
            if let Some(service) = resolve(name, &format!("{path}.service"), file, services, errors)
            {
                resolved.push((service, 1));
            }
        }
        (None, false) => {
            for (k, t) in rc.targets.iter().enumerate() {
                let tpath = format!("{path}.targets[{k}]");
                if t.weight == 0 {
                    errors.push(ConfigError::new(
                        format!("{tpath}.weight"),
                        "must be at least 1 (remove the target to send it nothing)",
                    ));
                }
                let service = resolve(&t.service, &format!("{tpath}.service"), file, services, errors);
                let name = bare(&t.service);
                if rc.targets[..k].iter().any(|o| bare(&o.service) == name) {
                    errors.push(ConfigError::new(
                        format!("{tpath}.service"),
                        format!("{name:?} is already a target of this route (add the weights into one entry)"),
                    ));
                }
                if let Some(service) = service {
                    resolved.push((service, t.weight));
                }
            }
        }
    }
    (errors.len() == before).then_some(Resolved {
        targets: resolved,
        sticky,
    })
}

/// The route's split, with metric handles labelled by route and target service.
pub(super) fn build(route_id: &str, resolved: Resolved) -> Split {
    let targets = resolved
        .targets
        .into_iter()
        .map(|(service, weight)| Target {
            metrics: RouteMetrics::new(route_id, &service.name),
            service,
            weight,
        })
        .collect();
    Split::new(targets, resolved.sticky)
}

fn bare(name: &str) -> &str {
    name.strip_prefix("lb://").unwrap_or(name)
}

fn resolve(
    name: &str,
    path: &str,
    file: &GatewayConfig,
    services: &BTreeMap<String, Arc<Service>>,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<Service>> {
    let name = bare(name);
    let service = services.get(name).cloned();
    // a service that failed to compile has its own error already
    if service.is_none() && !file.services.contains_key(name) {
        let known: Vec<&str> = file.services.keys().map(String::as_str).collect();
        errors.push(ConfigError::new(
            path,
            format!(
                "unknown service {name:?} (known: {})",
                if known.is_empty() {
                    "none defined".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    service
}

fn compile_sticky(s: &StickyConfig, path: &str, errors: &mut Vec<ConfigError>) -> Option<Sticky> {
    match s {
        StickyConfig::Cookie(name) if name.is_empty() || name.contains([';', '=', ' ']) => {
            errors.push(ConfigError::new(
                format!("{path}.cookie"),
                format!("{name:?} is not a cookie name"),
            ));
            None
        }
        StickyConfig::Cookie(name) => Some(Sticky::Cookie(name.clone())),
        StickyConfig::Header(name) => match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Some(Sticky::Header(h)),
            Err(_) => {
                errors.push(ConfigError::new(
                    format!("{path}.header"),
                    format!("{name:?} is not a valid header name"),
                ));
                None
            }
        },
    }
}
