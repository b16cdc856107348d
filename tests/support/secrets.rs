//! Catalogue L01 and K11: the secrets minted during an end-to-end run, and the check that none
//! of them appears in a captured TRACE log or in stored bytes (a database, an append-only file).
//!
//! The secrets come from the `--secrets-file`s of tests/e2e/mcp-client.mjs and
//! tests/e2e/oidc-provider.mjs, and from what a test mints or receives itself. They are searched
//! for by exact value. A failure names the kind of each secret found and where, never the value,
//! and never prints the log (only the offending lines, with every known secret masked).

use std::path::Path;

use base64::Engine;
use serde_json::Value;

/// The shortest value searched for. Every secret of these runs is longer: 27 characters for
/// oidc-provider's cookie signatures, 43 or more for the tokens, codes, verifiers and keys. A
/// shorter value is not a secret worth the name, or a recorder's mistake, and as a needle it
/// could match by chance. No value is skipped for it: [`Secrets::add`] refuses it, so the check
/// never silently searches for less than it claims. Values that cannot be secrets are simply not
/// recorded (the Node scripts skip empty values and cookies being deleted).
pub const MIN_LEN: usize = 16;

/// How much of an offending log line a failure shows on each side of the secret (masked).
const EXCERPT: usize = 150;

/// Every secret of one run, as `(kind, value)` pairs in the order added; a kind is what a
/// failure names, e.g. `client accessTokens` or `test assertions (JWT signature)`.
#[derive(Debug, Default)]
pub struct Secrets {
    entries: Vec<(String, String)>,
}

impl Secrets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` as a secret of `kind`. A JWT's signature is added as a needle of its own
    /// (kind `"{kind} (JWT signature)"`): a log that splits or truncates the token still leaks
    /// it, and the signature alone identifies the token.
    pub fn add(&mut self, kind: &str, value: &str) {
        assert!(value.len() >= MIN_LEN, "implausible secret of kind `{kind}`: {} characters", value.len());
        // Searched for in bytes through a lossy UTF-8 view, exact for ASCII needles only.
        assert!(value.is_ascii(), "secret of kind `{kind}` is not ASCII");
        if !self.entries.iter().any(|(k, v)| k == kind && v == value) {
            self.entries.push((kind.to_owned(), value.to_owned()));
        }
        if let Some(signature) = jws_signature(value) {
            self.add(&format!("{kind} (JWT signature)"), signature);
        }
    }

    /// Adds every string member, and every string in an array member, of a secrets file's JSON
    /// document, as kind `"{who} {member}"` (e.g. `client cookies`, `provider idTokens`).
    pub fn add_json(&mut self, who: &str, doc: &Value) {
        let members = doc.as_object().unwrap_or_else(|| panic!("{who} secrets: not a JSON object"));
        for (member, value) in members {
            let kind = format!("{who} {member}");
            match value {
                Value::String(s) => self.add(&kind, s),
                Value::Array(values) => {
                    for v in values {
                        self.add(&kind, v.as_str().unwrap_or_else(|| panic!("{kind}: not a string")));
                    }
                }
                // `null`: mcp-client.mjs's `accessToken` and `codeVerifier` before there is one.
                Value::Null => {}
                _ => panic!("{kind}: neither a string nor a list"),
            }
        }
    }

    /// Reads a `--secrets-file` (it must exist), adds its secrets as [`Secrets::add_json`] does,
    /// and returns the document.
    pub fn add_file(&mut self, who: &str, path: &Path) -> Value {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{who} secrets file {}: {e}", path.display()));
        let doc: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{who} secrets file: {e}"));
        self.add_json(who, &doc);
        doc
    }

    /// How many values were added as `kind` (JWT signatures not counted).
    pub fn count(&self, kind: &str) -> usize {
        self.entries.iter().filter(|(k, _)| k == kind).count()
    }

    /// How many needles there are, JWT signatures included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(kind, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// L01: `log` (named `what` in messages, e.g. `the log of instance A`) was written at TRACE
    /// level, and none of the secrets appears in it. A failure lists each kind found, how often,
    /// and the first line holding it with every known secret masked as `[kind]`.
    pub fn assert_not_in_trace_log(&self, what: &str, log: &str) {
        assert_traced(what, log);
        assert!(!self.is_empty(), "no secrets recorded to look for in {what}");
        let mut found = Vec::new();
        for (kind, value) in &self.entries {
            let Some(at) = log.find(value.as_str()) else { continue };
            let line_no = log[..at].matches('\n').count() + 1;
            let start = log[..at].rfind('\n').map_or(0, |i| i + 1);
            let line = &log[start..log[at..].find('\n').map_or(log.len(), |i| at + i)];
            let times = log.matches(value.as_str()).count();
            let excerpt = self.masked_excerpt(line, kind);
            found.push(format!("- {kind}: {times} time(s), first on line {line_no}: {excerpt}"));
        }
        assert!(found.is_empty(), "L01: secrets appear in {what}:\n{}", found.join("\n"));
    }

    /// K11: none of the secrets appears in `bytes` (named `what` in messages), e.g. database
    /// files read raw. A failure lists the kinds found, nothing of the bytes.
    pub fn assert_not_in_bytes(&self, what: &str, bytes: &[u8]) {
        assert!(!self.is_empty(), "no secrets recorded to look for in {what}");
        // Exact for the ASCII needles (see `add`): invalid UTF-8 becomes U+FFFD, never ASCII.
        let text = String::from_utf8_lossy(bytes);
        let found: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, value)| text.contains(value.as_str()))
            .map(|(kind, _)| format!("- {kind}"))
            .collect();
        assert!(found.is_empty(), "K11: secrets appear in {what} ({} bytes):\n{}", bytes.len(), found.join("\n"));
    }

    /// `line` with every known secret replaced by `[kind]` (the longest first, so that a token
    /// is masked whole before its signature), then cut to [`EXCERPT`] bytes on each side of the
    /// mask of `kind` (or of the first mask): the cut never falls inside a secret.
    fn masked_excerpt(&self, line: &str, kind: &str) -> String {
        let mut by_length: Vec<&(String, String)> = self.entries.iter().collect();
        by_length.sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
        let mut line = line.to_owned();
        for (k, value) in by_length {
            line = line.replace(value.as_str(), &format!("[{k}]"));
        }
        let at = line
            .find(&format!("[{kind}]"))
            .or_else(|| self.entries.iter().filter_map(|(k, _)| line.find(&format!("[{k}]"))).min())
            .unwrap_or(0);
        let start = (0..=at.saturating_sub(EXCERPT)).rev().find(|&i| line.is_char_boundary(i)).unwrap_or(0);
        let end = ((at + 2 * EXCERPT).min(line.len())..=line.len()).find(|&i| line.is_char_boundary(i)).unwrap();
        let (before, after) = (if start > 0 { "…" } else { "" }, if end < line.len() { "…" } else { "" });
        format!("{before}{}{after}", &line[start..end])
    }
}

/// L01: `log` holds TRACE lines (the `fmt` subscriber's ` TRACE ` level column), so that a search
/// of it means something: with logging off or filtered, the secrets check would pass vacuously.
pub fn assert_traced(what: &str, log: &str) {
    assert!(
        log.contains(" TRACE "),
        "{what} has no TRACE line ({} lines): was RUST_LOG=trace set?",
        log.lines().count()
    );
}

/// The signature of `value` if it is a compact JWS: three dot-separated parts, the first a
/// base64url JSON header naming `alg` (a PKCE verifier may hold dots too, but no such header).
fn jws_signature(value: &str) -> Option<&str> {
    let mut parts = value.split('.');
    let (Some(header), Some(_payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).ok()?;
    let header: Value = serde_json::from_slice(&header).ok()?;
    (header.get("alg").is_some() && !signature.is_empty()).then_some(signature)
}
