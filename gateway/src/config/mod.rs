//! Config stage: read the YAML file, check its shape, then compile it into the
//! runtime types the request path uses. Every error names its key path, the
//! problem and the fix; nothing is swapped in unless everything compiled.

mod compile;
pub mod discovery;
pub mod duration;
pub mod file;
pub mod resilience;
pub mod size;

use std::fmt;
use std::path::Path;

pub use compile::{compile, CompileInput, Compiled};
pub use file::GatewayConfig;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `routes[1].service`, or `line 4 column 3` for syntax errors.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl From<plugins::ConfigIssue> for ConfigError {
    fn from(i: plugins::ConfigIssue) -> Self {
        ConfigError::new(i.path, i.message)
    }
}

/// Largest config file we accept (a guard against reading the wrong file).
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Read a config file as text.
pub fn read(path: &Path) -> Result<String, Vec<ConfigError>> {
    let where_ = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| {
        vec![ConfigError::new(
            &where_,
            format!("cannot read the config file: {e}"),
        )]
    })?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(vec![ConfigError::new(
            &where_,
            format!(
                "the file is {} bytes; the limit is {MAX_CONFIG_BYTES}",
                meta.len()
            ),
        )]);
    }
    std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError::new(
            &where_,
            format!("cannot read the config file: {e}"),
        )]
    })
}

/// Parse YAML text into the file schema (unknown keys are errors).
pub fn parse(text: &str) -> Result<GatewayConfig, Vec<ConfigError>> {
    if text.trim().is_empty() {
        return Err(vec![ConfigError::new(
            "",
            "the config is empty (see config/reference.yaml for every key)",
        )]);
    }
    // track the key path while deserializing, so a shape error names where it is
    let mut path = String::new();
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize::<_, GatewayConfig>(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| vec![shape_error(&path, &e)])
}

/// `routes[0].match.pth: unknown field `pth`, expected one of ... at line 6, column 36`.
fn shape_error(path: &str, e: &serde_saphyr::Error) -> ConfigError {
    // `?` stands for a key the error is about (a duplicate): the map is the path
    let path = path.trim_end_matches('?').trim_end_matches('.');
    // the parser's advice is for library users, not for someone editing the file
    let message = e
        .to_string()
        .replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    ConfigError::new(path, message)
}

/// A stable short version for a config text (first 12 hex digits of its SHA-256).
pub fn version_of(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..6])
}
