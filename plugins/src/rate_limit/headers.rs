//! `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (the IETF draft
//! httpapi-ratelimit-headers, seconds) on every answer of a limited route, and
//! `Retry-After` on a refusal. Numbers up to [`CACHED`] come from one table built
//! once, so the common case costs no allocation.

use std::sync::LazyLock;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

pub static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Numbers served from the table (larger ones are formatted per answer).
const CACHED: u64 = 1024;

static NUMBERS: LazyLock<Vec<HeaderValue>> =
    LazyLock::new(|| (0..=CACHED).map(HeaderValue::from).collect());

/// `n` as a header value.
pub fn number(n: u64) -> HeaderValue {
    usize::try_from(n)
        .ok()
        .and_then(|i| NUMBERS.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

/// Whole seconds, rounded up (a client waiting this long is never early).
pub fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The three headers of one answer: the budget's `limit`, what is left, and the
/// seconds until the budget is full again.
pub fn triple(
    limit: &HeaderValue,
    remaining: u64,
    reset: Duration,
) -> [(HeaderName, HeaderValue); 3] {
    [
        (LIMIT.clone(), limit.clone()),
        (REMAINING.clone(), number(remaining)),
        (RESET.clone(), number(seconds(reset))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_rounding() {
        assert_eq!(number(0), "0");
        assert_eq!(number(1024), "1024");
        assert_eq!(number(123_456), "123456");
        assert_eq!(seconds(Duration::ZERO), 0);
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_secs(2)), 2);
        let [l, r, s] = triple(&number(10), 3, Duration::from_millis(1500));
        assert_eq!((l.0.as_str(), l.1), ("ratelimit-limit", number(10)));
        assert_eq!((r.0.as_str(), r.1), ("ratelimit-remaining", number(3)));
        assert_eq!((s.0.as_str(), s.1), ("ratelimit-reset", number(2)));
    }
}
