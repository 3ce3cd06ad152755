//! DNS discovery against a small authoritative DNS server run by the test
//! (UDP, hickory-proto messages): A records for `host` + `port`, SRV records,
//! TTL-driven re-resolution, and stale-while-error when the server goes silent.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use testkit::config::{
    ms, secs, DnsDiscoveryConfig, GatewayConfigBuilder, IpVersion, RouteBuilder, ServiceBuilder,
};
use testkit::{wait_until, Backend, GatewayProcess};

/// How long a log line may trail the state a test waited for (the log is written
/// beside a metric or a state change, not before it).
const LOG_WAIT: Duration = Duration::from_secs(5);

type Zone = Arc<Mutex<HashMap<(String, RecordType), Vec<RData>>>>;

/// A DNS server on 127.0.0.1 answering from a table the test edits.
struct DnsServer {
    addr: SocketAddr,
    zone: Zone,
    silent: Arc<AtomicBool>,
    queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let zone: Zone = Arc::default();
        let silent = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicU64::new(0));
        let q_count = queries.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let (z, s, st) = (zone.clone(), silent.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                q_count.fetch_add(1, Ordering::Relaxed);
                if s.load(Ordering::Relaxed) {
                    continue;
                }
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut resp = Message::new();
                resp.set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(query.op_code())
                    .set_authoritative(true)
                    .set_recursion_desired(query.recursion_desired())
                    .set_recursion_available(true);
                let mut found = false;
                for q in query.queries() {
                    resp.add_query(q.clone());
                    let name = q.name().to_ascii().trim_end_matches('.').to_lowercase();
                    let table = z.lock().unwrap();
                    if let Some(rdatas) = table.get(&(name.clone(), q.query_type())) {
                        for rd in rdatas {
                            resp.add_answer(Record::from_rdata(q.name().clone(), 1, rd.clone()));
                        }
                        found = true;
                    } else if table.keys().any(|(n, _)| *n == name) {
                        found = true; // the name exists: NODATA
                    }
                }
                if !found {
                    resp.set_response_code(ResponseCode::NXDomain);
                }
                if let Ok(bytes) = resp.to_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        DnsServer {
            addr,
            zone,
            silent,
            queries,
            stop,
        }
    }

    fn set(&self, name: &str, rtype: RecordType, records: Vec<RData>) {
        self.zone
            .lock()
            .unwrap()
            .insert((name.to_string(), rtype), records);
    }

    fn set_a(&self, name: &str, ips: &[Ipv4Addr]) {
        self.set(
            name,
            RecordType::A,
            ips.iter().map(|ip| RData::A(A(*ip))).collect(),
        );
        self.set(name, RecordType::AAAA, Vec::new());
    }

    fn set_srv(&self, name: &str, targets: &[(u16, u16, &str)]) {
        let recs = targets
            .iter()
            .map(|(weight, port, target)| {
                RData::SRV(SRV::new(
                    10,
                    *weight,
                    *port,
                    Name::from_ascii(format!("{target}.")).unwrap(),
                ))
            })
            .collect();
        self.set(name, RecordType::SRV, recs);
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn discovery(gw: &GatewayProcess) -> serde_json::Value {
    let (status, body) = testkit::http_get(&gw.admin_addr(), "/discovery").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn instance_ids(gw: &GatewayProcess, service: &str) -> Vec<String> {
    let mut ids: Vec<String> = discovery(gw)["services"][service]["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn backend_name(gw: &GatewayProcess) -> Option<String> {
    let (status, body) = testkit::http_get(&gw.addr(), "/x").ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["backend"].as_str().map(str::to_string)
}

const T: Duration = Duration::from_secs(10);

/// Listener and admin, the service `member` found by `dns`, one route to it.
fn member_config(dns: DnsDiscoveryConfig) -> String {
    GatewayConfigBuilder::in_front_of("member", ServiceBuilder::dns(dns)).yaml()
}

#[test]
fn a_records_follow_changes_and_survive_a_silent_server() {
    let dns = DnsServer::start();
    let a = Backend::start("a");
    dns.set_a("member.shop.svc.cluster.local", &[Ipv4Addr::LOCALHOST]);
    let gw = GatewayProcess::start(
        env!("CARGO_BIN_EXE_gateway"),
        &member_config(DnsDiscoveryConfig {
            host: Some("member.shop.svc.cluster.local".into()),
            port: Some(a.port()),
            ip_version: IpVersion::V4,
            nameservers: vec![dns.addr.to_string()],
            min_interval: ms(200),
            max_interval: secs(2),
            timeout: ms(300),
            ..DnsDiscoveryConfig::default()
        }),
    );
    let want_a = format!("127.0.0.1:{}", a.port());
    assert!(
        wait_until(T, || instance_ids(&gw, "member") == [want_a.clone()]),
        "{}",
        gw.log()
    );
    assert!(wait_until(T, || backend_name(&gw).as_deref() == Some("a")));
    let d = discovery(&gw);
    assert_eq!(d["services"]["member"]["discovery"]["source"], "dns");
    assert!(d["services"]["member"]["discovery"]["last_success_unix_ms"].is_u64());

    // a second address appears within a TTL
    dns.set_a(
        "member.shop.svc.cluster.local",
        &[Ipv4Addr::LOCALHOST, Ipv4Addr::new(127, 0, 0, 2)],
    );
    let want_two = vec![
        format!("127.0.0.1:{}", a.port()),
        format!("127.0.0.2:{}", a.port()),
    ];
    assert!(wait_until(T, || instance_ids(&gw, "member") == want_two));

    // the server stops answering: the last set stays, errors are counted
    dns.silent.store(true, Ordering::Relaxed);
    assert!(wait_until(T, || gw.metric(
        "gateway_discovery_errors_total",
        &[("service", "member"), ("source", "dns")]
    ) >= 1.0));
    assert_eq!(instance_ids(&gw, "member"), want_two);
    let d = discovery(&gw);
    assert!(d["services"]["member"]["discovery"]["last_error"].is_string());
    assert!(
        gw.wait_for_log("keeping the last known instances", LOG_WAIT),
        "{}",
        gw.log()
    );

    // it answers again, now without the second address
    dns.set_a("member.shop.svc.cluster.local", &[Ipv4Addr::LOCALHOST]);
    dns.silent.store(false, Ordering::Relaxed);
    assert!(wait_until(T, || instance_ids(&gw, "member") == [want_a.clone()]));
    assert!(wait_until(T, || backend_name(&gw).as_deref() == Some("a")));
}

#[test]
fn srv_records_give_targets_ports_and_weights() {
    let dns = DnsServer::start();
    let a = Backend::start("a");
    let b = Backend::start("b");
    dns.set_a("node1.example", &[Ipv4Addr::LOCALHOST]);
    dns.set_srv(
        "_http._tcp.member.service.consul",
        &[
            (1, a.port(), "node1.example"),
            (3, b.port(), "node1.example"),
        ],
    );
    let gw = GatewayProcess::start(
        env!("CARGO_BIN_EXE_gateway"),
        &member_config(DnsDiscoveryConfig {
            srv: Some("_http._tcp.member.service.consul".into()),
            ip_version: IpVersion::V4,
            nameservers: vec![dns.addr.to_string()],
            min_interval: ms(200),
            max_interval: secs(2),
            ..DnsDiscoveryConfig::default()
        }),
    );
    assert!(
        wait_until(T, || instance_ids(&gw, "member").len() == 2),
        "{}",
        gw.log()
    );
    let d = discovery(&gw);
    let weights: Vec<u64> = d["services"]["member"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["weight"].as_u64().unwrap())
        .collect();
    let mut sorted = weights.clone();
    sorted.sort();
    assert_eq!(sorted, [1, 3]);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        if let Some(n) = backend_name(&gw) {
            seen.insert(n);
        }
    }
    assert_eq!(seen.len(), 2, "both SRV targets take traffic: {seen:?}");

    // b leaves the SRV set
    dns.set_srv(
        "_http._tcp.member.service.consul",
        &[(1, a.port(), "node1.example")],
    );
    let want = vec![format!("127.0.0.1:{}", a.port())];
    assert!(wait_until(T, || instance_ids(&gw, "member") == want));
    for _ in 0..10 {
        assert_eq!(backend_name(&gw).as_deref(), Some("a"));
    }
}

#[test]
fn a_name_without_records_empties_the_service_and_ready_says_so() {
    let dns = DnsServer::start();
    let gw = GatewayProcess::start(
        env!("CARGO_BIN_EXE_gateway"),
        &member_config(DnsDiscoveryConfig {
            host: Some("nothing.example".into()),
            port: Some(80),
            nameservers: vec![dns.addr.to_string()],
            min_interval: ms(200),
            ..DnsDiscoveryConfig::default()
        }),
    );
    assert!(wait_until(T, || discovery(&gw)["services"]["member"]
        ["discovery"]["refreshes"]
        .as_u64()
        .unwrap_or(0)
        >= 1));
    let (status, body) = testkit::http_get(&gw.addr(), "/x").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, body) = testkit::http_get(&gw.admin_addr(), "/ready").unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("member"), "{body}");
}

/// Queries the server receives over `window`.
fn queries_during(dns: &DnsServer, window: Duration) -> u64 {
    let before = dns.queries.load(Ordering::Relaxed);
    std::thread::sleep(window);
    dns.queries.load(Ordering::Relaxed) - before
}

#[test]
fn a_reload_keeps_one_loop_per_service_and_a_dropped_service_ends_its_loop() {
    let dns = DnsServer::start();
    let a = Backend::start("a");
    dns.set_a("member.example", &[Ipv4Addr::LOCALHOST]);
    let member = ServiceBuilder::dns(DnsDiscoveryConfig {
        host: Some("member.example".into()),
        port: Some(a.port()),
        ip_version: IpVersion::V4,
        nameservers: vec![dns.addr.to_string()],
        min_interval: ms(200),
        max_interval: ms(300),
        ..DnsDiscoveryConfig::default()
    });
    let fixed_only = GatewayConfigBuilder::new()
        .admin()
        .service("fixed", ServiceBuilder::instances([a.addr()]));
    let with_member = fixed_only.clone().service("member", member);
    let gw = GatewayProcess::start(
        env!("CARGO_BIN_EXE_gateway"),
        &with_member
            .clone()
            .route(RouteBuilder::to("member").prefix("/"))
            .yaml(),
    );
    assert!(wait_until(T, || backend_name(&gw).as_deref() == Some("a")));

    // one loop re-resolves about every 300 ms: ~5 queries in 1.5 s, never twice that
    let one_loop = queries_during(&dns, Duration::from_millis(1500));
    assert!((1..=8).contains(&one_loop), "{one_loop} queries");

    // a reload that keeps the service (only routes change) keeps that one loop
    let kept = with_member
        .route(RouteBuilder::to("fixed").prefix("/other"))
        .route(RouteBuilder::to("member").prefix("/"))
        .yaml();
    gw.rewrite_config(&kept);
    assert!(gw.wait_for_log("config reloaded", T), "{}", gw.log());
    let after_reload = queries_during(&dns, Duration::from_millis(1500));
    assert!(
        (1..=8).contains(&after_reload),
        "{after_reload} queries: a second loop?"
    );

    // a reload without the service: its loop ends and the queries stop
    let dropped = fixed_only
        .route(RouteBuilder::to("fixed").prefix("/"))
        .yaml();
    assert!(!dropped.contains("member.example"), "{dropped}");
    gw.rewrite_config(&dropped);
    assert!(
        wait_until(T, || gw.log_count("config reloaded") == 2),
        "{}",
        gw.log()
    );
    assert!(
        wait_until(T, || queries_during(&dns, Duration::from_millis(800)) == 0),
        "the loop of a removed service must end"
    );
    assert_eq!(backend_name(&gw).as_deref(), Some("a"));
}
