//! Login sessions as refresh-token families (OAuth 2.0 Security BCP, rotation with
//! reuse detection), kept in Redis:
//!
//! - `refresh-token:{sha256(token)}` -> family id. Tokens are stored by hash, so a
//!   Redis dump leaks no usable token. A rotated token's key is kept (it still names
//!   its family) so that presenting it again is recognised as reuse.
//! - `refresh-family:{fid}` hash: `sub`, `current` (hash of the one live refresh
//!   token) and `access` (`jti:exp` of the access tokens issued in this session).
//! - `refresh-families:{sub}` set: the user's families, for "log out everywhere".
//! - `sessions-ended:{sub}`: the cut-off of the last "log out everywhere"; tokens
//!   issued later carry an `iat` at or after it, so they are not refused by it.
//!
//! Rotation is one Lua script: of two refreshes racing with one token at most one
//! succeeds, and the loser is reuse, which ends the family. Reuse of a rotated token
//! ends the whole family (its newest refresh token stops working too) and returns the
//! session's access tokens so the caller revokes them.

use std::time::Duration;

use sha2::{Digest, Sha256};

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn token_key(hash: &str) -> String {
    format!("refresh-token:{hash}")
}

fn family_key(fid: &str) -> String {
    format!("refresh-family:{fid}")
}

fn families_key(sub: &str) -> String {
    format!("refresh-families:{sub}")
}

fn ended_key(sub: &str) -> String {
    format!("sessions-ended:{sub}")
}

/// An access token issued in a session: revoked when the session ends early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRef {
    pub jti: String,
    pub exp: i64,
}

impl AccessRef {
    fn encode(&self) -> String {
        format!("{}:{}", self.jti, self.exp)
    }

    /// Parse the `access` field: `jti:exp jti:exp ...` (bad items are skipped).
    fn decode_all(field: &str) -> Vec<AccessRef> {
        field
            .split_whitespace()
            .filter_map(|item| {
                let (jti, exp) = item.rsplit_once(':')?;
                Some(AccessRef {
                    jti: jti.to_string(),
                    exp: exp.parse().ok()?,
                })
            })
            .collect()
    }
}

/// What a refresh attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was the family's current one: the new one replaces it.
    Rotated,
    /// Unknown, expired, or its session already ended.
    Unknown,
    /// An already rotated token came back: the family is ended; revoke these.
    Reused { sub: String, access: Vec<AccessRef> },
}

type Redis = redis::aio::ConnectionManager;

/// Start a session for `sub`: a new family holding `refresh` and the access token.
pub async fn start(
    redis: &mut Redis,
    sub: &str,
    fid: &str,
    refresh: &str,
    access: &AccessRef,
    ttl: Duration,
) -> redis::RedisResult<()> {
    let secs = ttl.as_secs().max(1);
    let hash = token_hash(refresh);
    redis::pipe()
        .atomic()
        .hset_multiple(
            family_key(fid),
            &[
                ("sub", sub),
                ("current", &hash),
                ("access", &access.encode()),
            ],
        )
        .ignore()
        .expire(family_key(fid), secs as i64)
        .ignore()
        .set_ex(token_key(&hash), fid, secs)
        .ignore()
        .sadd(families_key(sub), fid)
        .ignore()
        .expire(families_key(sub), secs as i64)
        .ignore()
        .query_async::<()>(redis)
        .await
}

/// The family and subject of a refresh token whose session is still open.
pub async fn peek(
    redis: &mut Redis,
    refresh: &str,
) -> redis::RedisResult<Option<(String, String)>> {
    let fid: Option<String> = redis::cmd("GET")
        .arg(token_key(&token_hash(refresh)))
        .query_async(redis)
        .await?;
    let Some(fid) = fid else { return Ok(None) };
    let sub: Option<String> = redis::cmd("HGET")
        .arg(family_key(&fid))
        .arg("sub")
        .query_async(redis)
        .await?;
    Ok(sub.map(|sub| (fid, sub)))
}

/// KEYS: old token, family, the user's families, new token.
/// ARGV: old hash, new hash, ttl secs, new access `jti:exp`, now, family id.
const ROTATE: &str = r#"
local fid = redis.call('GET', KEYS[1])
if (not fid) or fid ~= ARGV[6] then return {'unknown'} end
local cur = redis.call('HGET', KEYS[2], 'current')
if not cur then return {'unknown'} end
if cur ~= ARGV[1] then
  local sub = redis.call('HGET', KEYS[2], 'sub') or ''
  local access = redis.call('HGET', KEYS[2], 'access') or ''
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], fid)
  return {'reused', sub, access}
end
local now = tonumber(ARGV[5])
local kept = {}
for item in string.gmatch(redis.call('HGET', KEYS[2], 'access') or '', '%S+') do
  local exp = tonumber(string.match(item, ':(%d+)$'))
  if exp and exp > now then table.insert(kept, item) end
end
table.insert(kept, ARGV[4])
redis.call('HSET', KEYS[2], 'current', ARGV[2], 'access', table.concat(kept, ' '))
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[4], fid, 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[3], fid)
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {'rotated'}
"#;

/// Replace `old` by `new` in family `fid` of `sub`, atomically (see the module doc).
#[allow(clippy::too_many_arguments)]
pub async fn rotate(
    redis: &mut Redis,
    sub: &str,
    fid: &str,
    old: &str,
    new: &str,
    access: &AccessRef,
    ttl: Duration,
    now: i64,
) -> redis::RedisResult<Rotation> {
    let (old_hash, new_hash) = (token_hash(old), token_hash(new));
    let reply: Vec<String> = redis::Script::new(ROTATE)
        .key(token_key(&old_hash))
        .key(family_key(fid))
        .key(families_key(sub))
        .key(token_key(&new_hash))
        .arg(&old_hash)
        .arg(&new_hash)
        .arg(ttl.as_secs().max(1))
        .arg(access.encode())
        .arg(now)
        .arg(fid)
        .invoke_async(redis)
        .await?;
    Ok(match reply.first().map(String::as_str) {
        Some("rotated") => Rotation::Rotated,
        Some("reused") => Rotation::Reused {
            sub: reply.get(1).cloned().unwrap_or_default(),
            access: AccessRef::decode_all(reply.get(2).map(String::as_str).unwrap_or("")),
        },
        _ => Rotation::Unknown,
    })
}

/// KEYS: family, the user's families. ARGV: sub, family id. Ends the family if it
/// is `sub`'s.
const END: &str = r#"
if redis.call('HGET', KEYS[1], 'sub') ~= ARGV[1] then return false end
local access = redis.call('HGET', KEYS[1], 'access') or ''
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
return access
"#;

/// End session `fid` of `sub` (logout); its access tokens, to revoke. A family of
/// another user is left alone.
pub async fn end(redis: &mut Redis, sub: &str, fid: &str) -> redis::RedisResult<Vec<AccessRef>> {
    let access: Option<String> = redis::Script::new(END)
        .key(family_key(fid))
        .key(families_key(sub))
        .arg(sub)
        .arg(fid)
        .invoke_async(redis)
        .await?;
    Ok(access
        .map(|a| AccessRef::decode_all(&a))
        .unwrap_or_default())
}

/// KEYS: the user's families, ended marker. ARGV: cut-off, marker ttl. (The family
/// keys are built in the script: fine on one Redis, not on a Redis Cluster.)
const END_ALL: &str = r#"
for _, fid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('DEL', 'refresh-family:' .. fid)
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return 1
"#;

/// End every session of `sub` (log out everywhere, withdrawal). New tokens are
/// issued with an `iat` of at least `cut_off` for `keep`.
pub async fn end_all(
    redis: &mut Redis,
    sub: &str,
    cut_off: i64,
    keep: Duration,
) -> redis::RedisResult<()> {
    redis::Script::new(END_ALL)
        .key(families_key(sub))
        .key(ended_key(sub))
        .arg(cut_off)
        .arg(keep.as_secs().max(1))
        .invoke_async::<i64>(redis)
        .await
        .map(|_| ())
}

/// The earliest `iat` a new token of `sub` may carry (0: no constraint).
pub async fn issue_floor(redis: &mut Redis, sub: &str) -> redis::RedisResult<i64> {
    let v: Option<i64> = redis::cmd("GET")
        .arg(ended_key(sub))
        .query_async(redis)
        .await?;
    Ok(v.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_refs_round_trip_and_skip_garbage() {
        let a = AccessRef {
            jti: "3f2a-b".into(),
            exp: 1700000000,
        };
        let b = AccessRef {
            jti: "x:y".into(),
            exp: 5,
        };
        let field = format!("{} junk :: {}", a.encode(), b.encode());
        assert_eq!(AccessRef::decode_all(&field), vec![a, b]);
        assert!(AccessRef::decode_all("").is_empty());
    }

    #[test]
    fn tokens_are_stored_by_hash() {
        let k = token_key(&token_hash("secret-token"));
        assert!(!k.contains("secret-token"));
        assert_eq!(k.len(), "refresh-token:".len() + 64);
    }
}
