//! The run loop: per scenario, start the backends and every target, warm them
//! up, then drive them in interleaved rounds and collect what each one cost.
//! (The idle-connection scenario has its own loop: `idle.rs`.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::HeaderValue;

use crate::idle::IdleMeasured;
use crate::loadgen::{self, LoadSpec};
use crate::procs::{self, Proc};
use crate::scenario::{Kind, Paths, Reuse, Scenario, Target, Tokens};
use crate::setup::{self, Setup};
use crate::sys;

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenarios: Vec<String>,
    /// Only these targets (empty: every target of each scenario).
    pub targets: Vec<Target>,
    pub rounds: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub out_dir: PathBuf,
    pub gateway: PathBuf,
    pub backend: PathBuf,
    /// The `pingora-floor` binary (the floor target is skipped when it is missing).
    pub floor: PathBuf,
    pub pin: bool,
    /// Workers of every target: the gateway's and the floor's `threads`, nginx
    /// `worker_processes`, haproxy `nbthread`. Above 1, nothing is pinned: the
    /// targets use every CPU and share them with the load generator.
    pub workers: usize,
    /// The gateway and the floor without work stealing (one runtime per worker).
    pub no_steal: bool,
    pub access_log: bool,
    /// Distinct tokens in the JWT scenario.
    pub distinct_tokens: usize,
    /// Clients in the idle-connection scenario.
    pub idle_connections: usize,
    /// Pace keep-alive scenarios at this many requests per second (None: as fast
    /// as each target answers).
    pub rate: Option<f64>,
    /// Count the Rust targets' instructions per request under callgrind
    /// (`--instructions`, keep-alive and TLS load scenarios).
    pub instructions: bool,
}

/// One round of one target.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub requests: u64,
    pub errors: u64,
    pub secs: f64,
    /// Target CPU seconds (user + system) spent in the window.
    pub cpu: f64,
    /// The target's allocator calls over the window (builds with `count-allocations`).
    pub allocs: Option<alloc_count::Counts>,
    /// Instructions the target executed in the window, every thread (under callgrind).
    pub instructions: Option<u64>,
}

/// Everything measured for one target in one scenario.
pub struct Measured {
    pub target: Target,
    /// Shown beside the target (e.g. what the pipeline stand-in lacks).
    pub note: Option<String>,
    /// What the TLS handshake negotiated (HTTPS scenarios).
    pub tls: Option<String>,
    pub rounds: Vec<Round>,
    /// Merged latency of every round (none when no round ran).
    pub latency: Option<Histogram<u64>>,
    pub peak_rss: u64,
}

impl Measured {
    /// Median of the rounds' requests/s.
    pub fn rps(&self) -> f64 {
        let mut v: Vec<f64> = self
            .rounds
            .iter()
            .map(|r| r.requests as f64 / r.secs.max(1e-9))
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    pub fn requests(&self) -> u64 {
        self.rounds.iter().map(|r| r.requests).sum()
    }

    pub fn errors(&self) -> u64 {
        self.rounds.iter().map(|r| r.errors).sum()
    }

    /// Target CPU seconds per 10,000 requests (over all rounds).
    pub fn cpu_per_10k(&self) -> f64 {
        let cpu: f64 = self.rounds.iter().map(|r| r.cpu).sum();
        cpu / (self.requests().max(1) as f64) * 10_000.0
    }

    /// Target CPU microseconds per request (over all rounds).
    pub fn cpu_us_per_request(&self) -> f64 {
        self.cpu_per_10k() * 100.0
    }

    /// Allocator calls and bytes per request over the rounds that counted them
    /// (none when the target was not built with `count-allocations`).
    pub fn allocs_per_request(&self) -> Option<(f64, f64)> {
        let counted: Vec<(&Round, alloc_count::Counts)> = self
            .rounds
            .iter()
            .filter_map(|r| Some((r, r.allocs?)))
            .collect();
        let requests: u64 = counted.iter().map(|(r, _)| r.requests).sum();
        if requests == 0 {
            return None;
        }
        let allocations: u64 = counted.iter().map(|(_, c)| c.allocations).sum();
        let bytes: u64 = counted.iter().map(|(_, c)| c.bytes).sum();
        Some((
            allocations as f64 / requests as f64,
            bytes as f64 / requests as f64,
        ))
    }

    /// Instructions per request over the rounds that counted them (`--instructions`).
    pub fn instructions_per_request(&self) -> Option<f64> {
        let counted: Vec<(u64, u64)> = self
            .rounds
            .iter()
            .filter_map(|r| Some((r.requests, r.instructions?)))
            .collect();
        let requests: u64 = counted.iter().map(|c| c.0).sum();
        let instructions: u64 = counted.iter().map(|c| c.1).sum();
        (requests > 0).then(|| instructions as f64 / requests as f64)
    }

    /// Latency quantile in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        self.latency
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    }
}

pub struct ScenarioResult {
    pub key: &'static str,
    pub title: &'static str,
    pub kind: Kind,
    pub connections: usize,
    pub measured: Vec<Measured>,
    /// What the idle-connection scenario measured (its only results).
    pub idle: Vec<IdleMeasured>,
    /// Targets not measured, and why.
    pub skipped: Vec<(Target, String)>,
}

impl ScenarioResult {
    /// Nothing measured yet.
    pub fn empty(sc: &Scenario, connections: usize) -> Self {
        Self {
            key: sc.key,
            title: sc.title,
            kind: sc.kind,
            connections,
            measured: Vec::new(),
            idle: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Every selected target of `sc` skipped for one reason.
    pub fn skip_all(&mut self, sc: &Scenario, opts: &Options, why: &str) {
        for &t in sc.targets.iter().filter(|&&t| opts.wants(t)) {
            self.skipped.push((t, why.to_string()));
        }
    }

    pub fn get(&self, t: Target) -> Option<&Measured> {
        self.measured.iter().find(|m| m.target == t)
    }
}

impl Options {
    /// Whether target `t` was selected (no selection: every target).
    pub fn wants(&self, t: Target) -> bool {
        self.targets.is_empty() || self.targets.contains(&t)
    }
}

/// Run every selected scenario, printing progress to stderr.
pub fn run_all(opts: &Options, scenarios: &[Scenario]) -> Vec<ScenarioResult> {
    let cpus = sys::allowed_cpus();
    let (target_cpu, load_cpu) = match (opts.pin && opts.workers == 1, cpus.as_slice()) {
        (true, [a, b, ..]) => (Some(*a), Some(*b)),
        _ => (None, None),
    };
    match (target_cpu, load_cpu) {
        (Some(t), Some(l)) => eprintln!(
            "pinning: targets on CPU {t}; load generator, upstream backends and redis on CPU {l}"
        ),
        _ if opts.workers > 1 => eprintln!(
            "pinning: off ({} workers per target: targets, load generator and backends share every CPU)",
            opts.workers
        ),
        _ => eprintln!("pinning: off"),
    }
    let total = scenarios.len();
    let mut out = Vec::new();
    for (k, sc) in scenarios.iter().enumerate() {
        let tag = format!("[{}/{total} {}]", k + 1, sc.key);
        eprintln!("{tag} {}", sc.title);
        out.push(match sc.kind {
            Kind::Load => run_scenario(opts, sc, &tag, target_cpu, load_cpu),
            Kind::Idle => crate::idle::run_scenario(opts, sc, &tag, target_cpu, load_cpu),
        });
    }
    out
}

struct Live {
    target: Target,
    proc: Proc,
    note: Option<String>,
    tls: Option<String>,
    alloc_counts: Option<PathBuf>,
    instructions: Option<crate::callgrind::Counter>,
    pids: Vec<u32>,
    rounds: Vec<Round>,
    latency: Option<Histogram<u64>>,
}

fn run_scenario(
    opts: &Options,
    sc: &Scenario,
    tag: &str,
    target_cpu: Option<usize>,
    load_cpu: Option<usize>,
) -> ScenarioResult {
    let mut result = ScenarioResult::empty(sc, sc.connections);
    let dir = opts.out_dir.join("work").join(sc.key);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("{tag} cannot create {}: {e}", dir.display());
        return result;
    }
    let tokens = make_tokens(opts, sc);
    let mut s = match Setup::new(opts, &dir, load_cpu, target_cpu) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{tag} cannot start the upstream backends: {e}");
            return result;
        }
    };
    if sc.tls {
        if let Err(why) = s.enable_tls() {
            eprintln!("{tag} {why}");
            result.skip_all(sc, opts, &why);
            return result;
        }
    }
    s.count_instructions = opts.instructions;
    let tls_client = s.tls_client();
    let mut live = Vec::new();
    for &t in sc.targets {
        if !opts.wants(t) {
            continue;
        }
        let probe_token = tokens.first().and_then(|v| v.to_str().ok()).unwrap_or("");
        match setup::start(&mut s, t, sc, probe_token) {
            Ok(setup::Started {
                proc,
                note,
                tls,
                alloc_counts,
                instructions,
            }) => {
                if let Some(n) = &note {
                    eprintln!("{tag} note: {}: {n}", t.name());
                }
                if let Some(n) = &tls {
                    eprintln!("{tag} {}: {n}", t.name());
                }
                let pids = proc.tree();
                live.push(Live {
                    target: t,
                    proc,
                    note,
                    tls,
                    alloc_counts,
                    instructions,
                    pids,
                    rounds: Vec::new(),
                    latency: None,
                });
            }
            Err(why) => {
                eprintln!("{tag} skipped {}: {why}", t.name());
                result.skipped.push((t, why));
            }
        }
    }
    let tokens = Arc::new(tokens);
    let spec_for = |l: &Live, duration| {
        let mut spec = spec(sc, l.proc.addr, &tokens, duration, load_cpu);
        spec.tls = tls_client.clone();
        spec.rate = opts.rate;
        spec
    };

    if !opts.warmup.is_zero() {
        for l in &live {
            let _ = loadgen::run(&spec_for(l, opts.warmup), &|| 0.0);
        }
    }
    for round in 0..opts.rounds {
        // rotate the order each round so drift hits every target alike
        let n = live.len();
        for i in 0..n {
            let l = &mut live[(i + round) % n];
            let pids = l.pids.clone();
            let probe = move || sys::cpu_seconds(&pids);
            let allocs_before = l.alloc_counts.as_deref().and_then(settled_counts);
            let counting = match &l.instructions {
                Some(c) => c
                    .start()
                    .map_err(|e| eprintln!("{tag} {}: {e}", l.target.name()))
                    .is_ok(),
                None => false,
            };
            let outcome = loadgen::run(&spec_for(l, opts.duration), &probe);
            let instructions = match &l.instructions {
                Some(c) if counting => c
                    .stop()
                    .map_err(|e| eprintln!("{tag} {}: {e}", l.target.name()))
                    .ok(),
                _ => None,
            };
            let allocs_after = l.alloc_counts.as_deref().and_then(settled_counts);
            let allocs = allocs_before
                .zip(allocs_after)
                .map(|(before, after)| after.since(&before));
            match outcome {
                Ok(r) => {
                    let cpu = r.probe.1 - r.probe.0;
                    let p99 = r.latency.value_at_quantile(0.99) as f64 / 1000.0;
                    eprintln!(
                        "{tag} round {}/{} {:<17} {:>9.0} req/s  p99 {:>7.2} ms  cpu {:.3} s/10k  errors {}",
                        round + 1,
                        opts.rounds,
                        l.target.name(),
                        r.rps(),
                        p99,
                        cpu / (r.requests.max(1) as f64) * 10_000.0,
                        r.errors
                    );
                    l.rounds.push(Round {
                        requests: r.requests,
                        errors: r.errors,
                        secs: r.elapsed.as_secs_f64(),
                        cpu,
                        allocs,
                        instructions,
                    });
                    match &mut l.latency {
                        Some(h) => {
                            let _ = h.add(&r.latency);
                        }
                        None => l.latency = Some(r.latency),
                    }
                }
                Err(e) => eprintln!("{tag} load generator failed on {}: {e}", l.target.name()),
            }
        }
    }
    for l in live {
        let peak_rss = sys::peak_rss(&l.proc.tree());
        result.measured.push(Measured {
            target: l.target,
            note: l.note,
            tls: l.tls,
            rounds: l.rounds,
            latency: l.latency,
            peak_rss,
        });
        drop(l.proc);
    }
    result
}

/// A target's allocation counters once its counters file has caught up with
/// the last load (the target rewrites it every `alloc_count::REPORT_EVERY`).
fn settled_counts(path: &Path) -> Option<alloc_count::Counts> {
    std::thread::sleep(alloc_count::REPORT_EVERY * 4);
    alloc_count::Counts::read(path)
}

/// The `Authorization` values scenario `sc` sends (one, or `distinct_tokens`).
pub fn make_tokens(opts: &Options, sc: &Scenario) -> Vec<HeaderValue> {
    let n = match sc.tokens {
        Tokens::One => 1,
        Tokens::Many => opts.distinct_tokens.max(1),
    };
    crate::tokens::mint_many(crate::configs::JWT_SECRET, crate::configs::JWT_ISSUER, n)
        .into_iter()
        .filter_map(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
        .collect()
}

/// The load of scenario `sc` against `addr` (plain TCP; the caller adds TLS).
pub fn spec(
    sc: &Scenario,
    addr: std::net::SocketAddr,
    tokens: &Arc<Vec<HeaderValue>>,
    duration: Duration,
    cpu: Option<usize>,
) -> LoadSpec {
    let list: Vec<String> = match sc.paths {
        Paths::Small => vec!["/small".into()],
        Paths::Large => vec!["/64k".into()],
        Paths::ManyRoutes => crate::configs::many_route_paths(setup::MANY_ROUTES),
    };
    LoadSpec {
        addr,
        host: HeaderValue::from_static("bench.local"),
        method: sc.method.clone(),
        paths: loadgen::paths(&list).unwrap_or_default(),
        body: (sc.body > 0).then(|| Bytes::from(vec![b'p'; sc.body])),
        tokens: Some(tokens.clone()),
        connections: sc.connections,
        duration,
        cpu,
        tls: None,
        new_connection_per_request: sc.reuse == Reuse::NewConnection,
        rate: None,
    }
}

/// Where `procs::which` would find each peer, for the report header.
pub fn peers() -> Vec<(&'static str, Option<PathBuf>)> {
    ["nginx", "haproxy", "redis-server"]
        .into_iter()
        .map(|n| (n, procs::which(n)))
        .collect()
}

/// `dir` exists and is writable.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}
