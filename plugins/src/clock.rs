//! Clocks, one meaning per name, used by the gateway and the plugins alike.
//!
//! - `unix_*`: wall-clock time since the Unix epoch. For what is compared with other
//!   machines' clocks or stored outside the process: token `exp`/`iat`, revocation
//!   TTLs, signature timestamps, registry expiries kept in Redis.
//! - [`monotonic_ms`]: milliseconds since this process first asked. For deadlines that
//!   live only in this process (passive-health ejections, admin ages); it never jumps
//!   when the wall clock is set.
//!
//! A wall clock set before 1970 reads as 0 instead of failing (no working host has one).

use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Wall-clock whole seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

/// Wall-clock seconds since the Unix epoch, with fractions (JWT numeric dates may
/// carry them).
pub fn unix_secs_f64() -> f64 {
    since_epoch().as_secs_f64()
}

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Monotonic milliseconds since this process first read this clock.
pub fn monotonic_ms() -> u64 {
    u64::try_from(START.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_clocks_agree_and_the_monotonic_one_never_goes_back() {
        let (ms, s) = (unix_ms(), unix_secs());
        assert!(ms / 1000 >= s.saturating_sub(1) && ms / 1000 <= s + 1);
        assert!(s > 1_700_000_000, "the wall clock reads {s}");
        let a = monotonic_ms();
        std::thread::sleep(Duration::from_millis(5));
        assert!(monotonic_ms() >= a + 5);
    }
}
