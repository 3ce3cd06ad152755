//! The compiled, immutable config the request path reads, and the shared
//! handle that holds the current one (swapped atomically on reload).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::GatewayConfig;
use crate::edge::EdgePolicy;
use crate::routing::RouteTable;
use crate::upstream::Service;

/// One compiled config. A request holds its `Arc` from start to end, so a
/// reload never mixes two versions within a request.
pub struct RuntimeConfig {
    /// Short hash of the source text.
    pub version: String,
    pub loaded_at: SystemTime,
    pub routes: RouteTable,
    pub services: BTreeMap<String, Arc<Service>>,
    pub auth: Arc<plugins::AuthRuntime>,
    /// Client header hygiene, applied before routing: identity and override
    /// headers removed, forwarded headers trusted from trusted proxies only.
    pub edge: EdgePolicy,
    /// The parsed file (listener and server settings; never served raw: it may hold secrets).
    pub file: GatewayConfig,
}

/// State shared by the proxy, the admin API and the reloader.
pub struct Shared {
    pub config: ArcSwap<RuntimeConfig>,
    pub config_path: PathBuf,
    /// The control-plane runtime: health checks, discovery, reload, admin.
    pub rt: tokio::runtime::Handle,
}

impl Shared {
    pub fn current(&self) -> Arc<RuntimeConfig> {
        self.config.load_full()
    }
}
