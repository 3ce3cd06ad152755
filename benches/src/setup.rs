//! Starting the targets of one scenario: the upstream backends, redis, and each
//! target (direct backend, gateway plain / pipeline, nginx, haproxy) on free
//! loopback ports, pinned to the target CPU.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::configs::{self, GatewayBase};
use crate::procs::{self, Proc, StartError};
use crate::run::Options;
use crate::scenario::{Paths, Scenario, Target};
use crate::sys;

/// Routes in the 1,000-route scenario.
pub const MANY_ROUTES: usize = 1000;

/// Shared state of one scenario's processes.
pub struct Setup<'a> {
    opts: &'a Options,
    dir: &'a Path,
    upstreams: [Proc; 2],
    redis: Option<Proc>,
    load_cpu: Option<usize>,
    target_cpu: Option<usize>,
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
            load_cpu,
            target_cpu,
        })
    }

    fn upstream_addrs(&self) -> [SocketAddr; 2] {
        [self.upstreams[0].addr, self.upstreams[1].addr]
    }

    fn base(&self) -> Result<GatewayBase, String> {
        Ok(GatewayBase {
            listen: loopback()?,
            admin: loopback()?,
            upstreams: self.upstream_addrs(),
            threads: self.opts.threads,
            access_log: self.opts.access_log,
        })
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
        // logs live apart from the config: the gateway watches its config's folder
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
        let log = logs.join(format!("{name}.log"));
        procs::spawn(name, cmd, addr, &log, self.target_cpu).map_err(|e| e.to_string())
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

/// Start target `t` for scenario `sc`; the process, ready, and a note for the report.
pub fn start(
    s: &mut Setup<'_>,
    t: Target,
    sc: &Scenario,
    token: &str,
) -> Result<(Proc, Option<String>), String> {
    let many = sc.paths == Paths::ManyRoutes;
    let probe = if many { "/svc0/item" } else { "/small" };
    let mut note = None;
    let mut auth_header = Vec::new();
    let mut proc = match t {
        Target::Direct => procs::spawn_backend(&s.opts.backend, "direct", s.target_cpu)
            .map_err(|e| e.to_string())?,
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
            let listen = loopback()?;
            let routes = if many { MANY_ROUTES } else { 0 };
            let conf = s.write(
                "nginx.conf",
                &configs::nginx(s.dir, listen, s.upstream_addrs(), routes),
            )?;
            let mut cmd = Command::new(bin);
            cmd.arg("-p").arg(s.dir).arg("-c").arg(&conf);
            cmd.arg("-e").arg(s.dir.join("nginx-error.log"));
            procs::spawn("nginx", cmd, listen, &s.dir.join("nginx.out"), s.target_cpu)
                .map_err(|e| e.to_string())?
        }
        Target::Haproxy => {
            let bin = procs::which("haproxy").ok_or("haproxy is not installed")?;
            let listen = loopback()?;
            let map = if many {
                Some(s.write("routes.map", &configs::haproxy_routes_map(MANY_ROUTES))?)
            } else {
                None
            };
            let cfg = configs::haproxy(listen, s.upstream_addrs(), map.as_deref());
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
    proc.wait_http(probe, &auth_header)
        .map_err(|e| e.to_string())?;
    Ok((proc, note))
}

fn loopback() -> Result<SocketAddr, String> {
    let port = sys::free_port().map_err(|e| format!("no free port: {e}"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}
