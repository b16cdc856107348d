//! Audit events of the authorization server: what it granted, refused and revoked, for the
//! people who run it.
//!
//! Every event goes to `tracing` (target `tower_mcp_auth::audit`; reuse detections at `WARN`,
//! the rest at `INFO`, rate-limit refusals at `DEBUG` so that a flood does not flood the log
//! too), is counted ([`AuditCounters`]), and is handed to each [`AuditSink`] given to
//! [`AuthorizationServerBuilder::audit_sink`](super::AuthorizationServerBuilder::audit_sink).
//!
//! An event carries the client ID, the subject (the signed-in user) when known, the request's
//! `X-Request-Id` when it has a well-formed one, and for refusals the OAuth error code and a
//! fixed description. Never a token, code, verifier, state, secret, assertion or cookie: no
//! event field is ever filled from one.
//!
//! ```no_run
//! # async fn run(builder: tower_mcp_auth::server::AuthorizationServerBuilder) -> Result<(), Box<dyn std::error::Error>> {
//! use tower_mcp_auth::server::{AuditEvent, AuditKind};
//!
//! // Hand events to a task: the sink runs on the request's path.
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<AuditEvent>();
//! let server = builder
//!     .audit_sink(move |event: &AuditEvent| {
//!         let _ = tx.send(event.clone());
//!     })
//!     .build()
//!     .await?;
//! tokio::spawn(async move {
//!     while let Some(event) = rx.recv().await {
//!         if event.kind == AuditKind::RefreshReuseDetected {
//!             eprintln!("stolen refresh token? client {:?}, user {:?}", event.client_id, event.subject);
//!         }
//!     }
//! });
//! println!("tokens issued so far: {}", server.audit_counters().get(AuditKind::TokenIssued));
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;

use super::Which;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditKind {
    /// A client registered itself (dynamic client registration).
    ClientRegistered,
    /// The user approved a client's request on the consent page.
    ConsentGiven,
    /// The user denied a client's request on the consent page.
    ConsentDenied,
    /// An authorization code was issued to a client (the user signed in).
    CodeIssued,
    /// An authorization code was redeemed for tokens.
    TokenIssued,
    /// A refresh token was rotated for new tokens.
    TokenRefreshed,
    /// A rotated refresh token was presented again: its whole grant was revoked.
    RefreshReuseDetected,
    /// A redeemed authorization code was presented again by its client: what it produced was
    /// revoked.
    CodeReplayDetected,
    /// A client revoked a token.
    TokenRevoked,
    /// A request was refused; see [`AuditEvent::reason`].
    Rejected,
}

impl AuditKind {
    /// Every kind, in the order of [`AuditCounters::snapshot`].
    pub const ALL: [AuditKind; 10] = [
        AuditKind::ClientRegistered,
        AuditKind::ConsentGiven,
        AuditKind::ConsentDenied,
        AuditKind::CodeIssued,
        AuditKind::TokenIssued,
        AuditKind::TokenRefreshed,
        AuditKind::RefreshReuseDetected,
        AuditKind::CodeReplayDetected,
        AuditKind::TokenRevoked,
        AuditKind::Rejected,
    ];

    /// A stable snake_case name (`client_registered`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::ClientRegistered => "client_registered",
            AuditKind::ConsentGiven => "consent_given",
            AuditKind::ConsentDenied => "consent_denied",
            AuditKind::CodeIssued => "code_issued",
            AuditKind::TokenIssued => "token_issued",
            AuditKind::TokenRefreshed => "token_refreshed",
            AuditKind::RefreshReuseDetected => "refresh_reuse_detected",
            AuditKind::CodeReplayDetected => "code_replay_detected",
            AuditKind::TokenRevoked => "token_revoked",
            AuditKind::Rejected => "rejected",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReason {
    /// The OAuth error code (`invalid_grant`, `invalid_client`, …), or for other refusals a
    /// code of ours (`rate_limited`, `not_found`, `method_not_allowed`, `payload_too_large`).
    pub error: Cow<'static, str>,
    /// Fixed text written by this crate, never request data.
    pub description: Cow<'static, str>,
    /// The HTTP status of the answer (a redirect to the client for errors the authorization
    /// endpoint sends back there).
    pub status: u16,
}

/// One audit event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuditEvent {
    /// What happened.
    pub kind: AuditKind,
    /// The endpoint that answered.
    pub endpoint: Which,
    /// The client: authenticated for grants, as claimed by the request for refusals.
    pub client_id: Option<String>,
    /// The signed-in user's subject, when the event concerns a grant.
    pub subject: Option<String>,
    /// The request's `X-Request-Id` (at most 128 visible ASCII characters; otherwise absent).
    pub request_id: Option<String>,
    /// For [`AuditKind::Rejected`]: why.
    pub reason: Option<AuditReason>,
    /// Unix time (the server's clock).
    pub at: i64,
    /// Events of this kind recorded by this server instance so far, this one included.
    pub count: u64,
}

/// Receives audit events. Called on the request's task, after the answer is decided and
/// before it is sent: return quickly (hand the event to a channel for slow work).
pub trait AuditSink: Send + Sync + 'static {
    /// One event.
    fn record(&self, event: &AuditEvent);
}

impl<F> AuditSink for F
where
    F: Fn(&AuditEvent) + Send + Sync + 'static,
{
    fn record(&self, event: &AuditEvent) {
        self(event)
    }
}

/// How many events of each kind this server instance recorded.
#[derive(Debug, Default)]
pub struct AuditCounters {
    counts: [AtomicU64; AuditKind::ALL.len()],
}

impl AuditCounters {
    /// Events of `kind` so far.
    pub fn get(&self, kind: AuditKind) -> u64 {
        self.counts[kind.index()].load(Ordering::Relaxed)
    }

    /// Every kind with its count, in the order of [`AuditKind::ALL`].
    pub fn snapshot(&self) -> Vec<(AuditKind, u64)> {
        AuditKind::ALL.iter().map(|k| (*k, self.get(*k))).collect()
    }

    fn increment(&self, kind: AuditKind) -> u64 {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }
}

/// The server's audit trail: counters and sinks.
#[derive(Default)]
pub(crate) struct Audit {
    pub(crate) counters: Arc<AuditCounters>,
    pub(crate) sinks: Vec<Arc<dyn AuditSink>>,
}

impl fmt::Debug for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audit").field("sinks", &self.sinks.len()).finish_non_exhaustive()
    }
}

/// What an endpoint reports; the server adds the endpoint, request id, time and count.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) kind: AuditKind,
    pub(crate) client_id: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) reason: Option<AuditReason>,
}

impl Event {
    pub(crate) fn new(kind: AuditKind) -> Self {
        Self { kind, client_id: None, subject: None, reason: None }
    }

    pub(crate) fn client(mut self, client_id: &str) -> Self {
        self.client_id = Some(client_id.to_owned());
        self
    }

    pub(crate) fn subject(mut self, subject: &str) -> Self {
        self.subject = Some(subject.to_owned());
        self
    }
}

/// A refusal's reason, left in the response's extensions by the error builders and turned
/// into a [`AuditKind::Rejected`] event by the dispatcher (which removes it).
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) error: Cow<'static, str>,
    pub(crate) description: Cow<'static, str>,
}

impl Refusal {
    pub(crate) fn attach<B>(
        res: &mut http::Response<B>,
        error: impl Into<Cow<'static, str>>,
        description: impl Into<Cow<'static, str>>,
    ) {
        res.extensions_mut().insert(Refusal { error: error.into(), description: description.into() });
    }
}

/// Longest `X-Request-Id` carried into events.
const MAX_REQUEST_ID: usize = 128;

/// The request's `X-Request-Id`, when it is short visible ASCII (anything else could forge
/// log lines or bloat them).
fn request_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-request-id")?.as_bytes();
    if value.is_empty() || value.len() > MAX_REQUEST_ID || !value.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    String::from_utf8(value.to_vec()).ok()
}

/// Client ids and subjects come from outside: bounded before they reach the log.
fn bounded(s: Option<String>) -> Option<String> {
    s.map(|s| if s.len() > 512 { super::limits::prefix(&s, 512).to_owned() } else { s })
}

impl Audit {
    pub(crate) fn emit(&self, endpoint: Which, headers: &HeaderMap, at: i64, event: Event) {
        let count = self.counters.increment(event.kind);
        let event = AuditEvent {
            kind: event.kind,
            endpoint,
            client_id: bounded(event.client_id),
            subject: bounded(event.subject),
            request_id: request_id(headers),
            reason: event.reason,
            at,
            count,
        };
        trace(&event);
        for sink in &self.sinks {
            sink.record(&event);
        }
    }
}

fn trace(e: &AuditEvent) {
    // Client ids and subjects are printed with Debug (quoted, escaped): they come from
    // outside and must not break the log's lines.
    let (error, description) = e.reason.as_ref().map_or(("", ""), |r| (&*r.error, &*r.description));
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(
                target: "tower_mcp_auth::audit",
                $level,
                event = e.kind.as_str(),
                endpoint = ?e.endpoint,
                client_id = ?e.client_id.as_deref(),
                subject = ?e.subject.as_deref(),
                request_id = ?e.request_id.as_deref(),
                error,
                description,
                count = e.count,
                "audit"
            )
        };
    }
    match e.kind {
        AuditKind::RefreshReuseDetected | AuditKind::CodeReplayDetected => event!(tracing::Level::WARN),
        AuditKind::Rejected if error == "rate_limited" => event!(tracing::Level::DEBUG),
        _ => event!(tracing::Level::INFO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_visible_ascii() {
        let mut h = HeaderMap::new();
        assert_eq!(request_id(&h), None);
        h.insert("x-request-id", "abc-123".parse().unwrap());
        assert_eq!(request_id(&h).as_deref(), Some("abc-123"));
        h.insert("x-request-id", "a b".parse().unwrap());
        assert_eq!(request_id(&h), None);
        h.insert("x-request-id", "x".repeat(129).parse().unwrap());
        assert_eq!(request_id(&h), None);
        h.insert("x-request-id", http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert_eq!(request_id(&h), None);
    }

    #[test]
    fn counters_count_per_kind() {
        let audit = Audit::default();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let audit =
            Audit { sinks: vec![Arc::new(move |e: &AuditEvent| s.lock().unwrap().push((e.kind, e.count)))], ..audit };
        for kind in [AuditKind::TokenIssued, AuditKind::Rejected, AuditKind::TokenIssued] {
            audit.emit(Which::Token, &HeaderMap::new(), 0, Event::new(kind));
        }
        assert_eq!(audit.counters.get(AuditKind::TokenIssued), 2);
        assert_eq!(audit.counters.get(AuditKind::Rejected), 1);
        assert_eq!(audit.counters.get(AuditKind::CodeIssued), 0);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(AuditKind::TokenIssued, 1), (AuditKind::Rejected, 1), (AuditKind::TokenIssued, 2)]
        );
        assert_eq!(AuditKind::ALL.iter().map(|k| k.index()).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    }
}
