//! The samples fail closed: without `GATEWAY_SIGNING_SECRET` a service refuses to
//! start (and says which variable and which flag), unless the development flag
//! `INSECURE_TRUST_UNSIGNED_IDENTITY=1` asks for unsigned trust, which it announces
//! loudly. Real binaries, real processes.

use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{free_port, http_get, wait_until};

const SERVICES: [(&str, &str); 3] = [
    ("member", env!("CARGO_BIN_EXE_member")),
    ("product", env!("CARGO_BIN_EXE_product")),
    ("order", env!("CARGO_BIN_EXE_order")),
];

/// A service command with a clean environment apart from `env`.
fn service(bin: &str, data: &std::path::Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PORT", free_port().to_string())
        .env("DATA_DIR", data)
        // Nothing listens here: a service that got past its config would hang on
        // Redis or retry, not exit at once.
        .env("REDIS_URL", format!("redis://127.0.0.1:{}", free_port()))
        .env(
            "JWT_PRIVATE_KEY",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../config/demo-keys/member-private.pem"
            ),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd
}

#[test]
fn every_service_refuses_to_start_without_a_signing_secret() {
    let data = tempfile::tempdir().unwrap();
    for env in [
        vec![],
        vec![("GATEWAY_SIGNING_SECRET", "   ")],
        vec![("INSECURE_TRUST_UNSIGNED_IDENTITY", "0")],
    ] {
        for (name, bin) in SERVICES {
            let out = service(bin, data.path(), &env).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{name} with {env:?} must refuse to start; stderr:\n{stderr}"
            );
            assert!(
                stderr.contains("GATEWAY_SIGNING_SECRET")
                    && stderr.contains("INSECURE_TRUST_UNSIGNED_IDENTITY=1"),
                "{name}: the error names the variable and the flag:\n{stderr}"
            );
        }
    }
}

#[test]
fn a_misspelt_flag_is_an_error_not_a_choice() {
    let data = tempfile::tempdir().unwrap();
    let (_, bin) = SERVICES[2];
    let out = service(
        bin,
        data.path(),
        &[("INSECURE_TRUST_UNSIGNED_IDENTITY", "yes please")],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("INSECURE_TRUST_UNSIGNED_IDENTITY: expected 1 or 0"),
        "{stderr}"
    );
}

/// The explicit development mode starts, warns loudly, and believes unsigned headers.
#[test]
fn the_insecure_flag_starts_with_a_loud_warning() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("order.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port();
    let mut child = service(
        SERVICES[2].1,
        data.path(),
        &[
            ("INSECURE_TRUST_UNSIGNED_IDENTITY", "1"),
            ("PORT", &port.to_string()),
        ],
    )
    .stdout(log.try_clone().unwrap())
    .stderr(log)
    .spawn()
    .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let up = wait_until(Duration::from_secs(30), || {
        matches!(http_get(&addr, "/health"), Ok((200, _)))
    });
    let orders = unsigned_get(&addr, "/order/orders");
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "order did not start in development mode:\n{text}");
    assert!(orders.starts_with("HTTP/1.1 200"), "{orders}");
    assert!(
        text.contains("INSECURE") && text.contains("WITHOUT a gateway signature"),
        "no loud warning at start:\n{text}"
    );
}

/// With a secret, the same unsigned request is refused (the contrast to the above).
#[test]
fn with_a_secret_unsigned_identity_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = service(
        SERVICES[2].1,
        data.path(),
        &[
            ("GATEWAY_SIGNING_SECRET", "a-test-secret-0123456789"),
            ("PORT", &port.to_string()),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let up = wait_until(Duration::from_secs(30), || {
        matches!(http_get(&addr, "/health"), Ok((200, _)))
    });
    let orders = unsigned_get(&addr, "/order/orders");
    let _ = child.kill();
    let _ = child.wait();
    assert!(up);
    assert!(orders.starts_with("HTTP/1.1 401"), "{orders}");
    assert!(orders.contains("gateway_signature_missing"), "{orders}");
}

/// GET with identity headers and no signature; the raw response.
fn unsigned_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-User-Id: u-1\r\n\
         Authenticated-User: a@example.com\r\nX-User-Roles: user\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
