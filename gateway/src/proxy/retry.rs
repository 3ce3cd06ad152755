//! Retry decision: whether a failed attempt is tried again, and where. The route's
//! [`RetryPolicy`] (compiled from `routes[].retries`) answers; the hooks only ask:
//! `fail_to_connect`, `error_while_proxy` and `upstream_response_filter` after a failed
//! attempt, `request_filter` whether to keep the body for a resend, `upstream_peer`
//! which instances to leave out.
//!
//! The table, for attempt `n` (1 for the first) of at most `1 + attempts`:
//! - no retry once `n > attempts`, nor after the gateway cut the body at the route's
//!   limit (`body_too_large` is the answer);
//! - a connect failure: any method (nothing reached the instance);
//! - a failure after the request started going out (a reset, a timeout): only a method
//!   the route may repeat (idempotent, or any with `non_idempotent: true`), only while
//!   the whole body is still buffered, and only when the engine judges the error
//!   retryable (e.g. a reset on a pooled connection it reused);
//! - an upstream status: only one listed in `on_status`, with the same method and
//!   buffer conditions.
//!
//! A retry goes to an instance this request has not tried, else to any available one;
//! never into the service's open circuit breaker (the attempt's failure is the answer:
//! retries would only pile onto a service that is already failing).

use std::sync::Arc;

use http::Method;
use pingora_core::{Error, ErrorType, RetryType};
use pingora_proxy::Session;

use super::refusal::Refusal;
use super::RequestCtx;
use crate::routing::RetryPolicy;
use crate::upstream::monotonic_ms;

/// What ended an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection to the instance: nothing of the request reached it.
    Connect,
    /// The exchange failed after the request started going out. `engine_retryable` is
    /// the engine's own view of the error, given whether the connection was reused.
    Exchange { engine_retryable: bool },
    /// The instance answered with this status.
    Status(u16),
}

/// A failed attempt, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt<'a> {
    /// 1 for the first attempt.
    pub number: u32,
    pub method: &'a Method,
    pub failure: Failure,
    /// Part of the body was not kept for a resend (over the retry buffer).
    pub body_truncated: bool,
    /// The gateway cut the body at the route's limit: the answer is `body_too_large`.
    pub body_refused: bool,
}

/// What the policy decided about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Try again, on an instance this request has not tried if there is one
    /// (see [`RetryPolicy::exclusions`]).
    RetryElsewhere,
    /// The attempt's failure is the request's.
    Final,
}

impl Decision {
    pub(crate) fn retries(self) -> bool {
        self == Decision::RetryElsewhere
    }
}

impl RetryPolicy {
    /// Whether `attempt` is tried again (the table in the module docs).
    pub(crate) fn decide(&self, attempt: &Attempt<'_>) -> Decision {
        if attempt.body_refused || attempt.number > self.attempts {
            return Decision::Final;
        }
        let retry = match attempt.failure {
            Failure::Connect => true,
            Failure::Exchange { engine_retryable } => engine_retryable && self.resendable(attempt),
            Failure::Status(status) => self.on_status.contains(&status) && self.resendable(attempt),
        };
        if retry {
            Decision::RetryElsewhere
        } else {
            Decision::Final
        }
    }

    /// Whether request_filter turns on the engine's retry buffer (the body kept for a
    /// resend, up to the engine's limit): when a listed status may ask for a resend.
    pub(crate) fn buffers_body(&self, method: &Method) -> bool {
        !self.on_status.is_empty() && self.attempts > 0 && self.repeats(method)
    }

    /// Where the next attempt goes, as the instances to leave out, in order of
    /// preference: every instance this request already tried, then none (a service
    /// whose instances were all tried still gets the retry).
    pub(crate) fn exclusions<'t>(&self, tried: &'t [Arc<str>]) -> [&'t [Arc<str>]; 2] {
        [tried, &[]]
    }

    fn repeats(&self, method: &Method) -> bool {
        self.non_idempotent || method.is_idempotent()
    }

    /// Whether what was sent may be sent again.
    fn resendable(&self, attempt: &Attempt<'_>) -> bool {
        self.repeats(attempt.method) && !attempt.body_truncated
    }
}

/// Ask the route's policy about the attempt that just failed.
pub(super) fn ask(ctx: &RequestCtx, session: &Session, failure: Failure) -> Decision {
    let Some(route) = ctx.route.as_ref() else {
        return Decision::Final;
    };
    let decision = route.retry.decide(&Attempt {
        number: u32::try_from(ctx.tried.len()).unwrap_or(u32::MAX),
        method: &session.req_header().method,
        failure,
        body_truncated: session.as_ref().retry_buffer_truncated(),
        body_refused: matches!(ctx.failure, Some(Refusal::BodyTooLarge { .. })),
    });
    let breaker_refuses = || {
        route
            .target(ctx.target)
            .service
            .circuit_breaker
            .as_ref()
            .is_some_and(|b| b.refuses(monotonic_ms()))
    };
    if decision.retries() && breaker_refuses() {
        return Decision::Final;
    }
    decision
}

/// What ended an attempt after the connection was made: a status error (raised by
/// [`status_error`], or the gateway's own `body_too_large`) or an exchange failure.
pub(super) fn failure_of(e: &Error, client_reused: bool) -> Failure {
    if let ErrorType::HTTPStatus(status) = e.etype() {
        return Failure::Status(*status);
    }
    let mut engine = e.retry;
    engine.decide_reuse(client_reused);
    Failure::Exchange {
        engine_retryable: engine == RetryType::Decided(true),
    }
}

/// The error that ends an attempt whose upstream status the policy retries; the
/// engine hands it to `error_while_proxy`, where [`failure_of`] reads the status back.
pub(super) fn status_error(status: u16) -> Box<Error> {
    let mut e = Error::explain(ErrorType::HTTPStatus(status), "retrying on upstream status");
    e.set_retry(true);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, on_status: &[u16], non_idempotent: bool) -> RetryPolicy {
        RetryPolicy {
            attempts,
            on_status: on_status.to_vec(),
            non_idempotent,
        }
    }

    fn attempt(number: u32, method: &Method, failure: Failure) -> Attempt<'_> {
        Attempt {
            number,
            method,
            failure,
            body_truncated: false,
            body_refused: false,
        }
    }

    const RESET: Failure = Failure::Exchange {
        engine_retryable: true,
    };

    #[test]
    fn the_table() {
        use Decision::{Final, RetryElsewhere};
        let (get, post) = (&Method::GET, &Method::POST);
        let p = policy(1, &[503], false);
        let cases: &[(&str, &RetryPolicy, Attempt<'_>, Decision)] = &[
            (
                "connect error on POST",
                &p,
                attempt(1, post, Failure::Connect),
                RetryElsewhere,
            ),
            (
                "connect error on GET",
                &p,
                attempt(1, get, Failure::Connect),
                RetryElsewhere,
            ),
            (
                "read error on GET",
                &p,
                attempt(1, get, RESET),
                RetryElsewhere,
            ),
            ("read error on POST", &p, attempt(1, post, RESET), Final),
            (
                "read error on POST, non_idempotent",
                &policy(1, &[], true),
                attempt(1, post, RESET),
                RetryElsewhere,
            ),
            (
                "an error the engine will not retry",
                &p,
                attempt(
                    1,
                    get,
                    Failure::Exchange {
                        engine_retryable: false,
                    },
                ),
                Final,
            ),
            (
                "listed status on GET",
                &p,
                attempt(1, get, Failure::Status(503)),
                RetryElsewhere,
            ),
            (
                "unlisted status on GET",
                &p,
                attempt(1, get, Failure::Status(502)),
                Final,
            ),
            (
                "listed status on POST",
                &p,
                attempt(1, post, Failure::Status(503)),
                Final,
            ),
            (
                "listed status on POST, non_idempotent",
                &policy(1, &[503], true),
                attempt(1, post, Failure::Status(503)),
                RetryElsewhere,
            ),
            (
                "attempts exhausted: connect",
                &p,
                attempt(2, get, Failure::Connect),
                Final,
            ),
            (
                "attempts exhausted: status",
                &p,
                attempt(2, get, Failure::Status(503)),
                Final,
            ),
            (
                "no retries configured",
                &policy(0, &[503], true),
                attempt(1, get, Failure::Connect),
                Final,
            ),
            (
                "third attempt of three",
                &policy(2, &[503], false),
                attempt(2, get, Failure::Status(503)),
                RetryElsewhere,
            ),
        ];
        for (name, policy, attempt, want) in cases {
            assert_eq!(policy.decide(attempt), *want, "{name}");
        }
    }

    #[test]
    fn a_truncated_body_is_not_resent() {
        let p = policy(1, &[503], false);
        for failure in [RESET, Failure::Status(503)] {
            let a = Attempt {
                body_truncated: true,
                ..attempt(1, &Method::PUT, failure)
            };
            assert_eq!(p.decide(&a), Decision::Final, "{failure:?}");
        }
        // nothing was sent: the buffer does not matter
        let a = Attempt {
            body_truncated: true,
            ..attempt(1, &Method::PUT, Failure::Connect)
        };
        assert_eq!(p.decide(&a), Decision::RetryElsewhere);
    }

    #[test]
    fn a_body_too_large_is_never_retried() {
        let p = policy(3, &[413], true);
        for failure in [Failure::Connect, RESET, Failure::Status(413)] {
            let a = Attempt {
                body_refused: true,
                ..attempt(1, &Method::GET, failure)
            };
            assert_eq!(p.decide(&a), Decision::Final, "{failure:?}");
        }
    }

    #[test]
    fn the_body_is_buffered_only_when_a_status_may_ask_for_a_resend() {
        assert!(policy(1, &[503], false).buffers_body(&Method::GET));
        assert!(!policy(1, &[503], false).buffers_body(&Method::POST));
        assert!(policy(1, &[503], true).buffers_body(&Method::POST));
        assert!(!policy(1, &[], true).buffers_body(&Method::GET));
        assert!(!policy(0, &[503], true).buffers_body(&Method::GET));
    }

    #[test]
    fn a_retry_prefers_an_untried_instance_then_any() {
        let tried: Vec<Arc<str>> = vec!["a:1".into()];
        let [first, then] = policy(1, &[], false).exclusions(&tried);
        assert_eq!(first, &tried[..]);
        assert!(then.is_empty());
    }

    #[test]
    fn failures_read_back_from_engine_errors() {
        assert_eq!(failure_of(&status_error(503), false), Failure::Status(503));
        let mut e = Error::explain(ErrorType::ConnectionClosed, "reset");
        e.retry = RetryType::ReusedOnly;
        assert_eq!(
            failure_of(&e, true),
            Failure::Exchange {
                engine_retryable: true
            }
        );
        assert_eq!(
            failure_of(&e, false),
            Failure::Exchange {
                engine_retryable: false
            }
        );
    }
}
