//! OAuth scopes (RFC 6749 §3.3): validated configuration scopes, the granted set carried by a
//! token, and explicit hierarchy rules.
//!
//! Scopes are case-sensitive strings compared exactly; a granted scope never matches by
//! prefix or substring. A broader scope satisfies a narrower one only where a
//! [`ScopeHierarchy`] says so.
//!
//! ```
//! use tower_mcp_auth::scope::{Scope, ScopeHierarchy, ScopeSet};
//!
//! let granted = ScopeSet::parse("mcp:read  mcp:write");
//! assert!(granted.contains("mcp:write"));
//! assert!(!granted.contains("MCP:WRITE")); // case-sensitive
//! assert!(!granted.contains("mcp:writ")); // exact match only
//!
//! let hierarchy = ScopeHierarchy::new().implies("mcp:admin", ["mcp:read", "mcp:write"]).unwrap();
//! let admin = ScopeSet::parse("mcp:admin");
//! assert!(hierarchy.satisfies(&admin, &Scope::new("mcp:read").unwrap()));
//! assert!(!hierarchy.satisfies(&granted, &Scope::new("mcp:admin").unwrap()));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// One scope as configured by the server: a non-empty RFC 6749 `scope-token`
/// (`%x21 / %x23-5B / %x5D-7E`), so it can be written into a `WWW-Authenticate` header
/// without quoting problems.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Arc<str>);

/// A string that is not a valid RFC 6749 scope token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope token (RFC 6749 §3.3 allows %x21 / %x23-5B / %x5D-7E only)")]
pub struct InvalidScope(());

impl Scope {
    /// Validates `s` as a scope token.
    pub fn new(s: impl AsRef<str>) -> Result<Self, InvalidScope> {
        let s = s.as_ref();
        if is_scope_token(s) { Ok(Self(Arc::from(s))) } else { Err(InvalidScope(())) }
    }

    /// The scope as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) fn is_scope_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Scope {
    type Err = InvalidScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for Scope {
    type Error = InvalidScope;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for Scope {
    type Error = InvalidScope;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Scope {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Scope {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The scopes granted to a token, as opaque strings.
///
/// Parsing splits on the space character only (the RFC 6749 grammar is `scope-token *( SP
/// scope-token )`); runs of spaces and leading or trailing spaces are tolerated. Any other
/// whitespace (tab, newline) stays inside the item, so `"a\tb"` is one scope that matches
/// nothing a server configures. Duplicates are removed; order of first appearance is kept.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ScopeSet {
    items: Vec<Box<str>>,
}

impl ScopeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a space-separated `scope` value.
    pub fn parse(s: &str) -> Self {
        let mut set = Self { items: Vec::with_capacity(s.bytes().filter(|b| *b == b' ').count() + 1) };
        for item in s.split(' ') {
            set.insert(item);
        }
        set
    }

    /// Adds one scope (ignored when empty or already present).
    pub fn insert(&mut self, scope: &str) {
        if !scope.is_empty() && !self.contains(scope) {
            self.items.push(scope.into());
        }
    }

    /// Whether `scope` was granted, by exact, case-sensitive comparison.
    #[inline]
    pub fn contains(&self, scope: &str) -> bool {
        self.items.iter().any(|s| &**s == scope)
    }

    /// The granted scopes in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.items.iter().map(|s| &**s)
    }

    /// Number of scopes.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no scope was granted.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ScopeSet {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::parse(s))
    }
}

impl<'a> FromIterator<&'a str> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let mut set = Self::new();
        for s in iter {
            set.insert(s);
        }
        set
    }
}

impl serde::Serialize for ScopeSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// Explicit scope implications: "a token granted `mcp:admin` may do what `mcp:read` allows".
///
/// Implications are transitive and never inferred from the shape of a scope string (no
/// prefix or wildcard semantics). The MCP 2026-07-28 revision requires servers to account for
/// the hierarchies they define when deciding `insufficient_scope`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ScopeHierarchy {
    // scope -> every scope it implies (transitive closure, excluding itself)
    closure: BTreeMap<Scope, BTreeSet<Scope>>,
}

impl ScopeHierarchy {
    /// No implications: every scope stands for itself only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares that `broader` implies every scope in `narrower`.
    pub fn implies<I, T>(mut self, broader: &str, narrower: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let broader = Scope::new(broader)?;
        let mut direct = BTreeSet::new();
        for n in narrower {
            let n = Scope::new(n)?;
            if n != broader {
                direct.insert(n);
            }
        }
        self.closure.entry(broader).or_default().extend(direct);
        self.close();
        Ok(self)
    }

    fn close(&mut self) {
        loop {
            let mut changed = false;
            let snapshot = self.closure.clone();
            for (scope, implied) in self.closure.iter_mut() {
                let extra: Vec<Scope> = implied
                    .iter()
                    .filter_map(|i| snapshot.get(i))
                    .flatten()
                    .filter(|s| *s != scope && !implied.contains(*s))
                    .cloned()
                    .collect();
                if !extra.is_empty() {
                    implied.extend(extra);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// Whether `granted` satisfies `required`, directly or through an implication.
    #[inline]
    pub fn satisfies(&self, granted: &ScopeSet, required: &Scope) -> bool {
        if granted.contains(required.as_str()) {
            return true;
        }
        if self.closure.is_empty() {
            return false;
        }
        granted.iter().any(|g| {
            self.closure.iter().find(|(k, _)| k.as_str() == g).is_some_and(|(_, implied)| implied.contains(required))
        })
    }

    /// Whether no implication is configured.
    pub fn is_empty(&self) -> bool {
        self.closure.is_empty()
    }
}

impl fmt::Debug for ScopeHierarchy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.closure.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_token_grammar() {
        assert!(Scope::new("mcp:read").is_ok());
        assert!(Scope::new("a!#[]~").is_ok());
        for bad in ["", "a b", "a\"b", "a\\b", "a\tb", "é", "a\nb"] {
            assert!(Scope::new(bad).is_err(), "{bad:?}");
        }
    }

    // D05: only SP separates; other whitespace stays inside one opaque scope.
    #[test]
    fn d05_parse_splits_on_space_only() {
        let s = ScopeSet::parse("  mcp:read   mcp:write ");
        assert_eq!(s.iter().collect::<Vec<_>>(), ["mcp:read", "mcp:write"]);
        let t = ScopeSet::parse("mcp:read\tmcp:write");
        assert_eq!(t.len(), 1);
        assert!(!t.contains("mcp:read"));
        let n = ScopeSet::parse("mcp:read\nmcp:write");
        assert!(!n.contains("mcp:write"));
    }

    // D03, D04, D07: exact, case-sensitive, no wildcard.
    #[test]
    fn d03_d04_d07_exact_match() {
        let h = ScopeHierarchy::new();
        let need = Scope::new("mcp:write").unwrap();
        for granted in ["mcp:writer", "mcp:write:x", "xmcp:write", "MCP:WRITE", "*", "mcp:*", "all"] {
            assert!(!h.satisfies(&ScopeSet::parse(granted), &need), "{granted}");
        }
        assert!(h.satisfies(&ScopeSet::parse("mcp:write"), &need));
    }

    #[test]
    fn hierarchy_is_transitive() {
        let h = ScopeHierarchy::new()
            .implies("root", ["admin"])
            .unwrap()
            .implies("admin", ["write"])
            .unwrap()
            .implies("write", ["read"])
            .unwrap();
        let read = Scope::new("read").unwrap();
        assert!(h.satisfies(&ScopeSet::parse("root"), &read));
        assert!(h.satisfies(&ScopeSet::parse("admin"), &read));
        assert!(!h.satisfies(&ScopeSet::parse("read"), &Scope::new("write").unwrap()));
    }

    #[test]
    fn dedup_and_display() {
        let s = ScopeSet::parse("b a b");
        assert_eq!(s.to_string(), "b a");
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"["b","a"]"#);
    }
}
