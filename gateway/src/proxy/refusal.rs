//! Why the gateway answered a request itself instead of the service: a [`Refusal`]
//! knows its status, code and message and renders as a [`LocalResponse`] for the one
//! responder (`respond::respond`). Refusals found before the plugins run are answered
//! by `request_filter`; the rest end the proxying with an error ([`fail`]) and are
//! answered by `fail_to_proxy` ([`Refusal::for_error`]).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use pingora_core::{Error, ErrorSource, ErrorType};

use super::respond::LocalResponse;
use super::RequestCtx;
use crate::routing::path_policy::PathRefusal;

/// Why the gateway itself answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A header name the header policy refuses (`server.headers_with_underscores: reject`).
    InvalidHeader(String),
    /// A path a backend could resolve to another route than the one matched.
    InvalidPath(PathRefusal),
    NoRoute,
    /// A body over the route's limit (in bytes), declared or streamed.
    BodyTooLarge {
        limit: u64,
    },
    NoInstance {
        service: Arc<str>,
    },
    /// The service's circuit breaker is open (or half-open with no probe left).
    CircuitOpen {
        service: Arc<str>,
        retry_after: Duration,
    },
    UpstreamUnreachable,
    UpstreamTimeout,
    Internal,
}

impl Refusal {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Refusal::InvalidHeader(_) | Refusal::InvalidPath(_) => StatusCode::BAD_REQUEST,
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::NoInstance { .. } | Refusal::CircuitOpen { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine code clients see as `error`.
    pub(super) fn code(&self) -> &'static str {
        match self {
            Refusal::InvalidHeader(_) => "invalid_header",
            Refusal::InvalidPath(_) => "invalid_path",
            Refusal::NoRoute => "route_not_found",
            Refusal::BodyTooLarge { .. } => "body_too_large",
            Refusal::NoInstance { .. } => "no_healthy_instance",
            Refusal::CircuitOpen { .. } => "circuit_open",
            Refusal::UpstreamUnreachable => "upstream_unreachable",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::Internal => "internal_error",
        }
    }

    /// The message clients see; it may name what the request carried, never a cause.
    pub(super) fn message(&self) -> Cow<'static, str> {
        match self {
            Refusal::InvalidHeader(name) => {
                format!("header {name:?}: names with `_` are not accepted; use `-`").into()
            }
            Refusal::InvalidPath(why) => why.message().into(),
            Refusal::NoRoute => "no route matches this request".into(),
            Refusal::BodyTooLarge { limit } => {
                format!("the request body is over {limit} bytes").into()
            }
            Refusal::NoInstance { service } => {
                format!("service {service:?} has no healthy instance").into()
            }
            Refusal::CircuitOpen { service, .. } => format!(
                "service {service:?} is failing; requests to it are paused (circuit breaker open)"
            )
            .into(),
            Refusal::UpstreamTimeout => "the service did not answer in time".into(),
            Refusal::UpstreamUnreachable => "the service could not be reached".into(),
            Refusal::Internal => "the gateway failed to handle this request".into(),
        }
    }

    /// Why an attempt that could not connect failed, when it is not retried.
    pub(super) fn connect_failed(e: &Error) -> Self {
        if matches!(e.etype(), ErrorType::ConnectTimedout) {
            Refusal::UpstreamTimeout
        } else {
            Refusal::UpstreamUnreachable
        }
    }

    /// What `fail_to_proxy` answers for `e`, given the refusal recorded while proxying
    /// (if any): the status (0: none, the client is gone) and the refusal to render.
    /// The status an error carries (a refusal's own, a retried status passed on) wins.
    pub(super) fn for_error(recorded: Option<Refusal>, e: &Error) -> (u16, Refusal) {
        match (recorded, e.etype()) {
            (Some(r), ErrorType::HTTPStatus(code)) => (*code, r),
            (Some(Refusal::UpstreamTimeout), _) => (504, Refusal::UpstreamTimeout),
            (Some(r), _) => (502, r),
            (None, ErrorType::HTTPStatus(code)) => (*code, Refusal::UpstreamUnreachable),
            (None, _) => match e.esource() {
                ErrorSource::Downstream => (0, Refusal::Internal),
                ErrorSource::Upstream => (502, Refusal::UpstreamUnreachable),
                _ => (500, Refusal::Internal),
            },
        }
    }
}

impl From<Refusal> for LocalResponse {
    fn from(r: Refusal) -> Self {
        let answer = LocalResponse::error(r.status(), r.code(), r.message());
        match r {
            Refusal::CircuitOpen { retry_after, .. } => answer.with_header(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(retry_after_secs(retry_after)),
            ),
            _ => answer,
        }
    }
}

/// `Retry-After` in whole seconds, rounded up: a client that waits that long finds
/// the breaker half-open.
fn retry_after_secs(d: Duration) -> u64 {
    d.as_millis()
        .div_ceil(1000)
        .max(1)
        .try_into()
        .unwrap_or(u64::MAX)
}

/// End the proxying with `refusal`: recorded for `fail_to_proxy`, which answers it
/// with the status the returned error carries.
pub(super) fn fail(ctx: &mut RequestCtx, refusal: Refusal) -> Box<Error> {
    let e = Error::explain(
        ErrorType::HTTPStatus(refusal.status().as_u16()),
        refusal.code(),
    );
    ctx.failure = Some(refusal);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_an_error_carries_wins() {
        let e = Error::explain(ErrorType::HTTPStatus(413), "body_too_large");
        let (status, r) = Refusal::for_error(Some(Refusal::BodyTooLarge { limit: 10 }), &e);
        assert_eq!((status, r.code()), (413, "body_too_large"));
        // a retried status the retries ran out on is passed on as it came
        let (status, r) = Refusal::for_error(None, &e);
        assert_eq!((status, r.code()), (413, "upstream_unreachable"));
    }

    #[test]
    fn errors_without_a_status_map_by_refusal_then_source() {
        let timeout = Error::explain(ErrorType::ReadTimedout, "slow");
        let got = Refusal::for_error(Some(Refusal::UpstreamTimeout), &timeout);
        assert_eq!(got, (504, Refusal::UpstreamTimeout));
        let got = Refusal::for_error(Some(Refusal::UpstreamUnreachable), &timeout);
        assert_eq!(got, (502, Refusal::UpstreamUnreachable));
        let mut e = Error::explain(ErrorType::ConnectionClosed, "gone");
        e.as_down();
        assert_eq!(
            Refusal::for_error(None, &e).0,
            0,
            "no answer to a gone client"
        );
        e.as_up();
        assert_eq!(
            Refusal::for_error(None, &e),
            (502, Refusal::UpstreamUnreachable)
        );
        let e = Error::explain(ErrorType::InternalError, "bug");
        assert_eq!(Refusal::for_error(None, &e), (500, Refusal::Internal));
    }

    #[test]
    fn circuit_open_says_when_to_come_back() {
        let r = Refusal::CircuitOpen {
            service: "order".into(),
            retry_after: Duration::from_millis(2_100),
        };
        assert_eq!(
            (r.status(), r.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "circuit_open")
        );
        assert!(r.message().contains("\"order\""));
        assert_eq!(retry_after_secs(Duration::from_millis(2_100)), 3);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn each_refusal_knows_its_answer() {
        let r = Refusal::NoInstance {
            service: "member".into(),
        };
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.code(), "no_healthy_instance");
        assert_eq!(r.message(), "service \"member\" has no healthy instance");
        let r = Refusal::InvalidHeader("x_user".into());
        assert_eq!(
            (r.status(), r.code()),
            (StatusCode::BAD_REQUEST, "invalid_header")
        );
        assert!(r.message().contains("\"x_user\""));
        let r = Refusal::BodyTooLarge { limit: 1024 };
        assert_eq!(r.message(), "the request body is over 1024 bytes");
        assert_eq!(
            Refusal::connect_failed(&Error::explain(ErrorType::ConnectTimedout, "")),
            Refusal::UpstreamTimeout
        );
        assert_eq!(
            Refusal::connect_failed(&Error::explain(ErrorType::ConnectRefused, "")),
            Refusal::UpstreamUnreachable
        );
    }
}
