//! Load balancing through the real binary: each algorithm's distribution over
//! real backends (weights, least connections and P2C with a slow instance,
//! consistent hashing by header, cookie and client IP, random).

use std::collections::HashMap;
use std::time::Duration;

use testkit::config::{Algorithm, GatewayConfigBuilder, HashOn, ServiceBuilder};
use testkit::{client, tally, Backend, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// One service `s` over `backends` (with weights), a catch-all route to it.
fn config(
    backends: &[(&Backend, u32)],
    lb: impl FnOnce(ServiceBuilder) -> ServiceBuilder,
) -> String {
    let instances = backends.iter().map(|(b, w)| (b.addr(), *w));
    GatewayConfigBuilder::in_front_of("s", lb(ServiceBuilder::weighted(instances))).yaml()
}

/// The `algorithm` of a balancer section as the gateway parses it.
fn parsed_algorithm(text: &str) -> Algorithm {
    let yaml = format!("services: {{s: {{instances: [\"127.0.0.1:1\"], load_balancer: {text}}}}}");
    match gateway::config::parse(&yaml) {
        Ok(config) => config.services["s"].load_balancer.algorithm,
        Err(e) => panic!("{text}: {e:?}"),
    }
}

/// The alias spellings are still accepted (the tests above configure by type).
#[test]
fn weighted_and_p2c_are_spellings_of_their_algorithms() {
    for (text, want) in [
        ("{algorithm: weighted}", Algorithm::RoundRobin),
        ("{algorithm: weighted_round_robin}", Algorithm::RoundRobin),
        ("{algorithm: p2c}", Algorithm::PowerOfTwoChoices),
    ] {
        assert_eq!(parsed_algorithm(text), want, "{text}");
    }
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let gw = GatewayProcess::start(
        BIN,
        &config(&[(&a, 1), (&b, 1), (&c, 1)], |s| {
            s.algorithm(Algorithm::RoundRobin)
        }),
    );
    let t = tally(&gw, "/x", 30, |_, r| r).await;
    assert_eq!(t["a"], 10, "{t:?}");
    assert_eq!(t["b"], 10, "{t:?}");
    assert_eq!(t["c"], 10, "{t:?}");
}

#[tokio::test]
async fn weighted_round_robin_follows_weights() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let gw = GatewayProcess::start(
        BIN,
        &config(&[(&a, 1), (&b, 2), (&c, 5)], |s| {
            s.algorithm(Algorithm::RoundRobin)
        }),
    );
    let t = tally(&gw, "/x", 80, |_, r| r).await;
    assert_eq!((t["a"], t["b"], t["c"]), (10, 20, 50), "{t:?}");
}

#[tokio::test]
async fn random_reaches_every_instance() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let gw = GatewayProcess::start(
        BIN,
        &config(&[(&a, 1), (&b, 1), (&c, 1)], |s| {
            s.algorithm(Algorithm::Random)
        }),
    );
    let t = tally(&gw, "/x", 300, |_, r| r).await;
    for name in ["a", "b", "c"] {
        // mean 100, sd ~8: outside 50..150 is a broken balancer, not bad luck
        let n = t.get(name).copied().unwrap_or(0);
        assert!((50..150).contains(&n), "{t:?}");
    }
}

/// With `slow` holding a request, fast sequential requests all go to `fast`.
async fn avoids_the_busy_instance(algorithm: Algorithm) {
    let slow = Backend::start("slow");
    let fast = Backend::start("fast");
    slow.set_delay(Duration::from_secs(8));
    let gw = GatewayProcess::start(
        BIN,
        &config(&[(&slow, 1), (&fast, 1)], |s| s.algorithm(algorithm)),
    );
    let c = client();
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut task = tokio::spawn(c.get(gw.url("/x")).send());
        // a fast answer completes at once; the slow instance's answer is left running
        match tokio::time::timeout(Duration::from_secs(1), &mut task).await {
            Ok(resp) => assert_eq!(resp.unwrap().unwrap().status(), 200),
            Err(_) => held.push(task),
        }
    }
    assert!(testkit::wait_until(Duration::from_secs(5), || {
        slow.requests() + fast.requests() == 40
    }));
    // ties are broken at random, so the slow instance got exactly one request
    // before it was busy; everything after that went to the idle one
    assert_eq!(
        slow.requests(),
        1,
        "{algorithm:?}: slow got {}",
        slow.requests()
    );
    assert_eq!(fast.requests(), 39);
    drop(held);
}

#[tokio::test]
async fn least_connections_avoids_a_slow_instance() {
    avoids_the_busy_instance(Algorithm::LeastConnections).await;
}

#[tokio::test]
async fn power_of_two_choices_avoids_a_slow_instance() {
    avoids_the_busy_instance(Algorithm::PowerOfTwoChoices).await;
}

#[tokio::test]
async fn consistent_hash_on_a_header_is_sticky() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let gw = GatewayProcess::start(
        BIN,
        &config(&[(&a, 1), (&b, 1), (&c, 1)], |s| {
            s.hash_on(HashOn::Header("x-user".into()))
        }),
    );
    let cl = client();
    let mut owner: HashMap<String, String> = HashMap::new();
    for round in 0..4 {
        for user in 0..30 {
            let key = format!("user-{user}");
            let resp = cl
                .get(gw.url("/x"))
                .header("x-user", &key)
                .send()
                .await
                .unwrap();
            let got = resp.headers()["x-backend"].to_str().unwrap().to_string();
            let first = owner.entry(key.clone()).or_insert_with(|| got.clone());
            assert_eq!(*first, got, "{key} moved in round {round}");
        }
    }
    let used: std::collections::HashSet<_> = owner.values().collect();
    assert_eq!(
        used.len(),
        3,
        "30 keys spread over all instances: {owner:?}"
    );

    // requests without the key are spread round robin
    let t = tally(&gw, "/x", 30, |_, r| r).await;
    assert_eq!(t.len(), 3, "{t:?}");
}

#[tokio::test]
async fn consistent_hash_on_a_cookie_is_sticky() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let gw = GatewayProcess::start(
        BIN,
        &config(&[(&a, 1), (&b, 1)], |s| {
            s.hash_on(HashOn::Cookie("session".into()))
        }),
    );
    let mut owners = HashMap::new();
    for s in 0..20 {
        let t = tally(&gw, "/x", 5, |_, r| {
            r.header("cookie", format!("theme=dark; session=s{s}; lang=en"))
        })
        .await;
        assert_eq!(t.len(), 1, "session s{s} stuck to one instance: {t:?}");
        let name = t.into_keys().next().unwrap();
        *owners.entry(name).or_insert(0) += 1;
    }
    assert_eq!(owners.len(), 2, "sessions spread: {owners:?}");
}

#[tokio::test]
async fn consistent_hash_on_client_ip_is_sticky() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let gw = GatewayProcess::start(
        BIN,
        &config(&[(&a, 1), (&b, 1), (&c, 1)], |s| {
            s.hash_on(HashOn::ClientIp)
        }),
    );
    // every request comes from 127.0.0.1
    let t = tally(&gw, "/x", 20, |_, r| r).await;
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t.values().sum::<usize>(), 20);
}
