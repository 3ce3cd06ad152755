//! Discovery settings through `gateway check`: the documented examples in
//! config/reference.yaml compile, and each bad setting is refused with the key
//! path and the message a user will see.

use testkit::check_config;

const HEAD: &str = "listeners: [{address: \"127.0.0.1:18080\"}]\n";
const ROUTE: &str = "routes: [{match: {prefix: /}, service: s}]\n";

fn check(yaml: &str) -> testkit::CheckOutput {
    check_config(env!("CARGO_BIN_EXE_gateway"), yaml)
}

/// The config lines of the delimited discovery block of config/reference.yaml.
fn reference_block() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/reference.yaml"
    ))
    .unwrap();
    let start = text
        .find("# === discovery:")
        .expect("discovery section begins");
    let end = text[start..]
        .find("# === discovery ===")
        .expect("discovery section ends");
    text[start..start + end]
        .lines()
        .filter(|l| l.starts_with("# ") && !l.starts_with("# ==="))
        .map(|l| &l[2..])
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_reference_discovery_examples_compile() {
    let block = reference_block();
    assert!(block.contains("type: eureka") && block.contains("type: registry"));
    let yaml =
        format!("{HEAD}{block}\nroutes: [{{match: {{prefix: /}}, service: member-registry}}]\n");
    let out = check(&yaml);
    assert!(out.success, "{yaml}\n{}{}", out.stdout, out.stderr);
}

#[test]
fn bad_discovery_settings_name_the_key_and_the_fix() {
    let admin = "admin: {address: \"127.0.0.1:19090\"}\n";
    let cases: &[(&str, &str)] = &[
        (
            "services: {s: {discovery: {type: dns, host: member.local}}}\n",
            "services.s.discovery.port: `host` needs a `port`",
        ),
        (
            "services: {s: {discovery: {type: dns, srv: _http._tcp.x, port: 80}}}\n",
            "services.s.discovery.port: SRV records carry their ports",
        ),
        (
            "services: {s: {discovery: {type: dns, host: a.local, port: 80, nameservers: [\"x\"]}}}\n",
            "services.s.discovery.nameservers[0]: \"x\" is not an ip:port address",
        ),
        (
            "services: {s: {discovery: {type: dns, host: a.local, port: 80, min_interval: 10s, max_interval: 1s}}}\n",
            "services.s.discovery: min_interval must be at least 100ms and at most max_interval",
        ),
        (
            "services: {s: {discovery: {type: eureka, servers: []}}}\n",
            "services.s.discovery.servers: at least one Eureka server URL",
        ),
        (
            "services: {s: {discovery: {type: eureka, servers: [\"eureka:8761\"]}}}\n",
            "services.s.discovery.servers[0]: \"eureka:8761\" is not an http(s) URL",
        ),
        (
            "services: {s: {discovery: {type: registry}}}\n",
            "services.s.discovery: the registry lives on the admin listener",
        ),
        (
            "services: {s: {instances: [\"127.0.0.1:1\"], discovery: {type: registry}}}\n",
            "services.s: give either `instances` or `discovery`, not both",
        ),
    ];
    for (services, want) in cases {
        let with_admin = if services.contains("type: registry}}}") && !want.contains("admin") {
            admin
        } else {
            ""
        };
        let yaml = format!("{HEAD}{with_admin}{services}{ROUTE}");
        let out = check(&yaml);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(!out.success, "{yaml} should be refused");
        assert!(
            all.contains(want),
            "for {services}\nwant: {want}\ngot: {all}"
        );
    }

    let redis_without_url = format!(
        "{HEAD}admin: {{address: \"127.0.0.1:19090\", registry: {{store: redis}}}}\n\
         services: {{s: {{discovery: {{type: registry}}}}}}\n{ROUTE}"
    );
    let out = check(&redis_without_url);
    assert!(!out.success);
    assert!(
        format!("{}{}", out.stdout, out.stderr)
            .contains("admin.registry.redis_url: `store: redis` needs `redis_url`"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let unknown_key =
        format!("{HEAD}services: {{s: {{discovery: {{type: dns, hots: x}}}}}}\n{ROUTE}");
    let out = check(&unknown_key);
    assert!(!out.success);
    assert!(format!("{}{}", out.stdout, out.stderr).contains("hots"));
}
