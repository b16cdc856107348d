//! Shared test support: test keys and token minting, a mock identity provider on loopback
//! (for fault injection), the resource-server stack around an inspecting echo service, and the
//! secrets checks of the end-to-end tests.
#![allow(dead_code, unreachable_pub)]

#[cfg(feature = "sqlite")]
pub mod authz;
pub mod idp;
pub mod keys;
pub mod process;
#[cfg(feature = "redis")]
pub mod redis;
pub mod secrets;
pub mod stack;
pub mod tls;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub use keys::TestKey;

/// The resource every test protects.
pub const RESOURCE: &str = "https://mcp.example.com/mcp";
/// The issuer of statically configured test verifiers.
pub const ISSUER: &str = "https://idp.example.com";

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Standard access-token claims: issuer, audience, 5-minute lifetime, `mcp:read`.
pub fn claims(iss: &str, aud: &str) -> Value {
    let now = now();
    json!({
        "iss": iss,
        "aud": aud,
        "sub": "user-1",
        "client_id": "client-1",
        "scope": "mcp:read",
        "iat": now,
        "exp": now + 300,
        "jti": format!("jti-{}", rand_suffix()),
    })
}

/// Merges `patch` into `base` (null removes a member).
pub fn with(mut base: Value, patch: Value) -> Value {
    let (Some(b), Value::Object(p)) = (base.as_object_mut(), patch) else { panic!("objects only") };
    for (k, v) in p {
        if v.is_null() {
            b.remove(&k);
        } else {
            b.insert(k, v);
        }
    }
    base
}

pub fn rand_suffix() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Captures `tracing` output of the current thread at TRACE level, for secret-leak checks.
pub mod logs {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    pub struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Capture {
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A dispatcher alive for the whole test process and interested in everything.
    ///
    /// `tracing` caches each callsite's interest process-wide, computed by whichever thread
    /// reaches it first. While only one dispatcher is registered, that computation asks the
    /// registering thread's default, so a sibling test thread with no subscriber would cache
    /// "never" and silence the callsite for a capturing thread too. With this anchor there are
    /// always at least two registered dispatchers, and interest is the union over all of them.
    static ANCHOR: std::sync::LazyLock<tracing::Dispatch> =
        std::sync::LazyLock::new(|| tracing::Dispatch::new(tracing_subscriber::registry()));

    /// Installs a TRACE subscriber for the current thread; keep the guard alive.
    pub fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
        std::sync::LazyLock::force(&ANCHOR);
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        (capture, tracing::subscriber::set_default(subscriber))
    }
}
