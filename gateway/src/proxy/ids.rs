//! Random ids of a request: its `X-Request-Id` when the client sent none, the trace
//! id of a trace the gateway starts, the gateway's span id.
//!
//! They come from a per-thread xoshiro256++ generator (`rand`'s `SmallRng`) seeded
//! once per thread from the thread's cryptographic generator, as OpenTelemetry's SDK
//! draws its trace and span ids. Ids name things and grant nothing: a client may
//! send its own request id and trace id, and the identity signature keys on a
//! secret, not on the id. So they must not repeat, and need not be unguessable.
//! Drawing the three ids of a request this way costs a few dozen instructions;
//! the thread's ChaCha generator took about 1,200.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    static IDS: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// `N` random bytes.
pub(super) fn random<const N: usize>() -> [u8; N] {
    let mut id = [0u8; N];
    IDS.with_borrow_mut(|rng| rng.fill_bytes(&mut id));
    id
}

/// `N` random bytes, not all zero (W3C Trace Context's invalid id).
pub(super) fn nonzero<const N: usize>() -> [u8; N] {
    loop {
        let id = random();
        if id != [0; N] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_do_not_repeat_within_or_across_threads() {
        let draw = || (0..10_000).map(|_| random::<16>()).collect::<Vec<_>>();
        let other = std::thread::spawn(draw).join().expect("a thread");
        let mut seen = HashSet::new();
        for id in draw().into_iter().chain(other) {
            assert!(seen.insert(id), "{id:?} drawn twice");
        }
        assert_eq!(seen.len(), 20_000);
    }

    #[test]
    fn every_byte_value_turns_up() {
        // a generator stuck on part of the range (or a byte left unfilled) shows here;
        // a fair one misses a value at a position after 8,000 draws with p < 1e-10
        let mut seen = [[false; 256]; 8];
        for _ in 0..8_000 {
            for (i, b) in nonzero::<8>().into_iter().enumerate() {
                seen[i][usize::from(b)] = true;
            }
        }
        assert!(seen.iter().all(|pos| pos.iter().all(|&s| s)));
    }
}
