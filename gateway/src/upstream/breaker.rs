//! Circuit breaker of one service: `upstream_peer` asks it to admit each attempt
//! before any instance is picked ([`Breaker::admit`]), and the hooks that see an
//! attempt end report how it went ([`Call::finish`]).
//!
//! - closed: every attempt passes and is counted in a rolling window of time
//!   buckets; once the window holds `minimum_calls`, a failure share of at least
//!   `failure_ratio` (5xx from the instance, connect errors, timeouts) or a slow
//!   share of at least `slow_call_ratio` opens it;
//! - open: attempts are refused at once, for `open_for`;
//! - half-open: `half_open_calls` probes pass, the rest are refused; every probe
//!   succeeds -> closed (with an empty window), any fails (or is slow) -> open again.
//!
//! Every transition starts a new generation; an outcome is counted only by the
//! generation that admitted it, so an attempt admitted before the breaker opened
//! cannot count in the half-open probes, nor one from before a close in the new
//! window. The closed path takes no lock and allocates nothing: one atomic load to
//! admit, a few atomic adds and a sum over ten buckets to record. The lock guards
//! transitions and the open/half-open states, where calls are few.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use serde::Serialize;

use super::instance::monotonic_ms;
use super::policy::BreakerSpec;
use crate::observe::METRICS;

/// Where the breaker stands; the number is `gateway_circuit_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl State {
    fn from_bits(bits: u64) -> Self {
        match bits & 3 {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }
}

/// How long a refused client should wait when a half-open breaker has no probe left.
const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// One service's breaker. Shared by `Arc` with the service: a reload that keeps the
/// service (equal spec) keeps its breaker and state.
pub struct Breaker {
    spec: BreakerSpec,
    service: Arc<str>,
    /// `generation << 2 | state`, read without the lock on every admission.
    hint: AtomicU64,
    inner: Mutex<Inner>,
    window: Window,
    metrics: BreakerMetrics,
}

struct Inner {
    generation: u64,
    state: State,
    open_until_ms: u64,
    probes_started: u32,
    probes_ok: u32,
}

struct BreakerMetrics {
    state: IntGauge,
    to_open: IntCounter,
    to_half_open: IntCounter,
    to_closed: IntCounter,
}

/// The breaker as the admin view shows it.
#[derive(Debug, Serialize)]
pub struct BreakerStatus {
    pub state: State,
    /// Time left open (0 unless open).
    pub open_remaining_ms: u64,
    /// Calls, failures and slow calls in the current window.
    pub window_calls: u32,
    pub window_failures: u32,
    pub window_slow: u32,
    /// Probes let through and succeeded in the current half-open period.
    pub probes_started: u32,
    pub probes_succeeded: u32,
}

impl Breaker {
    pub fn new(service: &str, spec: BreakerSpec) -> Self {
        let transitions = |to: &str| {
            METRICS
                .circuit_transitions
                .with_label_values(&[service, to])
        };
        Breaker {
            spec,
            service: Arc::from(service),
            hint: AtomicU64::new(State::Closed as u64),
            inner: Mutex::new(Inner {
                generation: 0,
                state: State::Closed,
                open_until_ms: 0,
                probes_started: 0,
                probes_ok: 0,
            }),
            window: Window::new(spec.window),
            metrics: BreakerMetrics {
                state: METRICS.circuit_state.with_label_values(&[service]),
                to_open: transitions("open"),
                to_half_open: transitions("half_open"),
                to_closed: transitions("closed"),
            },
        }
    }

    pub fn spec(&self) -> &BreakerSpec {
        &self.spec
    }

    /// Export the current state as `gateway_circuit_state` (when a config takes
    /// effect: a new breaker replacing one of the same service starts closed).
    pub fn publish(&self) {
        let state = State::from_bits(self.hint.load(Ordering::Acquire));
        self.metrics.state.set(state as i64);
    }

    /// Admit one attempt, or refuse it with how long the client should wait.
    pub fn admit(self: &Arc<Self>, now_ms: u64) -> Result<Call, Duration> {
        let hint = self.hint.load(Ordering::Acquire);
        if State::from_bits(hint) == State::Closed {
            return Ok(self.call(hint >> 2, false));
        }
        let mut inner = self.lock();
        if inner.state == State::Open {
            if now_ms < inner.open_until_ms {
                return Err(Duration::from_millis(inner.open_until_ms - now_ms));
            }
            self.transition(&mut inner, State::HalfOpen, now_ms);
        }
        match inner.state {
            State::Closed => Ok(self.call(inner.generation, false)),
            State::HalfOpen if inner.probes_started < self.spec.half_open_calls => {
                inner.probes_started += 1;
                Ok(self.call(inner.generation, true))
            }
            _ => Err(HALF_OPEN_RETRY_AFTER),
        }
    }

    /// Whether an attempt now would be refused (it is not admitted: no probe is
    /// taken). The retry policy asks this, so a retry never goes into an open breaker.
    pub fn refuses(&self, now_ms: u64) -> bool {
        if State::from_bits(self.hint.load(Ordering::Acquire)) == State::Closed {
            return false;
        }
        let inner = self.lock();
        match inner.state {
            State::Closed => false,
            State::Open => now_ms < inner.open_until_ms,
            State::HalfOpen => inner.probes_started >= self.spec.half_open_calls,
        }
    }

    pub fn status(&self, now_ms: u64) -> BreakerStatus {
        let totals = self.window.totals(now_ms);
        let inner = self.lock();
        BreakerStatus {
            state: inner.state,
            open_remaining_ms: match inner.state {
                State::Open => inner.open_until_ms.saturating_sub(now_ms),
                _ => 0,
            },
            window_calls: totals.calls,
            window_failures: totals.failures,
            window_slow: totals.slow,
            probes_started: inner.probes_started,
            probes_succeeded: inner.probes_ok,
        }
    }

    fn call(self: &Arc<Self>, generation: u64, probe: bool) -> Call {
        Call {
            breaker: self.clone(),
            generation,
            probe,
            started: Instant::now(),
            done: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, generation: u64, probe: bool, failed: bool, elapsed: Duration) {
        let slow = elapsed >= self.spec.slow_call_duration;
        let now_ms = monotonic_ms();
        if probe {
            let mut inner = self.lock();
            if inner.generation != generation || inner.state != State::HalfOpen {
                return;
            }
            if failed || (slow && self.spec.counts_slow_calls()) {
                self.transition(&mut inner, State::Open, now_ms);
            } else {
                inner.probes_ok += 1;
                if inner.probes_ok >= self.spec.half_open_calls {
                    self.transition(&mut inner, State::Closed, now_ms);
                }
            }
            return;
        }
        let hint = self.hint.load(Ordering::Acquire);
        if hint != generation << 2 {
            // admitted by an earlier closed period, or finished after the breaker opened
            return;
        }
        self.window.add(now_ms, failed, slow);
        if self.trips(&self.window.totals(now_ms)) {
            let mut inner = self.lock();
            if inner.generation == generation && inner.state == State::Closed {
                self.transition(&mut inner, State::Open, now_ms);
            }
        }
    }

    /// Whether the window's counts open a closed breaker.
    fn trips(&self, t: &Totals) -> bool {
        if t.calls == 0 || t.calls < self.spec.minimum_calls {
            return false;
        }
        let calls = f64::from(t.calls);
        f64::from(t.failures) >= self.spec.failure_ratio * calls
            || (self.spec.counts_slow_calls()
                && f64::from(t.slow) >= self.spec.slow_call_ratio * calls)
    }

    /// A probe ended without an outcome (the client went away): another may go.
    fn give_back(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation == generation && inner.state == State::HalfOpen {
            inner.probes_started = inner.probes_started.saturating_sub(1);
        }
    }

    fn transition(&self, inner: &mut Inner, to: State, now_ms: u64) {
        inner.generation += 1;
        inner.state = to;
        inner.probes_started = 0;
        inner.probes_ok = 0;
        let counter = match to {
            State::Open => {
                inner.open_until_ms = now_ms.saturating_add(
                    u64::try_from(self.spec.open_for.as_millis()).unwrap_or(u64::MAX),
                );
                tracing::warn!(service = %self.service, open_for = ?self.spec.open_for, "circuit breaker opened");
                &self.metrics.to_open
            }
            State::HalfOpen => {
                tracing::info!(service = %self.service, "circuit breaker half-open: probing");
                &self.metrics.to_half_open
            }
            State::Closed => {
                self.window.clear();
                tracing::info!(service = %self.service, "circuit breaker closed");
                &self.metrics.to_closed
            }
        };
        self.hint
            .store(inner.generation << 2 | to as u64, Ordering::Release);
        counter.inc();
        self.metrics.state.set(to as i64);
    }
}

/// One admitted attempt. Report its outcome once with [`Call::finish`]; a probe
/// dropped without an outcome (the client went away) gives its place back.
pub struct Call {
    breaker: Arc<Breaker>,
    generation: u64,
    probe: bool,
    started: Instant,
    done: bool,
}

impl Call {
    /// The attempt ended: `failed` for a 5xx from the instance, a connect error or
    /// a timeout. Its duration (admission to now) decides whether it was slow.
    pub fn finish(mut self, failed: bool) {
        self.done = true;
        let elapsed = self.started.elapsed();
        self.breaker
            .record(self.generation, self.probe, failed, elapsed);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.give_back(self.generation);
        }
    }
}

/// Buckets of the rolling window; a call lands in the bucket of its end time, and
/// the window is the last `BUCKETS` buckets (the current one partly filled).
const BUCKETS: usize = 10;
const EMPTY: u64 = u64::MAX;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    calls: u32,
    failures: u32,
    slow: u32,
}

struct Bucket {
    /// Which bucket of time this slot holds (`now_ms / bucket_ms`), or `EMPTY`.
    epoch: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

/// The rolling window: a ring of buckets, each recycled by the first call of a new
/// period (a call counted in the instant its bucket is recycled may be lost; the
/// ratios do not need more precision than that).
struct Window {
    buckets: [Bucket; BUCKETS],
    bucket_ms: u64,
}

impl Window {
    fn new(window: Duration) -> Self {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        Window {
            buckets: std::array::from_fn(|_| Bucket {
                epoch: AtomicU64::new(EMPTY),
                calls: AtomicU32::new(0),
                failures: AtomicU32::new(0),
                slow: AtomicU32::new(0),
            }),
            bucket_ms: (ms / BUCKETS as u64).max(1),
        }
    }

    fn add(&self, now_ms: u64, failed: bool, slow: bool) {
        let epoch = now_ms / self.bucket_ms;
        let b = &self.buckets[(epoch % BUCKETS as u64) as usize];
        let seen = b.epoch.load(Ordering::Acquire);
        if seen != epoch {
            if seen != EMPTY && seen > epoch {
                return; // this call ended a whole window ago
            }
            if b.epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                b.calls.store(0, Ordering::Relaxed);
                b.failures.store(0, Ordering::Relaxed);
                b.slow.store(0, Ordering::Relaxed);
            }
        }
        b.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            b.failures.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            b.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn totals(&self, now_ms: u64) -> Totals {
        let epoch = now_ms / self.bucket_ms;
        let mut t = Totals::default();
        for b in &self.buckets {
            let e = b.epoch.load(Ordering::Acquire);
            if e != EMPTY && e <= epoch && epoch - e < BUCKETS as u64 {
                t.calls = t.calls.saturating_add(b.calls.load(Ordering::Relaxed));
                t.failures = t
                    .failures
                    .saturating_add(b.failures.load(Ordering::Relaxed));
                t.slow = t.slow.saturating_add(b.slow.load(Ordering::Relaxed));
            }
        }
        t
    }

    fn clear(&self) {
        for b in &self.buckets {
            b.epoch.store(EMPTY, Ordering::Release);
        }
    }
}

/// Export every breaker's state of `service` (see [`Breaker::publish`]).
pub fn publish(service: &super::Service) {
    if let Some(b) = &service.breaker {
        b.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BreakerSpec {
        BreakerSpec {
            failure_ratio: 0.5,
            slow_call_ratio: 1.0,
            slow_call_duration: Duration::from_secs(2),
            window: Duration::from_secs(10),
            minimum_calls: 4,
            open_for: Duration::from_millis(200),
            half_open_calls: 2,
        }
    }

    fn breaker(name: &str, spec: BreakerSpec) -> Arc<Breaker> {
        Arc::new(Breaker::new(name, spec))
    }

    fn run(b: &Arc<Breaker>, failed: bool) {
        b.admit(monotonic_ms()).expect("admitted").finish(failed);
    }

    fn transitions(name: &str, to: &str) -> u64 {
        METRICS
            .circuit_transitions
            .with_label_values(&[name, to])
            .get()
    }

    #[test]
    fn no_decision_below_minimum_calls_then_opens_on_the_failure_ratio() {
        let b = breaker("t-ratio", spec());
        run(&b, true);
        run(&b, true);
        run(&b, true);
        assert_eq!(
            b.status(monotonic_ms()).state,
            State::Closed,
            "3 < minimum_calls"
        );
        run(&b, false); // 3 of 4 failed
        assert_eq!(b.status(monotonic_ms()).state, State::Open);
        assert_eq!(transitions("t-ratio", "open"), 1);
        let wait = b.admit(monotonic_ms()).err().expect("refused while open");
        assert!(wait <= Duration::from_millis(200) && !wait.is_zero());
        assert!(b.refuses(monotonic_ms()));
    }

    #[test]
    fn successes_keep_it_closed() {
        let b = breaker("t-ok", spec());
        for k in 0..40 {
            run(&b, k % 3 == 2); // a third fail: under 0.5 at every count
        }
        assert_eq!(b.status(monotonic_ms()).state, State::Closed);
    }

    #[test]
    fn half_open_lets_probes_through_and_closes_when_all_succeed() {
        let b = breaker("t-half", spec());
        for _ in 0..4 {
            run(&b, true);
        }
        std::thread::sleep(Duration::from_millis(250));
        let now = monotonic_ms();
        assert!(!b.refuses(now), "open_for is over: a probe may go");
        let p1 = b.admit(now).expect("probe 1");
        let p2 = b.admit(now).expect("probe 2");
        assert_eq!(b.admit(now).err(), Some(HALF_OPEN_RETRY_AFTER));
        assert!(b.refuses(now));
        assert_eq!(b.status(now).state, State::HalfOpen);
        p1.finish(false);
        assert_eq!(b.status(now).state, State::HalfOpen);
        p2.finish(false);
        let st = b.status(now);
        assert_eq!((st.state, st.window_calls), (State::Closed, 0));
        assert_eq!(transitions("t-half", "half_open"), 1);
        assert_eq!(transitions("t-half", "closed"), 1);
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_a_dropped_one_gives_its_place_back() {
        let b = breaker("t-probe", spec());
        for _ in 0..4 {
            run(&b, true);
        }
        std::thread::sleep(Duration::from_millis(250));
        let now = monotonic_ms();
        let p1 = b.admit(now).expect("probe 1");
        let p2 = b.admit(now).expect("probe 2");
        drop(p1); // the client went away
        let p3 = b.admit(now).expect("the dropped probe's place");
        p3.finish(false);
        p2.finish(true);
        assert_eq!(b.status(monotonic_ms()).state, State::Open);
        assert_eq!(transitions("t-probe", "open"), 2);
    }

    #[test]
    fn outcomes_of_an_earlier_generation_do_not_count() {
        let b = breaker("t-gen", spec());
        let stale = b.admit(monotonic_ms()).expect("closed");
        for _ in 0..4 {
            run(&b, true);
        }
        std::thread::sleep(Duration::from_millis(250));
        let probe = b.admit(monotonic_ms()).expect("probe");
        // admitted while closed, it ends during half-open: not a probe
        stale.finish(true);
        assert_eq!(b.status(monotonic_ms()).state, State::HalfOpen);
        probe.finish(false);
        run(&b, false);
        assert_eq!(b.status(monotonic_ms()).state, State::Closed);
    }

    #[test]
    fn slow_calls_open_it_when_counted() {
        let slow = BreakerSpec {
            slow_call_ratio: 0.5,
            slow_call_duration: Duration::from_millis(20),
            ..spec()
        };
        let b = breaker("t-slow", slow);
        for _ in 0..4 {
            let call = b.admit(monotonic_ms()).expect("closed");
            std::thread::sleep(Duration::from_millis(25));
            call.finish(false);
        }
        assert_eq!(b.status(monotonic_ms()).state, State::Open);
        // with slow_call_ratio 1.0 they are not counted
        let off = breaker(
            "t-slow-off",
            BreakerSpec {
                slow_call_duration: Duration::from_millis(20),
                ..spec()
            },
        );
        for _ in 0..4 {
            let call = off.admit(monotonic_ms()).expect("closed");
            std::thread::sleep(Duration::from_millis(25));
            call.finish(false);
        }
        assert_eq!(off.status(monotonic_ms()).state, State::Closed);
    }

    #[test]
    fn the_window_forgets_old_buckets() {
        let w = Window::new(Duration::from_secs(10)); // 1 s buckets
        w.add(5_000, true, false);
        w.add(5_500, false, true);
        w.add(9_000, false, false);
        let t = w.totals(9_100);
        assert_eq!((t.calls, t.failures, t.slow), (3, 1, 1));
        // 5_000's bucket leaves the window at 15_000
        let t = w.totals(15_000);
        assert_eq!((t.calls, t.failures), (1, 0));
        // a slot is recycled by its next period
        w.add(15_000, true, false);
        let t = w.totals(15_000);
        assert_eq!((t.calls, t.failures), (2, 1));
        w.clear();
        assert_eq!(w.totals(15_000), Totals::default());
    }
}
