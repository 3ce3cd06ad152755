//! The load harness end to end in `--quick` mode: real backends, the real gateway
//! binary, the Pingora floor (and nginx/haproxy when installed), every scenario
//! (HTTPS and 200 idle connections included), results written.
//! Checks that every target answered and nothing failed; never checks speed or memory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The gateway binary of this build profile, built if missing.
fn gateway_bin() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_loadtest"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let bin = dir.join("gateway");
    if !bin.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "gateway", "--bin", "gateway"]);
        if dir.file_name().and_then(|n| n.to_str()) == Some("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the gateway");
        assert!(status.success(), "cargo build -p gateway failed");
    }
    bin
}

/// What one harness run wrote: its folder, results.md and results.json.
struct Run {
    out: tempfile::TempDir,
    md: String,
    json: serde_json::Value,
}

impl Run {
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.out.path().join(name)).expect(name)
    }
}

/// `loadtest --quick --no-build` with this build's binaries and `args`; it must succeed.
fn loadtest(args: &[&str]) -> Run {
    let out = tempfile::tempdir().expect("tempdir");
    let status = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--quick", "--no-build"])
        .args(args)
        .arg("--gateway")
        .arg(gateway_bin())
        .arg("--backend")
        .arg(env!("CARGO_BIN_EXE_bench-backend"))
        .arg("--floor")
        .arg(env!("CARGO_BIN_EXE_pingora-floor"))
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("run loadtest");
    assert!(status.success(), "loadtest {args:?} failed");
    let md = std::fs::read_to_string(out.path().join("results.md")).expect("results.md");
    let json = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results.json")).expect("results.json"),
    )
    .expect("results.json parses");
    Run { out, md, json }
}

#[test]
fn quick_mode_measures_every_target_without_errors() {
    let run = loadtest(&["--idle-conns", "200", "--tokens", "200"]);
    let (md, json) = (&run.md, &run.json);
    let svg = run.read("results.svg");
    assert!(
        svg.starts_with("<svg") || svg.contains("<svg"),
        "not an SVG"
    );

    let scenarios = json["scenarios"].as_array().expect("scenarios");
    let keys: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["scenario"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "small-get",
            "get-64k",
            "post-1m",
            "conns-1000",
            "routes-1000",
            "jwt-tokens",
            "https-keepalive",
            "https-handshake",
            "idle-10k"
        ]
    );
    for sc in scenarios {
        let name = sc["scenario"].as_str().unwrap_or("?");
        if name == "idle-10k" {
            check_idle(sc, md);
            continue;
        }
        let targets = sc["targets"].as_array().expect("targets");
        let measured: Vec<&str> = targets
            .iter()
            .filter_map(|t| t["target"].as_str())
            .collect();
        let https = name.starts_with("https");
        assert!(
            https || measured.contains(&"direct"),
            "{name}: direct missing: {measured:?}"
        );
        assert!(
            measured.contains(&"pingora-floor"),
            "{name}: the floor missing: {measured:?}\n{md}"
        );
        let wants_gateway = name != "jwt-tokens";
        assert!(
            !wants_gateway || measured.contains(&"gateway"),
            "{name}: gateway missing: {measured:?}\n{md}"
        );
        for t in targets {
            let who = t["target"].as_str().unwrap_or("?");
            assert!(
                t["requests"].as_u64().unwrap_or(0) > 0,
                "{name}/{who}: no request answered\n{md}"
            );
            assert_eq!(t["errors"].as_u64(), Some(0), "{name}/{who}: errors\n{md}");
            assert!(
                t["cpu_s_per_10k"].as_f64().unwrap_or(-1.0) >= 0.0,
                "{name}/{who}: cpu"
            );
            assert!(
                t["peak_rss_bytes"].as_u64().unwrap_or(0) > 0,
                "{name}/{who}: rss"
            );
            assert_eq!(
                t["tls"].is_string(),
                https,
                "{name}/{who}: TLS negotiated {}",
                t["tls"]
            );
        }
        assert!(
            md.contains("Our cost over the engine"),
            "{name}: no floor summary\n{md}"
        );
        // every table row is in the markdown too
        for who in &measured {
            assert!(
                md.contains(&format!("| {who}")),
                "{name}: {who} not in the table"
            );
        }
    }
}

/// The idle scenario: the floor and the gateway (and the peers when installed)
/// each held every connection, and their memory was read.
fn check_idle(sc: &serde_json::Value, md: &str) {
    let idle = sc["idle"].as_array().expect("idle results");
    let held: Vec<&str> = idle.iter().filter_map(|t| t["target"].as_str()).collect();
    for who in ["pingora-floor", "gateway"] {
        assert!(held.contains(&who), "idle: {who} missing: {held:?}\n{md}");
    }
    for t in idle {
        let who = t["target"].as_str().unwrap_or("?");
        assert_eq!(t["requested"].as_u64(), Some(200), "idle/{who}");
        assert_eq!(t["opened"].as_u64(), Some(200), "idle/{who}: opened\n{md}");
        assert_eq!(t["failed"].as_u64(), Some(0), "idle/{who}: failed\n{md}");
        assert_eq!(
            t["still_open"].as_u64(),
            Some(200),
            "idle/{who}: closed by the target\n{md}"
        );
        assert!(
            t["rss_before_bytes"].as_u64().unwrap_or(0) > 0
                && t["rss_after_bytes"].as_u64().unwrap_or(0) > 0,
            "idle/{who}: rss"
        );
        assert!(
            md.contains(&format!("| {who} |")),
            "idle: {who} not in the table"
        );
    }
}

/// `--rate`: the load is paced, the report says so, and the targets kept up with a
/// rate far below what any of them does (counts, not speed: at most the schedule).
#[test]
fn a_paced_run_is_reported_with_its_rate() {
    let run = loadtest(&[
        "--scenarios",
        "small-get",
        "--targets",
        "floor,gateway",
        "--rate",
        "400",
        "--warmup",
        "0",
    ]);
    let (md, json) = (&run.md, &run.json);
    assert!(md.contains("paced at 400 requests/s"), "{md}");
    assert_eq!(json["rate"].as_f64(), Some(400.0));
    let sc = &json["scenarios"][0];
    let duration = json["duration_s"].as_f64().expect("duration");
    for t in sc["targets"].as_array().expect("targets") {
        let who = t["target"].as_str().unwrap_or("?");
        let requests = t["requests"].as_u64().unwrap_or(0);
        assert_eq!(t["errors"].as_u64(), Some(0), "{who}: errors\n{md}");
        assert!(requests > 0, "{who}: nothing answered\n{md}");
        // one round of `duration` seconds at 400/s: the schedule allows no more
        assert!(
            requests as f64 <= 400.0 * duration + 1.0,
            "{who}: {requests} requests in {duration} s at 400/s\n{md}"
        );
    }
}

/// `--instructions`: the floor and the gateway run under callgrind, every round's
/// instructions are counted, and the report gives them per request beside the floor
/// (counts present and plausible, never a ratio asserted).
#[test]
fn instructions_per_request_are_counted_under_callgrind() {
    let run = loadtest(&[
        "--scenarios",
        "small-get",
        "--targets",
        "floor,gateway",
        "--instructions",
    ]);
    let (md, json) = (&run.md, &run.json);
    assert!(
        md.contains("| target | instructions/req | x floor |"),
        "{md}"
    );
    assert!(md.contains("in instructions: gateway"), "{md}");
    assert!(
        run.read("results.svg")
            .contains("thousand instructions per request"),
        "no instructions chart"
    );
    for t in json["scenarios"][0]["targets"].as_array().expect("targets") {
        let who = t["target"].as_str().unwrap_or("?");
        assert_eq!(t["errors"].as_u64(), Some(0), "{who}: errors\n{md}");
        assert!(t["requests"].as_u64().unwrap_or(0) > 0, "{who}\n{md}");
        // a proxied request is tens of thousands of instructions, not a handful
        let per_request = t["instructions_per_req"].as_f64().unwrap_or(0.0);
        assert!(per_request > 10_000.0, "{who}: {per_request}\n{md}");
        let counted = t["rounds"][0]["instructions"].as_u64().unwrap_or(0);
        assert!(counted > 0, "{who}: no round counted\n{md}");
    }
}
