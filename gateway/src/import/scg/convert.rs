//! Spring Cloud Gateway routes -> our services and routes: one service per `uri`
//! (`lb://name` from Eureka when the file names a Eureka server, else a placeholder
//! to fill in; `http://host:port` static or DNS), one route per path and host
//! pattern, `Weight` groups merged into one route with `targets:`, and every
//! unconverted part noted with its line.

use super::emit::{Instances, OutRoute, OutService, Output};
use super::filters::{self, Effects};
use super::predicates::{conditions, path_cond, Conditions};
use super::report::Note;
use super::routes::{gateway_prefix, read_default_filters, read_routes, ScgRoute};
use super::source::Props;

/// The Eureka servers the file's client uses, and its poll interval.
struct Eureka {
    servers: Vec<String>,
    interval: Option<String>,
}

/// Convert `props` (read from the file called `source_name`).
pub fn convert(props: &Props, source_name: &str) -> (Output, Vec<Note>) {
    let mut notes = Vec::new();
    let prefix = gateway_prefix(props);
    let mut routes = read_routes(props, prefix);
    routes.sort_by_key(|r| r.order); // stable: equal orders keep file order
    let defaults = read_default_filters(props, prefix);
    let eureka = props
        .get("eureka.client.service-url.defaultZone")
        .map(|p| Eureka {
            servers: p
                .value
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            interval: props
                .get("eureka.client.registry-fetch-interval-seconds")
                .and_then(|p| p.value.trim().parse::<u64>().ok())
                .map(|s| format!("{s}s")),
        });
    let mut out = Output {
        source_name: source_name.to_string(),
        listen_port: props
            .get("server.port")
            .and_then(|p| p.value.trim().parse().ok())
            .unwrap_or(8080),
        ..Output::default()
    };
    // (weight group, its first member's routes, their index in out.routes, its line)
    let mut groups: Vec<(String, Vec<OutRoute>, usize, usize)> = Vec::new();
    for r in &routes {
        for (k, line) in &r.unknown {
            notes.push(Note::new(
                *line,
                format!("route {}: {k}", r.id),
                "unknown route key: not converted",
            ));
        }
        let first_note = notes.len();
        let Some(service) = service_for(r, eureka.as_ref(), &mut out, &mut notes) else {
            continue;
        };
        let cond = conditions(&r.id, &r.predicates, &mut notes);
        if cond.lost {
            notes.push(Note::new(
                r.line,
                format!("route {}", r.id),
                "none of its path (or host) patterns converted: route not converted, it would match far more than in SCG",
            ));
            continue;
        }
        let mut items = defaults.clone();
        items.extend(r.filters.iter().cloned());
        let (mut converted, effects) = expand(r, &cond, &items, &service, &mut notes);
        // what was left out of a route is also a comment on it in the output
        let todo: Vec<String> = notes[first_note..]
            .iter()
            .map(|n| format!("line {}: {}: {}", n.line, n.subject, n.why))
            .collect();
        for c in &mut converted {
            c.todo.clone_from(&todo);
        }
        if effects.circuit_breaker {
            if let Some(s) = out.services.iter_mut().find(|s| s.name == service) {
                s.circuit_breaker = true;
            }
        }
        if effects.redis && out.redis_url.is_none() {
            out.redis_url = Some(redis_url(props));
        }
        match cond.weight {
            Some((group, weight)) => merge_weighted(
                &mut out.routes,
                &mut groups,
                group,
                converted,
                weight,
                r.line,
                &mut notes,
            ),
            None => out.routes.extend(converted),
        }
    }
    global_timeouts(props, prefix, &mut out);
    unused(props, &mut notes);
    notes.sort_by_key(|n| n.line);
    (out, notes)
}

/// One of our routes per path and host pattern of `r`, its filters applied.
fn expand(
    r: &ScgRoute,
    cond: &Conditions,
    items: &[super::routes::Item],
    service: &str,
    notes: &mut Vec<Note>,
) -> (Vec<OutRoute>, Effects) {
    let paths: Vec<Option<&str>> = if cond.paths.is_empty() {
        vec![None]
    } else {
        cond.paths.iter().map(|p| Some(p.as_str())).collect()
    };
    let hosts: Vec<Option<&str>> = if cond.hosts.is_empty() {
        vec![None]
    } else {
        cond.hosts.iter().map(|h| Some(h.as_str())).collect()
    };
    let mut out = Vec::new();
    let mut effects = Effects::default();
    for path in &paths {
        for host in &hosts {
            let n = out.len();
            let mut route = OutRoute {
                id: if n == 0 {
                    r.id.clone()
                } else {
                    format!("{}-{}", r.id, n + 1)
                },
                line: r.line,
                path: path.map(path_cond),
                host: host.map(str::to_string),
                methods: cond.methods.clone(),
                headers: cond.headers.clone(),
                service: service.to_string(),
                ..OutRoute::default()
            };
            // the filters' notes once per SCG route, not once per expansion
            let mut scratch = Vec::new();
            effects = filters::apply(
                &mut route,
                items,
                *path,
                if n == 0 { &mut *notes } else { &mut scratch },
            );
            metadata(
                r,
                &mut route,
                if n == 0 { &mut *notes } else { &mut scratch },
            );
            out.push(route);
        }
    }
    (out, effects)
}

/// `metadata`: `connect-timeout` / `response-timeout` (milliseconds) -> `timeouts`.
fn metadata(r: &ScgRoute, route: &mut OutRoute, notes: &mut Vec<Note>) {
    for (key, value, line) in &r.metadata {
        let ms = value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&ms| ms > 0)
            .map(|ms| format!("{ms}ms"));
        match (key.as_str(), ms) {
            ("connecttimeout", Some(ms)) => route.connect_timeout = Some(ms),
            ("responsetimeout", Some(ms)) => route.read_timeout = Some(ms),
            _ => notes.push(Note::new(
                *line,
                format!("route {}: metadata {key}", r.id),
                "not converted (only connect-timeout and response-timeout in milliseconds are)",
            )),
        }
    }
}

/// Merge a `Weight` group member into the group's first member when their
/// routes match alike; otherwise keep it apart (noted).
fn merge_weighted(
    all: &mut Vec<OutRoute>,
    groups: &mut Vec<(String, Vec<OutRoute>, usize, usize)>,
    group: String,
    converted: Vec<OutRoute>,
    weight: u32,
    line: usize,
    notes: &mut Vec<Note>,
) {
    let alike = |a: &OutRoute, b: &OutRoute| {
        let strip = |r: &OutRoute| OutRoute {
            id: String::new(),
            service: String::new(),
            line: 0,
            targets: Vec::new(),
            todo: Vec::new(),
            ..r.clone()
        };
        strip(a) == strip(b)
    };
    let Some(g) = groups.iter_mut().find(|g| g.0 == group) else {
        let start = all.len();
        let mut first = converted.clone();
        for r in &mut first {
            r.targets = vec![(r.service.clone(), weight)];
        }
        all.extend(first);
        groups.push((group, converted, start, line));
        return;
    };
    let start = g.2;
    let same = g.1.len() == converted.len() && g.1.iter().zip(&converted).all(|(a, b)| alike(a, b));
    let service = converted
        .first()
        .map(|r| r.service.clone())
        .unwrap_or_default();
    let duplicate = all[start].targets.iter().any(|(s, _)| *s == service);
    if same && !duplicate {
        for r in &mut all[start..start + converted.len()] {
            r.targets.push((service.clone(), weight));
        }
    } else {
        notes.push(Note::new(
            line,
            format!("weight group {group}"),
            format!(
                "this route's predicates or filters differ from the group's first route \
                 (line {}), or it names the same service: converted as a route of its own \
                 without a split",
                g.3
            ),
        ));
        all.extend(converted);
    }
}

/// The service a route's `uri` names, added to `out` on first use.
fn service_for(
    r: &ScgRoute,
    eureka: Option<&Eureka>,
    out: &mut Output,
    notes: &mut Vec<Note>,
) -> Option<String> {
    let Some((uri, line)) = &r.uri else {
        notes.push(Note::new(
            r.line,
            format!("route {}", r.id),
            "no `uri`: route not converted",
        ));
        return None;
    };
    let (scheme, rest) = uri.split_once("://").unwrap_or(("", uri));
    let service = match scheme.to_ascii_lowercase().as_str() {
        "lb" => {
            // Eureka app names are case-insensitive; our service names read better in lowercase
            let name = rest.trim_end_matches('/').to_ascii_lowercase();
            let instances = match eureka {
                Some(eureka) => Instances::Eureka {
                    servers: eureka.servers.clone(),
                    app: name.to_ascii_uppercase(),
                    interval: eureka.interval.clone(),
                },
                None => {
                    if !out.services.iter().any(|s| s.name == name) {
                        notes.push(Note::new(
                            *line,
                            format!("route {}: uri {uri}", r.id),
                            format!(
                                "no Eureka server in this file \
                                 (eureka.client.service-url.defaultZone): service {name:?} got \
                                 a placeholder instance 127.0.0.1:8080; fill in its instances \
                                 or a `discovery:` section (docs/discovery.md)"
                            ),
                        ));
                    }
                    Instances::Placeholder
                }
            };
            OutService {
                name,
                instances,
                tls: false,
                circuit_breaker: false,
                connect_timeout: None,
                read_timeout: None,
            }
        }
        s @ ("http" | "https") => {
            let authority = rest.split('/').next().unwrap_or("");
            if rest.len() > authority.len() + 1 {
                notes.push(Note::new(
                    *line,
                    format!("route {}: uri {uri}", r.id),
                    "the uri's path is ignored (as SCG does): requests keep their own path",
                ));
            }
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                    (h, p.parse().ok())
                }
                _ => (authority, None),
            };
            let port = port.unwrap_or(if s == "https" { 443 } else { 80 });
            let host = if host.eq_ignore_ascii_case("localhost") {
                "127.0.0.1"
            } else {
                host
            };
            let name = format!(
                "{}-{port}",
                host.trim_matches(['[', ']']).replace(['.', ':'], "-")
            );
            let instances = if host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok()
            {
                Instances::Static(format!("{host}:{port}"))
            } else {
                Instances::Dns {
                    host: host.to_string(),
                    port,
                }
            };
            OutService {
                name,
                instances,
                tls: s == "https",
                circuit_breaker: false,
                connect_timeout: None,
                read_timeout: None,
            }
        }
        _ => {
            notes.push(Note::new(
                *line,
                format!("route {}: uri {uri}", r.id),
                "only lb:// and http(s):// targets are supported: route not converted",
            ));
            return None;
        }
    };
    let name = service.name.clone();
    if !out.services.iter().any(|s| s.name == name) {
        out.services.push(service);
    }
    Some(name)
}

/// `redis://[:password@]host:port/db` from spring.data.redis.* (or spring.redis.*).
fn redis_url(props: &Props) -> String {
    let get = |k: &str| {
        props
            .get(&format!("spring.data.redis.{k}"))
            .or_else(|| props.get(&format!("spring.redis.{k}")))
            .map(|p| p.value.trim().to_string())
    };
    if let Some(url) = get("url") {
        return url;
    }
    let host = get("host").unwrap_or_else(|| "127.0.0.1".into());
    let port = get("port").unwrap_or_else(|| "6379".into());
    let db = get("database").unwrap_or_else(|| "0".into());
    match get("password") {
        Some(pw) => format!("redis://:{pw}@{host}:{port}/{db}"),
        None => format!("redis://{host}:{port}/{db}"),
    }
}

/// `httpclient.connect-timeout` (ms) and `httpclient.response-timeout` -> every service.
fn global_timeouts(props: &Props, prefix: &str, out: &mut Output) {
    let connect = props
        .get(&format!("{prefix}.httpclient.connect-timeout"))
        .and_then(|p| p.value.trim().parse::<u64>().ok())
        .map(|ms| format!("{ms}ms"));
    let read = props
        .get(&format!("{prefix}.httpclient.response-timeout"))
        .map(|p| {
            let v = p.value.trim();
            if v.bytes().all(|b| b.is_ascii_digit()) {
                format!("{v}ms")
            } else {
                v.to_string()
            }
        });
    for s in &mut out.services {
        s.connect_timeout.clone_from(&connect);
        s.read_timeout.clone_from(&read);
    }
}

/// Every gateway or resilience4j property the importer did not use.
fn unused(props: &Props, notes: &mut Vec<Note>) {
    for p in props.props.iter().filter(|p| !p.used.get()) {
        let why = if p.canonical.starts_with("spring.cloud.gateway") {
            if p.canonical.contains(".discovery.locator") {
                "routes created from the registry are not converted: write a route per service (`service: lb://name`)"
            } else {
                "not converted (no equivalent known to the importer)"
            }
        } else if p.canonical.starts_with("resilience4j") {
            "not converted: tune the service's `circuit_breaker:` (failure_ratio, window, minimum_calls, open_for, ...)"
        } else {
            continue;
        };
        notes.push(Note::new(p.line, p.key.clone(), why));
    }
}
