//! Durations in config files: human strings such as `"250ms"`, `"2s"`, `"1m 30s"`.
//! Shared by every config section (the gateway's and the plugins').

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `Duration` written as a human string in YAML.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn from_secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?}: {e} (write e.g. \"250ms\", \"2s\", \"1m\")"
            ))
        })
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_durations() {
        let d: Dur = serde_json::from_str("\"250ms\"").unwrap();
        assert_eq!(d.get(), Duration::from_millis(250));
        let d: Dur = serde_json::from_str("\"1m 30s\"").unwrap();
        assert_eq!(d.get(), Duration::from_secs(90));
        let e = serde_json::from_str::<Dur>("\"soon\"").unwrap_err();
        assert!(e.to_string().contains("invalid duration"), "{e}");
    }
}
