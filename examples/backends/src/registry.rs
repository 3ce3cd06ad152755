//! Self-registration with the gateway's registry (admin API): PUT the instance at boot,
//! PUT again every ttl/3 as a heartbeat, DELETE on shutdown. An unreachable registry
//! never blocks startup: registration keeps retrying in the background.

use std::time::Duration;

use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::RegistrySettings;

/// The running heartbeat; call [`Registration::deregister`] on shutdown.
pub struct Registration {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Registration {
    /// Start registering `service` on `port` in the background.
    pub fn start(settings: RegistrySettings, service: &'static str, port: u16) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(heartbeat(settings, service, port, stopped));
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Stop the heartbeat and remove the instance (best effort, bounded in time).
    pub async fn deregister(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), &mut self.task).await;
    }
}

fn instance_url(s: &RegistrySettings, service: &str) -> String {
    format!(
        "{}/registry/services/{service}/instances/{}",
        s.admin_url, s.instance_id
    )
}

fn authorize(req: reqwest::RequestBuilder, s: &RegistrySettings) -> reqwest::RequestBuilder {
    match &s.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

async fn heartbeat(
    s: RegistrySettings,
    service: &'static str,
    port: u16,
    mut stopped: oneshot::Receiver<()>,
) {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "registry client unavailable; not registering");
            return;
        }
    };
    let url = instance_url(&s, service);
    let body = json!({
        "address": s.advertise_host,
        "port": port,
        "metadata": {},
        "ttl": humantime::format_duration(s.ttl).to_string(),
    });
    let every = (s.ttl / 3).max(Duration::from_millis(200));
    let mut registered = false;
    let mut retry = Duration::from_millis(250);
    loop {
        let sent = authorize(client.put(&url), &s).json(&body).send().await;
        let wait = match sent {
            Ok(r) if r.status().is_success() => {
                if !registered {
                    tracing::info!(%url, "registered with the gateway");
                    registered = true;
                }
                retry = Duration::from_millis(250);
                every
            }
            Ok(r) => {
                tracing::warn!(%url, status = %r.status(), "registry refused the instance");
                registered = false;
                retry = (retry * 2).min(every);
                retry
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, "registry unreachable, retrying");
                registered = false;
                retry = (retry * 2).min(every);
                retry
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stopped => break,
        }
    }
    match authorize(client.delete(&url), &s).send().await {
        Ok(r) => tracing::info!(%url, status = %r.status(), "deregistered"),
        Err(e) => tracing::warn!(%url, error = %e, "cannot deregister"),
    }
}
