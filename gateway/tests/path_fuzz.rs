//! Fuzz harness for the path policy (stable toolchain, proptest). For every
//! generated path: `check` never panics; an accepted path, normalised the way each
//! backend family does, is exactly the decoded path the router matched; a
//! strip-prefix or regex rewrite of it is either refused or again read by every
//! backend as the path the gateway meant to send.
//!
//! Cases per property: `FUZZ_CASES` (default 500, so CI stays short). A local run:
//! `FUZZ_CASES=1000000 cargo test --release -p gateway --test path_fuzz`.
//! Failures proptest finds are kept in `path_fuzz.proptest-regressions` and re-run
//! first; fixed ones also become named cases in `regressions`.

use gateway::routing::path_policy::{self, PathRefusal};
use gateway::routing::PathRewrite;
use std::sync::LazyLock;

use proptest::prelude::*;
use regex::Regex;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

// ---- backend models, written the naive way each server documents ----

/// Decode every `%XX`; a malformed escape stays literal (Tomcat and Go refuse it,
/// which could only make them disagree less).
fn decode_all(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Merge `//` and resolve `.`/`..` (RFC 3986 5.2.4 plus slash merging), keeping a
/// trailing `/`: what Tomcat's `normalize`, Go's `cleanPath` and nginx do.
fn clean(path: &[u8]) -> Vec<u8> {
    let mut stack: Vec<&[u8]> = Vec::new();
    let segs: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let mut trailing = false;
    for seg in segs.iter().skip(1) {
        trailing = false;
        match *seg {
            b"" => trailing = true,
            b"." => trailing = true,
            b".." => {
                stack.pop();
                trailing = true;
            }
            s => stack.push(s),
        }
    }
    let mut out = Vec::new();
    for s in &stack {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    out
}

/// Tomcat/Spring: drop `;params` per segment, decode, `\` as `/`, normalise.
fn tomcat(raw: &[u8]) -> Vec<u8> {
    let mut no_params = Vec::new();
    for (k, seg) in raw.split(|&b| b == b'/').enumerate() {
        if k > 0 {
            no_params.push(b'/');
        }
        let end = seg.iter().position(|&b| b == b';').unwrap_or(seg.len());
        no_params.extend_from_slice(&seg[..end]);
    }
    let decoded: Vec<u8> = decode_all(&no_params)
        .into_iter()
        .map(|b| if b == b'\\' { b'/' } else { b })
        .collect();
    clean(&decoded)
}

/// Go net/http (`URL.Path` is decoded, ServeMux cleans it) and nginx (decodes,
/// merges slashes, resolves dots): decode, then normalise.
fn go_nginx(raw: &[u8]) -> Vec<u8> {
    clean(&decode_all(raw))
}

/// Python servers (uvicorn/Starlette, Werkzeug): the decoded path, nothing resolved.
fn python(raw: &[u8]) -> Vec<u8> {
    decode_all(raw)
}

/// Node (WHATWG URL): `\` is `/`, `.`/`%2e` and `..`/`.%2e`/`%2e%2e` segments are
/// resolved, nothing decoded (Express routes on this and decodes parameters).
fn node(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw).replace('\\', "/");
    let mut stack: Vec<String> = Vec::new();
    let mut trailing = false;
    for seg in text.split('/').skip(1) {
        trailing = false;
        let lower = seg.to_ascii_lowercase();
        match lower.as_str() {
            "." | "%2e" => trailing = true,
            ".." | ".%2e" | "%2e." | "%2e%2e" => {
                stack.pop();
                trailing = true;
            }
            _ => stack.push(seg.to_string()),
        }
    }
    let mut out = String::new();
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out.into_bytes()
}

/// Every backend reads `wire` as `meant` (the decoded path the gateway matched or
/// rewrote to); Node/Express keep the raw path, whose segments decode one to one.
fn backends_agree(wire: &str, meant: &str) -> Result<(), TestCaseError> {
    let raw = wire.as_bytes();
    prop_assert_eq!(tomcat(raw), meant.as_bytes(), "tomcat: {:?}", wire);
    prop_assert_eq!(go_nginx(raw), meant.as_bytes(), "go/nginx: {:?}", wire);
    prop_assert_eq!(python(raw), meant.as_bytes(), "python: {:?}", wire);
    prop_assert_eq!(node(raw), raw, "node changes {:?}", wire);
    let segs: Vec<Vec<u8>> = wire.split('/').map(|s| decode_all(s.as_bytes())).collect();
    let meant_segs: Vec<&[u8]> = meant.as_bytes().split(|&b| b == b'/').collect();
    prop_assert_eq!(segs, meant_segs, "node segments: {:?}", wire);
    Ok(())
}

static MOVE_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^/([^/]*)(.*)$").expect("valid regex"));
static MOVE: LazyLock<PathRewrite> =
    LazyLock::new(|| PathRewrite::Regex(MOVE_RE.clone(), "/x$2/$1".into()));

/// The property: no panic; accepted means every backend agrees with the router;
/// rewrites of an accepted path are refused or agreed on too.
fn check_path(raw: &str) -> Result<(), TestCaseError> {
    let Ok(decoded) = path_policy::check(raw) else {
        return Ok(());
    };
    backends_agree(raw, &decoded)?;
    // strip the first segment, as `strip_prefix` does
    let first = decoded.split('/').nth(1).unwrap_or("");
    if !first.is_empty() {
        let strip = PathRewrite::StripPrefix(format!("/{first}"));
        if let Ok(Some(out)) = strip.apply(raw, &decoded) {
            let rest = &decoded[first.len() + 1..];
            let want = if rest.is_empty() { "/" } else { rest };
            backends_agree(&out, want)?;
        }
    }
    // a regex rewrite that moves segments around
    if let Ok(Some(out)) = MOVE.apply(raw, &decoded) {
        let meant = MOVE_RE.replace(&decoded, "/x$2/$1");
        backends_agree(&out, &meant)?;
    }
    // what the gateway encodes for the wire decodes back to what it meant
    let wire = path_policy::encode(&decoded);
    let back = path_policy::check(&wire);
    prop_assert_eq!(back.as_deref(), Ok(&*decoded));
    Ok(())
}

/// Pieces attacks are made of, so generated paths hit the rules often.
const TOKENS: &[&str] = &[
    "/", "/", "/", "a", "b", "admin", ".", "..", "...", "%2e", "%2E", ".%2e", "%2e%2e", ";",
    ";x=1", "%3b", "%3B", "\\", "%5c", "%5C", "%2f", "%2F", "%25", "%252e", "%2541", "%00", "%0a",
    "%7f", "%41", "%61", "%20", "%40", "~", ":", "@", "é", "%c3%a9", "%C3%A9", "%c0%ae", "%ff",
    "%", "%2", "%zz", "+", "*", "?", "#", "\u{7f}", "\t", "\u{ff0e}",
];

fn token_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..14)
        .prop_map(|parts| format!("/{}", parts.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn accepted_paths_mean_the_same_to_every_backend(raw in token_path()) {
        check_path(&raw)?;
    }

    #[test]
    fn escape_heavy_paths(raw in "(/|%[0-9a-fA-F]{2}|%[0-9a-gA-G]{0,2}|[a-c.;\\\\~])*") {
        check_path(&raw)?;
    }

    #[test]
    fn arbitrary_text_never_panics(raw in ".{0,80}") {
        check_path(&raw)?;
        check_path(&format!("/{raw}"))?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let raw = String::from_utf8_lossy(&bytes);
        check_path(&raw)?;
        let _ = path_policy::encode(&raw);
        let _ = gateway::routing::rewrite::check_replacement(&raw);
    }
}

/// The backend models have teeth: each attack form would reach another path.
#[test]
fn models_see_the_attacks() {
    for raw in [
        "/pub/..;/admin",
        "/pub/%2e%2e;/admin",
        "/pub/..%2fadmin",
        "/pub/..%5cadmin",
        "/pub/..\\admin",
        "/pub/%2e%2e/admin",
        "//admin",
    ] {
        let naive = decode_all(raw.as_bytes());
        let differs = [tomcat, go_nginx, node]
            .iter()
            .any(|f| f(raw.as_bytes()).starts_with(b"/admin") && naive != b"/admin");
        assert!(differs, "{raw}: no model resolves it to /admin");
        assert!(path_policy::check(raw).is_err(), "{raw}");
    }
}

/// Inputs found by fuzzing, kept as named cases.
#[test]
fn regressions() {
    // an accepted `%25` before a non-hex character: its rewrite encoding (`%25%C3%A9`)
    // was refused as double encoding because the rule looked at the raw next byte
    for (raw, decoded) in [("/%25é", "/%é"), ("/%25#", "/%#")] {
        assert_eq!(path_policy::check(raw).as_deref(), Ok(decoded));
        let wire = path_policy::encode(decoded);
        assert_eq!(path_policy::check(&wire).as_deref(), Ok(decoded), "{wire}");
    }
    assert_eq!(
        path_policy::check("/%25%32%65"),
        Err(PathRefusal::DoubleEncoding)
    );
}
