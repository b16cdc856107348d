//! Client ID metadata document parsing: never panics; an accepted document names the URL it
//! was fetched from and only redirect URIs the server's rule allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_mcp_auth::cimd::ClientMetadataDocument;
use tower_mcp_auth::server::redirect_uri_allowed;

const URL: &str = "https://app.example.com/client.json";

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = ClientMetadataDocument::parse(URL, data, redirect_uri_allowed) {
        assert_eq!(doc.client_id(), URL);
        assert!(doc.redirect_uris().iter().all(|u| redirect_uri_allowed(u)));
    }
});
