//! The Redis topology fixtures themselves: a sentinel set fails over a killed
//! primary without losing a replicated key and takes the old primary back as a
//! replica; a cluster routes keys to the node owning their slot; a cluster with
//! replicas promotes a killed primary's replica, which serves the keys written before;
//! password-protected sets and clusters answer `cmd_on` and refuse a connection
//! without `AUTH`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use testkit::{RedisClusterSet, RedisSentinelSet};

/// A failover takes ~2.5 s; when the three sentinels see the primary down at the
/// same moment and split their votes, the next election waits for twice the
/// failover timeout (10 s), so one split vote takes ~12.5 s. Room for two.
const FAILOVER: Duration = Duration::from_secs(25);

/// The role in a `ROLE` reply (`*3\r\n$6\r\nmaster\r\n...`): `master` or `slave`.
fn role(set: &RedisSentinelSet, port: u16) -> String {
    let reply = set.cmd_on(port, &["ROLE"]);
    reply.lines().nth(2).unwrap_or_default().to_string()
}

#[test]
fn sentinel_set_fails_over_a_killed_primary() {
    let started = Instant::now();
    let mut set = RedisSentinelSet::start("mymaster");
    eprintln!("sentinel set up in {:?}", started.elapsed());

    assert_eq!(set.master_name(), "mymaster");
    let addrs = set.sentinel_addrs();
    assert_eq!(addrs.len(), 3);
    assert_eq!(
        set.url(),
        format!("redis+sentinel://{}/mymaster", addrs.join(","))
    );
    let [first, second] = set.data_ports()[..] else {
        panic!("two data nodes: {:?}", set.data_ports());
    };
    assert_eq!(set.primary_port(), first);
    assert_eq!(role(&set, first), "master");
    assert_eq!(role(&set, second), "slave");

    assert_eq!(set.cmd_on(first, &["SET", "k", "v"]), "+OK");
    // replicated to the one replica before the primary dies (not `WAIT`: every
    // `cmd_on` is a connection of its own, and `WAIT` counts its own writes only)
    set.wait_replicated();
    assert_eq!(set.cmd_on(second, &["GET", "k"]), "$1\r\nv");

    let killed_at = Instant::now();
    let old = set.kill_primary();
    assert_eq!(old, first);
    let new = set.wait_failover(old, FAILOVER);
    eprintln!("failed over in {:?}", killed_at.elapsed());
    assert_eq!(new, second);
    assert_eq!(set.primary_port(), second);
    assert_eq!(role(&set, second), "master");
    assert_eq!(set.cmd_on(second, &["GET", "k"]), "$1\r\nv");

    // the old primary comes back as a replica of the new one, with its data
    let restarted_at = Instant::now();
    set.restart_node(old);
    eprintln!(
        "old primary back as replica in {:?}",
        restarted_at.elapsed()
    );
    assert_eq!(role(&set, old), "slave");
    assert_eq!(set.cmd_on(old, &["GET", "k"]), "$1\r\nv");
    assert_eq!(set.primary_port(), second);

    // and a second failover goes back to it
    assert_eq!(set.cmd_on(second, &["SET", "k2", "v2"]), "+OK");
    set.wait_replicated();
    assert_eq!(set.cmd_on(first, &["GET", "k2"]), "$2\r\nv2");
    let killed_at = Instant::now();
    assert_eq!(set.kill_primary(), second);
    assert_eq!(set.wait_failover(second, FAILOVER), first);
    eprintln!("failed back in {:?}", killed_at.elapsed());
    assert_eq!(role(&set, first), "master");
    assert_eq!(set.cmd_on(first, &["GET", "k2"]), "$2\r\nv2");
    eprintln!("sentinel test took {:?}", started.elapsed());
}

#[test]
fn cluster_routes_keys_to_their_slot_owner() {
    let started = Instant::now();
    let cluster = RedisClusterSet::start();
    eprintln!("cluster up in {:?}", started.elapsed());

    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    assert_eq!(
        cluster.url(),
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
            ports[0], ports[1], ports[2]
        )
    );
    assert_eq!(
        cluster.node_url(1),
        format!("redis://127.0.0.1:{}", ports[1])
    );

    // slot 12182 (third node's range) and slot 5061 (first node's range)
    assert_eq!(
        cluster.cmd_on(ports[0], &["CLUSTER", "KEYSLOT", "foo"]),
        ":12182"
    );
    assert_eq!(
        cluster.cmd_on(ports[0], &["CLUSTER", "KEYSLOT", "bar"]),
        ":5061"
    );
    let foo = cluster.port_for_key("foo");
    let bar = cluster.port_for_key("bar");
    assert_ne!(foo, bar);

    for (key, owner) in [("foo", foo), ("bar", bar)] {
        assert_eq!(cluster.cmd_on(owner, &["SET", key, "v"]), "+OK");
        assert_eq!(cluster.cmd_on(owner, &["GET", key]), "$1\r\nv");
        for &other in ports.iter().filter(|&&p| p != owner) {
            let moved = cluster.cmd_on(other, &["GET", key]);
            assert!(
                moved.starts_with("-MOVED ") && moved.ends_with(&format!(":{owner}")),
                "{key} on {other}: {moved}"
            );
        }
    }
    eprintln!("cluster test took {:?}", started.elapsed());
}

#[test]
fn cluster_with_replicas_promotes_a_killed_primarys_replica() {
    let started = Instant::now();
    let mut cluster = RedisClusterSet::start_with_replicas();
    eprintln!("cluster with replicas up in {:?}", started.elapsed());

    let primaries = cluster.ports();
    let replicas = cluster.replica_ports();
    assert_eq!(primaries.len(), 3);
    assert_eq!(replicas.len(), 3);
    let mut sorted = primaries.clone();
    sorted.sort_unstable();
    assert_eq!(cluster.primary_ports(), sorted);
    assert_eq!(
        cluster.url(),
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
            primaries[0], primaries[1], primaries[2]
        )
    );
    for &p in &primaries {
        let r = cluster.replica_of(p).expect("every primary has a replica");
        assert!(replicas.contains(&r));
    }
    // a replica redirects to its primary
    let foo = cluster.port_for_key("foo");
    assert!(primaries.contains(&foo));
    let moved = cluster.cmd_on(cluster.replica_of(foo).unwrap(), &["GET", "foo"]);
    assert!(moved.ends_with(&format!(":{foo}")), "{moved}");

    assert_eq!(cluster.cmd_on(foo, &["SET", "foo", "v"]), "+OK");
    cluster.wait_replicated();
    let killed_at = Instant::now();
    cluster.kill_node(foo);
    let new = cluster.wait_promoted(foo, Duration::from_secs(30));
    eprintln!("replica promoted in {:?}", killed_at.elapsed());
    assert_eq!(Some(new), cluster.replica_of(foo));
    assert_eq!(cluster.port_for_key("foo"), new);
    assert_eq!(cluster.cmd_on(new, &["GET", "foo"]), "$1\r\nv");
    // the surviving primaries redirect to the new one
    for &p in primaries.iter().filter(|&&p| p != foo) {
        let moved = cluster.cmd_on(p, &["GET", "foo"]);
        assert!(moved.ends_with(&format!(":{new}")), "{p}: {moved}");
    }
    let mut now: Vec<u16> = sorted
        .iter()
        .map(|&p| if p == foo { new } else { p })
        .collect();
    now.sort_unstable();
    assert_eq!(cluster.primary_ports(), now);
    assert_eq!(cluster.cmd_on(new, &["SET", "foo", "w"]), "+OK");
    eprintln!("cluster failover test took {:?}", started.elapsed());
}

/// The first reply line to a `PING` on a fresh connection that never sent `AUTH`.
fn ping_without_auth(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 128];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
}

#[test]
fn password_protected_sentinel_set_and_cluster() {
    let started = Instant::now();
    // started side by side (each takes a few seconds to converge)
    let (set, cluster) = std::thread::scope(|s| {
        let set = s.spawn(|| RedisSentinelSet::start_with_password("authmaster", "s3cret"));
        let cluster = RedisClusterSet::start_with_password("s3cret");
        let set = set.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (set, cluster)
    });
    eprintln!(
        "protected sentinel set and cluster up in {:?}",
        started.elapsed()
    );

    // sentinel set: credentials in the URL, AUTH on the data nodes, none on sentinels
    let addrs = set.sentinel_addrs();
    assert_eq!(set.password(), Some("s3cret"));
    assert_eq!(
        set.url(),
        format!("redis+sentinel://:s3cret@{}/authmaster", addrs.join(","))
    );
    let [primary, replica] = set.data_ports()[..] else {
        panic!("two data nodes: {:?}", set.data_ports());
    };
    assert_eq!(set.primary_port(), primary);
    assert_eq!(set.cmd_on(primary, &["SET", "k", "v"]), "+OK");
    set.wait_replicated();
    assert_eq!(set.cmd_on(replica, &["GET", "k"]), "$1\r\nv");
    for port in [primary, replica] {
        let reply = ping_without_auth(port);
        assert!(reply.starts_with("-NOAUTH"), "data node {port}: {reply}");
    }
    let sentinel: u16 = addrs[0].rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(ping_without_auth(sentinel), "+PONG");
    assert!(set
        .cmd_on(
            sentinel,
            &["SENTINEL", "get-master-addr-by-name", "authmaster"]
        )
        .ends_with(&primary.to_string()));

    // cluster: credentials in the URL, AUTH on every node
    let ports = cluster.ports();
    assert_eq!(
        cluster.url(),
        format!(
            "redis+cluster://:s3cret@127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
            ports[0], ports[1], ports[2]
        )
    );
    let foo = cluster.port_for_key("foo");
    assert_eq!(cluster.cmd_on(foo, &["SET", "foo", "v"]), "+OK");
    assert_eq!(cluster.cmd_on(foo, &["GET", "foo"]), "$1\r\nv");
    for port in ports {
        let reply = ping_without_auth(port);
        assert!(reply.starts_with("-NOAUTH"), "cluster node {port}: {reply}");
    }
    eprintln!("password test took {:?}", started.elapsed());
}
