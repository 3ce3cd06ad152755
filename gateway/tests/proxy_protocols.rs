//! Protocols through the real binary: WebSocket upgrade, HTTP/2 with prior
//! knowledge (h2c), TLS with ALPN h2 and http/1.1 (a certificate made at test
//! time), and large bodies streamed both ways in bounded memory.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use testkit::config::{
    ByteSize, GatewayConfigBuilder, ListenerConfig, RouteBuilder, ServiceBuilder, TlsConfig,
    HTTPS_ADDRESS,
};
use testkit::tokio_tungstenite::tungstenite::Message;
use testkit::{client, h2c_client, peak_rss_bytes, Backend, Echo, GatewayProcess, SelfSigned};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

fn plain_builder(backend: &Backend) -> GatewayConfigBuilder {
    GatewayConfigBuilder::new()
        .admin()
        .service("s", ServiceBuilder::instances([backend.addr()]))
        .route(RouteBuilder::to("s").prefix("/chat/").strip_prefix("/chat"))
        .route(RouteBuilder::to("s"))
}

fn plain(backend: &Backend) -> String {
    plain_builder(backend).yaml()
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let backend = Backend::start("ws");
    let gw = GatewayProcess::start(BIN, &plain(&backend));
    let url = format!("ws://127.0.0.1:{}/chat/ws", gw.http_port);
    let (mut ws, resp) = testkit::tokio_tungstenite::connect_async(url)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for k in 0..5 {
        let text = format!("hello {k}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got, Message::text(text));
    }
    let blob = vec![7u8; 200_000];
    ws.send(Message::binary(blob.clone())).await.unwrap();
    let got = ws.next().await.unwrap().unwrap();
    assert_eq!(got.into_data().as_ref(), &blob[..]);
    ws.close(None).await.unwrap();
}

/// A service that answers the upgrade at once (its 101 is on the wire before the
/// gateway has handled the end of the upgrade request's own, empty, body), then
/// echoes raw bytes. Pingora 0.9.1 took that end for the end of the tunnel and closed
/// it after the 101 (third_party/PATCHES.md, patch 3): a coin flip per connection.
fn early_101_backend() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let _ = conn.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                );
                // skip the request header, then echo whatever comes
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    seen.extend_from_slice(&buf[..n]);
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let rest = seen.split_off(end + 4);
                        if !rest.is_empty() && conn.write_all(&rest).is_err() {
                            return;
                        }
                        break;
                    }
                }
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, handle)
}

#[tokio::test]
async fn upgraded_tunnels_stay_open_when_the_101_comes_first() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _backend) = early_101_backend();
    let yaml = GatewayConfigBuilder::new()
        .admin()
        .service("t", ServiceBuilder::instances([addr.to_string()]))
        .route(RouteBuilder::to("t"))
        .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    let mut failed = Vec::new();
    for k in 0..40 {
        let mut conn = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        conn.write_all(
            b"GET /tunnel HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match conn.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            failed.push(format!("{k}: {}", String::from_utf8_lossy(&head)));
            continue;
        }
        let msg = format!("ping {k}");
        let echoed = async {
            conn.write_all(msg.as_bytes()).await?;
            let mut got = vec![0u8; msg.len()];
            conn.read_exact(&mut got).await?;
            Ok::<_, std::io::Error>(got)
        };
        match tokio::time::timeout(Duration::from_secs(5), echoed).await {
            Ok(Ok(got)) if got == msg.as_bytes() => {}
            other => failed.push(format!("{k}: no echo through the tunnel: {other:?}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 40 tunnels failed: {failed:?}\n{}",
        failed.len(),
        gw.log()
    );
}

#[tokio::test]
async fn h2c_with_prior_knowledge() {
    let backend = Backend::start("h2c");
    let gw = GatewayProcess::start(BIN, &plain(&backend));
    let c = h2c_client();
    let mut tasks = Vec::new();
    // several streams on one connection
    for k in 0..10 {
        let req = c.get(gw.url(&format!("/s/{k}?n={k}"))).send();
        tasks.push(tokio::spawn(req));
    }
    for (k, t) in tasks.into_iter().enumerate() {
        let resp = t.await.unwrap().unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("x-request-id"));
        let e: Echo = resp.json().await.unwrap();
        assert_eq!(e.path, format!("/s/{k}"));
        assert_eq!(e.query, format!("n={k}"));
        // the hop to the backend is HTTP/1.1 unless the service asks for h2
        assert_eq!(e.version, "HTTP/1.1");
        assert_eq!(e.header("x-forwarded-proto"), Some("http"));
    }
    let resp = c
        .post(gw.url("/upload"))
        .body(vec![1u8; 100_000])
        .send()
        .await
        .unwrap();
    let e: Echo = resp.json().await.unwrap();
    assert_eq!(e.body_bytes, 100_000);
}

fn tls_config(backend: &Backend, http2: bool) -> String {
    GatewayConfigBuilder::new()
        .listener(ListenerConfig {
            tls: Some(TlsConfig {
                http2,
                ..TlsConfig::new("$DIR/cert.pem", "$DIR/key.pem")
            }),
            ..ListenerConfig::new(HTTPS_ADDRESS)
        })
        .admin()
        .service("s", ServiceBuilder::instances([backend.addr()]))
        .route(RouteBuilder::to("s"))
        .yaml()
}

#[tokio::test]
async fn tls_listener_negotiates_h2_by_alpn() {
    let backend = Backend::start("tls");
    let cert = SelfSigned::localhost();
    let gw = GatewayProcess::start_with_files(BIN, &tls_config(&backend, true), &cert.files());
    let resolve = ([127, 0, 0, 1], gw.https_port).into();
    let h2 = reqwest::Client::builder()
        .add_root_certificate(cert.reqwest_root())
        .resolve("localhost", resolve)
        .no_proxy()
        .build()
        .unwrap();
    let resp = h2.get(gw.https_url("/secure?a=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN picked h2");
    let e: Echo = resp.json().await.unwrap();
    assert_eq!(e.path, "/secure");
    assert_eq!(e.header("x-forwarded-proto"), Some("https"));

    let h1 = reqwest::Client::builder()
        .add_root_certificate(cert.reqwest_root())
        .resolve("localhost", resolve)
        .http1_only()
        .no_proxy()
        .build()
        .unwrap();
    let resp = h1.get(gw.https_url("/secure")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);

    // the plain listener keeps serving beside it
    let resp = client().get(gw.url("/plain")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn tls_listener_without_http2_offers_only_http1() {
    let backend = Backend::start("tls");
    let cert = SelfSigned::localhost();
    let gw = GatewayProcess::start_with_files(BIN, &tls_config(&backend, false), &cert.files());
    let c = reqwest::Client::builder()
        .add_root_certificate(cert.reqwest_root())
        .resolve("localhost", ([127, 0, 0, 1], gw.https_port).into())
        .no_proxy()
        .build()
        .unwrap();
    let resp = c.get(gw.https_url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);

    // the kept-alive TLS connection idles (its first read boxed for the wait), then
    // takes a header larger than that read and the header buffer
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let big = "v".repeat(6000);
    let resp = c
        .get(gw.https_url("/y"))
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let e: Echo = resp.json().await.unwrap();
    assert_eq!(
        (e.path.as_str(), e.header("x-big")),
        ("/y", Some(big.as_str()))
    );
}

const BIG: u64 = 256 * 1024 * 1024;
/// Far below the body size: the gateway must stream, not buffer.
const RSS_LIMIT: u64 = 96 * 1024 * 1024;

#[tokio::test]
async fn large_bodies_stream_both_ways_in_bounded_memory() {
    let backend = Backend::start("big");
    // no body limit: the 256 MiB upload is the point (the default is 1 MiB)
    let yaml = plain_builder(&backend)
        .server(|s| s.max_body_size = ByteSize(0))
        .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    let pid = gw.pid();
    let at_start = testkit::rss_bytes(pid).expect("read /proc");

    // download: the backend streams 256 MiB
    let resp = c
        .get(gw.url(&format!("/big?bytes={BIG}")))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.iter().all(|b| *b == b'x'));
        got += chunk.len() as u64;
    }
    assert_eq!(got, BIG);

    // upload: 256 MiB generated as it is sent
    const CHUNK: usize = 256 * 1024;
    let chunks = (BIG / CHUNK as u64) as usize;
    let body = futures::stream::iter(
        (0..chunks).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'u'; CHUNK]))),
    );
    let resp = c
        .post(gw.url("/upload"))
        .timeout(Duration::from_secs(300))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let e: Echo = resp.json().await.unwrap();
    assert_eq!(e.body_bytes, BIG);

    let peak = peak_rss_bytes(pid).expect("read /proc");
    assert!(
        peak < RSS_LIMIT,
        "gateway peak RSS {} MiB while moving 256 MiB each way",
        peak / (1024 * 1024)
    );
    eprintln!(
        "gateway RSS at start {} MiB, peak after 2 x 256 MiB: {} MiB",
        at_start / (1024 * 1024),
        peak / (1024 * 1024)
    );
}

#[tokio::test]
async fn services_can_speak_h2c_to_instances() {
    let backend = Backend::start("h2");
    let yaml = GatewayConfigBuilder::new()
        .service("s", ServiceBuilder::instances([backend.addr()]).http2())
        .route(RouteBuilder::to("s"))
        .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    for _ in 0..3 {
        let resp = client().get(gw.url("/grpc-ish")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let e: Echo = resp.json().await.unwrap();
        assert_eq!(e.version, "HTTP/2.0");
    }
}
