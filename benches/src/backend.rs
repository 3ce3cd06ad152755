//! The fixed-response HTTP/1.1 backend the harness proxies to (and hits directly).
//!
//! `GET .../64k` answers 64 KiB, any request with a body has it read and counted,
//! everything else answers a 13-byte body. Keep-alive, no logging, no work.

use std::convert::Infallible;
use std::sync::LazyLock;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The small body every plain request gets.
pub const SMALL_BODY: &[u8] = b"hello, world\n";
/// Size of the large response (`GET .../64k`).
pub const LARGE_LEN: usize = 64 * 1024;

static LARGE: LazyLock<Bytes> = LazyLock::new(|| Bytes::from(vec![b'x'; LARGE_LEN]));

/// Serve connections from `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // out of file descriptors or similar: back off a little and go on
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let large = req.uri().path().ends_with("/64k");
    let mut body = req.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => received += f.data_ref().map_or(0, |d| d.len()),
            Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
        }
    }
    let payload = if large {
        LARGE.clone()
    } else if received > 0 {
        Bytes::from(format!("received {received}\n"))
    } else {
        Bytes::from_static(SMALL_BODY)
    };
    let mut resp = Response::new(Full::new(payload));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    Ok(resp)
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}
