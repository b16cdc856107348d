//! The token endpoint's request parsing (form body, client authentication): whatever arrives,
//! the answer is an RFC 6749 §5.2 JSON error with a fitting status, never a token (the fuzzer
//! holds no code or refresh token) and never a server error.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::Mutex;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;

static HARNESS: Mutex<Option<common::Harness>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    // The selector picks the content type and whether the rest is split into an
    // Authorization header and a body at the first NUL.
    let (header, body) = match (selector & 1 == 1, rest.iter().position(|b| *b == 0)) {
        (true, Some(i)) => (Some(&rest[..i]), &rest[i + 1..]),
        _ => (None, rest),
    };
    let content_type = match selector >> 1 & 3 {
        0 | 1 => "application/x-www-form-urlencoded",
        2 => "application/x-www-form-urlencoded; charset=UTF-8",
        _ => "application/json",
    };
    let mut req = Request::post("/token").header("content-type", content_type);
    if let Some(h) = header.and_then(|h| http::HeaderValue::from_bytes(h).ok()) {
        req = req.header("authorization", h);
    }
    let Ok(req) = req.body(Full::new(Bytes::copy_from_slice(body))) else { return };

    let mut guard = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    let harness = guard.get_or_insert_with(common::Harness::new);
    let (res, bytes) = harness.send(req);
    let status = res.status();
    assert!(
        [StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED, StatusCode::PAYLOAD_TOO_LARGE].contains(&status),
        "status {status}"
    );
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON error body");
    assert!(json["error"].is_string(), "{json}");
    assert!(json.get("access_token").is_none());
    assert_eq!(res.headers()["cache-control"], "no-store");
});
