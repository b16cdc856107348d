//! The authorization server's happy path, end to end in process: registration, consent,
//! development login, code, token, verification, refresh rotation, revocation.

mod support;

use http::StatusCode;
use support::authz::{BACKENDS, Browser, Env, RESOURCE, code_for, redeem, refresh};
use tower_mcp_auth::BearerToken;
use tower_mcp_auth::server::UpstreamAccess;
use tower_mcp_auth::verify::TokenVerifier;

#[tokio::test]
async fn full_flow_on_every_backend() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let r = redeem(&env, &client, &code, &verifier).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.text());
        let tokens = r.json();
        assert_eq!(r.header("cache-control"), "no-store");
        assert_eq!(tokens["token_type"], "Bearer");
        let at = tokens["access_token"].as_str().unwrap();
        let rt = tokens["refresh_token"].as_str().unwrap().to_owned();
        let verified = env.server.verifier().verify(&BearerToken::new(at).unwrap()).await.unwrap();
        assert_eq!(verified.subject(), Some("alice"));
        assert_eq!(verified.audience(), [RESOURCE]);
        assert_eq!(verified.client_id(), Some(client.as_str()));
        assert_eq!(verified.upstream_claims().unwrap()["preferred_username"], "alice");
        assert!(verified.extension::<UpstreamAccess>().is_some());

        // Refresh rotates; the old refresh token then revokes the grant.
        let r = refresh(&env, &client, &rt).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let rt2 = r.json()["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(rt, rt2);
        assert_eq!(refresh(&env, &client, &rt).await.status, StatusCode::BAD_REQUEST);
        assert_eq!(refresh(&env, &client, &rt2).await.status, StatusCode::BAD_REQUEST, "family revoked");
        // The code works once.
        assert_eq!(redeem(&env, &client, &code, &verifier).await.status, StatusCode::BAD_REQUEST);
    }
}
