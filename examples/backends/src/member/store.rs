//! Member accounts in SQLite: one row per user, the password as an argon2 PHC string.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
";

/// A member as the API shows it (never the password hash).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: i64,
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(User, String)> {
    let roles: String = r.get(3)?;
    Ok((
        User {
            id: r.get(0)?,
            email: r.get(1)?,
            name: r.get(2)?,
            roles: roles
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            created_at: r.get(4)?,
        },
        r.get(5)?,
    ))
}

const SELECT: &str = "SELECT id, email, name, roles, created_at, password_hash FROM users";

/// Insert a user; `Ok(None)` when the email is taken.
pub fn insert(c: &Connection, user: &User, password_hash: &str) -> rusqlite::Result<Option<()>> {
    let res = c.execute(
        "INSERT INTO users (id, email, name, password_hash, roles, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            user.id,
            user.email,
            user.name,
            password_hash,
            user.roles.join(","),
            user.created_at
        ],
    );
    match res {
        Ok(_) => Ok(Some(())),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The user and password hash for `email`.
pub fn by_email(c: &Connection, email: &str) -> rusqlite::Result<Option<(User, String)>> {
    c.query_row(
        &format!("{SELECT} WHERE email = ?1"),
        params![email],
        user_from_row,
    )
    .optional()
}

pub fn by_id(c: &Connection, id: &str) -> rusqlite::Result<Option<User>> {
    c.query_row(
        &format!("{SELECT} WHERE id = ?1"),
        params![id],
        user_from_row,
    )
    .optional()
    .map(|o| o.map(|(u, _)| u))
}

/// Delete the user; whether a row was removed.
pub fn delete(c: &Connection, id: &str) -> rusqlite::Result<bool> {
    Ok(c.execute("DELETE FROM users WHERE id = ?1", params![id])? > 0)
}

/// Hash a password (argon2id, random salt) to a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Check a password against a stored PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A normalised email, or `None` when it does not look like one.
pub fn normalise_email(email: &str) -> Option<String> {
    let e = email.trim().to_ascii_lowercase();
    let (local, domain) = e.split_once('@')?;
    (!local.is_empty() && domain.contains('.') && !domain.starts_with('.') && e.len() <= 254)
        .then_some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(normalise_email(" A@Example.COM ").unwrap(), "a@example.com");
        assert!(normalise_email("nope").is_none());
        assert!(normalise_email("@x.io").is_none());
        assert!(normalise_email("a@localhost").is_none());
    }

    #[test]
    fn duplicate_email_is_refused() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let u = User {
            id: "1".into(),
            email: "a@b.io".into(),
            name: "A".into(),
            roles: vec!["user".into()],
            created_at: 0,
        };
        assert!(insert(&c, &u, "h").unwrap().is_some());
        let dup = User {
            id: "2".into(),
            ..u
        };
        assert!(insert(&c, &dup, "h").unwrap().is_none());
        let (found, hash) = by_email(&c, "a@b.io").unwrap().unwrap();
        assert_eq!(found.id, "1");
        assert_eq!(hash, "h");
        assert!(delete(&c, "1").unwrap());
        assert!(by_id(&c, "1").unwrap().is_none());
    }
}
