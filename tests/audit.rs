//! Audit events of the authorization server: a full sign-in delivers its events to the sink in
//! order, with client, subject and request id; replaying a rotated refresh token gives a
//! reuse-detection event; each refusal carries its reason; events and their log lines hold no
//! secret of the flow (SECURITY-CATALOGUE L01); counters follow.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::authz::{
    Backend, Browser, Env, Options, REDIRECT, approve, authorize_query, form_request, pkce, redeem, refresh,
};
use tower_mcp_auth::server::{AuditEvent, AuditKind, Limit, PeerAddr, RateLimits, Which};

type Events = Arc<Mutex<Vec<AuditEvent>>>;

async fn audited(limits: RateLimits) -> (Env, Events) {
    let events: Events = Arc::default();
    let sink = events.clone();
    let env = Env::with(
        Backend::Memory,
        Options {
            configure: Box::new(move |b| {
                b.rate_limits(limits).audit_sink(move |e: &AuditEvent| sink.lock().unwrap().push(e.clone()))
            }),
            ..Default::default()
        },
    )
    .await;
    (env, events)
}

fn take(events: &Events) -> Vec<AuditEvent> {
    std::mem::take(&mut *events.lock().unwrap())
}

fn kinds(events: &[AuditEvent]) -> Vec<AuditKind> {
    events.iter().map(|e| e.kind).collect()
}

#[tokio::test]
async fn a_full_flow_is_audited_in_order_and_a_replayed_refresh_token_is_reported() {
    let (logs, _guard) = support::logs::capture();
    let (env, events) = audited(RateLimits::unlimited()).await;

    let body = json!({
        "client_name": "Audited",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
    });
    let req = Request::post("/register")
        .header("content-type", "application/json")
        .header("x-request-id", "req-0001")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let r = env.call(req).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let client = r.json()["client_id"].as_str().unwrap().to_owned();

    let (verifier, challenge) = pkce();
    let r = approve(&env, &mut Browser::default(), &authorize_query(&client, &challenge, "st-audit", &[])).await;
    let code = r.location_param("code").expect("code");
    let r = redeem(&env, &client, &code, &verifier).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (at, rt1) =
        (r.json()["access_token"].as_str().unwrap().to_owned(), r.json()["refresh_token"].as_str().unwrap().to_owned());
    let r = refresh(&env, &client, &rt1).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let rt2 = r.json()["refresh_token"].as_str().unwrap().to_owned();
    // The rotated token again: the grant is revoked, and the request refused.
    assert_eq!(refresh(&env, &client, &rt1).await.status, StatusCode::BAD_REQUEST);
    let r = env.post_form("/revoke", &[("token", &rt2), ("client_id", &client)], &[]).await;
    assert_eq!(r.status, StatusCode::OK);

    let got = take(&events);
    assert_eq!(
        kinds(&got),
        [
            AuditKind::ClientRegistered,
            AuditKind::ConsentGiven,
            AuditKind::CodeIssued,
            AuditKind::TokenIssued,
            AuditKind::TokenRefreshed,
            AuditKind::RefreshReuseDetected,
            AuditKind::Rejected,
            AuditKind::TokenRevoked,
        ],
        "{got:#?}"
    );
    let endpoints: Vec<Which> = got.iter().map(|e| e.endpoint).collect();
    assert_eq!(
        endpoints,
        [
            Which::Register,
            Which::Consent,
            Which::Callback,
            Which::Token,
            Which::Token,
            Which::Token,
            Which::Token,
            Which::Revoke
        ]
    );
    for e in &got {
        assert_eq!(e.client_id.as_deref(), Some(client.as_str()), "{e:?}");
    }
    for e in &got[2..] {
        if e.kind != AuditKind::Rejected {
            assert_eq!(e.subject.as_deref(), Some("alice"), "{e:?}");
        }
    }
    assert_eq!(got[0].request_id.as_deref(), Some("req-0001"));
    assert!(got[0].subject.is_none());
    let reason = got[6].reason.as_ref().unwrap();
    assert_eq!((&*reason.error, reason.status), ("invalid_grant", 400));
    assert!(got.iter().all(|e| e.count == 1), "one of each kind so far");

    let counters = env.server.audit_counters();
    assert_eq!(counters.get(AuditKind::TokenIssued), 1);
    assert_eq!(counters.get(AuditKind::RefreshReuseDetected), 1);
    assert_eq!(counters.get(AuditKind::Rejected), 1);
    assert_eq!(counters.snapshot().iter().map(|(_, n)| n).sum::<u64>(), 8);

    // No secret of the flow in any event or in the log (L01).
    let printed = format!("{got:?}");
    let log = logs.text();
    assert!(log.contains("refresh_reuse_detected") && log.contains("token_issued"), "audit lines in the log");
    for (what, secret) in [
        ("code", &code),
        ("verifier", &verifier),
        ("access token", &at),
        ("refresh token", &rt1),
        ("refresh token", &rt2),
    ] {
        assert!(!printed.contains(secret.as_str()), "{what} in an audit event");
        assert!(!log.contains(secret.as_str()), "{what} in the log");
    }
    let signature = at.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "access token signature in the log");
}

#[tokio::test]
async fn each_refusal_carries_its_reason_and_a_denied_consent_is_not_a_refusal() {
    let (env, events) = audited(RateLimits::unlimited().register(Limit::per_minute(2, 0))).await;
    let client = env.register().await;
    take(&events);

    let reason = |e: &AuditEvent| {
        let r = e.reason.as_ref().expect("a reason");
        (e.kind, e.endpoint, r.error.to_string(), r.status)
    };

    // A guessed code, naming the client.
    let r = env
        .call(form_request(
            "/token",
            &[("grant_type", "authorization_code"), ("code", "guess"), ("client_id", &client)],
            &[],
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let got = take(&events);
    assert_eq!(
        got.iter().map(reason).collect::<Vec<_>>(),
        [(AuditKind::Rejected, Which::Token, "invalid_grant".into(), 400)]
    );
    assert_eq!(got[0].client_id.as_deref(), Some(client.as_str()), "the claimed client");

    // A refused registration, then the rate limit.
    let bad = json!({"redirect_uris": ["javascript:alert(1)"], "token_endpoint_auth_method": "none"});
    assert_eq!(env.post_json("/register", &bad).await.status, StatusCode::BAD_REQUEST);
    let mut limited = Request::post("/register")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bad.to_string())))
        .unwrap();
    limited.extensions_mut().insert(PeerAddr([192, 0, 2, 1].into()));
    // The first request above had no peer address (the shared key); this one has its own.
    for _ in 0..2 {
        let mut again = Request::post("/register")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bad.to_string())))
            .unwrap();
        again.extensions_mut().insert(PeerAddr([192, 0, 2, 1].into()));
        env.call(again).await;
    }
    assert_eq!(env.call(limited).await.status, StatusCode::TOO_MANY_REQUESTS);
    let got = take(&events);
    assert_eq!(
        got.iter().map(reason).collect::<Vec<_>>(),
        [
            (AuditKind::Rejected, Which::Register, "invalid_redirect_uri".into(), 400),
            (AuditKind::Rejected, Which::Register, "invalid_redirect_uri".into(), 400),
            (AuditKind::Rejected, Which::Register, "invalid_redirect_uri".into(), 400),
            (AuditKind::Rejected, Which::Register, "rate_limited".into(), 429),
        ]
    );

    // An unknown client at the authorization endpoint: an error page, refused.
    let (_, challenge) = pkce();
    let r = env.get(&authorize_query("no-such-client", &challenge, "st", &[])).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let got = take(&events);
    assert_eq!(
        got.iter().map(reason).collect::<Vec<_>>(),
        [(AuditKind::Rejected, Which::Authorize, "invalid_request".into(), 400)]
    );
    assert_eq!(got[0].client_id.as_deref(), Some("no-such-client"));

    // An oversized body.
    let big = Request::post("/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(vec![b'a'; 70_000])))
        .unwrap();
    assert_eq!(env.call(big).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        take(&events).iter().map(reason).collect::<Vec<_>>(),
        [(AuditKind::Rejected, Which::Token, "invalid_request".into(), 413)]
    );

    // The user says no: a consent event, not a refusal.
    let mut browser = Browser::default();
    let (_, challenge) = pkce();
    let page = browser.get(&env, &authorize_query(&client, &challenge, "st-deny", &[])).await;
    let f = support::authz::form_fields(&page.text());
    let r =
        browser.post(&env, "/consent", &[("request", &f["request"]), ("csrf", &f["csrf"]), ("decision", "deny")]).await;
    assert_eq!(r.location_param("error").as_deref(), Some("access_denied"));
    let got = take(&events);
    assert_eq!(kinds(&got), [AuditKind::ConsentDenied]);
    assert_eq!(got[0].client_id.as_deref(), Some(client.as_str()));

    // An authorization error sent back to the client is a refusal with its code.
    let r = browser.get(&env, &authorize_query(&client, &challenge, "st-x", &[("response_type", "token")])).await;
    assert_eq!(r.location_param("error").as_deref(), Some("unsupported_response_type"));
    assert_eq!(
        take(&events).iter().map(reason).collect::<Vec<_>>(),
        [(AuditKind::Rejected, Which::Authorize, "unsupported_response_type".into(), 302)]
    );
}

/// The log capture this file relies on still sees an event whose callsite a thread without a
/// subscriber reached first (the way a sibling test does); without the capture's anchor
/// dispatcher, `tracing` would cache that callsite as uninteresting for the whole process.
#[test]
fn the_log_capture_sees_callsites_a_thread_without_subscriber_reached_first() {
    fn emit() {
        tracing::info!(target: "capture_check", "marker event");
    }
    let (logs, _guard) = support::logs::capture();
    std::thread::spawn(emit).join().unwrap();
    emit();
    assert!(logs.text().contains("marker event"), "{}", logs.text());
}
