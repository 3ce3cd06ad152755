//! Recovery of instances through the real binary: a passing health check ends a
//! passive ejection; panic mode tries a service whose instances are all out; an
//! instance killed and restarted on its port under continuous load takes traffic
//! again at once (alone, or beside a healthy one). The restart tests print how long
//! recovery took and only bound it generously.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::config::{
    ms, secs, GatewayConfigBuilder, HealthCheckConfig, RouteBuilder, ServiceBuilder,
};
use testkit::{client, wait_until, wait_until_async, Backend, GatewayProcess};

/// How long a log line may trail the state a test waited for (the log is written
/// beside a metric or a state change, not before it).
const LOG_WAIT: Duration = Duration::from_secs(5);

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const T: Duration = Duration::from_secs(10);

fn start(service: ServiceBuilder, route: RouteBuilder) -> GatewayProcess {
    let yaml = GatewayConfigBuilder::new()
        .admin()
        .service("s", service)
        .route(route)
        .yaml();
    GatewayProcess::start(BIN, &yaml)
}

async fn get(gw: &GatewayProcess) -> u16 {
    client()
        .get(gw.url("/x"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn discovery(gw: &GatewayProcess) -> serde_json::Value {
    let (_, body) = testkit::http_get(&gw.admin_addr(), "/discovery").unwrap();
    serde_json::from_str(&body).unwrap()
}

/// Checked every 100 ms, out after `unhealthy_threshold` failed checks.
fn checked(instances: &[&Backend], unhealthy_threshold: u32) -> ServiceBuilder {
    ServiceBuilder::instances(instances.iter().map(|b| b.addr())).health_check(HealthCheckConfig {
        interval: ms(100),
        timeout: ms(500),
        unhealthy_threshold,
        ..HealthCheckConfig::default()
    })
}

/// Requests one after another on one client until stopped, each logged with its
/// end time and status (0: no answer).
struct Load {
    log: Arc<Mutex<Vec<(Instant, u16)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(url: String) -> Self {
        let log: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (log, stop) = (log.clone(), stop.clone());
            async move {
                let c = client();
                while !stop.load(Ordering::SeqCst) {
                    let status = match c.get(&url).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    log.lock().unwrap().push((Instant::now(), status));
                }
            }
        });
        Load { log, stop, task }
    }

    async fn stop(self) -> Vec<(Instant, u16)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// Kill `a` while `load` runs and wait until the gateway has it ejected and
/// unhealthy; restart it on its port. Returns it and when it was back.
fn restart(gw: &GatewayProcess, a: Backend) -> (Backend, Instant) {
    let (name, port, id) = (a.name().to_string(), a.port(), a.addr());
    drop(a);
    let out = wait_until(T, || {
        gw.metric("gateway_upstream_ejections_total", &[("service", "s")]) >= 1.0
            && gw.metric(
                "gateway_upstream_healthy",
                &[("service", "s"), ("instance", &id)],
            ) == 0.0
    });
    assert!(out, "the killed instance is ejected and unhealthy");
    (Backend::start_on(&name, port), Instant::now())
}

#[tokio::test]
async fn a_passing_health_check_ends_a_passive_ejection() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let gw = start(
        ServiceBuilder::instances([a.addr(), b.addr()])
            .passive_health(2, secs(60))
            .health_check(HealthCheckConfig {
                interval: ms(100),
                ..HealthCheckConfig::default()
            }),
        RouteBuilder::to("s").retries(0),
    );
    b.set_status(Some(503));
    let ejected = wait_until_async(T, || async {
        get(&gw).await;
        gw.metric("gateway_upstream_ejections_total", &[("service", "s")]) == 1.0
    })
    .await;
    assert!(ejected);
    // b answers again (and its /health always did): the next check ends the 60 s ejection
    b.set_status(None);
    b.reset_counts();
    let back = wait_until_async(Duration::from_secs(5), || async {
        get(&gw).await;
        b.requests() > 0
    })
    .await;
    assert!(back, "b sat out its ejection although its checks pass");
    assert!(
        gw.wait_for_log("passive ejection ended", LOG_WAIT),
        "{}",
        gw.log()
    );
}

#[tokio::test]
async fn panic_mode_tries_a_service_whose_instances_are_all_ejected() {
    let a = Backend::start("a");
    a.set_status(Some(503));
    let gw = start(
        ServiceBuilder::instances([a.addr()]).passive_health(1, secs(60)),
        RouteBuilder::to("s").retries(0),
    );
    assert_eq!(get(&gw).await, 503);
    assert_eq!(
        gw.metric("gateway_upstream_ejections_total", &[("service", "s")]),
        1.0
    );
    a.set_status(None);
    for _ in 0..3 {
        assert_eq!(get(&gw).await, 200, "tried although ejected");
    }
    assert_eq!(
        gw.metric("gateway_upstream_panic_total", &[("service", "s")]),
        3.0
    );
    let inst = &discovery(&gw)["services"]["s"]["instances"][0];
    assert_eq!(inst["ejected"], true, "{inst}");
}

/// One instance, killed and restarted on its port while requests keep coming: it
/// takes traffic again as soon as it accepts connections (panic mode while it is out;
/// the next passing check ends its ejection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_instance_restarted_under_load_is_routed_to_again_at_once() {
    let a = Backend::start("a");
    let gw = start(checked(&[&a], 1), RouteBuilder::to("s").retries(0));
    let load = Load::start(gw.url("/x"));
    assert!(wait_until(T, || a.requests() >= 20));
    let (a, back_at) = restart(&gw, a);
    let served = wait_until(T, || a.requests() >= 50);
    let log = load.stop().await;
    assert!(served, "the restarted instance got no traffic");
    let after: Vec<_> = log.iter().filter(|(t, _)| *t >= back_at).collect();
    let first_ok = after
        .iter()
        .find(|(_, s)| *s == 200)
        .map(|(t, _)| t.duration_since(back_at))
        .expect("a 200 after the restart");
    let last_error = after
        .iter()
        .filter(|(_, s)| *s != 200)
        .map(|(t, _)| t.duration_since(back_at))
        .max()
        .unwrap_or_default();
    let failed = log.iter().filter(|(_, s)| *s != 200).count();
    let unavailable = log.iter().filter(|(_, s)| *s == 503).count();
    println!(
        "single instance restarted under load: first 200 {first_ok:?} after it was back, \
         last error {last_error:?} after; {failed} failed requests in all, {unavailable} of them 503"
    );
    assert!(
        first_ok < Duration::from_secs(3),
        "first 200 only after {first_ok:?}"
    );
    assert!(
        last_error < Duration::from_secs(3),
        "errors until {last_error:?}"
    );
    assert_eq!(unavailable, 0, "never refused: tried in panic mode");
    assert!(gw.metric("gateway_upstream_panic_total", &[("service", "s")]) >= 1.0);
}

/// Beside a healthy instance (no panic mode): clients see no error at all (a connect
/// error is retried on the other), and the restarted one takes traffic again once
/// its checks pass, not after its ejection time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_restarted_beside_a_healthy_one_is_back_after_its_checks() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    // ejected by its first connect error, which comes before its second failed check
    let gw = start(
        checked(&[&a, &b], 2).passive_health(1, secs(60)),
        RouteBuilder::to("s"),
    );
    let load = Load::start(gw.url("/x"));
    assert!(wait_until(T, || a.requests() >= 20));
    let (a, back_at) = restart(&gw, a);
    let served = wait_until(T, || a.requests() >= 1);
    let back_after = back_at.elapsed();
    let log = load.stop().await;
    assert!(served, "the restarted instance got no traffic");
    let failed = log.iter().filter(|(_, s)| *s != 200).count();
    println!("instance restarted beside a healthy one: traffic again {back_after:?} after it was back; {failed} failed requests");
    assert_eq!(failed, 0, "the healthy instance took every request");
    assert!(
        back_after < Duration::from_secs(5),
        "back only after {back_after:?}"
    );
}
