//! `pingora-floor`: the engine floor the load harness measures the gateway against.
//!
//! A bare Pingora `ProxyHttp` on the same Pingora version as the gateway: no
//! routing, no plugins, no header rules, no metrics, no access log; round robin
//! over the upstreams given on the command line. What it shares with the gateway
//! is what the engine costs anyway: the same worker threads (`server.threads`, no
//! work stealing with one thread), the same allocator (mimalloc), the same
//! upstream keep-alive pool (256) and peer timeouts (connect 2 s, read/write 30 s,
//! idle 60 s). So the gateway's CPU per request over this binary's is the cost of
//! the gateway's own code.

#![deny(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

#[cfg(not(feature = "count-allocations"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// With `count-allocations`, the gateway's counting wrapper (see `alloc-count`).
#[cfg(feature = "count-allocations")]
#[global_allocator]
static GLOBAL: alloc_count::Counting<mimalloc::MiMalloc> =
    alloc_count::Counting::new(mimalloc::MiMalloc);

#[derive(Parser)]
#[command(
    name = "pingora-floor",
    about = "A bare Pingora proxy: round robin over the upstreams, nothing else"
)]
struct Cli {
    /// `ip:port` to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// An upstream `ip:port` (repeat for more; used in turn).
    #[arg(long = "upstream", required = true)]
    upstreams: Vec<SocketAddr>,
    /// Worker threads (the gateway's `server.threads`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// One single-threaded runtime per worker instead of work stealing (the
    /// gateway's `server.work_stealing: false`).
    #[arg(long)]
    no_steal: bool,
    /// Idle upstream connections kept (the gateway's `server.upstream_keepalive_pool`).
    #[arg(long, default_value_t = 256)]
    keepalive_pool: usize,
    /// PEM certificate chain: terminate TLS on the listener (with `--tls-key`).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Per-connection read buffer of the listener in bytes (the gateway's
    /// `listeners[].read_buffer`); Pingora's default (64 KiB) when absent.
    #[arg(long, requires = "write_buffer")]
    read_buffer: Option<usize>,
    /// Per-connection write buffer of the listener in bytes (`listeners[].write_buffer`).
    #[arg(long, requires = "read_buffer")]
    write_buffer: Option<usize>,
}

/// The whole proxy: a cursor over the upstreams.
struct Floor {
    upstreams: Vec<SocketAddr>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let k = self.next.fetch_add(1, Ordering::Relaxed) % self.upstreams.len();
        let mut peer = HttpPeer::new(self.upstreams[k], false, String::new());
        // the gateway's defaults for a service's instances
        peer.options.connection_timeout = Some(Duration::from_secs(2));
        peer.options.read_timeout = Some(Duration::from_secs(30));
        peer.options.write_timeout = Some(Duration::from_secs(30));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }
}

fn main() -> ExitCode {
    #[cfg(feature = "count-allocations")]
    if let Some(Err(e)) = alloc_count::report_to_env_file(&GLOBAL) {
        eprintln!("pingora-floor: cannot write the allocation counters: {e}");
    }
    let cli = Cli::parse();
    if cli.upstreams.is_empty() {
        eprintln!("pingora-floor: at least one --upstream is needed");
        return ExitCode::FAILURE;
    }
    let conf = ServerConf {
        threads: cli.threads.max(1),
        work_stealing: cli.threads > 1 && !cli.no_steal,
        // the harness stops this process with SIGTERM: exit at once
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: cli.keepalive_pool,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let floor = Floor {
        upstreams: cli.upstreams,
        next: AtomicUsize::new(0),
    };
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, floor);
    let listen = cli.listen.to_string();
    match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => {
            let (Some(cert), Some(key)) = (cert.to_str(), key.to_str()) else {
                eprintln!("pingora-floor: certificate and key paths must be UTF-8");
                return ExitCode::FAILURE;
            };
            if let Err(e) = proxy.add_tls(&listen, cert, key) {
                eprintln!("pingora-floor: cannot use {cert} / {key}: {e}");
                return ExitCode::FAILURE;
            }
        }
        _ => match (cli.read_buffer, cli.write_buffer) {
            (Some(read), Some(write)) => proxy.add_listener(
                ListenerConfig::tcp(&listen).l4_buffer(L4BufferSettings::new(read, write)),
            ),
            _ => proxy.add_tcp(&listen),
        },
    }
    server.add_service(proxy);
    server.run(Default::default());
    ExitCode::SUCCESS
}
