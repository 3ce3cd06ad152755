//! TLS for the HTTPS scenarios: a test CA and a `localhost` certificate made at
//! run time (rcgen, ECDSA P-256), the files each target reads, and the rustls
//! client the load generator and the readiness probe use.
//!
//! The client never resumes a session: in the handshake scenario every new
//! connection costs the target a full handshake.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// The name the certificate is for, and the SNI the client sends.
pub const SERVER_NAME: &str = "localhost";

/// Certificate files written for the targets, and a client that trusts them.
pub struct TlsFiles {
    /// PEM certificate chain (leaf, then the CA).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8).
    pub key: PathBuf,
    /// Chain and key in one file (haproxy's `crt`).
    pub combined: PathBuf,
    pub client: Arc<ClientConfig>,
}

/// Make a CA and a leaf certificate for `localhost` and 127.0.0.1, write them
/// to `dir`, and build the client config that trusts the CA.
pub fn generate(dir: &Path) -> Result<TlsFiles, String> {
    let err = |what: &str| {
        let what = what.to_string();
        move |e: rcgen::Error| format!("cannot make the test {what}: {e}")
    };
    let ca_key = KeyPair::generate().map_err(err("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err("CA"))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "loadtest CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).map_err(err("CA"))?;

    let key = KeyPair::generate().map_err(err("key"))?;
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_string(), "127.0.0.1".to_string()])
        .map_err(err("certificate"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, SERVER_NAME);
    let leaf = params
        .signed_by(&key, &ca, &ca_key)
        .map_err(err("certificate"))?;

    let chain = format!("{}{}", leaf.pem(), ca.pem());
    let key_pem = key.serialize_pem();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        Ok::<_, String>(p)
    };
    let cert = write("tls-cert.pem", &chain)?;
    let key_file = write("tls-key.pem", &key_pem)?;
    let combined = write("tls-combined.pem", &format!("{chain}{key_pem}"))?;

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.der().to_vec()))
        .map_err(|e| format!("cannot trust the test CA: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("rustls client: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = Resumption::disabled();
    Ok(TlsFiles {
        cert,
        key: key_file,
        combined,
        client: Arc::new(client),
    })
}

/// The server name the client verifies.
pub fn server_name() -> io::Result<ServerName<'static>> {
    ServerName::try_from(SERVER_NAME).map_err(io::Error::other)
}

/// One blocking `GET` with `headers` over a fresh TLS connection: the status code
/// and what was negotiated (`TLSv1_3 TLS13_AES_256_GCM_SHA384 X25519`).
pub fn https_status(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    client: &Arc<ClientConfig>,
) -> io::Result<(u16, String)> {
    let conn = ClientConnection::new(client.clone(), server_name()?).map_err(io::Error::other)?;
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut tls = StreamOwned::new(conn, sock);
    let status = crate::procs::request_status(&mut tls, path, headers)?;
    let _ = tls.flush();
    let c = &tls.conn;
    let negotiated = format!(
        "{} {} {}",
        c.protocol_version()
            .map_or("?".into(), |v| format!("{v:?}")),
        c.negotiated_cipher_suite()
            .map_or("?".into(), |s| format!("{:?}", s.suite())),
        c.negotiated_key_exchange_group()
            .map_or("?".into(), |g| format!("{:?}", g.name())),
    );
    Ok((status, negotiated))
}
