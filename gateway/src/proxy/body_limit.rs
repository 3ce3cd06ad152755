//! Request body size (`server.max_body_size`, `routes[].max_body_size`): a declared
//! `Content-Length` over the limit is refused before anything is forwarded; a body
//! without one (chunked, HTTP/2) is counted as it streams and cut at the limit, so
//! the gateway never holds or forwards more than the limit.

use pingora_http::RequestHeader;

/// Whether the declared `Content-Length` is over `limit`; `declared`: whether the
/// client may have sent one (the header hygiene pass notes it).
pub(super) fn declared_over(req: &RequestHeader, declared: bool, limit: u64) -> bool {
    if limit == 0 || !declared {
        return false;
    }
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > limit)
}

/// Count `chunk`; true once the body seen so far is over `limit`.
pub(super) fn streamed_over(seen: &mut u64, chunk: usize, limit: u64) -> bool {
    *seen = seen.saturating_add(chunk as u64);
    limit != 0 && *seen > limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_and_streamed() {
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        assert!(!declared_over(&req, true, 10));
        req.insert_header("content-length", "11").unwrap();
        assert!(declared_over(&req, true, 10));
        assert!(!declared_over(&req, true, 11));
        assert!(!declared_over(&req, true, 0), "0 is no limit");
        assert!(!declared_over(&req, false, 10), "not sent: not looked up");
        let mut seen = 0;
        assert!(!streamed_over(&mut seen, 6, 10));
        assert!(!streamed_over(&mut seen, 4, 10));
        assert!(streamed_over(&mut seen, 1, 10));
    }
}
