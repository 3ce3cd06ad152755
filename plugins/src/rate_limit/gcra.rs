//! The cluster budget's arithmetic: GCRA with leases, as one Redis Lua script
//! ([`SCRIPT`]) and the same rules in Rust ([`Gcra::take`]), which the unit tests
//! pin down and the script mirrors line for line.
//!
//! One Redis key per budget holds the theoretical arrival time (TAT, Redis's own
//! clock in microseconds): the moment the budget would be full again. A budget of
//! `burst` requests at once, refilled at one request per `interval`, has room for
//! `floor((now + burst*interval - max(tat, now)) / interval)` requests now. A call
//! takes up to `want` of them at once (a lease the caller spends locally) and moves
//! the TAT forward by that many intervals; the key expires when the budget is full
//! again, so idle budgets cost nothing.
//!
//! All values are whole microseconds below 2^53, so Lua's doubles hold them exactly.

use std::time::Duration;

/// `KEYS[1]`: the budget; `ARGV`: interval (µs), burst, tokens wanted.
/// Returns `{granted, remaining, reset_us, retry_us}`:
/// - `granted`: tokens taken now (0: refused);
/// - `remaining`: tokens still free in Redis after this call;
/// - `reset_us`: until the budget is full again;
/// - `retry_us`: when refused, until the next token is free (else 0).
///
/// The time is Redis's (`TIME`), so every gateway reads one clock. `SET .. PX`
/// with the budget's refill time is the idle expiry.
pub const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now then tat = now end
local capacity = burst * interval
local free = math.floor((now + capacity - tat) / interval)
if free < 1 then
  return {0, 0, tat - now, tat + interval - capacity - now}
end
local granted = math.min(want, free)
tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
return {granted, free - granted, tat - now, 0}
";

/// A budget's parameters (what the script receives in `ARGV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time one request earns back, in µs (at least 1).
    pub interval_us: u64,
    /// Requests admitted at once from a full budget.
    pub burst: u64,
}

/// One call's answer (the script's reply, with the new TAT for the model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub granted: u64,
    pub remaining: u64,
    pub reset_us: u64,
    pub retry_us: u64,
    /// What the key holds afterwards (unchanged when refused).
    pub tat: u64,
}

impl Gcra {
    /// `requests` per `per`, `burst` at once.
    pub fn new(requests: u32, per: Duration, burst: u32) -> Self {
        let per_us = u64::try_from(per.as_micros()).unwrap_or(u64::MAX);
        Self {
            interval_us: (per_us / u64::from(requests.max(1))).max(1),
            burst: u64::from(burst.max(1)),
        }
    }

    /// The script's rules: take up to `want` tokens at `now` from a key holding `tat`.
    pub fn take(&self, tat: Option<u64>, now: u64, want: u64) -> Outcome {
        let tat = tat.unwrap_or(0).max(now);
        let capacity = self.burst * self.interval_us;
        let free = (now + capacity - tat) / self.interval_us;
        if free < 1 {
            return Outcome {
                granted: 0,
                remaining: 0,
                reset_us: tat - now,
                retry_us: tat + self.interval_us - capacity - now,
                tat,
            };
        }
        let granted = want.min(free);
        let tat = tat + granted * self.interval_us;
        Outcome {
            granted,
            remaining: free - granted,
            reset_us: tat - now,
            retry_us: 0,
            tat,
        }
    }
}

/// Share of the per-second budget one lease may hold (2 %).
pub const LEASE_SHARE: f64 = 0.02;
/// Unspent leased tokens are dropped this long after they were taken, so an
/// admission is never more than this late against the budget it was counted in.
pub const LEASE_TTL: Duration = Duration::from_millis(50);
/// Upper bound of a lease whatever the rate.
const MAX_LEASE: u64 = 1000;

/// Tokens one round trip asks for: 2 % of the per-second rate, at least 1, at most
/// the burst (a lease can never hold more than a full budget).
pub fn lease_size(requests: u32, per: Duration, burst: u32) -> u64 {
    let per_sec = f64::from(requests) / per.as_secs_f64().max(1e-9);
    let share = (per_sec * LEASE_SHARE).floor();
    let share = if share.is_finite() && share >= 1.0 {
        share.min(MAX_LEASE as f64) as u64
    } else {
        1
    };
    share.min(u64::from(burst.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn a_fresh_budget_grants_the_burst_then_refills_at_the_rate() {
        // 10/s, burst 5
        let g = Gcra::new(10, Duration::from_secs(1), 5);
        assert_eq!(g.interval_us, 100_000);
        let now = 1_700_000_000 * SEC;
        let first = g.take(None, now, 3);
        assert_eq!((first.granted, first.remaining), (3, 2));
        assert_eq!(first.reset_us, 300_000, "3 intervals until full again");
        let second = g.take(Some(first.tat), now, 3);
        assert_eq!((second.granted, second.remaining), (2, 0), "only 2 left");
        let refused = g.take(Some(second.tat), now, 1);
        assert_eq!(refused.granted, 0);
        assert_eq!(refused.retry_us, 100_000, "next token after one interval");
        assert_eq!(refused.tat, second.tat, "a refusal changes nothing");
        // 250 ms later: 2 tokens earned back
        let later = g.take(Some(second.tat), now + 250_000, 10);
        assert_eq!(later.granted, 2);
    }

    #[test]
    fn over_any_window_grants_stay_within_burst_plus_rate() {
        // many callers hammering one budget with leases of 4, every 1 ms for 10 s
        let g = Gcra::new(100, Duration::from_secs(1), 10);
        let start = 42 * SEC;
        let mut tat = None;
        let mut grants = Vec::new();
        for step in 0..10_000u64 {
            let now = start + step * 1000;
            let o = g.take(tat, now, 4);
            if o.granted > 0 {
                tat = Some(o.tat);
                grants.push((now, o.granted));
            }
        }
        for window in [SEC / 10, SEC, 3 * SEC] {
            for &(from, _) in &grants {
                let n: u64 = grants
                    .iter()
                    .filter(|(t, _)| *t >= from && *t < from + window)
                    .map(|(_, n)| n)
                    .sum();
                let bound = 10 + 100 * window / SEC;
                assert!(n <= bound, "{n} granted in {window} µs from {from}");
            }
        }
        let total: u64 = grants.iter().map(|(_, n)| n).sum();
        assert!((1000..=1010).contains(&total), "10 s at 100/s: {total}");
    }

    #[test]
    fn lease_sizes_stay_a_small_share_of_the_rate() {
        let s = Duration::from_secs(1);
        assert_eq!(lease_size(10, s, 10), 1, "low rates: no batching");
        assert_eq!(lease_size(1000, s, 1000), 20);
        assert_eq!(lease_size(1000, s, 5), 5, "never above the burst");
        assert_eq!(lease_size(60_000, Duration::from_secs(60), 100), 20);
        assert_eq!(lease_size(u32::MAX, s, u32::MAX), MAX_LEASE);
        assert_eq!(lease_size(5, Duration::ZERO, 1), 1);
    }
}
