//! Discovery settings through `gateway check`: the documented examples in
//! config/reference.yaml compile, and each bad setting is refused with the key
//! path and the message a user will see.

use testkit::check_config;
use testkit::config::{
    secs, AdminConfig, DnsDiscoveryConfig, EurekaDiscoveryConfig, GatewayConfigBuilder,
    InstanceConfig, ListenerConfig, RegistryConfig, RegistryStore, RouteBuilder, ServiceBuilder,
};

const HEAD: &str = "listeners: [{address: \"127.0.0.1:18080\"}]\n";
const ROUTE: &str = "routes: [{match: {prefix: /}, service: s}]\n";

const ADMIN: &str = "127.0.0.1:19090";

/// A listener on a fixed port (`check` binds nothing) and a catch-all route to `s`.
fn base() -> GatewayConfigBuilder {
    GatewayConfigBuilder::new()
        .listeners(vec![ListenerConfig::new("127.0.0.1:18080")])
        .route(RouteBuilder::to("s").prefix("/"))
}

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
    let dns = |f: fn(&mut DnsDiscoveryConfig)| {
        let mut dns = DnsDiscoveryConfig::default();
        f(&mut dns);
        ServiceBuilder::dns(dns)
    };
    let eureka = |servers: &[&str]| {
        ServiceBuilder::eureka(EurekaDiscoveryConfig::new(
            servers.iter().map(|s| s.to_string()).collect(),
        ))
    };
    // (service `s`, whether the config has an admin listener, the message)
    let cases = [
        (
            dns(|d| d.host = Some("member.local".into())),
            false,
            "services.s.discovery.port: `host` needs a `port`",
        ),
        (
            dns(|d| {
                d.srv = Some("_http._tcp.x".into());
                d.port = Some(80);
            }),
            false,
            "services.s.discovery.port: SRV records carry their ports",
        ),
        (
            dns(|d| {
                d.host = Some("a.local".into());
                d.port = Some(80);
                d.nameservers = vec!["x".into()];
            }),
            false,
            "services.s.discovery.nameservers[0]: \"x\" is not an ip:port address",
        ),
        (
            dns(|d| {
                d.host = Some("a.local".into());
                d.port = Some(80);
                d.min_interval = secs(10);
                d.max_interval = secs(1);
            }),
            false,
            "services.s.discovery: min_interval must be at least 100ms and at most max_interval",
        ),
        (
            eureka(&[]),
            false,
            "services.s.discovery.servers: at least one Eureka server URL",
        ),
        (
            eureka(&["eureka:8761"]),
            false,
            "services.s.discovery.servers[0]: \"eureka:8761\" is not an http(s) URL",
        ),
        (
            ServiceBuilder::registry(),
            false,
            "services.s.discovery: the registry lives on the admin listener",
        ),
        (
            ServiceBuilder::registry()
                .with(|s| s.instances = Some(vec![InstanceConfig::Address("127.0.0.1:1".into())])),
            true,
            "services.s: give either `instances` or `discovery`, not both",
        ),
    ];
    for (service, with_admin, want) in cases {
        let mut config = base().service("s", service);
        if with_admin {
            config = config.admin_config(AdminConfig::new(ADMIN));
        }
        let yaml = config.yaml();
        let out = check(&yaml);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(!out.success, "{yaml} should be refused");
        assert!(all.contains(want), "for {yaml}\nwant: {want}\ngot: {all}");
    }

    let redis_without_url = base()
        .admin_with(|a| {
            a.address = ADMIN.into();
            a.registry = Some(RegistryConfig {
                store: RegistryStore::Redis,
                ..RegistryConfig::default()
            });
        })
        .service("s", ServiceBuilder::registry())
        .yaml();
    let out = check(&redis_without_url);
    assert!(!out.success);
    assert!(
        format!("{}{}", out.stdout, out.stderr)
            .contains("admin.registry.redis_url: `store: redis` needs `redis_url`"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // a misspelt key: the text is the input here
    let unknown_key =
        format!("{HEAD}services: {{s: {{discovery: {{type: dns, hots: x}}}}}}\n{ROUTE}");
    let out = check(&unknown_key);
    assert!(!out.success);
    assert!(format!("{}{}", out.stdout, out.stderr).contains("hots"));
}
