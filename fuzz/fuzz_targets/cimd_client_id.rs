//! The client ID metadata document URL rule: never panics; what it accepts is an https URL
//! whose text is the client ID itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_mcp_auth::cimd::check_client_id;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    for loopback in [false, true] {
        if let Ok(url) = check_client_id(raw, loopback) {
            assert!(url.scheme() == "https" || loopback, "{raw:?}");
            assert!(url.fragment().is_none() && url.username().is_empty() && url.password().is_none(), "{raw:?}");
        }
    }
});
