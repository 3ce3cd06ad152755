//! `loadtest`: start the backends, the gateway, the bare Pingora floor, nginx and
//! haproxy on loopback, drive them with the same load in interleaved rounds (or,
//! in `idle-10k`, hold idle connections and read their memory), and write the
//! results (markdown, JSON, SVG) to `results/<timestamp>/`.

#![deny(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;

use benches::report::RunInfo;
use benches::run::{self, Options};
use benches::scenario::{self, Target};
use benches::{chart, idle, report, sys};

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Compare the gateway with the Pingora floor, nginx, haproxy and the bare backend on loopback"
)]
struct Cli {
    /// Smoke mode: one short round per target (a few seconds in all).
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (comma-separated; default all): small-get, get-64k, post-1m,
    /// conns-1000, routes-1000, jwt-tokens, https-keepalive, https-handshake, idle-10k.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Targets to run (comma-separated; default all): direct, pingora-floor (or
    /// floor), gateway, gateway-pipeline, nginx, haproxy.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Interleaved rounds per target.
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds of load per target per round.
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of unmeasured load per target before the rounds.
    #[arg(long)]
    warmup: Option<f64>,
    /// Workers per target: the gateway's and the floor's `server.threads`, nginx
    /// `worker_processes`, haproxy `nbthread`. Above 1 nothing is pinned: the
    /// targets run on every CPU, shared with the load generator and the backends.
    #[arg(long, alias = "threads", default_value_t = 1)]
    workers: usize,
    /// With --workers above 1: the gateway (`server.work_stealing: false`) and the
    /// floor with one single-threaded runtime per worker instead of work stealing.
    #[arg(long)]
    no_steal: bool,
    /// Keep the gateway's access log on (written to the work folder).
    #[arg(long)]
    access_log: bool,
    /// Distinct tokens in the jwt-tokens scenario.
    #[arg(long)]
    tokens: Option<usize>,
    /// Clients in the idle-10k scenario (default 10,000; 200 with --quick).
    #[arg(long)]
    idle_conns: Option<usize>,
    /// Pace keep-alive scenarios at this many requests per second per target
    /// (spread over the scenario's connections), instead of as fast as the target
    /// answers: CPU per request at the same load for every target. Pick a rate
    /// every target sustains; one that falls short shows fewer req/s than asked.
    #[arg(long)]
    rate: Option<f64>,
    /// Also count instructions per request: the floor, the gateway and the pipeline
    /// run under callgrind (valgrind), which counts what each round executed. Counted,
    /// not timed, so the figures hold on a busy machine; those targets' req/s and CPU
    /// time in the same run are not comparable (valgrind slows them tens of times).
    #[arg(long)]
    instructions: bool,
    /// Do not pin targets and the load generator to separate CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Output folder (default `results/<UTC timestamp>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The gateway binary (default: build it with cargo, beside this binary).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// The bench-backend binary (default: build it with cargo, beside this binary).
    #[arg(long)]
    backend: Option<PathBuf>,
    /// The pingora-floor binary (default: build it with cargo, beside this binary).
    #[arg(long)]
    floor: Option<PathBuf>,
    /// Use the binaries beside this one as they are.
    #[arg(long)]
    no_build: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_cli(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_cli(cli: Cli) -> Result<(), String> {
    let idle_connections = cli
        .idle_conns
        .unwrap_or(if cli.quick {
            200
        } else {
            scenario::IDLE_CONNECTIONS
        })
        .clamp(1, 100_000);
    // the harness holds the idle clients; each target (which inherits the limit)
    // holds them too, plus its upstream connections
    let want = (idle_connections as u64 + idle::SPARE_FDS).max(4096) * 2;
    match sys::raise_nofile_limit(want) {
        Ok(n) if n < 4096 => eprintln!("open-files limit is {n}: 1,000 connections may fail"),
        Ok(_) => {}
        Err(e) => eprintln!("cannot raise the open-files limit: {e}"),
    }
    let all = scenario::all();
    let unknown: Vec<&String> = cli
        .scenarios
        .iter()
        .filter(|s| !all.iter().any(|sc| sc.key == s.as_str()))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = all.iter().map(|s| s.key).collect();
        return Err(format!(
            "unknown scenario(s) {unknown:?} (known: {})",
            known.join(", ")
        ));
    }
    let mut targets = Vec::new();
    for t in &cli.targets {
        targets.push(Target::parse(t).ok_or_else(|| format!("unknown target {t:?}"))?);
    }
    let scenarios: Vec<_> = all
        .into_iter()
        .filter(|sc| cli.scenarios.is_empty() || cli.scenarios.iter().any(|s| s == sc.key))
        .collect();

    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .unwrap_or_default();
    let need_build =
        !cli.no_build && (cli.gateway.is_none() || cli.backend.is_none() || cli.floor.is_none());
    if need_build {
        build_binaries(&here)?;
    }
    let gateway = cli.gateway.unwrap_or_else(|| here.join("gateway"));
    let backend = cli.backend.unwrap_or_else(|| here.join("bench-backend"));
    // a missing floor only skips its target
    let floor = cli.floor.unwrap_or_else(|| here.join("pingora-floor"));
    for (what, p) in [("gateway", &gateway), ("bench-backend", &backend)] {
        if !p.is_file() {
            return Err(format!("no {what} binary at {}", p.display()));
        }
    }

    let secs = |v: Option<f64>, full: f64, quick: f64| {
        Duration::from_secs_f64(
            v.unwrap_or(if cli.quick { quick } else { full })
                .clamp(0.0, 600.0),
        )
    };
    let started = timestamp();
    let out_dir = cli
        .out
        .unwrap_or_else(|| PathBuf::from("results").join(&started));
    run::ensure_dir(&out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    // absolute: nginx resolves relative paths against its prefix
    let out_dir = out_dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", out_dir.display()))?;
    let opts = Options {
        scenarios: cli.scenarios,
        targets,
        rounds: cli
            .rounds
            .unwrap_or(if cli.quick { 1 } else { 3 })
            .clamp(1, 100),
        duration: secs(cli.duration, 5.0, 0.25),
        warmup: secs(cli.warmup, 1.0, 0.0),
        out_dir: out_dir.clone(),
        gateway,
        backend,
        floor,
        pin: !cli.no_pin,
        workers: cli.workers.clamp(1, 64),
        no_steal: cli.no_steal,
        access_log: cli.access_log,
        distinct_tokens: cli.tokens.unwrap_or(if cli.quick { 500 } else { 100_000 }),
        idle_connections,
        rate: cli.rate.filter(|r| r.is_finite() && *r > 0.0),
        instructions: cli.instructions,
    };
    if opts.instructions {
        benches::callgrind::check_installed()?;
    }
    for (name, path) in run::peers() {
        match path {
            Some(p) => eprintln!("found {name}: {}", p.display()),
            None => eprintln!("{name} is not installed: its targets are skipped"),
        }
    }
    let load_before = sys::load_average();
    let results = run::run_all(&opts, &scenarios);
    let info = RunInfo {
        started,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        cpus: machine(),
        load_before,
        load_after: sys::load_average(),
        rounds: opts.rounds,
        duration_s: opts.duration.as_secs_f64(),
        workers: opts.workers,
        pinned: opts.pin && opts.workers == 1 && sys::allowed_cpus().len() >= 2,
        rate: opts.rate,
    };
    let md = report::markdown(&info, &results);
    let write = |name: &str, text: &str| {
        let p = out_dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    write("results.md", &md)?;
    write("results.json", &report::json(&info, &results).to_string())?;
    if let Err(e) = chart::write_svg(&out_dir.join("results.svg"), &results) {
        eprintln!("loadtest: no chart: {e}");
    }
    println!("{md}");
    eprintln!("results written to {}", out_dir.display());
    if results
        .iter()
        .all(|r| r.measured.is_empty() && r.idle.is_empty())
    {
        return Err("nothing was measured".into());
    }
    Ok(())
}

/// `cargo build` the gateway, the backend and the floor in this binary's profile
/// (with `count-allocations` when this binary has it).
fn build_binaries(here: &std::path::Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build");
    match here.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") | None => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    cmd.args([
        "-p",
        "gateway",
        "-p",
        "benches",
        "--bin",
        "gateway",
        "--bin",
        "bench-backend",
        "--bin",
        "pingora-floor",
    ]);
    if cfg!(feature = "count-allocations") {
        cmd.args([
            "--features",
            "gateway/count-allocations,benches/count-allocations",
        ]);
    }
    eprintln!("building: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo (pass --gateway, --backend and --floor): {e}"))?;
    if !status.success() {
        return Err("cargo build failed (pass --gateway/--backend/--floor, or --no-build)".into());
    }
    Ok(())
}

/// CPU count and model, for the report.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{} CPUs ({model})", sys::cpu_count())
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
