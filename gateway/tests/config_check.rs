//! `gateway check` as users meet it: a table of broken configs and the exact
//! lines they print (key path, problem, fix; exit code 1), and every YAML under
//! `config/` passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::check_config;
use testkit::config::{GatewayConfigBuilder, ListenerConfig, RouteBuilder, ServiceBuilder};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

const BASE: &str = r#"listeners: [{address: "127.0.0.1:8080"}]
services:
  member: {instances: ["127.0.0.1:9001"]}
  product: {instances: ["127.0.0.1:9002"]}
  order: {instances: ["127.0.0.1:9003"]}
"#;

/// (what is wrong, config text, every line `check` must print for it, in order)
fn cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let with = |tail: &str| format!("{BASE}{tail}");
    vec![
        (
            "unknown service",
            with("routes: [{service: prodcut}]\n"),
            vec![r#"routes[0].service: unknown service "prodcut" (known: member, order, product)"#],
        ),
        (
            "unknown lb:// service",
            with("routes: [{service: \"lb://membr\"}]\n"),
            vec![r#"routes[0].service: unknown service "membr" (known: member, order, product)"#],
        ),
        (
            "unknown top-level key",
            with("rotues: []\n"),
            vec!["rotues: unknown field `rotues`, expected one of server, listeners, admin, auth, services, routes, rate_limits at line 6, column 1"],
        ),
        (
            "unknown match key",
            with("routes: [{service: member, match: {pth: /x}}]\n"),
            vec!["routes[0].match.pth: unknown field `pth`, expected one of path, prefix, regex, host, methods, headers at line 6, column 36"],
        ),
        (
            "misspelt instance key",
            "listeners: [{address: \"127.0.0.1:8080\"}]\nservices:\n  member: {instances: [{address: \"127.0.0.1:1\", wieght: 2}]}\nroutes: [{service: member}]\n".into(),
            vec!["services.member.instances[0].wieght: unknown field `wieght`, expected one of address, weight at line 3, column 49"],
        ),
        (
            "bad duration",
            with("routes: [{service: member, timeouts: {connect: 5 parsecs}}]\n"),
            vec![r#"routes[0].timeouts.connect: invalid duration "5 parsecs": unknown time unit "parsecs", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations) (write e.g. "250ms", "2s", "1m") at line 6, column 48"#],
        ),
        (
            "unknown algorithm",
            with("  cart: {instances: [\"127.0.0.1:9004\"], load_balancer: {algorithm: fastest}}\nroutes: [{service: cart}]\n"),
            vec!["services.cart.load_balancer.algorithm: unknown variant `fastest`, expected one of round_robin, weighted, weighted_round_robin, least_connections, p2c, power_of_two_choices, consistent_hash, random at line 6, column 68"],
        ),
        (
            "missing service key",
            with("routes: [{match: {path: /x}}]\n"),
            vec!["routes[0]: missing `service` (or `targets` for a weighted split)"],
        ),
        (
            "service and targets together",
            with("routes: [{service: member, targets: [{service: order, weight: 1}]}]\n"),
            vec!["routes[0]: use either `service` or `targets`, not both (`targets: [{service: a, weight: 90}, {service: b, weight: 10}]` splits traffic)"],
        ),
        (
            "bad split targets",
            with("routes: [{targets: [{service: member, weight: 0}, {service: ordr, weight: 5}, {service: \"lb://member\", weight: 1}], sticky: {header: \"bad header\"}}]\n"),
            vec![
                r#"routes[0].sticky.header: "bad header" is not a valid header name"#,
                "routes[0].targets[0].weight: must be at least 1 (remove the target to send it nothing)",
                r#"routes[0].targets[1].service: unknown service "ordr" (known: member, order, product)"#,
                r#"routes[0].targets[2].service: "member" is already a target of this route (add the weights into one entry)"#,
            ],
        ),
        (
            "sticky without targets",
            with("routes: [{service: member, sticky: {cookie: canary}}]\n"),
            vec!["routes[0].sticky: `sticky` needs `targets` (a route with one service has nothing to stick to)"],
        ),
        (
            "target without weight",
            with("routes: [{targets: [{service: member}]}]\n"),
            vec!["routes[0].targets[0]: missing field `weight` at line 6, column 22"],
        ),
        (
            "YAML syntax",
            with("routes: [ {service: member\n"),
            vec!["routes: unclosed bracket '{' at line 6, column 11"],
        ),
        (
            "empty file",
            "\n".into(),
            vec!["the config is empty (see config/reference.yaml for every key)"],
        ),
        (
            "duplicate keys",
            "listeners: [{address: \"127.0.0.1:8080\"}]\nservices:\n  a: {instances: [\"127.0.0.1:1\"]}\n  a: {instances: [\"127.0.0.1:2\"]}\nroutes: [{service: a}]\n".into(),
            vec!["services: duplicate mapping key: a at line 4, column 3"],
        ),
        (
            "bad method",
            with("routes: [{service: member, match: {methods: [FETCH]}}]\n"),
            vec![r#"routes[0].match.methods[0]: "FETCH" is not an HTTP method (one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT)"#],
        ),
        (
            "bad regex",
            with("routes: [{service: member, match: {regex: \"/a/(\"}}]\n"),
            vec![r#"routes[0].match.regex: invalid regex "/a/(": unclosed group"#],
        ),
        (
            "glob with inner **",
            with("routes: [{service: member, match: {path: \"/a/**/b\"}}]\n"),
            vec![r#"routes[0].match.path: path "/a/**/b": '**' is only allowed as the last segment"#],
        ),
        (
            "two path kinds",
            with("routes: [{service: member, match: {path: /a, prefix: /b}}]\n"),
            vec!["routes[0].match: use only one of `path`, `prefix` and `regex`"],
        ),
        (
            "bad host pattern",
            with("routes: [{service: member, match: {host: \"api.*.com\"}}]\n"),
            vec![r#"routes[0].match.host: host "api.*.com" is not a host name (write `api.example.com` or `*.example.com`)"#],
        ),
        (
            "strip and rewrite together",
            with("routes: [{service: member, strip_prefix: /a, rewrite: {regex: x, replacement: y}}]\n"),
            vec!["routes[0]: use either `strip_prefix` or `rewrite`, not both"],
        ),
        (
            "bad rewrite regex",
            with("routes: [{service: member, rewrite: {regex: \"[z-a]\", replacement: y}}]\n"),
            vec![r#"routes[0].rewrite.regex: invalid regex "[z-a]": invalid character class range, the start must be <= the end"#],
        ),
        (
            "duplicate route id",
            with("routes: [{id: a, service: member}, {id: a, service: order}]\n"),
            vec![r#"routes[1].id: duplicate route id "a": ids name routes in metrics and must be unique"#],
        ),
        (
            "retry limits",
            with("routes: [{service: member, retries: {attempts: 11, on_status: [503, 700]}}]\n"),
            vec![
                "routes[0].retries.attempts: at most 10 retries",
                "routes[0].retries.on_status[1]: 700 is not an HTTP status",
            ],
        ),
        (
            "bad header rule",
            with("routes: [{service: member, request_headers: {set: {\"bad header\": x}}}]\n"),
            vec!["routes[0].request_headers.set.bad header: not a valid header name"],
        ),
        (
            "host name as static instance",
            "listeners: [{address: \"127.0.0.1:8080\"}]\nservices:\n  member: {instances: [\"member.local:80\"]}\nroutes: [{service: member}]\n".into(),
            vec![r#"services.member.instances[0]: "member.local:80" is not an ip:port address (static instances are IP addresses; use `discovery: {type: dns}` for host names)"#],
        ),
        (
            "hash_on missing and misplaced",
            "listeners: [{address: \"127.0.0.1:8080\"}]\nservices:\n  a: {instances: [\"127.0.0.1:1\"], load_balancer: {algorithm: consistent_hash}}\n  b: {instances: [\"127.0.0.1:2\"], load_balancer: {hash_on: client_ip}}\nroutes: [{service: a}, {service: b}]\n".into(),
            vec![
                "services.a.load_balancer.hash_on: consistent_hash needs `hash_on` (header: NAME, cookie: NAME or client_ip)",
                "services.b.load_balancer.hash_on: `hash_on` only applies to `algorithm: consistent_hash`",
            ],
        ),
        (
            "health check values",
            "listeners: [{address: \"127.0.0.1:8080\"}]\nservices:\n  a:\n    instances: [{address: \"127.0.0.1:1\", weight: 0}]\n    health_check: {path: health, interval: 0s, expected_status: 42}\nroutes: [{service: a}]\n".into(),
            vec![
                "services.a.instances[0].weight: weight must be 1..=10000",
                "services.a.health_check.path: must be a path starting with '/'",
                "services.a.health_check: interval and timeout must be above zero",
                "services.a.health_check.expected_status: must be an HTTP status (100..=599)",
            ],
        ),
        (
            "listeners and admin",
            "listeners: [{address: \"8080\"}, {address: \"127.0.0.1:81\"}, {address: \"127.0.0.1:81\"}]\nadmin: {address: \"127.0.0.1:81\"}\nservices: {a: {instances: [\"127.0.0.1:1\"]}}\nroutes: [{service: a}]\n".into(),
            vec![
                r#"listeners[0].address: "8080" is not an ip:port address (e.g. "0.0.0.0:8080")"#,
                "listeners[2].address: 127.0.0.1:81 is listed twice",
                "admin.address: the admin address must differ from every listener",
            ],
        ),
        (
            "no listeners, no instances",
            "services: {a: {}}\nroutes: [{service: a}]\n".into(),
            vec![
                "listeners: at least one listener is required, e.g. `listeners: [{address: \"0.0.0.0:8080\"}]`",
                "services.a: no instances: add `instances: [\"host:port\"]` or a `discovery` section",
            ],
        ),
        (
            "rate limits: cluster scope without Redis, claim key without jwt, policy on a local limit",
            with("routes: [{service: member, rate_limit: {scope: cluster, requests: 5}}, {service: product, rate_limit: {requests: 5, key: {claim: sub}, on_redis_error: deny}}]\n"),
            vec![
                "routes[0].rate_limit.scope: scope: cluster shares the budget through Redis: add a top-level `rate_limits: {redis_url: redis://host:6379/0}`, or use scope: local",
                "routes[1].rate_limit.key.claim: a claim key needs the verified token: protect the route with `auth: {jwt: {}}`, or key by client_ip, route or header",
                "routes[1].rate_limit.on_redis_error: applies to scope: cluster only (a local limit never asks Redis); remove it or set scope: cluster",
            ],
        ),
        (
            "rate limits: unknown on_redis_error",
            with("rate_limits: {redis_url: \"redis://127.0.0.1:1\"}\nroutes: [{service: member, rate_limit: {scope: cluster, requests: 5, on_redis_error: ignore}}]\n"),
            vec!["routes[0].rate_limit.on_redis_error: unknown variant `ignore`, expected one of allow, deny, local at line 7, column 86"],
        ),
        (
            "rate limits: a broken rate_limits section",
            with("rate_limits: {redis_url: \"http://127.0.0.1:1\", timeout: 5s}\nroutes: [{service: member, rate_limit: {scope: cluster, requests: 5}}]\n"),
            vec![
                r#"rate_limits.redis_url: unknown scheme "http": use redis://:password@127.0.0.1:6379/0, redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster, or redis+cluster://10.0.0.1:7000,10.0.0.2:7000 (rediss for TLS)"#,
                "rate_limits.timeout: must be above 0s and at most 1s (requests wait this long for Redis)",
            ],
        ),
        (
            "Redis Sentinel and Cluster URLs that name no master or carry a path",
            with("rate_limits: {redis_url: \"redis+sentinel://127.0.0.1:26379\"}\nadmin: {address: \"127.0.0.1:9999\", registry: {store: redis, redis_url: \"redis+cluster://127.0.0.1:7000/1\"}}\nroutes: [{service: member, rate_limit: {scope: cluster, requests: 5}}]\n"),
            vec![
                "admin.registry.redis_url: a Cluster URL has no path (a Redis Cluster has only database 0)",
                "rate_limits.redis_url: a Sentinel URL names its master after the hosts: redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster[/db]",
            ],
        ),
        (
            "missing TLS files",
            "listeners: [{address: \"127.0.0.1:8443\", tls: {cert: \"$DIR/none.pem\", key: \"$DIR/none.key\"}}]\nservices: {a: {instances: [\"127.0.0.1:1\"]}}\nroutes: [{service: a}]\n".into(),
            vec![
                "listeners[0].tls.cert: cannot read \"$DIR/none.pem\": No such file or directory (os error 2)",
                "listeners[0].tls.key: cannot read \"$DIR/none.key\": No such file or directory (os error 2)",
            ],
        ),
    ]
}

#[test]
fn broken_configs_print_every_error_with_its_path() {
    let mut failures = Vec::new();
    for (what, yaml, want) in cases() {
        let out = check_config(BIN, &yaml);
        let dir = yaml_dir(&out.stderr);
        let want: Vec<String> = want.iter().map(|w| w.replace("$DIR", &dir)).collect();
        let mut lines = out.stderr.lines();
        let head = lines.next().unwrap_or_default();
        let got: Vec<String> = regroup(lines);
        let ok = out.code == Some(1)
            && out.stdout.is_empty()
            && head.ends_with(&format!("gateway.yaml: {} error(s)", want.len()))
            && got == want;
        if !ok {
            failures.push(format!(
                "{what}: exit {:?}\n  want: {want:#?}\n  got:  {}",
                out.code, out.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The temp dir `check` was run in (from its header line).
fn yaml_dir(stderr: &str) -> String {
    let head = stderr.lines().next().unwrap_or_default();
    head.split("/gateway.yaml")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Join continuation lines (a regex error spans several) to the item they belong to.
fn regroup<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in lines {
        match (line.strip_prefix("  - "), out.last_mut()) {
            (Some(item), _) => out.push(item.to_string()),
            (None, Some(last)) => {
                last.push('\n');
                last.push_str(line);
            }
            (None, None) => out.push(line.to_string()),
        }
    }
    out
}

#[test]
fn a_good_config_prints_ok() {
    let mut config =
        GatewayConfigBuilder::new().listeners(vec![ListenerConfig::new("127.0.0.1:8080")]);
    for (name, port) in [("member", 9001), ("product", 9002), ("order", 9003)] {
        config = config.service(
            name,
            ServiceBuilder::instances([format!("127.0.0.1:{port}")]),
        );
    }
    let config = config.route(
        RouteBuilder::to("lb://member")
            .prefix("/member/")
            .strip_prefix("/member"),
    );
    let out = check_config(BIN, &config.yaml());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "ok\n");
}

#[test]
fn a_missing_file_is_named() {
    let out = Command::new(BIN)
        .args(["check", "-c", "/nonexistent/gateway.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/gateway.yaml: cannot read the config file"),
        "{err}"
    );
}

#[test]
fn every_yaml_under_config_passes_check() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    collect_yaml(&root.join("config"), &mut files);
    assert!(!files.is_empty(), "no YAML under config/");
    let mut failures = Vec::new();
    for file in &files {
        // run from the repository root: configs name files relative to it
        let out = Command::new(BIN)
            .args(["check", "-c"])
            .arg(file)
            .current_dir(&root)
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{}:\n{}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}
