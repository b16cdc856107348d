//! Claim parsing shared by the JWT and introspection verifiers.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::VerifyError;
use crate::scope::ScopeSet;

/// Which claim carries the granted scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ScopeClaim {
    /// `scope` (space-separated string, RFC 9068 / RFC 8693) and/or `scp` (string or array, as
    /// Entra and Okta issue). When both are present they must name the same scopes, else the
    /// token is rejected.
    #[default]
    Auto,
    /// Only `scope`, a space-separated string.
    Scope,
    /// Only `scp`, a space-separated string or an array of strings.
    Scp,
    /// Another claim (string or array of strings).
    Named(String),
}

/// A JSON object whose top-level members are unique (a duplicated claim makes the whole token
/// invalid instead of letting one parser pick the first and another the last).
pub(crate) struct StrictObject(pub(crate) Map<String, Value>);

impl<'de> serde::Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if map.contains_key(&key) {
                        return Err(de::Error::custom("duplicate member"));
                    }
                    let value: Value = access.next_value()?;
                    map.insert(key, value);
                }
                Ok(StrictObject(map))
            }
        }
        d.deserialize_map(V)
    }
}

pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, VerifyError> {
    serde_json::from_slice::<StrictObject>(bytes)
        .map(|o| o.0)
        .map_err(|_| VerifyError::invalid_token("claims are not a JSON object with unique members"))
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds, integer or not, within range.
pub(crate) fn numeric_date(v: &Value) -> Option<i64> {
    let Value::Number(n) = v else { return None };
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    (f.is_finite() && f.abs() < 1e15).then(|| f.floor() as i64)
}

/// An optional NumericDate claim: absent is `Ok(None)`, a wrong type is an error.
pub(crate) fn optional_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, VerifyError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => numeric_date(v).map(Some).ok_or(VerifyError::invalid_token(name)),
    }
}

/// An optional string claim: absent is `Ok(None)`, a wrong type is an error.
pub(crate) fn optional_str<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, VerifyError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(VerifyError::invalid_token(name)),
    }
}

/// Compares a presented resource identifier with the configured canonical one: exact, except
/// that scheme and host are compared case-insensitively (MCP: accept upper-case scheme/host).
pub(crate) fn resource_eq(configured: &str, presented: &str) -> bool {
    if configured == presented {
        return true;
    }
    if configured.len() != presented.len() {
        return false;
    }
    let authority_end = |s: &str| {
        let start = s.find("://").map_or(0, |i| i + 3);
        s[start..].find(['/', '?', '#']).map_or(s.len(), |i| start + i)
    };
    let (a, b) = (authority_end(configured), authority_end(presented));
    a == b && configured[..a].eq_ignore_ascii_case(&presented[..b]) && configured[a..] == presented[b..]
}

/// `aud` (string or non-empty array of strings) contains `audience`.
pub(crate) fn audience(claims: &Map<String, Value>, audience: &str) -> Result<Vec<String>, VerifyError> {
    let bad = || VerifyError::invalid_token("audience");
    let list: Vec<String> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<_>>().ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    if list.iter().any(|a| resource_eq(audience, a)) { Ok(list) } else { Err(bad()) }
}

fn scope_value(v: &Value, allow_array: bool) -> Option<ScopeSet> {
    match v {
        Value::String(s) => Some(ScopeSet::parse(s)),
        Value::Array(items) if allow_array => items.iter().map(Value::as_str).collect::<Option<ScopeSet>>(),
        _ => None,
    }
}

/// The granted scopes, read as `which` says.
pub(crate) fn scopes(claims: &Map<String, Value>, which: &ScopeClaim) -> Result<ScopeSet, VerifyError> {
    let bad = || VerifyError::invalid_token("scope claim");
    let read = |name: &str, allow_array: bool| -> Result<Option<ScopeSet>, VerifyError> {
        claims.get(name).map(|v| scope_value(v, allow_array).ok_or_else(bad)).transpose()
    };
    Ok(match which {
        ScopeClaim::Scope => read("scope", false)?.unwrap_or_default(),
        ScopeClaim::Scp => read("scp", true)?.unwrap_or_default(),
        ScopeClaim::Named(name) => read(name, true)?.unwrap_or_default(),
        ScopeClaim::Auto => match (read("scope", false)?, read("scp", true)?) {
            (Some(a), Some(b)) => {
                let same = a.len() == b.len() && a.iter().all(|s| b.contains(s));
                if same { a } else { return Err(bad()) }
            }
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => ScopeSet::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn b21_duplicate_members_rejected() {
        assert!(parse_object(br#"{"aud":"R","aud":"evil"}"#).is_err());
        assert!(parse_object(br#"{"a":{"b":1,"b":2}}"#).is_ok(), "only top level is checked");
        for bad in [&b"[]"[..], b"\"x\"", b"\xef\xbb\xbf{}", b"{\"a\":\xff}", b"42"] {
            assert!(parse_object(bad).is_err());
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_object(deep.as_bytes()).is_err(), "B23: recursion limit, no overflow");
    }

    #[test]
    fn b10_numeric_dates() {
        assert_eq!(numeric_date(&json!(5)), Some(5));
        assert_eq!(numeric_date(&json!(5.9)), Some(5));
        assert_eq!(numeric_date(&json!(-1)), Some(-1));
        for bad in [json!("9999999999"), json!(true), json!(null), json!(1e300), json!([1])] {
            assert_eq!(numeric_date(&bad), None, "{bad}");
        }
    }

    #[test]
    fn b15_audience() {
        let r = "https://mcp.example.com/mcp";
        let m = |aud: Value| json!({ "aud": aud }).as_object().unwrap().clone();
        assert!(audience(&m(json!(r)), r).is_ok());
        assert!(audience(&m(json!([r, "https://other"])), r).is_ok());
        assert!(audience(&m(json!("HTTPS://MCP.EXAMPLE.COM/mcp")), r).is_ok());
        for bad in [
            json!("https://other/mcp"),
            json!(format!("{r}/")),
            json!([]),
            json!(42),
            json!({}),
            json!("https://mcp.example.com/MCP"),
        ] {
            assert!(audience(&m(bad.clone()), r).is_err(), "{bad}");
        }
        assert!(audience(&Map::new(), r).is_err(), "B14: aud required");
    }

    #[test]
    fn d06_scope_claims() {
        let m = |v: Value| v.as_object().unwrap().clone();
        let s = scopes(&m(json!({"scope": "a b"})), &ScopeClaim::Auto).unwrap();
        assert!(s.contains("a") && s.contains("b"));
        let s = scopes(&m(json!({"scp": ["a", "b"]})), &ScopeClaim::Auto).unwrap();
        assert_eq!(s.len(), 2);
        assert!(scopes(&m(json!({"scope": "a b", "scp": ["b", "a"]})), &ScopeClaim::Auto).is_ok());
        assert!(scopes(&m(json!({"scope": "a", "scp": ["a", "admin"]})), &ScopeClaim::Auto).is_err());
        assert!(scopes(&m(json!({"scope": ["a"]})), &ScopeClaim::Auto).is_err());
        assert!(scopes(&m(json!({"scp": 5})), &ScopeClaim::Auto).is_err());
        assert!(scopes(&m(json!({"scp": {"a": 1}})), &ScopeClaim::Scp).is_err());
        assert!(scopes(&m(json!({"scope": "a"})), &ScopeClaim::Scp).unwrap().is_empty());
    }
}
