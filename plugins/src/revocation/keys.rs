//! The Redis key schema of revocations: key templates, how a token maps to its
//! key, and the inverse (a key read from Redis back to the token id or subject).

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// Key templates and the announcement channel, shared by the gateway (reader) and
/// [`super::RevocationWriter`] (writer). The defaults match the gateway's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationKeys {
    /// `blacklist:{jti}`: `{jti}` (the `jti` claim; without one, `{signed_sha256}`),
    /// `{signed_sha256}` (SHA-256 hex of the signed part `header.payload`),
    /// `{token_sha256}` (SHA-256 hex of the whole token) or `{token}` (the raw token).
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
///
/// `Jti` and `SignedSha256` name the token by what its issuer signed, which no
/// holder can vary: every spelling of the same token that verifies (an ECDSA
/// signature with `s` or `n - s`, ...) maps to the same key. `TokenSha256` and
/// `Token` name one spelling of it; they exist to match a service that already
/// writes such keys, and the gateway then checks every spelling that verifies
/// ([`super::spelling`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVar {
    /// The `jti` claim, or [`signed_sha256`] when it has none.
    Jti,
    /// [`signed_sha256`] always.
    SignedSha256,
    /// SHA-256 (lowercase hex) of the whole token, signature included.
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
            ("{signed_sha256}", TokenVar::SignedSha256),
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
                "{b:?} must contain exactly one of {{jti}}, {{signed_sha256}}, {{token_sha256}} or {{token}} once (e.g. \"blacklist:{{jti}}\")"
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

    /// The id a token is blacklisted under, as a writer names it (the spelling given).
    ///
    /// The one function both sides use: the gateway's check and revoke-on-success,
    /// and [`super::RevocationWriter`] in the services.
    pub fn token_id<'a>(&self, jti: Option<&'a str>, raw_token: &'a str) -> Cow<'a, str> {
        match (self.token_var, jti) {
            (TokenVar::Jti, Some(j)) => Cow::Borrowed(j),
            (TokenVar::Jti | TokenVar::SignedSha256, _) => Cow::Owned(signed_sha256(raw_token)),
            (TokenVar::TokenSha256, _) => Cow::Owned(token_sha256(raw_token)),
            (TokenVar::Token, _) => Cow::Borrowed(raw_token),
        }
    }

    /// Every id under which this token may have been revoked: [`token_id`](Self::token_id),
    /// plus, for the spelling-bound templates (`{token_sha256}`, `{token}`), the id of
    /// each other spelling of the token that verifies as well.
    pub fn token_ids<'a>(&self, jti: Option<&'a str>, raw_token: &'a str) -> TokenIds<'a> {
        let first = self.token_id(jti, raw_token);
        let twin = match self.token_var {
            TokenVar::Jti | TokenVar::SignedSha256 => None,
            TokenVar::TokenSha256 => {
                super::spelling::ecdsa_twin(raw_token).map(|t| token_sha256(&t))
            }
            TokenVar::Token => super::spelling::ecdsa_twin(raw_token),
        };
        TokenIds { first, twin }
    }
}

/// The ids of one token (see [`KeySchema::token_ids`]): one, or two for an ECDSA
/// token under a spelling-bound template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIds<'a> {
    pub first: Cow<'a, str>,
    pub twin: Option<String>,
}

impl TokenIds<'_> {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.first.as_ref()).chain(self.twin.as_deref())
    }
}

/// SHA-256 (lowercase hex) of the signed part of a JWS, `header.payload` (everything
/// before the last `.`; the whole string when there is none).
///
/// The issuer's signature covers exactly these bytes, so a holder cannot change
/// them without the signing key; re-encoding the signature segment (ECDSA `n - s`,
/// another base64 spelling) leaves this id unchanged. The blacklist id of a token
/// without `jti`.
pub fn signed_sha256(raw_token: &str) -> String {
    let signed = raw_token.rsplit_once('.').map_or(raw_token, |(m, _)| m);
    hex::encode(Sha256::digest(signed.as_bytes()))
}

/// SHA-256 of the whole raw token, lowercase hex (the `{token_sha256}` template).
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
        // without jti: the signed part only, whatever follows the last dot
        assert_eq!(s.token_id(None, "h.p.sig1"), s.token_id(None, "h.p.sig2"));
        assert_eq!(s.token_id(None, "h.p.sig1"), token_sha256("h.p"));
        assert_ne!(s.token_id(None, "h.q.sig1"), s.token_id(None, "h.p.sig1"));
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
        assert_eq!(bad("b:{signed_sha256}", "rb:{sub}"), None);
        assert_eq!(
            bad("b:{jti}:{signed_sha256}", "rb:{sub}"),
            Some("blacklist_key")
        );
        assert_eq!(glob_escape("a*b"), "a\\*b");
    }
}
