//! The results: a markdown table per scenario (each figure beside its ratio to
//! nginx, to the direct backend and, for CPU, to the Pingora floor: the gateway's
//! own cost over the engine), the idle-connection memory table, a JSON dump, and
//! an SVG chart.

use std::fmt::Write;

use crate::idle::IdleMeasured;
use crate::run::{Measured, ScenarioResult};
use crate::scenario::{Kind, Target};

/// Facts about the run printed above the tables.
pub struct RunInfo {
    pub started: String,
    pub command: String,
    pub cpus: String,
    pub load_before: Option<f64>,
    pub load_after: Option<f64>,
    pub rounds: usize,
    pub duration_s: f64,
    /// Workers per target (gateway/floor threads, nginx processes, haproxy threads).
    pub workers: usize,
    pub pinned: bool,
    /// `--rate`: keep-alive load paced at this many requests per second.
    pub rate: Option<f64>,
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// The whole report as markdown.
pub fn markdown(info: &RunInfo, results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    let load = |l: Option<f64>| l.map_or("?".into(), |l| format!("{l:.2}"));
    let _ = writeln!(out, "# Load test {}\n", info.started);
    let _ = writeln!(out, "- command: `{}`", info.command);
    let _ = writeln!(out, "- machine: {}", info.cpus);
    let _ = writeln!(
        out,
        "- load average (1 min) before / after: {} / {}",
        load(info.load_before),
        load(info.load_after)
    );
    let _ = writeln!(
        out,
        "- {} interleaved round(s) of {:.1} s per target; gateway and floor `threads: {w}`; \
         nginx `worker_processes {w}`; haproxy `nbthread {w}`; {}",
        info.rounds,
        info.duration_s,
        if info.pinned {
            "pinning on (targets on one CPU, load generator and backends on another)"
        } else if info.workers > 1 {
            "no pinning: targets, load generator and backends share every CPU"
        } else {
            "pinning off"
        },
        w = info.workers,
    );
    if let Some(rate) = info.rate {
        let _ = writeln!(
            out,
            "- keep-alive load paced at {rate:.0} requests/s per target (`--rate`): CPU \
             per request at the same load for every target; a target below that rate \
             could not keep up"
        );
    }
    let _ = writeln!(
        out,
        "- req/s: median of the rounds; latency over all rounds; CPU: the target's \
         user+system microseconds per request (/proc); x floor: CPU per request over \
         the bare Pingora proxy's (`pingora-floor`, same threads, pinning and upstream \
         pool); RSS: peak (VmHWM)\n"
    );
    for sc in results {
        let _ = writeln!(out, "## {}: {}\n", sc.key, sc.title);
        match sc.kind {
            Kind::Load => {
                out.push_str(&table(sc));
                if let Some(line) = floor_summary(sc) {
                    let _ = writeln!(out, "\n{line}");
                }
                if let Some(t) = alloc_table(sc) {
                    let _ = write!(out, "\n{t}");
                }
                if let Some(t) = instructions_table(sc) {
                    let _ = write!(out, "\n{t}");
                }
            }
            Kind::Idle => out.push_str(&idle_table(sc)),
        }
        for m in &sc.measured {
            if let Some(n) = &m.note {
                let _ = writeln!(out, "\n- {}: {n}", m.target.name());
            }
        }
        let negotiated: Vec<String> = sc
            .measured
            .iter()
            .filter_map(|m| Some(format!("{} {}", m.target.name(), m.tls.as_deref()?)))
            .collect();
        if !negotiated.is_empty() {
            let _ = writeln!(out, "\n- TLS negotiated: {}", negotiated.join("; "));
        }
        for (t, why) in &sc.skipped {
            let _ = writeln!(out, "\n- {} skipped: {why}", t.name());
        }
        out.push('\n');
    }
    out
}

/// One scenario's table.
pub fn table(sc: &ScenarioResult) -> String {
    let nginx = sc.get(Target::Nginx);
    let direct = sc.get(Target::Direct);
    let floor = sc.get(Target::Floor);
    let f = |m: Option<&Measured>, g: fn(&Measured) -> f64| m.map(g);
    let mut out = String::from(
        "| target | req/s | x nginx | x direct | p50 ms | p90 ms | p99 ms | p99.9 ms | p99 x nginx | \
         errors | CPU µs/req | x nginx | x floor | x direct | peak RSS MiB | x nginx | x direct |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for m in &sc.measured {
        let rps = m.rps();
        let p99 = m.latency_ms(0.99);
        let cpu = m.cpu_us_per_request();
        if m.requests() == 0 {
            let _ = writeln!(
                out,
                "| {} | 0 | - | - | - | - | - | - | - | {} | - | - | - | - | - | - | - |",
                m.target.name(),
                m.errors()
            );
            continue;
        }
        let rss = m.peak_rss as f64 / (1024.0 * 1024.0);
        let rss_of = |m: &Measured| m.peak_rss as f64;
        let star = if m.note.is_some() { " *" } else { "" };
        let _ = writeln!(
            out,
            "| {}{star} | {rps:.0} | {} | {} | {:.2} | {:.2} | {p99:.2} | {:.2} | {} | {} | {cpu:.1} | {} | {} | {} | {rss:.1} | {} | {} |",
            m.target.name(),
            ratio(rps, f(nginx, Measured::rps)),
            ratio(rps, f(direct, Measured::rps)),
            m.latency_ms(0.50),
            m.latency_ms(0.90),
            m.latency_ms(0.999),
            ratio(p99, nginx.map(|n| n.latency_ms(0.99))),
            m.errors(),
            ratio(cpu, f(nginx, Measured::cpu_us_per_request)),
            ratio(cpu, f(floor, Measured::cpu_us_per_request)),
            ratio(cpu, f(direct, Measured::cpu_us_per_request)),
            ratio(m.peak_rss as f64, nginx.map(rss_of)),
            ratio(m.peak_rss as f64, direct.map(rss_of)),
        );
    }
    out
}

/// One line on the engine: the gateway's CPU per request over the floor's, and
/// the floor's over nginx's and haproxy's.
pub fn floor_summary(sc: &ScenarioResult) -> Option<String> {
    if sc
        .get(Target::Floor)
        .and_then(Measured::instructions_per_request)
        .is_some()
    {
        return instructions_summary(sc);
    }
    let cpu = |t| {
        sc.get(t)
            .filter(|m| m.requests() > 0)
            .map(Measured::cpu_us_per_request)
    };
    let floor = cpu(Target::Floor)?;
    let mut ours = Vec::new();
    for t in [Target::Gateway, Target::Pipeline] {
        if let Some(c) = cpu(t) {
            ours.push(format!("{} {}x", t.name(), ratio(c, Some(floor))));
        }
    }
    let mut engine = Vec::new();
    for t in [Target::Nginx, Target::Haproxy] {
        if let Some(c) = cpu(t) {
            engine.push(format!("{}x {}", ratio(floor, Some(c)), t.name()));
        }
    }
    let ours = if ours.is_empty() {
        String::new()
    } else {
        format!("{} the floor's CPU per request; ", ours.join(", "))
    };
    let engine = if engine.is_empty() {
        "no peer measured".to_string()
    } else {
        engine.join(", ")
    };
    Some(format!(
        "- Our cost over the engine: {ours}the floor itself ({floor:.1} µs/req): {engine}."
    ))
}

/// The floor's line when it ran under callgrind: its CPU time means nothing then.
fn instructions_summary(sc: &ScenarioResult) -> Option<String> {
    let count = |t| sc.get(t).and_then(Measured::instructions_per_request);
    let floor = count(Target::Floor)?;
    let ours: Vec<String> = [Target::Gateway, Target::Pipeline]
        .into_iter()
        .filter_map(|t| Some(format!("{} {}x", t.name(), ratio(count(t)?, Some(floor)))))
        .collect();
    if ours.is_empty() {
        return None;
    }
    Some(format!(
        "- Our cost over the engine, in instructions: {} the floor's {:.1}k per request \
         (CPU time of targets under callgrind is not comparable).",
        ours.join(", "),
        floor / 1000.0
    ))
}

/// Allocations per request of the targets built with `count-allocations`
/// (none when no target counted).
pub fn alloc_table(sc: &ScenarioResult) -> Option<String> {
    let floor = sc.get(Target::Floor).and_then(Measured::allocs_per_request);
    let rows: Vec<(&Measured, (f64, f64))> = sc
        .measured
        .iter()
        .filter_map(|m| Some((m, m.allocs_per_request()?)))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut out = String::from(
        "Allocations (counting allocator over mimalloc; alloc + realloc calls and the \
         bytes they asked for, per request):\n\n\
         | target | allocations/req | x floor | bytes/req | x floor |\n\
         |---|--:|--:|--:|--:|\n",
    );
    for (m, (allocs, bytes)) in rows {
        let _ = writeln!(
            out,
            "| {} | {allocs:.1} | {} | {bytes:.0} | {} |",
            m.target.name(),
            ratio(allocs, floor.map(|f| f.0)),
            ratio(bytes, floor.map(|f| f.1)),
        );
    }
    Some(out)
}

/// Instructions per request of the targets run under callgrind (`--instructions`;
/// none when no target counted).
pub fn instructions_table(sc: &ScenarioResult) -> Option<String> {
    let floor = sc
        .get(Target::Floor)
        .and_then(Measured::instructions_per_request);
    let rows: Vec<(&Measured, f64)> = sc
        .measured
        .iter()
        .filter_map(|m| Some((m, m.instructions_per_request()?)))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut out = String::from(
        "Instructions (callgrind, every thread of the target, user space only, block copies \
         by vector loop; counted, not timed, so they hold on a busy machine):\n\n\
         | target | instructions/req | x floor |\n\
         |---|--:|--:|\n",
    );
    for (m, n) in rows {
        let _ = writeln!(
            out,
            "| {} | {:.1}k | {} |",
            m.target.name(),
            n / 1000.0,
            ratio(n, floor)
        );
    }
    Some(out)
}

/// The idle-connection scenario's table.
pub fn idle_table(sc: &ScenarioResult) -> String {
    let nginx = sc
        .idle
        .iter()
        .find(|m| m.target == Target::Nginx)
        .map(IdleMeasured::kib_per_connection);
    let mut out = String::from(
        "| target | connections held | failed | closed by the target | RSS before MiB | \
         RSS after MiB | growth MiB | KiB per connection | x nginx |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for m in &sc.idle {
        let kib = m.kib_per_connection();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {kib:.1} | {} |",
            m.target.name(),
            m.opened,
            m.failed,
            m.opened - m.still_open.min(m.opened),
            m.rss_before as f64 / (1024.0 * 1024.0),
            m.rss_after as f64 / (1024.0 * 1024.0),
            m.growth_mib(),
            ratio(kib, nginx),
        );
    }
    out
}

/// Machine-readable results (for comparing runs).
pub fn json(info: &RunInfo, results: &[ScenarioResult]) -> serde_json::Value {
    let scenarios: Vec<_> = results
        .iter()
        .map(|sc| {
            let targets: Vec<_> = sc
                .measured
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "target": m.target.name(),
                        "note": m.note,
                        "rps": m.rps(),
                        "requests": m.requests(),
                        "errors": m.errors(),
                        "p50_ms": m.latency_ms(0.5),
                        "p90_ms": m.latency_ms(0.9),
                        "p99_ms": m.latency_ms(0.99),
                        "p999_ms": m.latency_ms(0.999),
                        "tls": m.tls,
                        "cpu_s_per_10k": m.cpu_per_10k(),
                        "cpu_us_per_req": m.cpu_us_per_request(),
                        "peak_rss_bytes": m.peak_rss,
                        "allocs_per_req": m.allocs_per_request().map(|a| a.0),
                        "alloc_bytes_per_req": m.allocs_per_request().map(|a| a.1),
                        "instructions_per_req": m.instructions_per_request(),
                        "rounds": m.rounds.iter().map(|r| serde_json::json!({
                            "requests": r.requests, "errors": r.errors, "secs": r.secs, "cpu_s": r.cpu,
                            "allocations": r.allocs.map(|a| a.allocations),
                            "alloc_bytes": r.allocs.map(|a| a.bytes),
                            "instructions": r.instructions,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            serde_json::json!({
                "scenario": sc.key,
                "title": sc.title,
                "connections": sc.connections,
                "targets": targets,
                "idle": sc.idle.iter().map(|m| serde_json::json!({
                    "target": m.target.name(),
                    "requested": m.requested,
                    "opened": m.opened,
                    "failed": m.failed,
                    "still_open": m.still_open,
                    "rss_before_bytes": m.rss_before,
                    "rss_after_bytes": m.rss_after,
                    "growth_bytes": m.growth(),
                    "kib_per_connection": m.kib_per_connection(),
                    "open_secs": m.open_secs,
                })).collect::<Vec<_>>(),
                "skipped": sc.skipped.iter().map(|(t, w)| serde_json::json!({"target": t.name(), "why": w})).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "started": info.started,
        "command": info.command,
        "machine": info.cpus,
        "load_before": info.load_before,
        "load_after": info.load_after,
        "rounds": info.rounds,
        "duration_s": info.duration_s,
        "workers": info.workers,
        "pinned": info.pinned,
        "rate": info.rate,
        "scenarios": scenarios,
    })
}
