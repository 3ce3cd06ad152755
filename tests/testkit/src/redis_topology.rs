//! Real Redis topologies for tests of high-availability clients: a Sentinel set
//! (one primary, one replica, three sentinels) whose primary can be killed and
//! failed over, and a three-primary Redis Cluster, with or without one replica per
//! primary (a killed primary is failed over to its replica). Every process runs on a free
//! loopback port, writes its output to a log file in the fixture's temporary
//! directory (printed when the fixture panics), and is killed on `Drop`.

use std::fs::{self, File, OpenOptions};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis::{command_auth, request, request_auth, Reply};
use crate::{free_port, wait_until};

/// How long `start` (and [`RedisSentinelSet::restart_node`]) wait for the topology to converge.
const CONVERGE: Duration = Duration::from_secs(30);

/// One `redis-server` (data node, sentinel or cluster node) owned by a fixture.
struct Node {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    fn new(dir: &Path, kind: &str, port: u16) -> Self {
        Self {
            port,
            child: None,
            log: dir.join(format!("{kind}-{port}.log")),
        }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Start `redis-server ARGS` in `dir`, appending its stdout/stderr to the log.
    fn spawn(&mut self, dir: &Path, args: &[String]) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
        let err = log.try_clone().expect("clone log file handle");
        let child = Command::new("redis-server")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn();
        self.child = Some(match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed; install it with `apt-get install redis-server`"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        });
    }

    /// SIGKILL the process and wait until its port refuses connections.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(5), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_err()),
            "redis on port {port} still accepts after SIGKILL"
        );
    }

    /// Drop-time cleanup: kill, reap, never panic.
    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `127.0.0.1:port` answers `PING` (after `AUTH password` when given).
fn pings(port: u16, auth: Option<&str>) -> bool {
    matches!(request_auth(port, auth, &["PING"]), Ok(Reply::Status(s)) if s == "PONG")
}

/// The text of a bulk reply (`INFO`, `CLUSTER INFO`), or "" when unreachable.
fn bulk(port: u16, auth: Option<&str>, args: &[&str]) -> String {
    match request_auth(port, auth, args) {
        Ok(Reply::Bulk(Some(s))) => s,
        _ => String::new(),
    }
}

/// The last 40 lines of every `*.log` file in `dir`, for panic messages.
fn logs(dir: &Path) -> String {
    const TAIL: usize = 40;
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "log"));
    files.sort();
    let mut out = String::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        out.push_str(&format!("\n----- {name} (last {TAIL} lines) -----\n"));
        for l in &lines[lines.len().saturating_sub(TAIL)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// The arguments every data node (sentinel-set or cluster) gets; with a password,
/// `--requirepass P --masterauth P` (clients and replication both authenticate).
fn data_args(dir: &Path, port: u16, password: Option<&str>) -> Vec<String> {
    let data_dir = dir.join(format!("data-{port}"));
    fs::create_dir_all(&data_dir).expect("create data dir");
    let mut args = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &data_dir.to_string_lossy(),
        // Redis 7 syncs replicas diskless after a 5 s delay by default.
        "--repl-diskless-sync-delay",
        "0",
    ]
    .map(String::from)
    .to_vec();
    if let Some(p) = password {
        args.extend(["--requirepass", p, "--masterauth", p].map(String::from));
    }
    args
}

/// A fixture password must survive a command line, a sentinel config line and a URL
/// without quoting: printable ASCII, no spaces.
fn check_password(password: &str) {
    assert!(
        !password.is_empty() && password.chars().all(|c| c.is_ascii_graphic()),
        "password must be printable ASCII without spaces: {password:?}"
    );
}

/// `:PASSWORD@` (percent-encoded) for a URL, or "" without a password.
fn credentials(password: Option<&str>) -> String {
    let Some(p) = password else {
        return String::new();
    };
    let mut out = String::from(":");
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push('@');
    out
}

/// A Redis Sentinel set: one primary, one replica, three sentinels monitoring the
/// primary as `master_name` with quorum 2, `down-after-milliseconds 1000` and
/// `failover-timeout 5000`, so a killed primary is failed over in a few seconds.
/// With [`start_with_password`](Self::start_with_password) the data nodes require a
/// password (the sentinels do not).
///
/// ```no_run
/// use std::time::Duration;
/// let mut set = testkit::RedisSentinelSet::start("mymaster");
/// let url = set.url(); // redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster
/// let old = set.kill_primary();
/// let new = set.wait_failover(old, Duration::from_secs(15));
/// set.restart_node(old); // back as a replica of `new`
/// ```
pub struct RedisSentinelSet {
    master_name: String,
    /// The data nodes' `requirepass` (and `masterauth`), if any.
    password: Option<String>,
    /// The two data nodes, in start order (primary first).
    data: Vec<Node>,
    sentinels: Vec<Node>,
    dir: tempfile::TempDir,
}

impl RedisSentinelSet {
    /// Start the primary, the replica (and wait until it has synced), then the three
    /// sentinels, and wait until every sentinel names the primary and knows the
    /// replica and the two other sentinels. Panics with the processes' logs when
    /// that does not happen within 30 s.
    pub fn start(master_name: &str) -> Self {
        Self::launch(master_name, None)
    }

    /// Like [`start`](Self::start), but the data nodes require `password`
    /// (`--requirepass P --masterauth P`) and the sentinels reach them with
    /// `sentinel auth-pass`; the sentinels themselves need no password.
    /// [`url`](Self::url) carries the password and [`cmd_on`](Self::cmd_on) sends
    /// `AUTH` to the data nodes. The password must be printable ASCII without spaces.
    pub fn start_with_password(master_name: &str, password: &str) -> Self {
        check_password(password);
        Self::launch(master_name, Some(password))
    }

    fn launch(master_name: &str, password: Option<&str>) -> Self {
        assert!(
            !master_name.is_empty() && !master_name.contains(char::is_whitespace),
            "master name must be one word: {master_name:?}"
        );
        let dir = tempfile::tempdir().expect("create tempdir for redis sentinel set");
        // Built up in place, so a panic below kills what was started.
        let mut set = Self {
            master_name: master_name.to_string(),
            password: password.map(str::to_string),
            data: Vec::new(),
            sentinels: Vec::new(),
            dir,
        };
        let deadline = Instant::now() + CONVERGE;

        let primary = free_port();
        set.spawn_data(primary, None);
        let replica = free_port();
        set.spawn_data(replica, Some(primary));
        // The sentinels learn replicas from the primary's INFO, which they ask
        // right away and then every 10 s: have the replica attached first.
        set.wait_synced(primary, replica, deadline);

        for _ in 0..3 {
            let port = free_port();
            let conf = set.dir.path().join(format!("sentinel-{port}.conf"));
            let mut text = format!(
                "port {port}\n\
                 bind 127.0.0.1\n\
                 daemonize no\n\
                 dir {dir}\n\
                 sentinel monitor {name} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = set.dir.path().display(),
                name = master_name,
            );
            if let Some(p) = password {
                text.push_str(&format!("sentinel auth-pass {master_name} {p}\n"));
            }
            fs::write(&conf, text).expect("write sentinel config");
            let mut node = Node::new(set.dir.path(), "sentinel", port);
            node.spawn(
                set.dir.path(),
                &[conf.to_string_lossy().into_owned(), "--sentinel".into()],
            );
            set.sentinels.push(node);
            set.converge(deadline, &format!("sentinel {port} to answer PING"), || {
                pings(port, None)
            });
        }

        let ports: Vec<u16> = set.sentinels.iter().map(|s| s.port).collect();
        set.converge(
            deadline,
            "every sentinel to name the primary and know the replica and the other sentinels",
            || {
                ports.iter().all(|&s| {
                    set.ask_primary(s) == Some(primary)
                        && set.sentinel_sees_replica(s, replica, primary)
                        && request(s, &["SENTINEL", "sentinels", master_name])
                            .is_ok_and(|r| r.items().len() == 2)
                })
            },
        );
        set
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/MASTER_NAME`, or
    /// `redis+sentinel://:PASSWORD@127.0.0.1:S1,.../MASTER_NAME` with a password.
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://{}{}/{}",
            credentials(self.password.as_deref()),
            self.sentinel_addrs().join(","),
            self.master_name
        )
    }

    /// The data nodes' password ([`start_with_password`](Self::start_with_password)).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `127.0.0.1:PORT` of each sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The tail of every process's log (what the fixture prints when it panics),
    /// for a test's own failure messages.
    pub fn logs(&self) -> String {
        logs(self.dir.path())
    }

    /// The name the sentinels monitor the primary as.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The port of the primary as the sentinels name it now
    /// (`SENTINEL get-master-addr-by-name`, first sentinel that answers).
    pub fn primary_port(&self) -> u16 {
        self.sentinels
            .iter()
            .find_map(|s| self.ask_primary(s.port))
            .unwrap_or_else(|| {
                panic!(
                    "no sentinel names a primary for {}{}",
                    self.master_name,
                    logs(self.dir.path())
                )
            })
    }

    /// The ports of both data nodes, in start order (the first was the first primary).
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|n| n.port).collect()
    }

    /// SIGKILL the current primary (as the sentinels name it); returns its port.
    /// The port stays reserved for [`restart_node`](Self::restart_node).
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port();
        let node = self.data_node(port);
        assert!(
            node.is_running(),
            "the primary on port {port} is not running (killed and not failed over yet?)"
        );
        node.kill();
        port
    }

    /// Wait until every sentinel names a primary other than `old_primary` and that
    /// node answers `ROLE` as master; returns its port. Panics with the logs when
    /// that does not happen within `timeout`.
    pub fn wait_failover(&self, old_primary: u16, timeout: Duration) -> u16 {
        let mut new = None;
        let done = wait_until(timeout, || {
            let named: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .map(|s| self.ask_primary(s.port))
                .collect();
            let candidate = match named.first() {
                Some(&Some(p)) if p != old_primary => p,
                _ => return false,
            };
            if named.iter().any(|&p| p != Some(candidate)) {
                return false;
            }
            new = Some(candidate);
            is_master(candidate, self.auth())
        });
        match (done, new) {
            (true, Some(port)) => port,
            _ => panic!(
                "no failover away from the primary on port {old_primary} within {timeout:?} \
                 (last agreed candidate: {new:?}){}",
                logs(self.dir.path())
            ),
        }
    }

    /// Start a (killed) data node again on its port, empty, as a replica of the
    /// current primary, and wait until it has synced, the primary streams writes to
    /// it, and every sentinel sees it as a healthy replica (so it can be failed
    /// over to). If the sentinels still name this very
    /// node the primary (killed, not failed over), it comes back as an empty primary.
    /// A node still running is killed first.
    pub fn restart_node(&mut self, port: u16) {
        let node = self.data_node(port);
        if node.is_running() {
            node.kill();
        }
        let primary = self.primary_port();
        let deadline = Instant::now() + CONVERGE;
        if primary == port {
            self.spawn_data(port, None);
            return;
        }
        self.spawn_data(port, Some(primary));
        self.wait_synced(primary, port, deadline);
        let sentinels: Vec<u16> = self.sentinels.iter().map(|s| s.port).collect();
        self.converge(
            deadline,
            &format!("every sentinel to see {port} as a healthy replica"),
            || {
                sentinels
                    .iter()
                    .all(|&s| self.sentinel_sees_replica(s, port, primary))
            },
        );
    }

    /// Wait until every running replica has applied everything the current
    /// primary has written so far (its replication offset), so a write made before
    /// survives [`kill_primary`](Self::kill_primary). Use this rather than `WAIT`:
    /// [`cmd_on`](Self::cmd_on) opens a connection per command, and `WAIT` only
    /// counts the writes of its own connection. Panics with the logs after 30 s.
    pub fn wait_replicated(&self) {
        let primary = self.primary_port();
        let target = repl_offset(primary, self.auth(), "master_repl_offset").unwrap_or_else(|| {
            panic!(
                "the primary on port {primary} reports no replication offset{}",
                self.logs()
            )
        });
        let deadline = Instant::now() + CONVERGE;
        for replica in self.running_replicas(primary) {
            self.converge(
                deadline,
                &format!("the replica on port {replica} to reach offset {target}"),
                || {
                    repl_offset(replica, self.auth(), "slave_repl_offset")
                        .is_some_and(|o| o >= target)
                },
            );
        }
    }

    /// Send one command to the node on `port` (data node or sentinel) over a fresh
    /// connection and return the reply as raw protocol text, trimmed (`"+OK"`,
    /// `"$1\r\nv"`, `"$-1"`). With a password, a data node gets `AUTH` first (a
    /// sentinel does not). Panics when the node cannot be reached.
    pub fn cmd_on(&self, port: u16, args: &[&str]) -> String {
        let auth = if self.sentinels.iter().any(|s| s.port == port) {
            None
        } else {
            self.auth()
        };
        command_auth(port, auth, args)
            .unwrap_or_else(|e| panic!("redis on port {port}: {args:?}: {e}"))
    }

    /// The password to `AUTH` with on a data node.
    fn auth(&self) -> Option<&str> {
        self.password.as_deref()
    }

    fn data_node(&mut self, port: u16) -> &mut Node {
        let ports = self.data_ports();
        self.data
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("port {port} is not a data node of this set ({ports:?})"))
    }

    /// Start (or restart) the data node on `port`, a replica of `primary` if given,
    /// and wait until it answers `PING`.
    fn spawn_data(&mut self, port: u16, primary: Option<u16>) {
        let mut args = data_args(self.dir.path(), port, self.password.as_deref());
        if let Some(p) = primary {
            args.extend(["--replicaof".into(), "127.0.0.1".into(), p.to_string()]);
        }
        let index = match self.data.iter().position(|n| n.port == port) {
            Some(i) => i,
            None => {
                self.data.push(Node::new(self.dir.path(), "data", port));
                self.data.len() - 1
            }
        };
        let dir = self.dir.path().to_path_buf();
        self.data[index].spawn(&dir, &args);
        let deadline = Instant::now() + Duration::from_secs(10);
        self.converge(
            deadline,
            &format!("redis on port {port} to answer PING"),
            || pings(port, self.auth()),
        );
    }

    /// Wait until `replica` is linked to `primary` and the primary streams to it:
    /// a message published on the primary after the link came up (no key written)
    /// has reached the replica. (Redis 7.0 holds the stream to a new replica back
    /// until its first acknowledgement after the sync, up to a second.)
    fn wait_synced(&self, primary: u16, replica: u16, deadline: Instant) {
        let master_port = format!("master_port:{primary}");
        self.converge(
            deadline,
            &format!("the replica on port {replica} to report master_link_status:up"),
            || {
                let info = bulk(replica, self.auth(), &["INFO", "replication"]);
                info.contains("master_link_status:up") && info.contains(&master_port)
            },
        );
        let _ = request_auth(primary, self.auth(), &["PUBLISH", "__testkit__:sync", "1"]);
        let target = repl_offset(primary, self.auth(), "master_repl_offset").unwrap_or(i64::MAX);
        self.converge(
            deadline,
            &format!("the replica on port {replica} to reach the primary's offset {target}"),
            || repl_offset(replica, self.auth(), "slave_repl_offset").is_some_and(|o| o >= target),
        );
    }

    /// The ports of the running data nodes other than `primary`.
    fn running_replicas(&self, primary: u16) -> Vec<u16> {
        self.data
            .iter()
            .filter(|n| n.port != primary && n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The primary's port as the sentinel on `sentinel` names it.
    fn ask_primary(&self, sentinel: u16) -> Option<u16> {
        let reply = request(
            sentinel,
            &["SENTINEL", "get-master-addr-by-name", &self.master_name],
        )
        .ok()?;
        reply.items().get(1)?.as_str()?.parse().ok()
    }

    /// Whether the sentinel on `sentinel` lists `replica` as healthy: flags exactly
    /// `slave` (connected, not subjectively down) and, from the replica's own INFO,
    /// linked to `primary`.
    fn sentinel_sees_replica(&self, sentinel: u16, replica: u16, primary: u16) -> bool {
        let (replica, primary) = (replica.to_string(), primary.to_string());
        request(sentinel, &["SENTINEL", "replicas", &self.master_name]).is_ok_and(|r| {
            r.items().iter().any(|e| {
                e.field("port") == Some(replica.as_str())
                    && e.field("flags") == Some("slave")
                    && e.field("master-link-status") == Some("ok")
                    && e.field("master-port") == Some(primary.as_str())
            })
        })
    }

    fn converge(&self, deadline: Instant, what: &str, cond: impl FnMut() -> bool) {
        let left = deadline.saturating_duration_since(Instant::now());
        if !wait_until(left, cond) {
            panic!(
                "redis sentinel set {}: timed out waiting for {what}{}",
                self.master_name,
                logs(self.dir.path())
            );
        }
    }
}

impl Drop for RedisSentinelSet {
    fn drop(&mut self) {
        // Sentinels first, so none of them reconfigures a dying data node.
        for node in self.sentinels.iter_mut().chain(self.data.iter_mut()) {
            node.reap();
        }
    }
}

/// A numeric field of the node's `INFO replication` (`master_repl_offset`,
/// `slave_repl_offset`).
fn repl_offset(port: u16, auth: Option<&str>, field: &str) -> Option<i64> {
    let info = bulk(port, auth, &["INFO", "replication"]);
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether the node on `port` answers `ROLE` as master.
fn is_master(port: u16, auth: Option<&str>) -> bool {
    request_auth(port, auth, &["ROLE"])
        .is_ok_and(|r| r.items().first().and_then(Reply::as_str) == Some("master"))
}

/// How many primaries a [`RedisClusterSet`] has.
const CLUSTER_PRIMARIES: usize = 3;

/// One range of a `CLUSTER SLOTS` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotRange {
    first: u16,
    last: u16,
    /// The port of the primary serving the range.
    primary: u16,
    /// The ports of its (non-failed) replicas.
    replicas: Vec<u16>,
}

/// The node on `port`'s `CLUSTER SLOTS`, or `None` when unreachable or not parsable.
fn cluster_slots(port: u16, auth: Option<&str>) -> Option<Vec<SlotRange>> {
    let reply = request_auth(port, auth, &["CLUSTER", "SLOTS"]).ok()?;
    let Reply::Array(Some(ranges)) = reply else {
        return None;
    };
    let int = |r: Option<&Reply>| match r {
        Some(Reply::Int(v)) => u16::try_from(*v).ok(),
        _ => None,
    };
    // a node is [host, port, id, ...]
    let node_port = |n: &Reply| int(n.items().get(1));
    ranges
        .iter()
        .map(|range| {
            let items = range.items();
            Some(SlotRange {
                first: int(items.first())?,
                last: int(items.get(1))?,
                primary: node_port(items.get(2)?)?,
                replicas: items
                    .get(3..)?
                    .iter()
                    .map(node_port)
                    .collect::<Option<_>>()?,
            })
        })
        .collect()
}

/// A field of an `INFO` section (`role`, `master_port`, `master_link_status`).
fn info_field(info: &str, field: &str) -> Option<String> {
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
}

/// A Redis Cluster of three primaries covering all 16384 slots, without replicas
/// ([`start`](Self::start)) or with one replica each
/// ([`start_with_replicas`](Self::start_with_replicas)); `cluster-node-timeout 2000`,
/// no persistence. A primary can be killed ([`kill_node`](Self::kill_node)) and its
/// replica's promotion awaited ([`wait_promoted`](Self::wait_promoted)): about 3-4 s.
/// [`start_with_password`](Self::start_with_password) makes every node require a
/// password.
///
/// ```no_run
/// use std::time::Duration;
/// let cluster = testkit::RedisClusterSet::start();
/// let url = cluster.url(); // redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
/// let port = cluster.port_for_key("k");
/// assert_eq!(cluster.cmd_on(port, &["SET", "k", "v"]), "+OK");
///
/// let mut cluster = testkit::RedisClusterSet::start_with_replicas();
/// let old = cluster.port_for_key("k");
/// assert_eq!(cluster.cmd_on(old, &["SET", "k", "v"]), "+OK");
/// cluster.wait_replicated(); // or the write may die with its primary
/// cluster.kill_node(old);
/// let new = cluster.wait_promoted(old, Duration::from_secs(30));
/// assert_eq!(Some(new), cluster.replica_of(old));
/// assert_eq!(cluster.port_for_key("k"), new);
/// ```
pub struct RedisClusterSet {
    /// Every node in start order: the three primaries first, then their replicas.
    nodes: Vec<Node>,
    /// (primary, replica) as the cluster was created.
    pairs: Vec<(u16, u16)>,
    /// The slot ranges each primary killed with `kill_node` served then.
    killed: Vec<(u16, Vec<(u16, u16)>)>,
    /// Every node's `requirepass` (and `masterauth`), if any.
    password: Option<String>,
    dir: tempfile::TempDir,
}

impl RedisClusterSet {
    /// Start three cluster-enabled nodes, join them with `redis-cli --cluster create`
    /// and wait until every node reports `cluster_state:ok` with all slots assigned.
    /// Panics with the processes' logs when that does not happen within 30 s.
    pub fn start() -> Self {
        Self::launch(0, None)
    }

    /// Like [`start`](Self::start), but every node requires `password`
    /// (`--requirepass P --masterauth P`; the cluster is created with `redis-cli -a
    /// P`). [`url`](Self::url) carries the password, and [`cmd_on`](Self::cmd_on)
    /// and [`port_for_key`](Self::port_for_key) send `AUTH` first. The password must
    /// be printable ASCII without spaces.
    pub fn start_with_password(password: &str) -> Self {
        check_password(password);
        Self::launch(0, Some(password))
    }

    /// Start six cluster-enabled nodes and join them with `redis-cli --cluster
    /// create ... --cluster-replicas 1`: the first three are the primaries
    /// ([`ports`](Self::ports)), the other three one replica each
    /// ([`replica_ports`](Self::replica_ports)). Waits until every node reports
    /// `cluster_state:ok` with all slots assigned, every replica reports
    /// `master_link_status:up` and has applied its primary's stream, and every
    /// node's `CLUSTER SLOTS` lists each primary with its replica (so any primary
    /// can vote for a promotion). Panics with the processes' logs when that does
    /// not happen within 30 s.
    pub fn start_with_replicas() -> Self {
        Self::launch(1, None)
    }

    fn launch(replicas: usize, password: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("create tempdir for redis cluster");
        let mut set = Self {
            nodes: Vec::new(),
            pairs: Vec::new(),
            killed: Vec::new(),
            password: password.map(str::to_string),
            dir,
        };
        let deadline = Instant::now() + CONVERGE;
        for _ in 0..CLUSTER_PRIMARIES * (1 + replicas) {
            let port = free_port();
            let mut args = data_args(set.dir.path(), port, password);
            let nodes_conf = set.dir.path().join(format!("nodes-{port}.conf"));
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &nodes_conf.to_string_lossy(),
                    "--cluster-node-timeout",
                    "2000",
                    // The bus port defaults to PORT + 10000, which may be taken or
                    // out of range for a free port.
                    "--cluster-port",
                    &free_port().to_string(),
                ]
                .map(String::from),
            );
            if replicas > 0 {
                // A replica is listed in CLUSTER SLOTS only once its replication
                // offset is not 0, and a primary with no writes moves it with a PING
                // every `repl-ping-replica-period` (10 s by default).
                args.extend(["--repl-ping-replica-period", "1"].map(String::from));
            }
            let mut node = Node::new(set.dir.path(), "cluster", port);
            node.spawn(set.dir.path(), &args);
            set.nodes.push(node);
            set.converge(deadline, &format!("node {port} to answer PING"), || {
                pings(port, password)
            });
        }
        set.create(deadline, replicas);
        let all = set.running_ports();
        set.converge(
            deadline,
            "every node to report cluster_state:ok with 16384 slots assigned",
            || {
                all.iter().all(|&p| {
                    let info = bulk(p, password, &["CLUSTER", "INFO"]);
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_assigned:16384")
                })
            },
        );
        if replicas == 0 {
            return set;
        }
        // redis-cli makes the first nodes given (all on one host) the primaries
        let primaries = set.ports();
        let mut masters = Vec::new();
        for replica in set.replica_ports() {
            set.converge(
                deadline,
                &format!("the replica on port {replica} to report master_link_status:up"),
                || {
                    let info = bulk(replica, password, &["INFO", "replication"]);
                    info_field(&info, "role").as_deref() == Some("slave")
                        && info_field(&info, "master_link_status").as_deref() == Some("up")
                },
            );
            masters.push(set.replica_master(replica));
        }
        let mut sorted = masters.clone();
        sorted.sort_unstable();
        let mut want = primaries.clone();
        want.sort_unstable();
        assert!(
            sorted.iter().all(|m| m.is_some()) && sorted.into_iter().flatten().eq(want),
            "expected one replica of each primary {primaries:?}, replicas follow {masters:?}{}",
            set.logs()
        );
        set.converge(
            deadline,
            "every node's CLUSTER SLOTS to list each primary with its replica",
            || {
                all.iter().all(|&p| {
                    cluster_slots(p, password).is_some_and(|ranges| {
                        ranges.iter().all(|r| {
                            primaries.contains(&r.primary)
                                && r.replicas.len() == replicas
                                && r.replicas
                                    .iter()
                                    .all(|&rep| set.replica_master(rep) == Some(r.primary))
                        })
                    })
                })
            },
        );
        set.pairs = masters
            .into_iter()
            .flatten()
            .zip(set.replica_ports())
            .collect();
        set.wait_replicated_until(deadline);
        set
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`: the nodes started
    /// as primaries ([`ports`](Self::ports)), also after a failover. With a password:
    /// `redis+cluster://:PASSWORD@127.0.0.1:P1,...`.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!(
            "redis+cluster://{}{}",
            credentials(self.password.as_deref()),
            addrs.join(",")
        )
    }

    /// Every node's password ([`start_with_password`](Self::start_with_password)).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The tail of every process's log (what the fixture prints when it panics),
    /// for a test's own failure messages.
    pub fn logs(&self) -> String {
        logs(self.dir.path())
    }

    /// The ports of the three nodes started as primaries, in start order (not
    /// updated by a failover: see [`primary_ports`](Self::primary_ports)).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .take(CLUSTER_PRIMARIES)
            .map(|n| n.port)
            .collect()
    }

    /// The ports of the nodes started as replicas, in start order (empty for
    /// [`start`](Self::start)).
    pub fn replica_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .skip(CLUSTER_PRIMARIES)
            .map(|n| n.port)
            .collect()
    }

    /// The ports of the primaries now: the nodes serving slots in the first running
    /// node's `CLUSTER SLOTS`, sorted. Panics when no node answers it.
    pub fn primary_ports(&self) -> Vec<u16> {
        let ranges = self
            .running_ports()
            .into_iter()
            .find_map(|p| cluster_slots(p, self.auth()))
            .unwrap_or_else(|| panic!("no cluster node answers CLUSTER SLOTS{}", self.logs()));
        let mut ports: Vec<u16> = ranges.iter().map(|r| r.primary).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// The port of the node started as the replica of the node started as
    /// `primary` (as the cluster was created, not updated by a failover); `None`
    /// for [`start`](Self::start).
    pub fn replica_of(&self, primary: u16) -> Option<u16> {
        self.pairs
            .iter()
            .find(|&&(p, _)| p == primary)
            .map(|&(_, r)| r)
    }

    /// `redis://127.0.0.1:PORT` of node `i` in start order (0, 1, 2: the primaries
    /// as started; 3, 4, 5: the replicas of [`start_with_replicas`](Self::start_with_replicas)),
    /// with `:PASSWORD@` when there is one.
    pub fn node_url(&self, i: usize) -> String {
        format!(
            "redis://{}127.0.0.1:{}",
            credentials(self.password.as_deref()),
            self.nodes[i].port
        )
    }

    /// Send one command to the node on `port` and return the reply as raw protocol
    /// text, trimmed. A key another node owns answers `-MOVED SLOT 127.0.0.1:PORT`.
    /// With a password, `AUTH` goes first. Panics when the node cannot be reached.
    pub fn cmd_on(&self, port: u16, args: &[&str]) -> String {
        command_auth(port, self.auth(), args)
            .unwrap_or_else(|e| panic!("redis on port {port}: {args:?}: {e}"))
    }

    /// The password to `AUTH` with.
    fn auth(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The port of the node that owns `key`'s slot now: the running node that
    /// does not answer `-MOVED` to `EXISTS key` (replicas answer `-MOVED` too).
    pub fn port_for_key(&self, key: &str) -> u16 {
        let replies: Vec<(u16, String)> = self
            .running_ports()
            .into_iter()
            .map(|p| {
                let reply = command_auth(p, self.auth(), &["EXISTS", key])
                    .unwrap_or_else(|e| format!("({e})"));
                (p, reply)
            })
            .collect();
        replies
            .iter()
            .find(|(_, r)| r.starts_with(':'))
            .map(|&(p, _)| p)
            .unwrap_or_else(|| panic!("no node owns key {key:?}: {replies:?}"))
    }

    /// SIGKILL the node on `port` (primary or replica) and wait until its port
    /// refuses connections. The slots it served as a primary are recorded for
    /// [`wait_promoted`](Self::wait_promoted). Panics when it is not running.
    pub fn kill_node(&mut self, port: u16) {
        let served: Vec<(u16, u16)> = cluster_slots(port, self.auth())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.primary == port)
            .map(|r| (r.first, r.last))
            .collect();
        let all: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("port {port} is not a node of this cluster ({all:?})"));
        assert!(node.is_running(), "the node on port {port} is not running");
        node.kill();
        self.killed.retain(|(p, _)| *p != port);
        if !served.is_empty() {
            self.killed.push((port, served));
        }
    }

    /// Wait until a replica took over the slots `old_primary` served when it was
    /// killed with [`kill_node`](Self::kill_node): every running node reports
    /// `cluster_state:ok`, its `CLUSTER SLOTS` names `old_primary` primary of no
    /// slot and one same node primary of all those slots, and that node answers
    /// `ROLE` as master. Returns its port. Panics with the logs when that does not
    /// happen within `timeout`, or when `old_primary` served no slots when killed.
    pub fn wait_promoted(&self, old_primary: u16, timeout: Duration) -> u16 {
        let served = self
            .killed
            .iter()
            .find(|(p, _)| *p == old_primary)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("port {old_primary} is not a primary killed with kill_node"));
        let survivors = self.running_ports();
        let mut new = None;
        let mut waiting = String::from("nothing asked yet");
        let done = wait_until(timeout, || {
            new = None;
            let mut owner = None;
            for &p in &survivors {
                let info = bulk(p, self.auth(), &["CLUSTER", "INFO"]);
                if !info.contains("cluster_state:ok") {
                    waiting = format!("node {p} to report cluster_state:ok");
                    return false;
                }
                let Some(ranges) = cluster_slots(p, self.auth()) else {
                    waiting = format!("node {p} to answer CLUSTER SLOTS");
                    return false;
                };
                if ranges.iter().any(|r| r.primary == old_primary) {
                    waiting = format!("node {p} to stop naming {old_primary} a primary");
                    return false;
                }
                for &(first, last) in &served {
                    let here = ranges
                        .iter()
                        .find(|r| r.first <= first && last <= r.last)
                        .map(|r| r.primary);
                    match (here, owner) {
                        (Some(h), None) => owner = Some(h),
                        (Some(h), Some(o)) if h == o => {}
                        _ => {
                            waiting = format!(
                                "node {p} to name {owner:?} primary of slots {first}-{last} \
                                 (it names {here:?})"
                            );
                            return false;
                        }
                    }
                }
            }
            new = owner;
            waiting = format!("{owner:?} to answer ROLE as master");
            owner.is_some_and(|o| is_master(o, self.auth()))
        });
        match (done, new) {
            (true, Some(port)) => port,
            _ => panic!(
                "no replica took over the slots {served:?} of the primary on port \
                 {old_primary} within {timeout:?} (waiting for {waiting}){}",
                self.logs()
            ),
        }
    }

    /// Wait until every running replica has applied everything its primary has
    /// written so far (its replication offset), so a write made before survives
    /// [`kill_node`](Self::kill_node) of the primary (not `WAIT`: every
    /// [`cmd_on`](Self::cmd_on) is a connection of its own, and `WAIT` counts its
    /// own writes only). Panics with the logs after 30 s.
    pub fn wait_replicated(&self) {
        self.wait_replicated_until(Instant::now() + CONVERGE);
    }

    fn wait_replicated_until(&self, deadline: Instant) {
        let replicas: Vec<(u16, u16)> = self
            .running_ports()
            .into_iter()
            .filter_map(|p| Some((p, self.replica_master(p)?)))
            .collect();
        let targets: Vec<(u16, u16, i64)> = replicas
            .into_iter()
            .map(|(replica, primary)| {
                let target = repl_offset(primary, self.auth(), "master_repl_offset")
                    .unwrap_or_else(|| {
                        panic!(
                            "the primary on port {primary} reports no replication offset{}",
                            self.logs()
                        )
                    });
                (replica, primary, target)
            })
            .collect();
        for (replica, primary, target) in targets {
            self.converge(
                deadline,
                &format!(
                    "the replica on port {replica} to reach its primary {primary}'s offset \
                     {target}"
                ),
                || {
                    repl_offset(replica, self.auth(), "slave_repl_offset")
                        .is_some_and(|o| o >= target)
                },
            );
        }
    }

    /// The primary the node on `port` replicates (`INFO replication`), if it is a
    /// replica that answers.
    fn replica_master(&self, port: u16) -> Option<u16> {
        let info = bulk(port, self.auth(), &["INFO", "replication"]);
        if info_field(&info, "role").as_deref() != Some("slave") {
            return None;
        }
        info_field(&info, "master_port")?.parse().ok()
    }

    /// The ports of the nodes not killed, in start order.
    fn running_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// `redis-cli [-a P] --cluster create ... --cluster-replicas N --cluster-yes`, its
    /// output (and `-a`'s warning about a password on the command line) in
    /// `redis-cli-create.log`, killed at `deadline`.
    fn create(&mut self, deadline: Instant, replicas: usize) {
        let log_path = self.dir.path().join("redis-cli-create.log");
        let log = File::create(&log_path).expect("create redis-cli log");
        let err = log.try_clone().expect("clone log file handle");
        let mut args: Vec<String> = Vec::new();
        if let Some(p) = &self.password {
            args.extend(["-a".into(), p.clone()]);
        }
        args.extend(["--cluster".into(), "create".into()]);
        args.extend(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let mut child = match Command::new("redis-cli")
            .args(&args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-cli is not installed; install it with `apt-get install redis-tools`")
            }
            Err(e) => panic!("cannot start redis-cli: {e}"),
        };
        let mut status = None;
        let left = deadline.saturating_duration_since(Instant::now());
        wait_until(left, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !status.is_some_and(|s| s.success()) {
            panic!(
                "redis-cli --cluster create failed (exit: {status:?}){}",
                logs(self.dir.path())
            );
        }
    }

    fn converge(&self, deadline: Instant, what: &str, cond: impl FnMut() -> bool) {
        let left = deadline.saturating_duration_since(Instant::now());
        if !wait_until(left, cond) {
            panic!(
                "redis cluster: timed out waiting for {what}{}",
                logs(self.dir.path())
            );
        }
    }
}

impl Drop for RedisClusterSet {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.reap();
        }
    }
}
