//! The one Redis connection layer of every feature that uses Redis (revocations,
//! the registry store, cluster rate limits): where Redis is ([`RedisTarget`], from a
//! `redis_url`) and a cheap, cloneable command handle ([`RedisConn`]) that follows
//! it through failures.
//!
//! - `redis://[user:pass@]host:port[/db]` (`rediss://` for TLS): one server, through
//!   redis-rs's `ConnectionManager` (reconnects by itself).
//! - `redis+sentinel://[user:pass@]s1:26379,s2:26379/<master>[/db]`
//!   (`rediss+sentinel://`: TLS to the data nodes): a primary watched by Sentinel. A
//!   connection goes to the primary the sentinels name (its role checked); on a
//!   connection error, a `READONLY` or `MASTERDOWN` answer (the node was demoted) the
//!   handle drops it and the next command asks the sentinels again. Credentials and
//!   db apply to the data nodes; the sentinels are asked without them.
//! - `redis+cluster://[user:pass@]n1:7000,n2:7001,...` (`rediss+cluster://`): a Redis
//!   Cluster, through redis-rs's cluster client (slot map, `MOVED`/`ASK`, reconnects).
//!   A pipeline is sent command by command, in order, each to its slot's node (our
//!   pipelines are independent reads and writes). A transaction whose keys share a
//!   slot runs as one; one that spans slots (a key and its `PUBLISH`) runs in order
//!   and stops at the first failure.
//!
//! While no primary is reachable, commands fail at once (or within the timeout) and
//! each feature applies its `on_redis_error` policy; nothing here retries a command.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError,
    RedisFuture, RedisResult, ServerErrorKind, TlsMode, Value,
};

/// Where a feature's Redis is. Cheap to clone.
#[derive(Clone)]
pub struct RedisTarget {
    kind: Arc<Kind>,
    /// The URL without credentials (for logs and errors).
    shown: String,
}

enum Kind {
    Single(Client),
    Sentinel(SentinelSpec),
    Cluster {
        client: Box<ClusterClient>,
        /// One client per seed node (pub/sub and topology queries).
        seeds: Vec<Client>,
    },
}

struct SentinelSpec {
    master: String,
    sentinels: Vec<(String, u16)>,
    tls: bool,
    db: i64,
    username: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The parts of a `redis+sentinel://` or `redis+cluster://` URL.
struct MultiHost {
    tls: bool,
    username: Option<String>,
    password: Option<String>,
    hosts: Vec<(String, u16)>,
    /// Path segments after the hosts.
    path: Vec<String>,
}

const EXAMPLES: &str = "redis://:password@127.0.0.1:6379/0, \
     redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster, \
     or redis+cluster://10.0.0.1:7000,10.0.0.2:7000";

impl RedisTarget {
    /// Parse a `redis_url`; the error says what is wrong, for a config message.
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let (scheme, _) = url
            .split_once("://")
            .ok_or_else(|| format!("not a Redis URL: use {EXAMPLES}"))?;
        match scheme {
            "redis" | "rediss" => {
                let client = Client::open(url).map_err(|e| {
                    format!("not a usable Redis URL ({}): use {EXAMPLES}", e.category())
                })?;
                Ok(RedisTarget {
                    kind: Arc::new(Kind::Single(client)),
                    shown: hide_password(url),
                })
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let m = multi_host(url)?;
                let master = match m.path.as_slice() {
                    [master] | [master, _] if !master.is_empty() => master.clone(),
                    _ => {
                        return Err(format!(
                            "a Sentinel URL names its master after the hosts: {}",
                            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster[/db]"
                        ))
                    }
                };
                let db = match m.path.get(1) {
                    Some(d) => d
                        .parse::<i64>()
                        .map_err(|_| format!("the database {d:?} is not a number"))?,
                    None => 0,
                };
                Ok(RedisTarget {
                    kind: Arc::new(Kind::Sentinel(SentinelSpec {
                        master,
                        sentinels: m.hosts,
                        tls: m.tls,
                        db,
                        username: m.username,
                        password: m.password,
                    })),
                    shown: hide_password(url),
                })
            }
            "redis+cluster" | "rediss+cluster" => {
                let m = multi_host(url)?;
                if !m.path.is_empty() {
                    return Err(
                        "a Cluster URL has no path (a Redis Cluster has only database 0)".into(),
                    );
                }
                let scheme = if m.tls { "rediss" } else { "redis" };
                // the credentials were decoded: encode them again for the node URLs
                let auth = match (&m.username, &m.password) {
                    (None, None) => String::new(),
                    (u, p) => format!(
                        "{}:{}@",
                        percent_encode(u.as_deref().unwrap_or("")),
                        percent_encode(p.as_deref().unwrap_or(""))
                    ),
                };
                let nodes: Vec<String> = m
                    .hosts
                    .iter()
                    .map(|(h, p)| format!("{scheme}://{auth}{h}:{p}"))
                    .collect();
                let mut seeds = Vec::with_capacity(nodes.len());
                for n in &nodes {
                    seeds.push(Client::open(n.as_str()).map_err(|e| {
                        format!("node {}: not usable ({})", hide_password(n), e.category())
                    })?);
                }
                let client = ClusterClient::builder(nodes.clone())
                    .build()
                    .map_err(|e| format!("not a usable Cluster URL ({})", e.category()))?;
                Ok(RedisTarget {
                    kind: Arc::new(Kind::Cluster {
                        client: Box::new(client),
                        seeds,
                    }),
                    shown: hide_password(url),
                })
            }
            other => Err(format!(
                "unknown scheme {other:?}: use {EXAMPLES} (rediss for TLS)"
            )),
        }
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Which topology (`single`, `sentinel`, `cluster`), for metrics and logs.
    pub fn topology(&self) -> &'static str {
        match &*self.kind {
            Kind::Single(_) => "single",
            Kind::Sentinel(_) => "sentinel",
            Kind::Cluster { .. } => "cluster",
        }
    }

    /// Whether this is a Redis Cluster (keys spread over nodes by slot).
    pub fn is_cluster(&self) -> bool {
        matches!(&*self.kind, Kind::Cluster { .. })
    }

    /// A command handle; connects on first use (call inside a Tokio runtime).
    /// `timeout` bounds connecting and each response.
    pub fn connection(&self, timeout: Duration) -> RedisResult<RedisConn> {
        let inner = match &*self.kind {
            Kind::Single(client) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(2));
                Inner::Single(ConnectionManager::new_lazy_with_config(
                    client.clone(),
                    cfg,
                )?)
            }
            Kind::Sentinel(_) | Kind::Cluster { .. } => Inner::Following(Arc::new(Following {
                target: self.clone(),
                timeout,
                live: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(()),
            })),
        };
        Ok(RedisConn { inner })
    }

    /// A client of the node to subscribe on: the server, the current primary
    /// (Sentinel), or the first cluster node that answers (a `PUBLISH` reaches
    /// subscribers on every node of a Cluster).
    pub async fn subscriber(&self, timeout: Duration) -> RedisResult<Client> {
        match &*self.kind {
            Kind::Single(client) => Ok(client.clone()),
            Kind::Sentinel(spec) => spec.primary(&self.shown, timeout).await,
            Kind::Cluster { seeds, .. } => {
                let mut last = None;
                for c in seeds {
                    match ping(c, timeout).await {
                        Ok(()) => return Ok(c.clone()),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| no_node("no cluster node")))
            }
        }
    }

    /// One client per primary, for work that must visit every key (a full `SCAN`):
    /// the server, the current primary, or every primary of the Cluster.
    pub async fn primaries(&self, timeout: Duration) -> RedisResult<Vec<Client>> {
        match &*self.kind {
            Kind::Single(client) => Ok(vec![client.clone()]),
            Kind::Sentinel(spec) => Ok(vec![spec.primary(&self.shown, timeout).await?]),
            Kind::Cluster { seeds, .. } => {
                let seed = self.subscriber(timeout).await?;
                let mut conn = connect(&seed, timeout).await?;
                let slots: Value = within(
                    timeout,
                    redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn),
                )
                .await?;
                let mut out: Vec<Client> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for (host, port) in cluster_primaries(&slots) {
                    if !seen.insert((host.clone(), port)) {
                        continue;
                    }
                    let info = seed.get_connection_info().clone();
                    let addr = match info.addr() {
                        ConnectionAddr::TcpTls {
                            insecure,
                            tls_params,
                            ..
                        } => ConnectionAddr::TcpTls {
                            host,
                            port,
                            insecure: *insecure,
                            tls_params: tls_params.clone(),
                        },
                        _ => ConnectionAddr::Tcp(host, port),
                    };
                    out.push(Client::open(info.set_addr(addr))?);
                }
                if out.is_empty() {
                    // a cluster that reports no slots: scan what we were given
                    out.extend(seeds.iter().cloned());
                }
                Ok(out)
            }
        }
    }
}

impl SentinelSpec {
    /// A client of the primary the sentinels name now (redis-rs checks its role).
    async fn primary(&self, shown: &str, timeout: Duration) -> RedisResult<Client> {
        let mut client = self.client()?;
        let primary = within(timeout * 2, client.async_get_client()).await?;
        saw_primary(shown, &address(primary.get_connection_info().addr()));
        Ok(primary)
    }

    fn client(&self) -> RedisResult<SentinelClient> {
        let addrs = self
            .sentinels
            .iter()
            .map(|(h, p)| ConnectionAddr::Tcp(h.clone(), *p));
        let mut b =
            SentinelClientBuilder::new(addrs, self.master.clone(), SentinelServerType::Master)?
                .set_client_to_redis_db(self.db);
        if self.tls {
            b = b.set_client_to_redis_tls_mode(TlsMode::Secure);
        }
        if let Some(u) = &self.username {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = &self.password {
            b = b.set_client_to_redis_password(p);
        }
        b.build()
    }
}

/// A command handle on a [`RedisTarget`]: clone it freely (clones share the
/// connection). Implements redis-rs's `ConnectionLike`, so commands, pipelines and
/// scripts run on it as on any connection.
#[derive(Clone)]
pub struct RedisConn {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Following(Arc<Following>),
}

/// A connection that is replaced when its node stops being the primary.
struct Following {
    target: RedisTarget,
    timeout: Duration,
    live: ArcSwapOption<Live>,
    /// One (re)connect at a time; commands meanwhile wait for it.
    connecting: tokio::sync::Mutex<()>,
}

enum Live {
    Primary(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Following {
    async fn live(&self) -> RedisResult<Arc<Live>> {
        if let Some(l) = self.live.load_full() {
            return Ok(l);
        }
        let _one = self.connecting.lock().await;
        if let Some(l) = self.live.load_full() {
            return Ok(l);
        }
        let live = match &*self.target.kind {
            Kind::Sentinel(spec) => {
                let client = spec.primary(&self.target.shown, self.timeout).await?;
                Live::Primary(connect(&client, self.timeout).await?)
            }
            Kind::Cluster { client, .. } => {
                let cfg = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout);
                Live::Cluster(
                    within(
                        self.timeout * 2,
                        client.get_async_connection_with_config(cfg),
                    )
                    .await?,
                )
            }
            Kind::Single(client) => Live::Primary(connect(client, self.timeout).await?),
        };
        let live = Arc::new(live);
        self.live.store(Some(live.clone()));
        Ok(live)
    }

    /// After a failed command: drop the connection when the failure says the node
    /// is gone or no longer the primary, so the next command finds the new one.
    fn failed(&self, used: &Arc<Live>, e: &RedisError) {
        let lost = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || matches!(
                e.kind(),
                ErrorKind::Server(ServerErrorKind::ReadOnly)
                    | ErrorKind::Server(ServerErrorKind::MasterDown)
            );
        if lost {
            let current = self.live.load();
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, used)) {
                self.live.store(None);
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Single(cm) => cm.req_packed_command(cmd),
            Inner::Following(f) => {
                let f = f.clone();
                Box::pin(async move {
                    let live = f.live().await?;
                    let res = match &*live {
                        Live::Primary(c) => c.clone().req_packed_command(cmd).await,
                        Live::Cluster(c) => c.clone().req_packed_command(cmd).await,
                    };
                    if let Err(e) = &res {
                        f.failed(&live, e);
                    }
                    res
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Single(cm) => cm.req_packed_commands(pipeline, offset, count),
            Inner::Following(f) => {
                let f = f.clone();
                Box::pin(async move {
                    let live = f.live().await?;
                    let res = match &*live {
                        Live::Primary(c) => {
                            c.clone().req_packed_commands(pipeline, offset, count).await
                        }
                        Live::Cluster(c) if pipeline.is_transaction() => {
                            match c.clone().req_packed_commands(pipeline, offset, count).await {
                                // no transaction spans nodes (a key and a PUBLISH channel
                                // are in different slots): run the commands in order and
                                // stop at the first failure, so a write that fails is
                                // never announced
                                Err(e)
                                    if e.kind()
                                        == ErrorKind::Server(ServerErrorKind::CrossSlot) =>
                                {
                                    in_order(c, pipeline)
                                        .await
                                        .map(|all| vec![Value::Array(all)])
                                }
                                other => other,
                            }
                        }
                        // each command to its own slot's node, in order (a write then its
                        // PUBLISH must arrive in that order)
                        Live::Cluster(c) => in_order(c, pipeline)
                            .await
                            .map(|all| all.into_iter().skip(offset).take(count).collect()),
                    };
                    if let Err(e) = &res {
                        f.failed(&live, e);
                    }
                    res
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(cm) => cm.get_db(),
            Inner::Following(f) => match &*f.target.kind {
                Kind::Sentinel(spec) => spec.db,
                _ => 0,
            },
        }
    }
}

struct LinkMetrics {
    primary: IntGaugeVec,
    failovers: IntCounterVec,
}

static METRICS: LazyLock<Option<LinkMetrics>> = LazyLock::new(|| {
    Some(LinkMetrics {
        primary: register_int_gauge_vec!(
            "gateway_redis_primary",
            "1 for the node the sentinels name primary of a Sentinel redis_url (as last seen)",
            &["target", "address"]
        )
        .ok()?,
        failovers: register_int_counter_vec!(
            "gateway_redis_failovers_total",
            "Changes of primary seen on a Sentinel redis_url",
            &["target"]
        )
        .ok()?,
    })
});

/// The primary each Sentinel target was last seen with (one entry per URL, shared by
/// every feature using it, so a failover is counted once).
static PRIMARIES: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

fn saw_primary(target: &str, addr: &str) {
    let mut all = PRIMARIES.lock().unwrap_or_else(|e| e.into_inner());
    let all = all.get_or_insert_with(HashMap::new);
    let before = all.insert(target.to_string(), addr.to_string());
    if before.as_deref() == Some(addr) {
        return;
    }
    if let Some(m) = METRICS.as_ref() {
        if let Some(old) = &before {
            let _ = m.primary.remove_label_values(&[target, old]);
            m.failovers.with_label_values(&[target]).inc();
        }
        m.primary.with_label_values(&[target, addr]).set(1);
    }
    match before {
        Some(old) => tracing::warn!(target, from = %old, to = %addr, "Redis primary changed"),
        None => tracing::info!(target, primary = %addr, "Redis primary"),
    }
}

/// `host:port` of a node address.
fn address(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            format!("{h}:{p}")
        }
        other => format!("{other}"),
    }
}

/// The commands of `pipeline` one by one, in order, each to its slot's node; the
/// first failure ends it.
async fn in_order(c: &ClusterConnection, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
    let mut c = c.clone();
    let mut all = Vec::new();
    for cmd in pipeline.cmd_iter() {
        all.push(c.req_packed_command(cmd).await?);
    }
    Ok(all)
}

/// A multiplexed connection to `client`, bounded by `timeout`.
pub async fn connect(client: &Client, timeout: Duration) -> RedisResult<MultiplexedConnection> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout.max(Duration::from_secs(5))));
    within(
        timeout * 2,
        client.get_multiplexed_async_connection_with_config(&cfg),
    )
    .await
}

async fn ping(client: &Client, timeout: Duration) -> RedisResult<()> {
    let mut c = connect(client, timeout).await?;
    within(timeout, redis::cmd("PING").query_async::<()>(&mut c)).await
}

async fn within<T>(
    t: Duration,
    f: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(t, f).await {
        Ok(r) => r,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "Redis did not answer in time",
        ))),
    }
}

fn no_node(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::NotConnected, what))
}

/// The (host, port) of each slot range's primary in a `CLUSTER SLOTS` reply.
fn cluster_primaries(slots: &Value) -> Vec<(String, u16)> {
    let Value::Array(ranges) = slots else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        // [start, end, [host, port, id, ...], replicas...]
        let Some(Value::Array(primary)) = parts.get(2) else {
            continue;
        };
        let host = match primary.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let port = match primary.get(1) {
            Some(Value::Int(p)) => u16::try_from(*p).ok(),
            _ => None,
        };
        if let Some(port) = port {
            out.push((host, port));
        }
    }
    out
}

/// Split `scheme://[user:pass@]h1:p1,h2:p2[/seg...]`.
fn multi_host(url: &str) -> Result<MultiHost, String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let tls = scheme.starts_with("rediss");
    let (hosts_part, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p),
        None => (rest, ""),
    };
    let (auth, hosts_part) = match hosts_part.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, hosts_part),
    };
    let (username, password) = match auth {
        None => (None, None),
        Some(a) => {
            let (u, p) = a.split_once(':').unwrap_or((a, ""));
            let decode = |s: &str| -> Option<String> { (!s.is_empty()).then(|| percent_decode(s)) };
            (decode(u), decode(p))
        }
    };
    let mut hosts = Vec::new();
    for h in hosts_part.split(',').filter(|h| !h.is_empty()) {
        let (host, port) = h
            .rsplit_once(':')
            .ok_or_else(|| format!("{h:?} has no port: list the nodes as host:port,host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{h:?}: the port is not a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{h:?} has no host"));
        }
        hosts.push((host.to_string(), port));
    }
    if hosts.is_empty() {
        return Err("no nodes: list them as host:port,host:port".into());
    }
    Ok(MultiHost {
        tls,
        username,
        password,
        hosts,
        path: path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// `%XX` escapes decoded (a URL's user or password part).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Everything but the unreserved characters (`A-Z a-z 0-9 - . _ ~`) as `%XX`, for the
/// user or password part of a URL.
fn percent_encode(s: &str) -> String {
    const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, USERINFO).to_string()
}

/// `url` with the password replaced by `***`.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (hosts, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match hosts.rsplit_once('@') {
        Some((auth, h)) => {
            let user = auth.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{h}{tail}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = RedisTarget::parse("redis://:secret@127.0.0.1:6379/2").unwrap();
        assert_eq!(t.topology(), "single");
        assert_eq!(t.shown(), "redis://:***@127.0.0.1:6379/2");

        let t = RedisTarget::parse(
            "redis+sentinel://u:p%40ss@10.0.0.1:26379,10.0.0.2:26380/mymaster/3",
        )
        .unwrap();
        assert_eq!(t.topology(), "sentinel");
        assert_eq!(
            t.shown(),
            "redis+sentinel://u:***@10.0.0.1:26379,10.0.0.2:26380/mymaster/3"
        );
        let Kind::Sentinel(s) = &*t.kind else {
            panic!("sentinel")
        };
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.db, 3);
        assert_eq!(s.password.as_deref(), Some("p@ss"));
        assert_eq!(
            s.sentinels,
            vec![
                ("10.0.0.1".to_string(), 26379),
                ("10.0.0.2".to_string(), 26380)
            ]
        );

        let t = RedisTarget::parse("rediss+cluster://10.0.0.1:7000,10.0.0.2:7001").unwrap();
        assert_eq!(t.topology(), "cluster");

        // credentials with reserved characters reach every node as written
        let t = RedisTarget::parse(
            "redis+cluster://us%3Aer:p%40ss%2Fw%3Ard%25x%3F%23@10.0.0.1:7000,10.0.0.2:7001",
        )
        .unwrap();
        let Kind::Cluster { seeds, .. } = &*t.kind else {
            panic!("cluster")
        };
        assert_eq!(seeds.len(), 2);
        for seed in seeds {
            let info = seed.get_connection_info();
            assert_eq!(info.redis_settings().username(), Some("us:er"));
            assert_eq!(info.redis_settings().password(), Some("p@ss/w:rd%x?#"));
        }

        for bad in [
            "127.0.0.1:6379",
            "http://127.0.0.1:6379",
            "redis+sentinel://10.0.0.1:26379",
            "redis+sentinel://10.0.0.1/mymaster",
            "redis+sentinel:///mymaster",
            "redis+sentinel://10.0.0.1:26379/mymaster/x",
            "redis+cluster://10.0.0.1:7000/1",
            "redis+cluster://10.0.0.1:seven",
        ] {
            assert!(RedisTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn primaries_from_cluster_slots() {
        let node = |h: &str, p: i64| {
            Value::Array(vec![
                Value::BulkString(h.as_bytes().to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let slots = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("127.0.0.1", 7001),
            ]),
        ]);
        assert_eq!(
            cluster_primaries(&slots),
            vec![
                ("127.0.0.1".to_string(), 7000),
                ("127.0.0.1".to_string(), 7001)
            ]
        );
    }
}
