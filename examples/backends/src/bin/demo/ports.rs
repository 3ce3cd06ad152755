//! The demo's ports: the defaults of `config/gateway.yaml`, each overridable by an
//! environment variable (`DEMO_GATEWAY_PORT`, `DEMO_ADMIN_PORT`, `DEMO_MEMBER_PORT`,
//! `DEMO_PRODUCT_PORT`, `DEMO_ORDER_PORT`, `DEMO_REDIS_PORT`) so the demo can run
//! beside another copy of itself, and tests can run it on free ports.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub gateway: u16,
    pub admin: u16,
    pub member: u16,
    pub product: u16,
    pub order: u16,
    pub redis: u16,
}

/// The ports `config/gateway.yaml` is written for.
pub const DEFAULT: Ports = Ports {
    gateway: 8080,
    admin: 9090,
    member: 8081,
    product: 8082,
    order: 8083,
    redis: 6379,
};

impl Ports {
    pub fn from_env() -> Result<Self, String> {
        let port = |var: &str, default: u16| -> Result<u16, String> {
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{var}: not a port number (1-65535): {v:?}")),
                _ => Ok(default),
            }
        };
        Ok(Self {
            gateway: port("DEMO_GATEWAY_PORT", DEFAULT.gateway)?,
            admin: port("DEMO_ADMIN_PORT", DEFAULT.admin)?,
            member: port("DEMO_MEMBER_PORT", DEFAULT.member)?,
            product: port("DEMO_PRODUCT_PORT", DEFAULT.product)?,
            order: port("DEMO_ORDER_PORT", DEFAULT.order)?,
            redis: port("DEMO_REDIS_PORT", DEFAULT.redis)?,
        })
    }

    pub fn services(&self) -> [(&'static str, u16); 3] {
        [
            ("member", self.member),
            ("product", self.product),
            ("order", self.order),
        ]
    }
}

/// The gateway config to run: `config` itself on the default ports (so editing it
/// shows a hot reload), else a copy with this run's ports written to `data`.
pub fn gateway_config(config: &Path, data: &Path, ports: &Ports) -> Result<PathBuf, String> {
    if *ports == DEFAULT {
        return Ok(config.to_path_buf());
    }
    let text = std::fs::read_to_string(config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let mut out = text;
    let moves = [
        (
            format!("127.0.0.1:{}", DEFAULT.gateway),
            format!("127.0.0.1:{}", ports.gateway),
        ),
        (
            format!("127.0.0.1:{}", DEFAULT.admin),
            format!("127.0.0.1:{}", ports.admin),
        ),
        (
            format!("127.0.0.1:{}/", DEFAULT.member),
            format!("127.0.0.1:{}/", ports.member),
        ),
        (
            format!("redis://127.0.0.1:{}", DEFAULT.redis),
            format!("redis://127.0.0.1:{}", ports.redis),
        ),
    ];
    // Through placeholders, so one move never rewrites another's result (a free
    // port may equal another default).
    for (i, (from, _)) in moves.iter().enumerate() {
        if !out.contains(from.as_str()) {
            return Err(format!(
                "{} no longer mentions {from}: the demo cannot move it to another port",
                config.display()
            ));
        }
        out = out.replace(from.as_str(), &format!("\u{0}{i}\u{0}"));
    }
    for (i, (_, to)) in moves.iter().enumerate() {
        out = out.replace(&format!("\u{0}{i}\u{0}"), to);
    }
    let path = data.join("gateway.yaml");
    std::fs::write(&path, out).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}
