//! Starting the targets of one scenario: the upstream backends, redis, and each
//! target (direct backend, Pingora floor, gateway plain / pipeline, nginx,
//! haproxy) on free loopback ports, pinned to the target CPU; over TLS when the
//! scenario asks for it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::callgrind;
use crate::configs::{self, GatewayBase};
use crate::procs::{self, Proc, StartError};
use crate::run::Options;
use crate::scenario::{Kind, Paths, Scenario, Target};
use crate::sys;
use crate::tls::{self, TlsFiles};

/// Routes in the 1,000-route scenario.
pub const MANY_ROUTES: usize = 1000;

/// Shared state of one scenario's processes.
pub struct Setup<'a> {
    opts: &'a Options,
    dir: &'a Path,
    upstreams: [Proc; 2],
    redis: Option<Proc>,
    tls: Option<TlsFiles>,
    load_cpu: Option<usize>,
    target_cpu: Option<usize>,
    /// Run the Rust targets under callgrind (`--instructions`, load scenarios).
    pub count_instructions: bool,
}

/// A target that answers.
pub struct Started {
    pub proc: Proc,
    /// Shown beside the target (e.g. what the pipeline stand-in lacks).
    pub note: Option<String>,
    /// What the TLS handshake negotiated (HTTPS scenarios).
    pub tls: Option<String>,
    /// The target's allocation counters (gateway and floor built with
    /// `count-allocations`; none otherwise).
    pub alloc_counts: Option<PathBuf>,
    /// Its instruction counter (Rust targets with `--instructions`).
    pub instructions: Option<callgrind::Counter>,
}

impl<'a> Setup<'a> {
    /// Start the two upstream backends (on the load generator's CPU: the targets' CPU
    /// is kept for the target under test).
    pub fn new(
        opts: &'a Options,
        dir: &'a Path,
        load_cpu: Option<usize>,
        target_cpu: Option<usize>,
    ) -> Result<Self, StartError> {
        let a = procs::spawn_backend(&opts.backend, "backend-1", load_cpu)?;
        let b = procs::spawn_backend(&opts.backend, "backend-2", load_cpu)?;
        Ok(Self {
            opts,
            dir,
            upstreams: [a, b],
            redis: None,
            tls: None,
            load_cpu,
            target_cpu,
            count_instructions: false,
        })
    }

    /// Make the test certificate: targets started from now on terminate TLS.
    pub fn enable_tls(&mut self) -> Result<(), String> {
        if self.tls.is_none() {
            self.tls = Some(tls::generate(self.dir)?);
        }
        Ok(())
    }

    /// The client config trusting the test certificate, once TLS is enabled.
    pub fn tls_client(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.as_ref().map(|t| t.client.clone())
    }

    fn upstream_addrs(&self) -> [SocketAddr; 2] {
        [self.upstreams[0].addr, self.upstreams[1].addr]
    }

    fn base(&self) -> Result<GatewayBase, String> {
        Ok(GatewayBase {
            listen: loopback()?,
            admin: loopback()?,
            upstreams: self.upstream_addrs(),
            threads: self.opts.workers,
            work_stealing: !self.opts.no_steal,
            access_log: self.opts.access_log,
            tls: self
                .tls
                .as_ref()
                .map(|t| (t.cert.display().to_string(), t.key.display().to_string())),
        })
    }

    fn peer_listen(&self, connections: usize) -> Result<configs::PeerListen<'_>, String> {
        Ok(configs::PeerListen {
            addr: loopback()?,
            tls: self.tls.as_ref(),
            connections,
            workers: self.opts.workers,
        })
    }

    /// The Pingora floor with the gateway's worker threads, over the same upstreams.
    fn floor(&self) -> Result<Proc, String> {
        let bin = &self.opts.floor;
        if !bin.is_file() {
            return Err(format!("no pingora-floor binary at {}", bin.display()));
        }
        let listen = loopback()?;
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(listen.to_string())
            .arg("--threads")
            .arg(self.opts.workers.to_string());
        if self.opts.no_steal {
            cmd.arg("--no-steal");
        }
        for u in self.upstream_addrs() {
            cmd.arg("--upstream").arg(u.to_string());
        }
        if let Some(t) = &self.tls {
            cmd.arg("--tls-cert")
                .arg(&t.cert)
                .arg("--tls-key")
                .arg(&t.key);
        }
        let logs = self.logs()?;
        cmd.env(alloc_count::ENV_FILE, logs.join("pingora-floor.allocs"));
        self.spawn_rust("pingora-floor", cmd, listen, &logs)
    }

    /// Start one of our own binaries (the floor, the gateway), under callgrind when
    /// instructions are counted.
    fn spawn_rust(
        &self,
        name: &str,
        cmd: Command,
        addr: SocketAddr,
        logs: &Path,
    ) -> Result<Proc, String> {
        let log = logs.join(format!("{name}.log"));
        if !self.count_instructions {
            return procs::spawn(name, cmd, addr, &log, self.target_cpu).map_err(|e| e.to_string());
        }
        let cmd = callgrind::wrap(&cmd, &self.callgrind_prefix(name)?);
        procs::spawn(name, cmd, addr, &log, self.target_cpu)
            .map(|p| p.ready_within(Duration::from_secs(120)))
            .map_err(|e| e.to_string())
    }

    fn callgrind_prefix(&self, name: &str) -> Result<PathBuf, String> {
        let dir = self.dir.join("callgrind");
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(dir.join(name))
    }

    fn logs(&self) -> Result<PathBuf, String> {
        // logs live apart from the config: the gateway watches its config's folder
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
        Ok(logs)
    }

    fn redis(&mut self) -> Result<SocketAddr, String> {
        if let Some(r) = &self.redis {
            return Ok(r.addr);
        }
        let bin = procs::which("redis-server").ok_or("redis-server is not installed")?;
        let addr = loopback()?;
        let mut cmd = Command::new(bin);
        cmd.args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"]);
        let log = self.dir.join("redis.log");
        let mut p = procs::spawn("redis-server", cmd, addr, &log, self.load_cpu)
            .map_err(|e| e.to_string())?;
        p.wait_tcp().map_err(|e| e.to_string())?;
        self.redis = Some(p);
        Ok(addr)
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    fn gateway(&self, name: &str, file: &Path, addr: SocketAddr) -> Result<Proc, String> {
        let mut cmd = Command::new(&self.opts.gateway);
        cmd.arg("run").arg("-c").arg(file);
        if !self.opts.access_log {
            cmd.env("RUST_LOG", "warn");
        }
        let logs = self.logs()?;
        cmd.env(alloc_count::ENV_FILE, logs.join(format!("{name}.allocs")));
        self.spawn_rust(name, cmd, addr, &logs)
    }

    /// `gateway check` on a config: the first error line when it is refused.
    fn check(&self, file: &Path) -> Result<(), String> {
        let out = Command::new(&self.opts.gateway)
            .arg("check")
            .arg("-c")
            .arg(file)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.opts.gateway.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&out.stderr);
        Err(text
            .lines()
            .find(|l| l.trim_start().starts_with("- "))
            .or_else(|| text.lines().next())
            .unwrap_or("refused")
            .trim()
            .to_string())
    }
}

/// Start target `t` for scenario `sc` and wait until it answers.
pub fn start(s: &mut Setup<'_>, t: Target, sc: &Scenario, token: &str) -> Result<Started, String> {
    let many = sc.paths == Paths::ManyRoutes;
    // client connections the peers must accept at once
    let connections = match sc.kind {
        Kind::Load => sc.connections,
        Kind::Idle => s.opts.idle_connections,
    };
    let probe = if many { "/svc0/item" } else { "/small" };
    let mut note = None;
    let mut auth_header = Vec::new();
    let mut proc = match t {
        Target::Direct => {
            if s.tls.is_some() {
                return Err("the direct backend speaks plain HTTP only".into());
            }
            procs::spawn_backend(&s.opts.backend, "direct", s.target_cpu)
                .map_err(|e| e.to_string())?
        }
        Target::Floor => s.floor()?,
        Target::Gateway => {
            let base = s.base()?;
            let text = if many {
                configs::gateway_many_routes(&base, MANY_ROUTES)
            } else {
                configs::gateway_plain(&base)
            };
            let file = s.write("gateway.yaml", &text)?;
            s.gateway("gateway", &file, base.listen)?
        }
        Target::Pipeline => {
            let base = s.base()?;
            let file = match s.redis() {
                Ok(redis) => {
                    let file =
                        s.write("pipeline.yaml", &configs::gateway_pipeline(&base, redis))?;
                    match s.check(&file) {
                        Ok(()) => {
                            auth_header.push(("authorization", token));
                            file
                        }
                        Err(why) => {
                            note = Some(format!(
                                "STAND-IN: this gateway build refuses the auth config ({why}); \
                                 measured header rules + round robin only"
                            ));
                            s.write("pipeline.yaml", &configs::gateway_pipeline_fallback(&base))?
                        }
                    }
                }
                Err(why) => {
                    note = Some(format!(
                        "STAND-IN: {why}; measured header rules + round robin only"
                    ));
                    s.write("pipeline.yaml", &configs::gateway_pipeline_fallback(&base))?
                }
            };
            s.gateway("gateway-pipeline", &file, base.listen)?
        }
        Target::Nginx => {
            let bin = procs::which("nginx").ok_or("nginx is not installed")?;
            let listen = s.peer_listen(connections)?;
            let routes = if many { MANY_ROUTES } else { 0 };
            let conf = s.write(
                "nginx.conf",
                &configs::nginx(s.dir, &listen, s.upstream_addrs(), routes),
            )?;
            let listen = listen.addr;
            let mut cmd = Command::new(bin);
            cmd.arg("-p").arg(s.dir).arg("-c").arg(&conf);
            cmd.arg("-e").arg(s.dir.join("nginx-error.log"));
            procs::spawn("nginx", cmd, listen, &s.dir.join("nginx.out"), s.target_cpu)
                .map_err(|e| e.to_string())?
        }
        Target::Haproxy => {
            let bin = procs::which("haproxy").ok_or("haproxy is not installed")?;
            let listen = s.peer_listen(connections)?;
            let map = if many {
                Some(s.write("routes.map", &configs::haproxy_routes_map(MANY_ROUTES))?)
            } else {
                None
            };
            let cfg = configs::haproxy(&listen, s.upstream_addrs(), map.as_deref());
            let listen = listen.addr;
            let file = s.write("haproxy.cfg", &cfg)?;
            let mut cmd = Command::new(bin);
            cmd.arg("-db").arg("-f").arg(&file);
            procs::spawn(
                "haproxy",
                cmd,
                listen,
                &s.dir.join("haproxy.out"),
                s.target_cpu,
            )
            .map_err(|e| e.to_string())?
        }
    };
    let tls = match s.tls_client() {
        Some(client) => {
            let answers = |a| {
                matches!(
                    tls::https_status(a, probe, &auth_header, &client),
                    Ok((200..=299, _))
                )
            };
            proc.wait_until(answers).map_err(|e| e.to_string())?;
            tls::https_status(proc.addr, probe, &auth_header, &client)
                .ok()
                .map(|(_, negotiated)| negotiated)
        }
        None => {
            proc.wait_http(probe, &auth_header)
                .map_err(|e| e.to_string())?;
            None
        }
    };
    // written at start by binaries built with `count-allocations`
    let alloc_counts = match t {
        Target::Floor => Some("pingora-floor.allocs"),
        Target::Gateway => Some("gateway.allocs"),
        Target::Pipeline => Some("gateway-pipeline.allocs"),
        _ => None,
    }
    .map(|name| s.dir.join("logs").join(name))
    .filter(|p| p.is_file());
    let instructions = match t {
        Target::Floor | Target::Gateway | Target::Pipeline if s.count_instructions => {
            let prefix = s.callgrind_prefix(t.name())?;
            Some(callgrind::Counter::new(proc.pid(), &prefix))
        }
        _ => None,
    };
    if instructions.is_some() {
        let under =
            "under callgrind: its req/s, latency and CPU time are not comparable; see instructions/request";
        note = Some(match note {
            Some(n) => format!("{n}; {under}"),
            None => under.to_string(),
        });
    }
    Ok(Started {
        proc,
        note,
        tls,
        alloc_counts,
        instructions,
    })
}

fn loopback() -> Result<SocketAddr, String> {
    let port = sys::free_port().map_err(|e| format!("no free port: {e}"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}
