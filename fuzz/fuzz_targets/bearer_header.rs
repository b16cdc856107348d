//! The `Authorization: Bearer` parser: never panics, and whatever it accepts is `token68`.
#![no_main]

use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use tower_mcp_auth::BearerToken;
use tower_mcp_auth::bearer::parse_authorization;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    if let Ok(token) = parse_authorization(&headers, 8192) {
        assert!(!token.as_str().is_empty() && token.len() <= 8192);
        // The same text passes the standalone token68 check.
        assert!(BearerToken::new(token.as_str()).is_some(), "accepted a token that is not token68");
    }
});
