//! Start-up: load and compile the config, start the control plane (reload,
//! admin, health checks), then run the Pingora server until a signal drains it.

mod client_limits;

use std::path::PathBuf;
use std::sync::Arc;

use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;

use crate::config::{self, CompileInput, Compiled, ConfigError};
use crate::logging::LogFormat;
use crate::proxy::Gateway;
use crate::runtime::Shared;

/// Options from the command line.
pub struct RunOptions {
    pub config_path: PathBuf,
    /// Overrides `server.log.format`.
    pub log_format: Option<LogFormat>,
}

/// Errors that stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid config {path}:\n{}", list(.errors))]
    Config {
        path: String,
        errors: Vec<ConfigError>,
    },
    #[error("cannot start the control-plane runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot install the signal handlers (SIGTERM, SIGINT, SIGQUIT, SIGHUP): {0}")]
    Signals(std::io::Error),
    #[error("listener {address}: {reason}")]
    Listener { address: String, reason: String },
}

fn list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Load, validate and compile a config file without serving it (`gateway check`).
pub fn check(path: &std::path::Path) -> Result<(), Vec<ConfigError>> {
    let text = config::read(path)?;
    let file = config::parse(&text)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| vec![ConfigError::new("", format!("cannot start a runtime: {e}"))])?;
    let _guard = rt.enter();
    config::compile(CompileInput {
        file,
        version: config::version_of(&text),
        previous: None,
        rt: rt.handle(),
    })
    .map(|_| ())
}

/// Run the gateway until SIGTERM/SIGINT has drained it.
pub fn run(opts: RunOptions) -> Result<(), StartError> {
    let path_str = opts.config_path.display().to_string();
    let config_err = |errors| StartError::Config {
        path: path_str.clone(),
        errors,
    };
    let text = config::read(&opts.config_path).map_err(config_err)?;
    let file = config::parse(&text).map_err(config_err)?;
    // before compiling, so what compile warns about is written in the chosen format
    crate::logging::init(opts.log_format.unwrap_or(file.server.log.format));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("control-plane")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    // before anything listens: a signal that comes before its handler ends the process
    let signals = {
        let _guard = rt.enter();
        crate::shutdown::Signals::register().map_err(StartError::Signals)?
    };
    let version = config::version_of(&text);
    let Compiled { runtime, startup } = {
        let _guard = rt.enter();
        config::compile(CompileInput {
            file,
            version: version.clone(),
            previous: None,
            rt: rt.handle(),
        })
        .map_err(config_err)?
    };
    // the registry exists before any `type: registry` service starts reading it
    crate::upstream::discovery::registry::install(startup.registry.clone(), rt.handle())
        .map_err(|e| config_err(vec![ConfigError::new("admin.registry", e.to_string())]))?;
    crate::observe::set_config_version(None, &version);
    let shared = Arc::new(Shared::new(
        runtime,
        startup.clone(),
        opts.config_path.clone(),
        rt.handle().clone(),
    ));

    let crate::shutdown::Signals {
        term,
        int,
        quit,
        hup,
    } = signals;
    rt.spawn(crate::reload::watch(shared.clone(), hup));
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = startup.admin_address {
        let shared = shared.clone();
        // bind now so a taken port fails the start, not a background task
        let std_listener = std::net::TcpListener::bind(addr).map_err(|e| StartError::Listener {
            address: addr.to_string(),
            reason: e.to_string(),
        })?;
        drop(std_listener);
        rt.spawn(async move {
            let shutdown = async {
                let _ = admin_stopped.await;
            };
            if let Err(e) = crate::admin::serve(shared, addr, shutdown).await {
                tracing::error!(error = %e, %addr, "admin listener failed");
            }
        });
    }

    let conf = ServerConf {
        threads: startup.threads,
        // one worker has nothing to steal from: Pingora's no-steal runtime is a
        // plain current-thread runtime, without the multi-thread scheduler's
        // cross-thread bookkeeping on every wake
        work_stealing: startup.threads > 1 && startup.work_stealing,
        // Pingora's "grace period" is the time in-flight requests get after the
        // listeners close: our shutdown_timeout (the drain watch ends it early)
        grace_period_seconds: Some(startup.shutdown_timeout.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: startup.upstream_keepalive_pool,
        // retries are decided per route; this only caps them
        max_retries: 12,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut http = pingora_proxy::http_proxy(
        &server.configuration,
        Gateway {
            shared: shared.clone(),
        },
    );
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    // an idle h2 connection is closed like an idle HTTP/1 keep-alive one
    options.h2_idle_timeout = shared.current().client.keepalive;
    http.server_options = Some(options);
    let budgets = startup
        .listeners
        .iter()
        .map(|l| client_limits::ListenerLimit::new(l.address, l.max_connections))
        .collect();
    let app = client_limits::ClientLimits::new(http, shared.clone(), budgets);
    let mut proxy = Service::new("gateway".to_string(), app);
    for l in &startup.listeners {
        let address = l.address.to_string();
        let mut endpoint = ListenerConfig::tcp(&address)
            .l4_buffer(L4BufferSettings::new(l.read_buffer, l.write_buffer));
        if let Some(tls) = &l.tls {
            let mut settings = TlsSettings::intermediate(&tls.cert, &tls.key).map_err(|e| {
                StartError::Listener {
                    address: address.clone(),
                    reason: e.to_string(),
                }
            })?;
            if tls.http2 {
                settings.enable_h2();
            }
            endpoint = endpoint.tls(settings);
        }
        proxy.add_listener(endpoint);
        tracing::info!(%address, tls = l.tls.is_some(), read_buffer = l.read_buffer, "listener configured");
    }
    server.add_service(proxy);
    tracing::info!(config = %path_str, %version, "gateway starting");
    let before_exit = {
        let shared = shared.clone();
        move || {
            // spans of the last requests would otherwise wait for the next interval
            if let Some(export) = shared.current().span_export.clone() {
                shared
                    .rt
                    .block_on(export.flush(std::time::Duration::from_secs(2)));
            }
        }
    };
    crate::shutdown::spawn_drain_watch(
        server.watch_execution_phase(),
        startup.shutdown_timeout,
        before_exit,
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(crate::shutdown::GracefulOnIntOrTerm::new(
            startup.grace_period,
            term,
            int,
            quit,
        )),
    });
    let _ = stop_admin.send(());
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    tracing::info!("gateway stopped");
    Ok(())
}
