//! Dynamic client registration's request parsing: a registration is created only with
//! redirect URIs the server's rule allows and an authentication method it offers (a secret
//! exactly for the `client_secret_*` methods); everything else is a 400 with an RFC 7591
//! error. Never a server error.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::Mutex;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use tower_mcp_auth::server::redirect_uri_allowed;

static HARNESS: Mutex<Option<common::Harness>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Ok(req) = Request::post("/register")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(data)))
    else {
        return;
    };
    let mut guard = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    let harness = guard.get_or_insert_with(common::Harness::new);
    let (res, bytes) = harness.send(req);
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON body");
    match res.status() {
        StatusCode::CREATED => {
            assert!(json["client_id"].as_str().is_some_and(|id| !id.is_empty() && !id.contains("://")));
            let uris = json["redirect_uris"].as_array().expect("redirect_uris");
            assert!(!uris.is_empty() && uris.len() <= 10);
            assert!(uris.iter().all(|u| u.as_str().is_some_and(redirect_uri_allowed)), "{json}");
            let method = json["token_endpoint_auth_method"].as_str().expect("method");
            assert!(["none", "client_secret_basic", "client_secret_post"].contains(&method), "{method}");
            assert_eq!(json["client_secret"].is_string(), method.starts_with("client_secret"));
            let grants = json["grant_types"].as_array().expect("grant_types");
            assert!(grants.iter().all(|g| g == "authorization_code" || g == "refresh_token"));
        }
        StatusCode::BAD_REQUEST => {
            let error = json["error"].as_str().expect("error");
            assert!(["invalid_client_metadata", "invalid_redirect_uri", "invalid_request"].contains(&error), "{error}");
        }
        StatusCode::PAYLOAD_TOO_LARGE => {}
        other => panic!("status {other}"),
    }
});
