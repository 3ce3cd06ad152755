//! What the importer could not convert, and why: one note per item, with the
//! source line, printed on stderr (`application.yml:23: filter AuthFilter: ...`).

use std::fmt;

/// Something in the source that is not (or not fully) in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// 1-based line in the source file (0: the file as a whole).
    pub line: usize,
    /// What it is about (`filter AuthFilter`, `route member: predicate Query`).
    pub subject: String,
    /// Why it was not converted, and what to do instead.
    pub why: String,
}

impl Note {
    pub fn new(line: usize, subject: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            line,
            subject: subject.into(),
            why: why.into(),
        }
    }
}

/// A note as printed, prefixed with the file name.
pub struct Located<'a> {
    pub file: &'a str,
    pub note: &'a Note,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.note.line, self.note.subject, self.note.why
        )
    }
}

/// The hint for a filter we cannot translate: an auth-like name points at our JWT
/// support, anything else at the pipeline the gateway has.
pub fn custom_filter_hint(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if ["auth", "jwt", "token", "login", "security"]
        .iter()
        .any(|w| lower.contains(w))
    {
        "custom filter (a GatewayFilterFactory bean): not converted. If it verifies a JWT, \
         use `auth: {jwt: {}}` on the route with `auth.issuers` (keys, JWKS), and \
         `auth.identity.headers` to pass the verified user to the service \
         (e.g. Authenticated-User: \"{email}\"); see docs/auth.md"
            .into()
    } else {
        "custom filter (a GatewayFilterFactory bean): not converted; there is no plugin \
         for arbitrary code. Request/response header rules, rewrites, rate limits, retries \
         and JWT auth are built in (config/reference.yaml)"
            .into()
    }
}
