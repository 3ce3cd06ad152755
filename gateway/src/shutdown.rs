//! Shutdown: on SIGTERM/SIGINT keep accepting for `server.grace_period` (so load
//! balancers can stop sending), then Pingora closes the listeners and in-flight
//! requests drain for up to `server.shutdown_timeout`; the process exits as soon
//! as none is left. SIGQUIT hands the listening sockets to a new process.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::broadcast;

use crate::observe::METRICS;

/// The signal watch handed to Pingora.
pub struct GracefulOnIntOrTerm {
    /// How long to keep accepting after the signal.
    pub grace_period: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for GracefulOnIntOrTerm {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; shutting down");
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
