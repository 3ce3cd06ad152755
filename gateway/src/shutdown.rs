//! Shutdown: on SIGTERM/SIGINT keep accepting for `server.grace_period` (so load
//! balancers can stop sending), then Pingora closes the listeners and in-flight
//! requests drain for up to `server.shutdown_timeout`; the process exits as soon
//! as none is left. SIGQUIT hands the listening sockets to a new process.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::broadcast;

use crate::observe::METRICS;

/// The signals the gateway handles, registered at start, before anything listens.
///
/// Until a signal's handler is registered, the signal takes its default action,
/// which for all four is to end the process on the spot: no drain, no log line. A
/// SIGTERM that came while the listeners were already accepting but the shutdown
/// watch was not yet polled ended the process that way; registered up front, it is
/// held until the watch reads it.
pub struct Signals {
    pub term: Signal,
    pub int: Signal,
    pub quit: Signal,
    /// Reload (`reload::watch`).
    pub hup: Signal,
}

impl Signals {
    /// Register the handlers. Call within the control-plane runtime: it lives as long
    /// as the process and its driver is what delivers them.
    pub fn register() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// The signal watch handed to Pingora.
pub struct GracefulOnIntOrTerm {
    /// How long to keep accepting after the signal.
    grace_period: Duration,
    /// SIGTERM, SIGINT and SIGQUIT, taken by the one `recv` Pingora makes.
    signals: Mutex<Option<(Signal, Signal, Signal)>>,
}

impl GracefulOnIntOrTerm {
    pub fn new(grace_period: Duration, term: Signal, int: Signal, quit: Signal) -> Self {
        Self {
            grace_period,
            signals: Mutex::new(Some((term, int, quit))),
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for GracefulOnIntOrTerm {
    async fn recv(&self) -> ShutdownSignal {
        let taken = self
            .signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some((mut term, mut int, mut quit)) = taken else {
            tracing::error!("the shutdown signals were already taken; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
        };
        tracing::info!("{name}: draining");
        if !self.grace_period.is_zero() {
            tracing::info!(grace_period = ?self.grace_period, "still accepting during the grace period");
            tokio::time::sleep(self.grace_period).await;
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// From a thread of its own, wait for Pingora to close its listeners, then for
/// the requests in flight to finish (at most `timeout`), then run `before_exit`
/// (sending what is still queued for export) and end the process.
///
/// Pingora itself only sleeps a fixed time before cancelling what is left; this
/// ends the wait as soon as nothing is in flight.
pub fn spawn_drain_watch(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    timeout: Duration,
    before_exit: impl FnOnce() + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            loop {
                match phases.blocking_recv() {
                    Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            let deadline = Instant::now() + timeout;
            while METRICS.in_flight.get() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            match METRICS.in_flight.get() {
                0 => tracing::info!("requests drained; gateway stopped"),
                left => tracing::warn!(
                    left,
                    "shutdown_timeout reached; cutting the requests still in flight"
                ),
            }
            before_exit();
            // the access log is batched: write out what is pending before leaving
            crate::logging::flush();
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the drain watch; shutdown waits the whole shutdown_timeout");
    }
}
