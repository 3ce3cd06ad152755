//! A self-signed certificate made at test time (rcgen), for TLS listeners.

/// A certificate for `localhost` and `127.0.0.1`, with its key, as PEM.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

impl SelfSigned {
    /// Generate a fresh certificate and key.
    pub fn localhost() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("generate a self-signed certificate");
        Self {
            cert_pem: ck.cert.pem(),
            key_pem: ck.key_pair.serialize_pem(),
        }
    }

    /// The certificate as a root a reqwest client trusts.
    pub fn reqwest_root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).expect("parse our own PEM")
    }

    /// Files to pass to [`GatewayProcess::start_with_files`](crate::GatewayProcess::start_with_files):
    /// `cert.pem` and `key.pem`, referenced in YAML as `$DIR/cert.pem` and `$DIR/key.pem`.
    pub fn files(&self) -> [(&'static str, &[u8]); 2] {
        [
            ("cert.pem", self.cert_pem.as_bytes()),
            ("key.pem", self.key_pem.as_bytes()),
        ]
    }
}
