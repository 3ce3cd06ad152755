//! Claim rules of a protected route (`require: {roles: ADMIN}`): every rule must
//! hold; a rule holds when the claim equals, or (array or space-separated
//! `scope`) contains, one of the listed values. A failed rule is a 403.

use serde_json::{Map, Value};

use super::config::{OneOrMany, Scalar};
use super::identity::claim;

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct ClaimRule {
    pub claim: String,
    pub any_of: Vec<Scalar>,
}

impl ClaimRule {
    pub fn new(claim: &str, values: &OneOrMany) -> Self {
        Self {
            claim: claim.to_string(),
            any_of: values.values(),
        }
    }

    pub fn holds(&self, claims: &Map<String, Value>) -> bool {
        let Some(v) = claim(claims, &self.claim) else {
            return false;
        };
        let scope_like = matches!(self.claim.as_str(), "scope" | "scp");
        match v {
            Value::Array(items) => items.iter().any(|i| self.any_of.iter().any(|s| eq(i, s))),
            Value::String(s) if scope_like => s.split_ascii_whitespace().any(|part| {
                self.any_of
                    .iter()
                    .any(|want| eq(&Value::String(part.into()), want))
            }),
            other => self.any_of.iter().any(|s| eq(other, s)),
        }
    }
}

fn eq(v: &Value, s: &Scalar) -> bool {
    match (v, s) {
        (Value::String(a), Scalar::Str(b)) => a == b,
        (Value::Bool(a), Scalar::Bool(b)) => a == b,
        (Value::Number(a), Scalar::Int(b)) => a.as_i64() == Some(*b),
        (Value::Number(a), Scalar::Str(b)) => a.to_string() == *b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(claim: &str, yaml_json: &str) -> ClaimRule {
        ClaimRule::new(claim, &serde_json::from_str(yaml_json).unwrap())
    }

    #[test]
    fn rules() {
        let c = json!({"roles": ["USER", "ADMIN"], "scope": "read write", "tier": 2,
                       "admin": true, "realm_access": {"roles": ["ops"]}})
        .as_object()
        .unwrap()
        .clone();
        assert!(rule("roles", "\"ADMIN\"").holds(&c));
        assert!(rule("roles", "[\"OPS\", \"USER\"]").holds(&c));
        assert!(!rule("roles", "\"OPS\"").holds(&c));
        assert!(rule("scope", "\"write\"").holds(&c));
        assert!(rule("tier", "2").holds(&c));
        assert!(rule("admin", "true").holds(&c));
        assert!(rule("realm_access.roles", "\"ops\"").holds(&c));
        assert!(!rule("missing", "\"x\"").holds(&c));
    }
}
