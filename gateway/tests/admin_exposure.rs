//! Admin API exposure rules against the real binary: an admin listener reachable
//! from other hosts with open registry writes is refused by `check`, `run` and a
//! reload (unless explicitly allowed, then warned about); reads can be protected by
//! the token; registrations are held to the registry's caps, each refusal a JSON 4xx
//! counted in `gateway_admin_refusals_total{reason}`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::config::{
    AdminConfig, GatewayConfigBuilder, RegistryConfig, RegistryLimitsConfig, ServiceBuilder,
    ADMIN_ADDRESS,
};
use testkit::{check_config, wait_until, Backend, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const TOKEN: &str = "admin-test-token-0123456789abcdef";
const T: Duration = Duration::from_secs(10);

fn config(admin: AdminConfig) -> String {
    GatewayConfigBuilder::in_front_of("member", ServiceBuilder::registry())
        .admin_config(admin)
        .yaml()
}

/// An admin section on `address`, changed by `f`.
fn admin(address: &str, f: impl FnOnce(&mut AdminConfig)) -> AdminConfig {
    let mut admin = AdminConfig::new(address);
    f(&mut admin);
    admin
}

fn token(a: &mut AdminConfig) {
    a.token = Some(TOKEN.into());
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// PUT a registration; the status and the JSON body.
fn register(gw: &GatewayProcess, service: &str, id: &str, body: Value) -> (u16, Value) {
    let resp = http()
        .put(gw.admin_url(&format!("/registry/services/{service}/instances/{id}")))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn instance(port: u16) -> Value {
    json!({"address": "127.0.0.1", "port": port, "ttl": "60s"})
}

/// `config` for `gateway check` (which binds nothing, so any port will do).
fn check(admin: AdminConfig) -> testkit::CheckOutput {
    check_config(BIN, &config(admin).replace("$HTTP_PORT", "8080"))
}

#[test]
fn check_refuses_open_registry_on_a_reachable_admin_address() {
    let open = check(AdminConfig::new("0.0.0.0:9999"));
    assert!(!open.success, "{open:?}");
    let said = format!("{}{}", open.stdout, open.stderr);
    assert!(said.contains("admin.token"), "{said}");
    assert!(said.contains("allow_unauthenticated_writes"), "{said}");
    assert!(said.contains("127.0.0.1"), "the fix is named: {said}");

    for ok in [
        AdminConfig::new("127.0.0.1:9999"),
        AdminConfig::new("[::1]:9999"),
        admin("0.0.0.0:9999", token),
        admin("0.0.0.0:9999", |a| a.allow_unauthenticated_writes = true),
    ] {
        let out = check(ok.clone());
        assert!(out.success, "{ok:?}: {out:?}");
    }
    let empty = check(admin("0.0.0.0:9999", |a| a.token = Some(" ".into())));
    assert!(!empty.success && format!("{empty:?}").contains("admin.token"));
    let reads = check(admin("127.0.0.1:9999", |a| a.protect_reads = true));
    assert!(
        !reads.success && format!("{reads:?}").contains("admin.protect_reads"),
        "{reads:?}"
    );
}

#[test]
fn run_refuses_open_registry_on_a_reachable_admin_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let port = testkit::free_port();
    let admin = testkit::free_port();
    let yaml = config(AdminConfig::new(format!("0.0.0.0:{admin}")))
        .replace("$HTTP_PORT", &port.to_string());
    std::fs::write(&path, yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > T {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the gateway started with an open registry on 0.0.0.0:{admin}");
    };
    assert!(!status.success());
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("admin.token"), "{said}");
}

#[test]
fn reload_refuses_open_registry_and_the_opt_out_warns_every_time() {
    let gw = GatewayProcess::start(BIN, &config(AdminConfig::new(ADMIN_ADDRESS)));
    let failures = || gw.metric("gateway_config_reloads_total", &[("result", "failure")]);
    // the same port on every interface, no token: refused, the old config serves on
    gw.rewrite_config(&config(AdminConfig::new("0.0.0.0:$ADMIN_PORT")));
    assert!(wait_until(T, || failures() >= 1.0), "{}", gw.log());
    assert!(gw.wait_for_log("admin.token", T), "{}", gw.log());

    // the explicit opt-out is accepted, and said loudly at start and at each reload
    drop(gw);
    let open = admin("0.0.0.0:$ADMIN_PORT", |a| {
        a.allow_unauthenticated_writes = true
    });
    let gw = GatewayProcess::start(BIN, &config(open.clone()));
    let warning = "WITHOUT a token";
    assert!(gw.wait_for_log(warning, T), "{}", gw.log());
    let b = Backend::start("b");
    let resp = http()
        .put(gw.admin_url("/registry/services/member/instances/b"))
        .json(&instance(b.port()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201, "writes are open as asked");
    let before = gw.log_count(warning);
    let mut changed = config(open);
    changed.push('\n');
    changed.push_str("# touched\n");
    gw.rewrite_config(&changed);
    assert!(
        wait_until(T, || gw.log_count(warning) > before),
        "warned again at the reload: {}",
        gw.log()
    );
}

#[test]
fn protected_reads_need_the_token_and_probes_stay_open() {
    let gw = GatewayProcess::start(
        BIN,
        &config(admin(ADMIN_ADDRESS, |a| {
            token(a);
            a.protect_reads = true;
        })),
    );
    for path in [
        "/config",
        "/registry/services",
        "/registry/services/member",
        "/discovery",
    ] {
        let anon = http().get(gw.admin_url(path)).send().unwrap();
        assert_eq!(anon.status(), 401, "{path}");
        let body: Value = anon.json().unwrap();
        assert_eq!(body["error"], "unauthorized", "{path}");
        let wrong = http()
            .get(gw.admin_url(path))
            .bearer_auth("not-the-token")
            .send()
            .unwrap();
        assert_eq!(wrong.status(), 403, "{path}");
        let ok = http()
            .get(gw.admin_url(path))
            .bearer_auth(TOKEN)
            .send()
            .unwrap();
        assert_eq!(ok.status(), 200, "{path}");
    }
    for path in ["/metrics", "/health"] {
        assert_eq!(
            http().get(gw.admin_url(path)).send().unwrap().status(),
            200,
            "{path}"
        );
    }
    // /ready answers without a token (503 here: no instance registered yet)
    assert_eq!(
        http().get(gw.admin_url("/ready")).send().unwrap().status(),
        503
    );
    assert!(
        gw.metric(
            "gateway_admin_refusals_total",
            &[("reason", "unauthorized")]
        ) >= 4.0
    );
    assert!(gw.metric("gateway_admin_refusals_total", &[("reason", "forbidden")]) >= 4.0);
}

#[test]
fn registry_caps_refuse_with_a_json_4xx_and_a_metric() {
    let gw = GatewayProcess::start(
        BIN,
        &config(admin(ADMIN_ADDRESS, |a| {
            token(a);
            a.registry = Some(RegistryConfig {
                limits: RegistryLimitsConfig {
                    max_services: 2,
                    max_instances_per_service: 2,
                    max_metadata_bytes: 64,
                    allowed_networks: vec!["127.0.0.0/8".into()],
                },
                ..RegistryConfig::default()
            });
        })),
    );
    let refused = |reason: &str| gw.metric("gateway_admin_refusals_total", &[("reason", reason)]);

    assert_eq!(register(&gw, "member", "a", instance(1001)).0, 201);
    assert_eq!(register(&gw, "member", "b", instance(1002)).0, 201);
    let (status, body) = register(&gw, "member", "c", instance(1003));
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("too_many_instances")),
        "{body}"
    );
    assert_eq!(
        register(&gw, "member", "a", instance(1001)).0,
        200,
        "a renewal at the cap"
    );

    assert_eq!(register(&gw, "other", "a", instance(1004)).0, 201);
    let (status, body) = register(&gw, "third", "a", instance(1005));
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("too_many_services")),
        "{body}"
    );

    let mut fat = instance(1006);
    fat["metadata"] = json!({"blob": "x".repeat(100)});
    let (status, body) = register(&gw, "other", "fat", fat);
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("metadata_too_large")),
        "{body}"
    );

    let mut far = instance(1007);
    far["address"] = json!("10.1.2.3");
    let (status, body) = register(&gw, "other", "far", far);
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("address_not_allowed")),
        "{body}"
    );

    // a slot freed by a DELETE can be taken again
    let del = http()
        .delete(gw.admin_url("/registry/services/member/instances/b"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(register(&gw, "member", "c", instance(1003)).0, 201);

    for reason in [
        "too_many_instances",
        "too_many_services",
        "metadata_too_large",
        "address_not_allowed",
    ] {
        assert_eq!(refused(reason), 1.0, "{reason}");
    }
    let listed: Value = http()
        .get(gw.admin_url("/registry/services"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        listed["services"]["member"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(listed["services"].get("third").is_none());
}

#[test]
fn default_caps_hold_without_a_limits_section() {
    let gw = GatewayProcess::start(BIN, &config(admin(ADMIN_ADDRESS, token)));
    for i in 0..256u16 {
        assert_eq!(
            register(&gw, "member", &format!("i{i}"), instance(2000 + i)).0,
            201
        );
    }
    let (status, body) = register(&gw, "member", "one-too-many", instance(4000));
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("too_many_instances")),
        "{body}"
    );
    let mut fat = instance(4001);
    fat["metadata"] = json!({"blob": "x".repeat(5000)});
    assert_eq!(register(&gw, "other", "fat", fat).0, 413);
}

/// Kills the gateway a test spawned itself, also when the test fails.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_token_can_come_from_the_environment() {
    const VAR: &str = "GATEWAY_TEST_ADMIN_TOKEN";
    let from_env = |a: &mut AdminConfig| a.token_env = Some(VAR.into());

    // `check` (no such variable in this test's environment): one error, naming it
    let unset = check(admin("0.0.0.0:9999", from_env));
    let said = format!("{unset:?}");
    assert!(!unset.success, "{said}");
    assert!(
        said.contains("admin.token_env") && said.contains(VAR),
        "{said}"
    );
    assert!(
        !said.contains("allow_unauthenticated_writes"),
        "reported once: {said}"
    );
    let both = check(admin("0.0.0.0:9999", |a| {
        from_env(a);
        token(a);
    }));
    assert!(
        !both.success && format!("{both:?}").contains("not both"),
        "{both:?}"
    );

    // `run` with the variable set: writes need that token
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let admin_port = testkit::free_port();
    let yaml = config(admin(&format!("0.0.0.0:{admin_port}"), from_env))
        .replace("$HTTP_PORT", &testkit::free_port().to_string());
    std::fs::write(&path, yaml).unwrap();
    let _gw = Spawned(
        Command::new(BIN)
            .args(["run", "-c"])
            .arg(&path)
            .env(VAR, TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = |p: &str| format!("http://127.0.0.1:{admin_port}{p}");
    assert!(
        wait_until(T, || http().get(url("/health")).send().is_ok()),
        "the admin API did not come up"
    );
    let put = |token: Option<&str>| {
        let req = http()
            .put(url("/registry/services/member/instances/m1"))
            .json(&instance(testkit::free_port()));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
        .send()
        .unwrap()
        .status()
        .as_u16()
    };
    assert_eq!(put(None), 401);
    assert_eq!(put(Some("not-the-token")), 403);
    let ok = put(Some(TOKEN));
    assert!((200..300).contains(&ok), "{ok}");
}
