//! Load balancing: choose one available instance of a service's current set.
//!
//! All algorithms skip unavailable instances (failed health check or passively
//! ejected) and instances the request already tried, so a retry lands elsewhere
//! whenever another instance exists; in panic mode (no instance available) they
//! choose among all. Nothing here locks or allocates.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::Rng;

use super::hash::mix;
use super::instance::Instance;
use super::policy::Balance;

/// A service's instances at one moment, with the weighted round-robin schedule
/// precomputed (smooth weighted round robin, as nginx does it).
#[derive(Debug, Default)]
pub struct InstanceSet {
    pub instances: Vec<Arc<Instance>>,
    schedule: Vec<u32>,
}

/// Longest schedule we precompute; beyond it weights are scaled down.
const MAX_SCHEDULE: u64 = 4096;

impl InstanceSet {
    pub fn new(instances: Vec<Arc<Instance>>) -> Self {
        let schedule = smooth_wrr_schedule(&instances);
        Self {
            instances,
            schedule,
        }
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }
}

fn smooth_wrr_schedule(instances: &[Arc<Instance>]) -> Vec<u32> {
    if instances.is_empty() {
        return Vec::new();
    }
    let total: u64 = instances.iter().map(|i| u64::from(i.weight)).sum();
    let scale = total.div_ceil(MAX_SCHEDULE).max(1);
    let weights: Vec<i64> = instances
        .iter()
        .map(|i| (u64::from(i.weight) / scale).max(1) as i64)
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (k, w) in weights.iter().enumerate() {
            current[k] += w;
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

/// What a request brings to the choice.
pub struct PickInput<'a> {
    /// Hash of the consistent-hash key, when the route's service uses one and the request has it.
    pub key: Option<u64>,
    /// Instances this request already tried.
    pub exclude: &'a [Arc<str>],
    pub now_ms: u64,
    /// Panic mode: choose among every instance, available or not (no instance is).
    pub panic: bool,
}

impl PickInput<'_> {
    fn usable(&self, i: &Instance) -> bool {
        (self.panic || i.is_available(self.now_ms)) && !self.exclude.iter().any(|e| **e == *i.id)
    }
}

/// Choose an instance; `None` when no instance is available.
pub fn pick(
    balance: &Balance,
    set: &InstanceSet,
    cursor: &AtomicUsize,
    input: &PickInput<'_>,
) -> Option<Arc<Instance>> {
    if set.is_empty() {
        return None;
    }
    match balance {
        Balance::RoundRobin => round_robin(set, cursor, input),
        Balance::Random => random(set, input),
        Balance::LeastConnections => least_connections(set, input),
        Balance::PowerOfTwoChoices => p2c(set, input),
        Balance::ConsistentHash(_) => match input.key {
            Some(key) => rendezvous(set, key, input),
            None => round_robin(set, cursor, input),
        },
    }
}

fn round_robin(
    set: &InstanceSet,
    cursor: &AtomicUsize,
    input: &PickInput<'_>,
) -> Option<Arc<Instance>> {
    let n = set.schedule.len();
    let start = cursor.fetch_add(1, Ordering::Relaxed);
    for k in 0..n {
        let idx = set.schedule[(start.wrapping_add(k)) % n] as usize;
        let inst = &set.instances[idx];
        if input.usable(inst) {
            return Some(inst.clone());
        }
    }
    None
}

fn random(set: &InstanceSet, input: &PickInput<'_>) -> Option<Arc<Instance>> {
    let n = set.instances.len();
    let start = rand::rng().random_range(0..n);
    (0..n)
        .map(|k| &set.instances[(start + k) % n])
        .find(|i| input.usable(i))
        .cloned()
}

/// Load relative to weight, compared without division: a/wa < b/wb <=> a*wb < b*wa.
fn lighter(a: &Instance, b: &Instance) -> bool {
    (a.inflight() as u64) * u64::from(b.weight) < (b.inflight() as u64) * u64::from(a.weight)
}

fn least_connections(set: &InstanceSet, input: &PickInput<'_>) -> Option<Arc<Instance>> {
    // start at a random offset so ties do not all go to the first instance
    let n = set.instances.len();
    let start = rand::rng().random_range(0..n);
    let mut best: Option<&Arc<Instance>> = None;
    for k in 0..n {
        let inst = &set.instances[(start + k) % n];
        if !input.usable(inst) {
            continue;
        }
        if best.is_none_or(|b| lighter(inst, b)) {
            best = Some(inst);
        }
    }
    best.cloned()
}

fn p2c(set: &InstanceSet, input: &PickInput<'_>) -> Option<Arc<Instance>> {
    let n = set.instances.len();
    let mut rng = rand::rng();
    let a = rng.random_range(0..n);
    let b = if n > 1 {
        (a + rng.random_range(1..n)) % n
    } else {
        a
    };
    let (ia, ib) = (&set.instances[a], &set.instances[b]);
    match (input.usable(ia), input.usable(ib)) {
        (true, true) => Some(if lighter(ib, ia) {
            ib.clone()
        } else {
            ia.clone()
        }),
        (true, false) => Some(ia.clone()),
        (false, true) => Some(ib.clone()),
        (false, false) => least_connections(set, input),
    }
}

/// Weighted rendezvous hashing: the instance with the highest score for this key
/// wins; removing an instance only moves the keys it owned.
fn rendezvous(set: &InstanceSet, key: u64, input: &PickInput<'_>) -> Option<Arc<Instance>> {
    let mut best: Option<(&Arc<Instance>, f64)> = None;
    for inst in &set.instances {
        if !input.usable(inst) {
            continue;
        }
        let h = mix(key ^ inst.id_hash);
        // map to (0, 1], then score = -w / ln(u)
        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let score = -f64::from(inst.weight) / u.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((inst, score));
        }
    }
    best.map(|(i, _)| i.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::hash::hash_bytes;
    use crate::upstream::instance::monotonic_ms;
    use crate::upstream::policy::HashKey;
    use std::collections::HashMap;

    fn set(weights: &[u32]) -> InstanceSet {
        InstanceSet::new(
            weights
                .iter()
                .enumerate()
                .map(|(k, w)| {
                    Arc::new(Instance::new(
                        format!("127.0.0.1:{}", 1000 + k).parse().unwrap(),
                        *w,
                    ))
                })
                .collect(),
        )
    }

    fn counts(
        alg: Balance,
        s: &InstanceSet,
        n: usize,
        key: impl Fn(usize) -> Option<u64>,
    ) -> HashMap<String, usize> {
        let cursor = AtomicUsize::new(0);
        let mut out = HashMap::new();
        for k in 0..n {
            let input = PickInput {
                key: key(k),
                exclude: &[],
                now_ms: monotonic_ms(),
                panic: false,
            };
            let i = pick(&alg, s, &cursor, &input).unwrap();
            *out.entry(i.id.to_string()).or_default() += 1;
        }
        out
    }

    #[test]
    fn weighted_round_robin_follows_weights_exactly() {
        let s = set(&[5, 1, 1]);
        assert_eq!(s.schedule, vec![0, 0, 1, 0, 2, 0, 0]);
        let c = counts(Balance::RoundRobin, &s, 700, |_| None);
        assert_eq!(c["127.0.0.1:1000"], 500);
        assert_eq!(c["127.0.0.1:1001"], 100);
        assert_eq!(c["127.0.0.1:1002"], 100);
    }

    #[test]
    fn huge_weights_are_scaled() {
        let s = set(&[1_000_000, 1]);
        assert!(s.schedule.len() as u64 <= MAX_SCHEDULE + 2);
    }

    #[test]
    fn skips_unavailable_and_excluded() {
        let s = set(&[1, 1, 1]);
        s.instances[0].report_failure(&crate::upstream::instance::one_strike(60), monotonic_ms());
        let excluded: Vec<Arc<str>> = vec![s.instances[1].id.clone()];
        let cursor = AtomicUsize::new(0);
        for alg in [
            Balance::RoundRobin,
            Balance::Random,
            Balance::LeastConnections,
            Balance::PowerOfTwoChoices,
            Balance::ConsistentHash(HashKey::ClientIp),
        ] {
            for k in 0..50 {
                let input = PickInput {
                    key: Some(k),
                    exclude: &excluded,
                    now_ms: monotonic_ms(),
                    panic: false,
                };
                let i = pick(&alg, &s, &cursor, &input).unwrap();
                assert_eq!(&*i.id, "127.0.0.1:1002", "{alg:?}");
            }
        }
        s.instances[2].report_failure(&crate::upstream::instance::one_strike(60), monotonic_ms());
        let input = PickInput {
            key: None,
            exclude: &excluded,
            now_ms: monotonic_ms(),
            panic: false,
        };
        assert!(pick(&Balance::RoundRobin, &s, &cursor, &input).is_none());
        // panic mode: the unavailable instance is chosen anyway, exclusions still hold
        let panic = PickInput {
            panic: true,
            ..input
        };
        for alg in [
            Balance::RoundRobin,
            Balance::LeastConnections,
            Balance::Random,
        ] {
            let i = pick(&alg, &s, &cursor, &panic).unwrap();
            assert_ne!(i.id, excluded[0], "{alg:?}");
        }
    }

    #[test]
    fn least_connections_prefers_idle() {
        let s = set(&[1, 1]);
        let _busy = s.instances[0].begin();
        let c = counts(Balance::LeastConnections, &s, 20, |_| None);
        assert_eq!(c.get("127.0.0.1:1001"), Some(&20));
    }

    #[test]
    fn p2c_avoids_the_loaded_instance() {
        let s = set(&[1, 1]);
        let _g: Vec<_> = (0..5).map(|_| s.instances[0].begin()).collect();
        let c = counts(Balance::PowerOfTwoChoices, &s, 50, |_| None);
        assert_eq!(c.get("127.0.0.1:1001"), Some(&50));
    }

    #[test]
    fn consistent_hash_is_sticky_and_moves_little() {
        let s = set(&[1, 1, 1, 1]);
        let cursor = AtomicUsize::new(0);
        let owner = |s: &InstanceSet, k: u64| {
            let input = PickInput {
                key: Some(hash_bytes(&k.to_le_bytes())),
                exclude: &[],
                now_ms: monotonic_ms(),
                panic: false,
            };
            pick(
                &Balance::ConsistentHash(HashKey::ClientIp),
                s,
                &cursor,
                &input,
            )
            .unwrap()
            .id
            .to_string()
        };
        let before: Vec<String> = (0..1000).map(|k| owner(&s, k)).collect();
        assert_eq!(before, (0..1000).map(|k| owner(&s, k)).collect::<Vec<_>>());
        // take one instance out: only its keys move
        s.instances[3].report_failure(&crate::upstream::instance::one_strike(60), monotonic_ms());
        let after: Vec<String> = (0..1000).map(|k| owner(&s, k)).collect();
        for (b, a) in before.iter().zip(&after) {
            if b != "127.0.0.1:1003" {
                assert_eq!(a, b);
            }
        }
        let moved = before.iter().filter(|b| *b == "127.0.0.1:1003").count();
        assert!(moved > 150 && moved < 350, "share of one in four: {moved}");
    }

    #[test]
    fn weighted_consistent_hash_converges_to_weights() {
        let s = set(&[3, 1]);
        let c = counts(Balance::ConsistentHash(HashKey::ClientIp), &s, 8000, |k| {
            Some(hash_bytes(&(k as u64).to_le_bytes()))
        });
        let heavy = c["127.0.0.1:1000"] as f64 / 8000.0;
        assert!((heavy - 0.75).abs() < 0.03, "{heavy}");
    }
}
