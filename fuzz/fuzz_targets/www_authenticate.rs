//! The `WWW-Authenticate` builder never emits an unquoted input byte: whatever attribute text
//! it accepts, the header it writes parses back to exactly that text. The parser never panics
//! on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_mcp_auth::challenge::{self, Challenge};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = challenge::parse(&text);
    let mut parts = text.splitn(3, '\u{0}');
    let (description, realm, url) =
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut built = Challenge::bearer();
    let mut want = Vec::new();
    if let Ok(c) = built.clone().error_description(description) {
        built = c;
        want.push(("error_description", description.to_owned()));
    }
    if let Ok(c) = built.clone().realm(realm) {
        built = c;
        want.push(("realm", realm.to_owned()));
    }
    if let Ok(c) = built.clone().resource_metadata(url) {
        built = c;
        want.push(("resource_metadata", url.to_owned()));
    }
    let header = built.to_header_value();
    let header = header.to_str().expect("the header is visible ASCII");
    let parsed = challenge::parse(header).expect("our own header parses");
    assert_eq!(parsed.len(), 1, "one challenge: {header}");
    for (name, value) in want {
        let got = parsed[0].params().iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(got, Some(value.as_str()), "{name} in {header}");
    }
});
