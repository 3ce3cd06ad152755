//! What every sample service does around its routes: logging, binding, the `/health`
//! route, registry heartbeat, the saga's background tasks, and a graceful stop on
//! Ctrl-C / SIGTERM (deregistering from the gateway on the way out).

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::ServiceSettings;
use crate::db::Db;
use crate::events::consume::{ConsumerOptions, Handler};
use crate::events::{self, EventLog};
use crate::registry::Registration;

/// Log to stderr; `RUST_LOG` overrides the default `info`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Add `GET /health` to `router`.
pub fn with_health(router: Router, name: &'static str) -> Router {
    router.route(
        "/health",
        get(move || async move { Json(json!({"status": "ok", "service": name})) }),
    )
}

/// What a saga participant consumes: a topic, its group and the handler.
pub struct Consumes {
    pub topic: &'static str,
    pub handler: Arc<dyn Handler>,
}

/// Start the outbox relay and (optionally) a consumer, connecting to the event log
/// in the background so a missing broker never blocks the HTTP side. The returned
/// `Notify` wakes the relay after a write queued events.
pub fn start_saga(
    settings: &ServiceSettings,
    db: Db,
    consumes: Option<Consumes>,
) -> (JoinHandle<()>, Arc<Notify>) {
    let settings = settings.clone();
    let wake = Arc::new(Notify::new());
    let outbox = Arc::clone(&wake);
    let task = tokio::spawn(async move {
        let log = connect_event_log(&settings).await;
        let relay = tokio::spawn(events::outbox::run_relay(
            db,
            Arc::clone(&log),
            Arc::clone(&wake),
        ));
        if let Some(c) = consumes {
            let opts = ConsumerOptions {
                topic: c.topic.to_string(),
                group: settings.name.to_string(),
                consumer: format!("{}-{}", settings.name, settings.bind.port()),
                max_attempts: settings.event_max_attempts,
                backoff: settings.event_retry_backoff,
                max_backoff: Duration::from_secs(10),
            };
            events::run_consumer(log, opts, c.handler, wake).await;
        }
        let _ = relay.await;
    });
    (task, outbox)
}

async fn connect_event_log(settings: &ServiceSettings) -> Arc<dyn EventLog> {
    let mut wait = Duration::from_millis(200);
    loop {
        match events::connect(settings).await {
            Ok(log) => return log,
            Err(e) => {
                tracing::warn!(error = %e, "event log unavailable, retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Serve `router` (plus `/health`) until Ctrl-C or SIGTERM; registers with the gateway
/// while up. `background` tasks are stopped on the way out.
pub async fn run(
    settings: &ServiceSettings,
    router: Router,
    background: Vec<JoinHandle<()>>,
) -> std::io::Result<()> {
    settings.log_identity_trust();
    let listener = tokio::net::TcpListener::bind(settings.bind).await?;
    let port = listener.local_addr()?.port();
    tracing::info!(service = settings.name, address = %listener.local_addr()?, "listening");
    let registration = settings
        .registry
        .clone()
        .map(|r| Registration::start(r, settings.name, port));
    let router = with_health(router, settings.name);
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    for task in background {
        task.abort();
    }
    if let Some(r) = registration {
        r.deregister().await;
    }
    tracing::info!(service = settings.name, "stopped");
    served
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Exit with a clear message when a service cannot start.
pub fn fail(what: &str, error: impl std::fmt::Display) -> ! {
    eprintln!("error: {what}: {error}");
    std::process::exit(1)
}
