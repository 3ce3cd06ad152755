//! Hot reload: watch the config file's directory (so editor rename-writes and
//! Kubernetes ConfigMap symlink swaps are seen) and SIGHUP; debounce, re-read,
//! compile, then one atomic swap. Any failure keeps the old config serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{self, CompileInput, Compiled, ConfigError};
use crate::observe::{self, METRICS};
use crate::runtime::{Shared, Startup};

/// Why a reload did not happen.
#[derive(Debug)]
pub enum ReloadOutcome {
    Applied { version: String },
    Unchanged,
    Rejected(Vec<ConfigError>),
}

/// Re-read the file and swap it in when it compiles; count the result.
pub fn reload(shared: &Shared) -> ReloadOutcome {
    let outcome = try_reload(shared);
    match &outcome {
        ReloadOutcome::Applied { version } => {
            METRICS.config_reloads.with_label_values(&["success"]).inc();
            tracing::info!(%version, "config reloaded");
        }
        ReloadOutcome::Unchanged => {}
        ReloadOutcome::Rejected(errors) => {
            METRICS.config_reloads.with_label_values(&["failure"]).inc();
            tracing::error!(
                file = %shared.config_path.display(),
                errors = errors.len(),
                "config reload rejected; the previous config keeps serving"
            );
            for e in errors {
                tracing::error!("  {e}");
            }
        }
    }
    outcome
}

fn try_reload(shared: &Shared) -> ReloadOutcome {
    let text = match config::read(&shared.config_path) {
        Ok(t) => t,
        Err(e) => return ReloadOutcome::Rejected(e),
    };
    let version = config::version_of(&text);
    let current = shared.current();
    if version == current.version {
        return ReloadOutcome::Unchanged;
    }
    let file = match config::parse(&text) {
        Ok(f) => f,
        Err(e) => return ReloadOutcome::Rejected(e),
    };
    let compiled = config::compile(CompileInput {
        file,
        version: version.clone(),
        previous: Some(&current),
        rt: &shared.rt,
    });
    match compiled {
        Ok(Compiled { runtime, startup }) => {
            warn_restart_only_changes(&shared.startup, &startup);
            drop(current);
            let old = shared.swap_in(runtime);
            observe::set_config_version(Some(&old.version), &version);
            ReloadOutcome::Applied { version }
        }
        Err(e) => ReloadOutcome::Rejected(e),
    }
}

/// Listener and process settings are bound at start: say so instead of ignoring them.
fn warn_restart_only_changes(running: &Startup, new: &Startup) {
    if running.listeners != new.listeners {
        tracing::warn!("listeners changed: the new listeners take effect after a restart");
    }
    if running.admin_address != new.admin_address {
        tracing::warn!("admin.address changed: takes effect after a restart");
    }
    if running.registry != new.registry {
        tracing::warn!(
            "admin.registry changed: the registry store is chosen at start; restart to apply (its limits apply now)"
        );
    }
    let process = |s: &Startup| Startup {
        listeners: Vec::new(),
        admin_address: None,
        registry: Default::default(),
        ..s.clone()
    };
    if process(running) != process(new) {
        tracing::warn!("server settings changed: they take effect after a restart");
    }
}

/// Watch the file and SIGHUP until the process ends.
pub async fn watch(shared: Arc<Shared>, hup: tokio::signal::unix::Signal) {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let _watcher = match start_watcher(&shared.config_path, tx.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP instead");
            None
        }
    };
    tokio::spawn(sighup(hup, tx));
    while rx.recv().await.is_some() {
        // debounce: editors and ConfigMap swaps produce bursts of events
        tokio::time::sleep(Duration::from_millis(150)).await;
        while rx.try_recv().is_ok() {}
        let shared = shared.clone();
        // compile off the async workers: regexes and keys can take a moment
        let _ = tokio::task::spawn_blocking(move || reload(&shared)).await;
    }
}

fn start_watcher(
    path: &Path,
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let file: PathBuf = path.to_path_buf();
    let name = file.file_name().map(|n| n.to_os_string());
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if event.kind.is_access() {
            return;
        }
        // the file itself, or a ConfigMap's `..data` symlink swap in the same directory
        let relevant = event.paths.iter().any(|p| {
            p.file_name().map(|n| n.to_os_string()) == name
                || p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(".."))
        });
        if relevant {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// `hup` is registered at start (`shutdown::Signals`), so a SIGHUP is never lost to
/// its default action (ending the process).
async fn sighup(mut hup: tokio::signal::unix::Signal, tx: mpsc::UnboundedSender<()>) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        if tx.send(()).is_err() {
            return;
        }
    }
}
