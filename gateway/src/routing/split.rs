//! Routing stage, after the route's plugins: choose which of the route's target
//! services serves the request (`routes[].targets`, a weighted split such as a
//! canary), or the one service of a plain route.
//!
//! The choice is made once per request and kept in its context: every attempt
//! (retries included), the metrics, the access log and the identity signature use
//! the chosen service. With `sticky`, a request carrying the cookie or header value
//! lands on the target its hash falls on over the cumulative weights, so the same
//! value keeps landing there (in every gateway process, the hash is stable); without
//! the value, the pick is weighted random. No allocation per pick.

use std::sync::Arc;

use http::HeaderName;

use crate::observe::RouteMetrics;
use crate::upstream::{hash_bytes, Service};

/// One service of a route with its share of the requests.
#[derive(Debug)]
pub struct Target {
    pub service: Arc<Service>,
    pub weight: u32,
    /// The route's metric handles labelled with this service.
    pub metrics: RouteMetrics,
}

/// What keeps a client on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Cookie(String),
    Header(HeaderName),
}

/// A route's targets (one for a plain `service:` route) and how to choose.
#[derive(Debug)]
pub struct Split {
    targets: Vec<Target>,
    weights: Weights,
    sticky: Option<Sticky>,
}

impl Split {
    /// `targets` must not be empty and every weight must be at least 1 (compile checks both).
    pub fn new(targets: Vec<Target>, sticky: Option<Sticky>) -> Self {
        let weights = Weights::new(targets.iter().map(|t| t.weight));
        Self {
            targets,
            weights,
            sticky,
        }
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn sticky(&self) -> Option<&Sticky> {
        self.sticky.as_ref()
    }

    /// The target at `index` (a pick); the last one for an index out of range.
    pub fn target(&self, index: usize) -> &Target {
        // `targets` is never empty: compile refuses a route without one
        &self.targets[index.min(self.targets.len().saturating_sub(1))]
    }

    /// The index of the target for a request; `sticky_value` is the request's
    /// cookie/header value when the route is sticky and the request carries it.
    pub fn pick(&self, sticky_value: Option<&[u8]>) -> usize {
        if self.targets.len() == 1 {
            return 0;
        }
        self.weights.pick(sticky_value)
    }
}

/// Cumulative weights: entry `i` owns the points `[cumulative[i-1], cumulative[i])`.
#[derive(Debug)]
struct Weights {
    cumulative: Vec<u64>,
}

impl Weights {
    fn new(weights: impl Iterator<Item = u32>) -> Self {
        let cumulative = weights
            .scan(0u64, |sum, w| {
                *sum += u64::from(w.max(1));
                Some(*sum)
            })
            .collect();
        Self { cumulative }
    }

    fn pick(&self, sticky_value: Option<&[u8]>) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1).max(1);
        let point = match sticky_value {
            // salted, so a split and a consistent-hash balancer on the same value do
            // not correlate (the canary's users all on one of its instances)
            Some(v) => salted(hash_bytes(v)) % total,
            None => rand::random_range(0..total),
        };
        self.index_of(point)
    }

    /// The entry owning `point` in `[0, total)`.
    fn index_of(&self, point: u64) -> usize {
        self.cumulative
            .partition_point(|&end| end <= point)
            .min(self.cumulative.len().saturating_sub(1))
    }
}

/// splitmix64 over a salted hash (see [`Weights::pick`]).
fn salted(h: u64) -> u64 {
    let mut z = h ^ 0x5157_1ead_c0de_5eed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(weights: &[u32]) -> Weights {
        Weights::new(weights.iter().copied())
    }

    #[test]
    fn points_fall_on_the_owning_target() {
        let s = split(&[90, 10]);
        assert_eq!(s.index_of(0), 0);
        assert_eq!(s.index_of(89), 0);
        assert_eq!(s.index_of(90), 1);
        assert_eq!(s.index_of(99), 1);
    }

    #[test]
    fn one_entry_is_always_chosen() {
        let s = split(&[3]);
        assert!((0..100).all(|_| s.pick(None) == 0));
        assert_eq!(s.pick(Some(b"anything")), 0);
    }

    #[test]
    fn sticky_values_reach_both_sides() {
        let s = split(&[50, 50]);
        let sides: std::collections::HashSet<usize> = (0..64)
            .map(|k| s.pick(Some(format!("u{k}").as_bytes())))
            .collect();
        assert_eq!(sides.len(), 2);
    }

    #[test]
    fn a_sticky_value_always_lands_on_the_same_target() {
        let s = split(&[50, 50]);
        for v in ["a", "b", "user-17", ""] {
            let first = s.pick(Some(v.as_bytes()));
            assert!((0..20).all(|_| s.pick(Some(v.as_bytes())) == first));
        }
    }

    /// Whether each target's count of `n` picks is within six binomial standard
    /// deviations of its weight's share (a false failure is below one in 10^8).
    fn shares_match(weights: &[u32], counts: &[u32], n: u32) -> bool {
        let total: u32 = weights.iter().sum();
        weights.iter().zip(counts).all(|(w, c)| {
            let p = f64::from(*w) / f64::from(total);
            let expected = p * f64::from(n);
            let sd = (f64::from(n) * p * (1.0 - p)).sqrt();
            (f64::from(*c) - expected).abs() <= 6.0 * sd + 1.0
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Over many picks each target's share converges to its weight.
        #[test]
        fn weighted_pick_converges_to_weights(weights in prop::collection::vec(1u32..50, 2..5)) {
            let s = split(&weights);
            let n = 20_000u32;
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..n {
                counts[s.pick(None)] += 1;
            }
            prop_assert!(shares_match(&weights, &counts, n), "weights {weights:?} counts {counts:?}");
        }

        /// Sticky values spread over the targets by weight too (the hash is uniform).
        #[test]
        fn sticky_values_spread_by_weight(weights in prop::collection::vec(1u32..50, 2..4)) {
            let s = split(&weights);
            let n = 20_000u32;
            let mut counts = vec![0u32; weights.len()];
            for k in 0..n {
                counts[s.pick(Some(format!("user-{k}").as_bytes()))] += 1;
            }
            prop_assert!(shares_match(&weights, &counts, n), "weights {weights:?} counts {counts:?}");
        }
    }
}
