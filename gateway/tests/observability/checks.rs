//! The Prometheus side of the observability test: queries against the test's
//! Prometheus, and the checks of the dashboard's panel queries and the alert rules.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::PrometheusServer;

use super::{repo_file, JOB};

/// Panels that may show no data in this test, with the reason. Keep it short: a
/// panel is here only when the test cannot make its metric move.
const NO_DATA_ALLOWED: &[(&str, &str)] = &[];

/// One instant query; the whole API answer (`status`, `data.result`, `error`).
pub async fn query(c: &reqwest::Client, prom: &PrometheusServer, expr: &str) -> Value {
    c.get(format!("{}/api/v1/query", prom.url()))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap_or_else(|e| panic!("query {expr}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("query {expr}: not JSON: {e}"))
}

pub async fn api(c: &reqwest::Client, prom: &PrometheusServer, path: &str) -> Value {
    let url = format!("{}{path}", prom.url());
    let answer = c.get(&url).send().await;
    let answer = answer.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    answer
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// How many times Prometheus has scraped the gateway in the last 5 minutes.
pub async fn scrapes(c: &reqwest::Client, prom: &PrometheusServer) -> f64 {
    let expr = format!("count_over_time(up{{job=\"{JOB}\"}}[5m])");
    let answer = query(c, prom, &expr).await;
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A dashboard query as Grafana would send it, with every template variable set to
/// "all" and the rate interval to one minute (sixty scrapes here).
fn substitute(expr: &str) -> String {
    let text = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "5m");
    ["job", "instance", "route", "service"]
        .iter()
        .fold(text, |t, var| t.replace(&format!("${var}"), ".*"))
}

/// `(panel title, expr)` of every query of every panel, rows' nested panels included.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for p in panels {
            let title = p["title"].as_str().unwrap_or("(untitled)");
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((title.to_string(), expr.to_string()));
                }
            }
            walk(
                p["panels"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                out,
            );
        }
    }
    let mut out = Vec::new();
    walk(
        dashboard["panels"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
        &mut out,
    );
    out
}

/// Every panel query parses and returns data (or is allowed not to, with a reason);
/// every template variable a query uses is defined.
pub async fn check_dashboard(http: &reqwest::Client, prom: &PrometheusServer, dashboard: &Value) {
    let defined: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        defined.contains("datasource"),
        "no datasource variable: {defined:?}"
    );
    let queries = panel_queries(dashboard);
    assert!(queries.len() >= 25, "only {} panel queries", queries.len());
    let mut problems = Vec::new();
    for (title, expr) in &queries {
        let sent = substitute(expr);
        if sent.contains('$') {
            problems.push(format!(
                "{title}: unknown variable in {expr} (defined: {defined:?})"
            ));
            continue;
        }
        let answer = query(http, prom, &sent).await;
        let allowed = NO_DATA_ALLOWED.iter().any(|(t, _)| t == title);
        if answer["status"] != "success" {
            problems.push(format!("{title}: {sent}: {}", answer["error"]));
        } else if answer["data"]["result"]
            .as_array()
            .is_none_or(Vec::is_empty)
            && !allowed
        {
            problems.push(format!("{title}: no data for {sent}"));
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard queries:\n{}",
        problems.join("\n")
    );
}

/// Every alert expression parses, links an existing runbook section; Prometheus
/// loaded every group, evaluates every rule healthy, and the staged failures are
/// alerting while nothing else is.
pub async fn check_alert_rules(http: &reqwest::Client, prom: &PrometheusServer, rules: &Value) {
    let runbooks = std::fs::read_to_string(repo_file("docs/operations.md")).unwrap();
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let mut names = BTreeSet::new();
    let mut problems = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("alerting rules only");
            names.insert(name.to_string());
            let expr = rule["expr"].as_str().expect("expr");
            let answer = query(http, prom, expr).await;
            if answer["status"] != "success" {
                problems.push(format!("{name}: {}", answer["error"]));
            }
            let notes = &rule["annotations"];
            for key in ["summary", "description"] {
                if notes[key].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("{name}: no {key}"));
                }
            }
            let runbook = notes["runbook_url"].as_str().unwrap_or("");
            match runbook.split_once('#') {
                Some(("docs/operations.md", anchor)) if anchors.contains(anchor) => {}
                _ => problems.push(format!(
                    "{name}: runbook {runbook:?} is no section of docs/operations.md"
                )),
            }
        }
    }
    assert!(problems.is_empty(), "alert rules:\n{}", problems.join("\n"));

    // loaded, evaluated healthy, and the staged failures pending or firing
    let staged = [
        "GatewayServiceNoHealthyInstance",
        "GatewayCircuitOpen",
        "GatewayRedisErrors",
        "GatewayRevocationUnavailable",
        "GatewayRevocationMirrorOutOfSync",
    ];
    let quiet = ["GatewayConfigReloadFailed", "GatewayJwksFetchFailures"];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = api(http, prom, "/api/v1/rules").await;
        let loaded: Vec<&Value> = answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let state = |name: &str| {
            loaded
                .iter()
                .find(|r| r["name"] == name)
                .and_then(|r| r["state"].as_str())
                .unwrap_or("missing")
        };
        let loaded_names: BTreeSet<String> = loaded
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        let settled = loaded_names == names
            && loaded.iter().all(|r| r["health"] == "ok")
            && staged
                .iter()
                .all(|n| state(n) != "inactive" && state(n) != "missing")
            && quiet.iter().all(|n| state(n) == "inactive");
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rules not as expected:\n{answer:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn check_promtool(rules: &Path) {
    let out = std::process::Command::new(testkit::promtool())
        .args(["check", "rules"])
        .arg(rules)
        .output()
        .expect("run promtool (package prometheus)");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
