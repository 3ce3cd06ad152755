//! The Redis key schema of revocations: key templates, how a token maps to its
//! key, and the inverse (a key read from Redis back to the token id or subject).

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// Key templates and the announcement channel, shared by the gateway (reader) and
/// [`super::RevocationWriter`] (writer). The defaults match the gateway's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationKeys {
    /// `blacklist:{jti}`: `{jti}` (SHA-256 hex of the token without `jti`),
    /// `{token_sha256}` or `{token}` (the raw token).
    pub blacklist_key: String,
    /// `revoked-before:{sub}`: holds a unix time (seconds, may be fractional).
    pub revoked_before_key: String,
    /// Pub/sub channel; the message is the key just written.
    pub channel: String,
}

impl Default for RevocationKeys {
    fn default() -> Self {
        Self {
            blacklist_key: crate::auth::config::default_blacklist_key(),
            revoked_before_key: crate::auth::config::default_revoked_before_key(),
            channel: crate::auth::config::default_channel(),
        }
    }
}

/// What identifies a token in its blacklist key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVar {
    /// The `jti` claim, or the token's SHA-256 (hex) when it has none.
    Jti,
    /// The token's SHA-256 (lowercase hex) always.
    TokenSha256,
    /// The raw token.
    Token,
}

/// A parsed `prefix{var}suffix` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    prefix: String,
    suffix: String,
}

impl Template {
    fn parse(s: &str, var: &str) -> Option<Template> {
        let (prefix, suffix) = s.split_once(var)?;
        if suffix.contains(var) {
            return None;
        }
        Some(Template {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
        })
    }

    /// The key for one id.
    pub fn render(&self, id: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + id.len() + self.suffix.len());
        k.push_str(&self.prefix);
        k.push_str(id);
        k.push_str(&self.suffix);
        k
    }

    /// The id inside a key written with this template.
    pub fn extract<'a>(&self, key: &'a str) -> Option<&'a str> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let id = rest.strip_suffix(self.suffix.as_str())?;
        (!id.is_empty()).then_some(id)
    }

    /// A SCAN `MATCH` pattern for every key of this template.
    pub fn pattern(&self) -> String {
        format!(
            "{}*{}",
            glob_escape(&self.prefix),
            glob_escape(&self.suffix)
        )
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The compiled key schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySchema {
    pub token: Template,
    pub token_var: TokenVar,
    pub subject: Template,
    pub channel: String,
}

impl KeySchema {
    /// Check the templates; the error names the field and the fix.
    pub fn new(keys: &RevocationKeys) -> Result<KeySchema, (&'static str, String)> {
        let b = &keys.blacklist_key;
        let (token, token_var) = [
            ("{jti}", TokenVar::Jti),
            ("{token_sha256}", TokenVar::TokenSha256),
            ("{token}", TokenVar::Token),
        ]
        .iter()
        .filter(|(v, _)| b.contains(v))
        .map(|(v, kind)| Template::parse(b, v).map(|t| (t, *kind)))
        .collect::<Option<Vec<_>>>()
        .filter(|v| v.len() == 1)
        .and_then(|mut v| v.pop())
        .ok_or((
            "blacklist_key",
            format!(
                "{b:?} must contain exactly one of {{jti}}, {{token_sha256}} or {{token}} once (e.g. \"blacklist:{{jti}}\")"
            ),
        ))?;
        let subject = Template::parse(&keys.revoked_before_key, "{sub}").ok_or((
            "revoked_before_key",
            format!(
                "{:?} must contain {{sub}} once (e.g. \"revoked-before:{{sub}}\")",
                keys.revoked_before_key
            ),
        ))?;
        if keys.channel.is_empty() {
            return Err(("channel", "the channel name is empty".into()));
        }
        Ok(KeySchema {
            token,
            token_var,
            subject,
            channel: keys.channel.clone(),
        })
    }

    /// The id a token is blacklisted under.
    pub fn token_id<'a>(&self, jti: Option<&'a str>, raw_token: &'a str) -> Cow<'a, str> {
        match (self.token_var, jti) {
            (TokenVar::Jti, Some(j)) => Cow::Borrowed(j),
            (TokenVar::Token, _) => Cow::Borrowed(raw_token),
            _ => Cow::Owned(token_sha256(raw_token)),
        }
    }
}

/// SHA-256 of the raw token, lowercase hex (the blacklist id of a token without `jti`).
pub fn token_sha256(raw_token: &str) -> String {
    hex::encode(Sha256::digest(raw_token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_round_trip() {
        let s = KeySchema::new(&RevocationKeys::default()).unwrap();
        assert_eq!(s.token.render("abc"), "blacklist:abc");
        assert_eq!(s.token.extract("blacklist:abc"), Some("abc"));
        assert_eq!(s.token.extract("revoked-before:abc"), None);
        assert_eq!(s.subject.extract("revoked-before:42"), Some("42"));
        assert_eq!(s.token.pattern(), "blacklist:*");
        assert_eq!(s.token_id(Some("j"), "t.t.t"), "j");
        assert_eq!(s.token_id(None, "abc"), token_sha256("abc"));
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bad_templates_are_named() {
        let bad = |b: &str, r: &str| {
            KeySchema::new(&RevocationKeys {
                blacklist_key: b.into(),
                revoked_before_key: r.into(),
                channel: "c".into(),
            })
            .err()
            .map(|e| e.0)
        };
        assert_eq!(bad("blacklist", "rb:{sub}"), Some("blacklist_key"));
        assert_eq!(bad("b:{jti}:{jti}", "rb:{sub}"), Some("blacklist_key"));
        assert_eq!(bad("b:{jti}:{token}", "rb:{sub}"), Some("blacklist_key"));
        assert_eq!(bad("b:{jti}", "rb"), Some("revoked_before_key"));
        assert_eq!(bad("jwt:{token}:revoked", "rb:{sub}"), None);
        assert_eq!(glob_escape("a*b"), "a\\*b");
    }
}
