//! Circuit breaker of one service: `upstream_peer` asks it to admit each attempt
//! before any instance is picked ([`CircuitBreaker::admit`]), and the hooks that see an
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use serde::Serialize;

use super::instance::monotonic_ms;
use super::policy::CircuitBreakerSpec;
use crate::observe::METRICS;
use window::{Totals, Window};

mod window;

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
pub struct CircuitBreaker {
    spec: CircuitBreakerSpec,
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
pub struct CircuitBreakerStatus {
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

impl CircuitBreaker {
    pub fn new(service: &str, spec: CircuitBreakerSpec) -> Self {
        let transitions = |to: &str| {
            METRICS
                .circuit_transitions
                .with_label_values(&[service, to])
        };
        CircuitBreaker {
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
            return Ok(self.call(hint >> 2, false, now_ms));
        }
        let mut inner = self.lock();
        if inner.state == State::Open {
            if now_ms < inner.open_until_ms {
                return Err(Duration::from_millis(inner.open_until_ms - now_ms));
            }
            self.transition(&mut inner, State::HalfOpen, now_ms);
        }
        match inner.state {
            State::Closed => Ok(self.call(inner.generation, false, now_ms)),
            State::HalfOpen if inner.probes_started < self.spec.half_open_calls => {
                inner.probes_started += 1;
                Ok(self.call(inner.generation, true, now_ms))
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

    pub fn status(&self, now_ms: u64) -> CircuitBreakerStatus {
        let totals = self.window.totals(now_ms);
        let inner = self.lock();
        CircuitBreakerStatus {
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

    fn call(self: &Arc<Self>, generation: u64, probe: bool, now_ms: u64) -> Call {
        Call {
            breaker: self.clone(),
            generation,
            probe,
            admitted_ms: now_ms,
            done: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, call: &Call, failed: bool, now_ms: u64) {
        let (generation, probe) = (call.generation, call.probe);
        let elapsed = Duration::from_millis(now_ms.saturating_sub(call.admitted_ms));
        let slow = elapsed >= self.spec.slow_call_duration;
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
    breaker: Arc<CircuitBreaker>,
    generation: u64,
    probe: bool,
    admitted_ms: u64,
    done: bool,
}

impl Call {
    /// The attempt ended: `failed` for a 5xx from the instance, a connect error or
    /// a timeout. Its duration (admission to now) decides whether it was slow.
    pub fn finish(self, failed: bool) {
        self.finish_at(failed, monotonic_ms());
    }

    /// [`Call::finish`] at `now_ms` (the monotonic clock).
    pub fn finish_at(mut self, failed: bool, now_ms: u64) {
        self.done = true;
        self.breaker.record(&self, failed, now_ms);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.give_back(self.generation);
        }
    }
}

/// Export the breaker state of `service`, if it has a breaker (see [`CircuitBreaker::publish`]).
pub fn publish(service: &super::Service) {
    if let Some(b) = &service.circuit_breaker {
        b.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CircuitBreakerSpec {
        CircuitBreakerSpec {
            failure_ratio: 0.5,
            slow_call_ratio: 1.0,
            slow_call_duration: Duration::from_secs(2),
            window: Duration::from_secs(10),
            minimum_calls: 4,
            open_for: Duration::from_millis(200),
            half_open_calls: 2,
        }
    }

    fn breaker(name: &str, spec: CircuitBreakerSpec) -> Arc<CircuitBreaker> {
        Arc::new(CircuitBreaker::new(name, spec))
    }

    /// One call admitted and finished at `at` (ms on the monotonic clock).
    fn run(b: &Arc<CircuitBreaker>, at: u64, failed: bool) {
        b.admit(at).expect("admitted").finish_at(failed, at);
    }

    fn transitions(name: &str, to: &str) -> u64 {
        METRICS
            .circuit_transitions
            .with_label_values(&[name, to])
            .get()
    }

    /// A breaker opened at 1_000 ms by four failures (open until 1_200).
    fn opened(name: &str) -> Arc<CircuitBreaker> {
        let b = breaker(name, spec());
        for _ in 0..4 {
            run(&b, 1_000, true);
        }
        assert_eq!(b.status(1_000).state, State::Open);
        b
    }

    #[test]
    fn no_decision_below_minimum_calls_then_opens_on_the_failure_ratio() {
        let b = breaker("t-ratio", spec());
        run(&b, 1_000, true);
        run(&b, 1_000, true);
        run(&b, 1_000, true);
        assert_eq!(b.status(1_000).state, State::Closed, "3 < minimum_calls");
        run(&b, 1_000, false); // 3 of 4 failed
        assert_eq!(b.status(1_000).state, State::Open);
        assert_eq!(transitions("t-ratio", "open"), 1);
        assert_eq!(b.admit(1_050).err(), Some(Duration::from_millis(150)));
        assert!(b.refuses(1_199));
        assert!(!b.refuses(1_200), "open_for is over: a probe may go");
    }

    #[test]
    fn successes_keep_it_closed() {
        let b = breaker("t-ok", spec());
        for k in 0..40 {
            run(&b, 1_000 + k, k % 3 == 2); // a third fail: under 0.5 at every count
        }
        assert_eq!(b.status(1_040).state, State::Closed);
    }

    #[test]
    fn failures_leave_the_window_with_their_bucket() {
        let b = breaker("t-window", spec());
        run(&b, 1_000, true);
        run(&b, 1_000, true);
        run(&b, 1_000, true);
        // ten seconds on, those three are out of the window: one failure of two
        run(&b, 11_500, false);
        run(&b, 11_500, true);
        assert_eq!(b.status(11_500).state, State::Closed);
        assert_eq!(b.status(11_500).window_calls, 2);
    }

    #[test]
    fn half_open_lets_probes_through_and_closes_when_all_succeed() {
        let b = opened("t-half");
        let now = 1_300;
        let p1 = b.admit(now).expect("probe 1");
        let p2 = b.admit(now).expect("probe 2");
        assert_eq!(b.admit(now).err(), Some(HALF_OPEN_RETRY_AFTER));
        assert!(b.refuses(now));
        assert_eq!(b.status(now).state, State::HalfOpen);
        p1.finish_at(false, now);
        assert_eq!(b.status(now).state, State::HalfOpen);
        p2.finish_at(false, now);
        let st = b.status(now);
        assert_eq!((st.state, st.window_calls), (State::Closed, 0));
        assert_eq!(transitions("t-half", "half_open"), 1);
        assert_eq!(transitions("t-half", "closed"), 1);
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_a_dropped_one_gives_its_place_back() {
        let b = opened("t-probe");
        let now = 1_300;
        let p1 = b.admit(now).expect("probe 1");
        let p2 = b.admit(now).expect("probe 2");
        drop(p1); // the client went away
        let p3 = b.admit(now).expect("the dropped probe's place");
        p3.finish_at(false, now);
        p2.finish_at(true, now);
        assert_eq!(b.status(now).state, State::Open);
        assert_eq!(transitions("t-probe", "open"), 2);
        assert_eq!(b.admit(now).err(), Some(Duration::from_millis(200)));
    }

    #[test]
    fn outcomes_of_an_earlier_generation_do_not_count() {
        let b = breaker("t-gen", spec());
        let stale = b.admit(1_000).expect("closed");
        for _ in 0..4 {
            run(&b, 1_000, true);
        }
        let probe = b.admit(1_300).expect("probe");
        // admitted while closed, it ends during half-open: not a probe
        stale.finish_at(true, 1_300);
        assert_eq!(b.status(1_300).state, State::HalfOpen);
        probe.finish_at(false, 1_300);
        run(&b, 1_300, false);
        assert_eq!(b.status(1_300).state, State::Closed);
    }

    #[test]
    fn slow_calls_open_it_when_counted() {
        let slow_spec = CircuitBreakerSpec {
            slow_call_ratio: 0.5,
            slow_call_duration: Duration::from_millis(20),
            ..spec()
        };
        let b = breaker("t-slow", slow_spec);
        for _ in 0..4 {
            b.admit(1_000).expect("closed").finish_at(false, 1_025);
        }
        assert_eq!(b.status(1_025).state, State::Open);
        // a slow probe fails it
        let probe = b.admit(1_300).expect("probe");
        probe.finish_at(false, 1_330);
        assert_eq!(b.status(1_330).state, State::Open);
        // with slow_call_ratio 1.0 they are not counted
        let off = breaker(
            "t-slow-off",
            CircuitBreakerSpec {
                slow_call_duration: Duration::from_millis(20),
                ..spec()
            },
        );
        for _ in 0..4 {
            off.admit(1_000).expect("closed").finish_at(false, 1_025);
        }
        assert_eq!(off.status(1_025).state, State::Closed);
        assert_eq!(off.status(1_025).window_slow, 4);
    }
}
