//! SECURITY-CATALOGUE group H (RFC 7591 dynamic client registration), against the
//! in-process authorization server on every store backend.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use support::authz::{
    BACKENDS, Browser, Env, Options, REDIRECT, Reply, authorize_query, basic, code_for, dev_code, form_request, pkce,
    redeem,
};
use tower_mcp_auth::server::PeerAddr;
use tower_mcp_auth::store::crypto::secret_hash;

fn assert_oauth_error(r: &Reply, status: StatusCode, error: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.json()["error"], error, "{}", r.text());
}

/// An env whose registration rate limit stays out of the way (H08 tests the limit).
async fn env(backend: support::authz::Backend) -> Env {
    Env::with(backend, Options { configure: Box::new(|b| b.registrations_per_minute(10_000)), ..Default::default() })
        .await
}

async fn register_raw(env: &Env, body: &Value) -> Reply {
    env.post_json("/register", body).await
}

fn meta(patch: Value) -> Value {
    support::with(json!({"client_name": "H", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}), patch)
}

#[tokio::test]
async fn h01_redirect_uri_policy() {
    for backend in BACKENDS {
        let env = env(backend).await;
        let before = env.census().await;
        for bad in [
            "javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "file:///etc/passwd",
            "http://evil.example/cb",
            "https://*.example.com/cb",
            "https://app.example/*",
            "https://app.example/cb#frag",
            "/relative/cb",
            "cb",
            "myapp:cb",
            "https://app.example/a/../cb",
            "https://user:pw@app.example/cb",
            "HTTPS://app.example/cb",
            "https://app.example:443/cb",
            "vbscript:x",
            "",
        ] {
            let r = register_raw(&env, &meta(json!({ "redirect_uris": [bad] }))).await;
            assert_oauth_error(&r, StatusCode::BAD_REQUEST, "invalid_redirect_uri");
            // One bad URI among good ones spoils the registration.
            let r = register_raw(&env, &meta(json!({ "redirect_uris": [REDIRECT, bad] }))).await;
            assert_oauth_error(&r, StatusCode::BAD_REQUEST, "invalid_redirect_uri");
        }
        for bad in [json!("https://app.example/cb"), json!([42]), json!(null), json!({})] {
            let r = register_raw(&env, &meta(json!({ "redirect_uris": bad }))).await;
            assert!(r.status == StatusCode::BAD_REQUEST, "{backend:?} {bad}: {}", r.text());
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
        // Controls: https, loopback http, private-use scheme with a dot.
        for ok in ["https://app.example/cb", "http://127.0.0.1:3000/cb", "http://[::1]/cb", "com.example.app:/oauth"] {
            let r = register_raw(&env, &meta(json!({ "redirect_uris": [ok] }))).await;
            assert_eq!(r.status, StatusCode::CREATED, "{ok}: {}", r.text());
        }
    }
}

#[tokio::test]
async fn h02_redirect_uri_bounds() {
    for backend in BACKENDS {
        let env = env(backend).await;
        let before = env.census().await;
        let many: Vec<String> = (0..1000).map(|i| format!("https://app.example/cb{i}")).collect();
        let long = format!("https://app.example/{}", "a".repeat(10 * 1024));
        for uris in [json!([]), json!(many), json!([long]), json!([REDIRECT, long])] {
            let r = register_raw(&env, &meta(json!({ "redirect_uris": uris }))).await;
            assert_oauth_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
        let ten: Vec<String> = (0..10).map(|i| format!("https://app.example/cb{i}")).collect();
        assert_eq!(register_raw(&env, &meta(json!({ "redirect_uris": ten }))).await.status, StatusCode::CREATED);
    }
}

#[tokio::test]
async fn h03_client_chosen_id_and_secret_ignored() {
    for backend in BACKENDS {
        let env = env(backend).await;
        for method in ["none", "client_secret_basic"] {
            let r = register_raw(
                &env,
                &meta(json!({
                    "client_id": "https://evil.example/client.json",
                    "client_secret": "my-own-secret-value",
                    "client_id_issued_at": 1,
                    "token_endpoint_auth_method": method,
                })),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
            let j = r.json();
            let id = j["client_id"].as_str().unwrap();
            assert!(!id.starts_with("https://") && !id.contains("evil"), "{backend:?}: {id}");
            assert!(id.len() >= 43, "server-generated, high entropy: {id}");
            assert_ne!(j["client_secret"], "my-own-secret-value");
            assert_ne!(j["client_id_issued_at"], 1);
            // The chosen secret does not authenticate.
            let r = env
                .post_form("/revoke", &[("token", "x")], &[("authorization", &basic(id, "my-own-secret-value"))])
                .await;
            assert_oauth_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
        }
        let dump = env.dump().await.concat();
        assert!(!String::from_utf8_lossy(&dump).contains("evil.example"), "{backend:?}");
    }
}

#[tokio::test]
async fn h04_auth_methods() {
    for backend in BACKENDS {
        let env = env(backend).await;
        let before = env.census().await;
        for method in [
            json!("private_key_jwt"),
            json!("client_secret_jwt"),
            json!("tls_client_auth"),
            json!("foo"),
            json!(""),
            json!(1),
            json!(["none"]),
        ] {
            let r = register_raw(&env, &meta(json!({ "token_endpoint_auth_method": method }))).await;
            assert_oauth_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
        // `none`: a public client, no secret, PKCE mandatory.
        let r = register_raw(&env, &meta(json!({}))).await;
        let j = r.json();
        assert_eq!(j["token_endpoint_auth_method"], "none");
        assert!(j.get("client_secret").is_none() && j.get("client_secret_expires_at").is_none(), "{j}");
        let client = j["client_id"].as_str().unwrap();
        let r = Browser::default().get(&env, &authorize_query(client, "", "s", &[("code_challenge_method", "")])).await;
        assert_eq!(r.location_param("error").as_deref(), Some("invalid_request"), "{backend:?}");
        let (code, _) = dev_code(&env, &mut Browser::default(), client, &[]).await;
        let no_verifier =
            [("grant_type", "authorization_code"), ("code", &code), ("client_id", client), ("redirect_uri", REDIRECT)];
        assert_oauth_error(&env.post_form("/token", &no_verifier, &[]).await, StatusCode::BAD_REQUEST, "invalid_grant");
        // Default (absent): client_secret_basic (RFC 7591 §2).
        let r = register_raw(&env, &json!({"redirect_uris": [REDIRECT]})).await;
        assert_eq!(r.json()["token_endpoint_auth_method"], "client_secret_basic");
        assert!(r.json()["client_secret"].is_string());
    }
}

#[tokio::test]
async fn h05_only_code_and_refresh_grants() {
    for backend in BACKENDS {
        let env = env(backend).await;
        let before = env.census().await;
        for patch in [
            json!({"grant_types": ["password"]}),
            json!({"grant_types": ["implicit"]}),
            json!({"grant_types": ["authorization_code", "implicit"]}),
            json!({"grant_types": ["client_credentials"]}),
            json!({"grant_types": ["refresh_token"]}),
            json!({"grant_types": "authorization_code"}),
            json!({"response_types": ["token"]}),
            json!({"response_types": ["code", "token"]}),
            json!({"response_types": ["id_token"]}),
            json!({"response_types": []}),
        ] {
            let r = register_raw(&env, &meta(patch.clone())).await;
            assert_oauth_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
        // Without refresh_token among its grants a client gets no refresh token.
        let r = register_raw(&env, &meta(json!({"grant_types": ["authorization_code"]}))).await;
        let client = r.json()["client_id"].as_str().unwrap().to_owned();
        let (code, verifier) = dev_code(&env, &mut Browser::default(), &client, &[]).await;
        let t = redeem(&env, &client, &code, &verifier).await.json();
        assert!(t["access_token"].is_string() && t.get("refresh_token").is_none(), "{t}");
    }
}

#[tokio::test]
async fn h06_client_name_is_escaped_isolated_and_marked_unverified() {
    for backend in BACKENDS {
        let env = env(backend).await;
        let name =
            "<script>alert(1)</script><img src=x onerror=alert(2)> \u{202E}elgooG\u{202C} G\u{043E}\u{043E}gle \"'&";
        let r = register_raw(
            &env,
            &meta(json!({"client_name": name, "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.json()["client_name"], name, "{backend:?}: stored and echoed as given");
        let client = r.json()["client_id"].as_str().unwrap().to_owned();
        let stored = env.entries().await.into_iter().find(|(ns, k, _)| ns == "clients" && *k == client).unwrap().2;
        let record: Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(record["client_name"], name);

        let (_, challenge) = pkce();
        let q = authorize_query(&client, &challenge, "s", &[("redirect_uri", "https://app.example/cb")]);
        let page = Browser::default().get(&env, &q).await;
        assert_eq!(page.status, StatusCode::OK);
        let html = page.text();
        for raw in ["<script>", "<img", "onerror=alert(2)>", "\"'&"] {
            assert!(!html.contains(raw), "{backend:?}: {raw} unescaped");
        }
        assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "escaped, still shown: {html}");
        // The name is isolated, so a direction override cannot flip the text after it.
        let start = html.find("<bdi>").expect("name in <bdi>");
        let end = html[start..].find("</bdi>").expect("closed") + start;
        assert!(html[start..end].contains('\u{202E}') && html[start..end].contains("G\u{043E}\u{043E}gle"));
        assert!(!html[end..].contains('\u{202E}'));
        assert!(html.contains("not verified"), "unverified note");
        assert!(html.contains("<strong>app.example</strong>"), "the redirect host is shown");
        assert!(html.contains(&client), "the client id is shown");
    }
}

#[tokio::test]
async fn h07_logo_and_other_uris_never_fetched_or_linked() {
    for backend in BACKENDS {
        let env = env(backend).await;
        let trap = TcpListener::bind("127.0.0.1:0").unwrap();
        trap.set_nonblocking(true).unwrap();
        let trap_url = format!("http://{}/logo.png", trap.local_addr().unwrap());
        let r = register_raw(
            &env,
            &meta(json!({
                "logo_uri": trap_url,
                "client_uri": "http://169.254.169.254/latest/meta-data/",
                "policy_uri": trap_url,
                "tos_uri": "https://evil.example/tos",
                "jwks_uri": trap_url,
            })),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let client = r.json()["client_id"].as_str().unwrap().to_owned();
        let mut browser = Browser::default();
        let (code, verifier) = dev_code(&env, &mut browser, &client, &[]).await;
        assert_eq!(redeem(&env, &client, &code, &verifier).await.status, StatusCode::OK);
        let (_, challenge) = pkce();
        let page = Browser::default().get(&env, &authorize_query(&client, &challenge, "s", &[])).await;
        let html = page.text();
        for uri in [trap_url.as_str(), "169.254.169.254", "evil.example"] {
            assert!(!html.contains(uri), "{backend:?}: {uri} on the consent page");
        }
        assert!(
            matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the trap saw a connection"
        );
    }
}

#[tokio::test]
async fn h08_registration_rate_limit_and_unused_expiry() {
    for backend in BACKENDS {
        let env = Env::with(
            backend,
            Options {
                configure: Box::new(|b| {
                    b.registrations_per_minute(3).unused_client_lifetime(Duration::from_secs(3600))
                }),
                ..Default::default()
            },
        )
        .await;
        let from = |ip: [u8; 4]| {
            let mut req = Request::post("/register")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(meta(json!({})).to_string())))
                .unwrap();
            req.extensions_mut().insert(PeerAddr(std::net::IpAddr::from(ip)));
            req
        };
        let mut created = Vec::new();
        for i in 0..20 {
            let r = env.call(from([198, 51, 100, 7])).await;
            if i < 3 {
                assert_eq!(r.status, StatusCode::CREATED, "{backend:?} #{i}");
                created.push(r.json()["client_id"].as_str().unwrap().to_owned());
            } else {
                assert_oauth_error(&r, StatusCode::TOO_MANY_REQUESTS, "invalid_request");
                // Three a minute: the next one in 20 s.
                assert_eq!(r.header("retry-after"), "20");
            }
        }
        assert_eq!(env.count("clients").await, 3, "{backend:?}: the flood stored nothing");
        assert_eq!(env.call(from([198, 51, 100, 8])).await.status, StatusCode::CREATED, "per address");

        // One client is used (gets a token); the others never are.
        let used = &created[0];
        let (code, verifier) = dev_code(&env, &mut Browser::default(), used, &[]).await;
        assert_eq!(redeem(&env, used, &code, &verifier).await.status, StatusCode::OK);
        env.clock.advance(Duration::from_secs(3601));
        let (_, challenge) = pkce();
        for unused in &created[1..] {
            let r = Browser::default().get(&env, &authorize_query(unused, &challenge, "s", &[])).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?}: expired registration");
            assert!(r.headers.get("location").is_none());
        }
        let r = Browser::default().get(&env, &authorize_query(used, &challenge, "s", &[])).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: a used client stays");
        assert_eq!(env.count("clients").await, 1);
    }
}

#[tokio::test]
async fn h09_bad_bodies_rejected_fast() {
    for backend in BACKENDS {
        let env = env(backend).await;
        let before = env.census().await;
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_obj =
            format!("{{\"redirect_uris\":[\"{REDIRECT}\"],\"x\":{}1{}}}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
        let bodies: Vec<(Vec<u8>, &str, StatusCode)> = vec![
            (vec![b' '; 10 * 1024 * 1024], "application/json", StatusCode::PAYLOAD_TOO_LARGE),
            (b"{not json".to_vec(), "application/json", StatusCode::BAD_REQUEST),
            (b"".to_vec(), "application/json", StatusCode::BAD_REQUEST),
            (b"[]".to_vec(), "application/json", StatusCode::BAD_REQUEST),
            (b"\"string\"".to_vec(), "application/json", StatusCode::BAD_REQUEST),
            (format!("\u{feff}{}", meta(json!({}))).into_bytes(), "application/json", StatusCode::BAD_REQUEST),
            (
                format!(r#"{{"redirect_uris":["{REDIRECT}"],"redirect_uris":["https://evil.example/cb"]}}"#)
                    .into_bytes(),
                "application/json",
                StatusCode::BAD_REQUEST,
            ),
            (deep.into_bytes(), "application/json", StatusCode::BAD_REQUEST),
            (deep_obj.into_bytes(), "application/json", StatusCode::BAD_REQUEST),
            (vec![0xff, 0xfe, b'{', b'}'], "application/json", StatusCode::BAD_REQUEST),
            (meta(json!({})).to_string().into_bytes(), "text/plain", StatusCode::BAD_REQUEST),
            (meta(json!({})).to_string().into_bytes(), "application/x-www-form-urlencoded", StatusCode::BAD_REQUEST),
        ];
        for (body, ct, status) in bodies {
            let len = body.len();
            let req = Request::post("/register").header("content-type", ct).body(Full::new(Bytes::from(body))).unwrap();
            let started = Instant::now();
            let r = env.call(req).await;
            assert!(started.elapsed() < Duration::from_secs(2), "{backend:?} {len} bytes: {:?}", started.elapsed());
            assert_eq!(r.status, status, "{backend:?} {ct} {len} bytes: {}", r.text());
            assert!(r.json()["error"].is_string());
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
        let get = env.call(Request::get("/register").body(Full::default()).unwrap()).await;
        assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    }
}

#[tokio::test]
async fn h10_registration_response_and_secret_at_rest() {
    for backend in BACKENDS {
        let env = env(backend).await;
        let r = register_raw(
            &env,
            &meta(json!({"token_endpoint_auth_method": "client_secret_post", "application_type": "native"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.header("cache-control"), "no-store");
        assert_eq!(r.header("content-type"), "application/json");
        let j = r.json();
        let (id, secret) = (j["client_id"].as_str().unwrap(), j["client_secret"].as_str().unwrap());
        assert!(secret.len() >= 43, "≥ 256 bits");
        assert_eq!(j["client_secret_expires_at"], 0);
        for k in [
            "redirect_uris",
            "token_endpoint_auth_method",
            "grant_types",
            "response_types",
            "client_name",
            "application_type",
        ] {
            assert!(!j[k].is_null(), "{k} echoed");
        }
        // Stored hashed only.
        let dump = env.dump().await.concat();
        let text = String::from_utf8_lossy(&dump);
        assert!(!text.contains(secret), "{backend:?}: secret in the store");
        assert!(text.contains(&secret_hash(secret)), "its hash is");
        // Returned once: nothing reads it back.
        for path in ["/register".to_owned(), format!("/register/{id}"), format!("/register?client_id={id}")] {
            let r = env.call(Request::get(path.as_str()).body(Full::default()).unwrap()).await;
            assert!(!r.text().contains(secret), "{path}");
        }
        // A public client gets no secret.
        let p = register_raw(&env, &meta(json!({}))).await.json();
        assert!(p.get("client_secret").is_none(), "{p}");
        // The secret works, once registered (control).
        let r = env
            .call(form_request("/revoke", &[("token", "x"), ("client_id", id), ("client_secret", secret)], &[]))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn h11_new_client_gets_our_consent_before_the_upstream() {
    for backend in BACKENDS {
        let env = env(backend).await;
        let mut victim = Browser { user_agent_fetch_site: Some("none"), ..Browser::default() };
        // The victim already went through the sign-in for a client it uses.
        let (client, code, verifier) = code_for(&env, &mut victim).await;
        assert_eq!(redeem(&env, &client, &code, &verifier).await.status, StatusCode::OK);
        // An attacker registers a client (its own redirect URI) and sends the victim a link.
        let evil = env
            .register_with(json!({"client_name": "Totally the same app", "redirect_uris": ["https://evil.example/cb"]}))
            .await;
        let evil_id = evil["client_id"].as_str().unwrap();
        let states_before = env.count("upstream_states").await;
        let (_, challenge) = pkce();
        let q = authorize_query(evil_id, &challenge, "s", &[("redirect_uri", "https://evil.example/cb")]);
        let r = victim.get(&env, &q).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: our consent page, not a redirect");
        assert!(r.headers.get("location").is_none());
        assert!(r.text().contains("<strong>evil.example</strong>"));
        assert_eq!(env.count("upstream_states").await, states_before, "no upstream sign-in started");
    }
}
