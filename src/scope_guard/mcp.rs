//! Reading the JSON-RPC messages of an MCP request: method and tool/resource/prompt name,
//! from the body and from the `Mcp-Method` / `Mcp-Name` headers (MCP 2026-07-28).

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};
use serde::Deserialize;

/// `Mcp-Method` request header.
pub const MCP_METHOD: &str = "mcp-method";
/// `Mcp-Name` request header.
pub const MCP_NAME: &str = "mcp-name";

// Parsed at compile time: a lookup by `&str` parses the name every time.
const METHOD_HEADER: HeaderName = HeaderName::from_static(MCP_METHOD);
const NAME_HEADER: HeaderName = HeaderName::from_static(MCP_NAME);

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
}

/// One message's routing facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call<'a> {
    pub(crate) method: Option<Cow<'a, str>>,
    /// Tool or prompt name, or resource URI, for the methods that carry one.
    pub(crate) name: Option<Cow<'a, str>>,
}

/// Why a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Not JSON-RPC as the guard can read it (invalid JSON, duplicate members, wrong types).
    Malformed,
    /// `Mcp-Method` / `Mcp-Name` disagree with the body.
    HeaderMismatch,
}

fn name_of<'a>(msg: &Message<'a>) -> Option<Cow<'a, str>> {
    let params = msg.params.as_ref()?;
    match msg.method.as_deref()? {
        "resources/read" => params.uri.clone(),
        "tools/call" | "prompts/get" => params.name.clone(),
        _ => None,
    }
}

/// Parses `body` (empty = no messages) and checks it against the headers.
pub(crate) fn calls<'a>(body: &'a [u8], headers: &HeaderMap) -> Result<Vec<Call<'a>>, BodyError> {
    let messages = if body.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        // Parsed as one of the two shapes directly: an untagged enum would buffer the input
        // and lose duplicate-member detection.
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => serde_json::from_slice::<Vec<Message<'a>>>(body).map_err(|_| BodyError::Malformed)?,
            _ => vec![serde_json::from_slice::<Message<'a>>(body).map_err(|_| BodyError::Malformed)?],
        }
    };
    let calls: Vec<Call<'a>> = messages.iter().map(|m| Call { method: m.method.clone(), name: name_of(m) }).collect();

    let header = |name: HeaderName| -> Result<Option<&str>, BodyError> {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(v), None) => v.to_str().map(Some).map_err(|_| BodyError::HeaderMismatch),
            (Some(_), Some(_)) => Err(BodyError::HeaderMismatch),
        }
    };
    let method_header = header(METHOD_HEADER)?;
    let name_header = header(NAME_HEADER)?;
    if method_header.is_some() || name_header.is_some() {
        let [only] = calls.as_slice() else { return Err(BodyError::HeaderMismatch) };
        if let Some(m) = method_header
            && only.method.as_deref() != Some(m)
        {
            return Err(BodyError::HeaderMismatch);
        }
        if let Some(n) = name_header
            && only.name.as_deref() != Some(n)
        {
            return Err(BodyError::HeaderMismatch);
        }
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    type Names = Vec<(Option<String>, Option<String>)>;

    fn names(body: &str, headers: &[(&'static str, &'static str)]) -> Result<Names, BodyError> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, HeaderValue::from_static(v));
        }
        calls(body.as_bytes(), &h).map(|c| {
            c.into_iter().map(|c| (c.method.map(|m| m.into_owned()), c.name.map(|n| n.into_owned()))).collect()
        })
    }

    #[test]
    fn reads_tool_calls_and_batches() {
        let one = names(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_ping","arguments":{}}}"#,
            &[],
        )
        .unwrap();
        assert_eq!(one, [(Some("tools/call".into()), Some("admin_ping".into()))]);
        let batch = names(r#"[{"method":"tools/list"},{"method":"resources/read","params":{"uri":"file:///x"}}]"#, &[])
            .unwrap();
        assert_eq!(batch[1], (Some("resources/read".into()), Some("file:///x".into())));
        assert_eq!(names("", &[]).unwrap(), []);
        let escaped = names(r#"{"method":"tools\/call","params":{"name":"admin_\u0070ing"}}"#, &[]).unwrap();
        assert_eq!(escaped, [(Some("tools/call".into()), Some("admin_ping".into()))]);
    }

    #[test]
    fn refuses_ambiguous_bodies() {
        for bad in [
            r#"{"method":"tools/list","method":"tools/call"}"#,
            r#"{"method":"tools/call","params":{"name":"a","name":"admin_ping"}}"#,
            r#"{"method":5}"#,
            r#"{"method":"tools/call","params":{"name":7}}"#,
            "{not json",
            "\u{feff}{}",
        ] {
            assert_eq!(names(bad, &[]), Err(BodyError::Malformed), "{bad}");
        }
    }

    // SPEC 30: header/body mismatch is rejected.
    #[test]
    fn headers_must_match_body() {
        let body = r#"{"method":"tools/call","params":{"name":"admin_ping"}}"#;
        assert!(names(body, &[("mcp-method", "tools/call"), ("mcp-name", "admin_ping")]).is_ok());
        assert_eq!(names(body, &[("mcp-method", "tools/list")]), Err(BodyError::HeaderMismatch));
        assert_eq!(names(body, &[("mcp-name", "echo")]), Err(BodyError::HeaderMismatch));
        assert_eq!(
            names(body, &[("mcp-method", "tools/call"), ("mcp-method", "tools/call")]),
            Err(BodyError::HeaderMismatch)
        );
        assert_eq!(names("[]", &[("mcp-method", "tools/list")]), Err(BodyError::HeaderMismatch));
    }
}
