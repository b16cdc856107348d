//! SECURITY-CATALOGUE group E (the authorization endpoint) and group J (consent, CSRF and the
//! upstream callback), against the in-process authorization server on every store backend.
//! Each test is named after its catalogue row.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::authz::{
    BACKENDS, Browser, Env, ISSUER, Options, REDIRECT, Reply, UPSTREAM_ISSUER, UpFail, approve, authorize_query, basic,
    callback_path, consent_and_approve, env_with_upstream, follow_upstream, form_fields, pkce, redeem, upstream_state,
};

/// Extra headers of a request.
type Extra<'a> = &'a [(&'a str, &'a str)];
/// What the test upstream says about its `iss` (see `UpKnobs::issuer`).
type IssuerAnswer = Result<Option<(String, bool)>, ()>;

const C_CB: &str = "https://c.example/cb";

/// An HTML error page: the status, no redirect, the page security headers.
fn assert_error_page(r: &Reply, status: StatusCode) {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(r.header("content-type").starts_with("text/html"), "{:?}", r.headers);
    assert!(r.headers.get("location").is_none(), "no redirect expected, got {:?}", r.location());
    assert_page_headers(r);
}

/// E15: no framing, no caching, no referrer.
fn assert_page_headers(r: &Reply) {
    assert!(r.header("content-security-policy").contains("frame-ancestors 'none'"), "{:?}", r.headers);
    assert_eq!(r.header("x-frame-options"), "DENY");
    assert_eq!(r.header("referrer-policy"), "no-referrer");
    assert_eq!(r.header("cache-control"), "no-store");
}

/// E15: the page loads nothing from anywhere (no scripts, images, styles, frames).
fn assert_no_external_resources(r: &Reply) {
    let body = r.text().to_ascii_lowercase();
    for needle in ["<script", "<img", "<link", "<iframe", "<object", "<embed", "src=", "url(", "@import", "srcset"] {
        assert!(!body.contains(needle), "{needle} in page: {body}");
    }
}

/// All query parameters of the redirect.
fn location_params(r: &Reply) -> Vec<(String, String)> {
    r.location().expect("redirect").query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn count_param(r: &Reply, name: &str) -> usize {
    location_params(r).iter().filter(|(k, _)| k == name).count()
}

/// An authorization error response: a 302 to the client's `REDIRECT` with `error`, the exact
/// `state` and `iss` (each once), and no code.
fn assert_error_redirect(r: &Reply, error: &str, state: Option<&str>) {
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    let loc = r.location().expect("redirect");
    assert!(loc.as_str().starts_with(REDIRECT), "{loc}");
    assert_eq!(r.location_param("error").as_deref(), Some(error), "{loc}");
    assert_eq!(r.location_param("state").as_deref(), state, "{loc}");
    assert_eq!(r.location_param("iss").as_deref(), Some(ISSUER), "{loc}");
    assert_eq!(count_param(r, "iss"), 1);
    assert_eq!(count_param(r, "error"), 1);
    assert_eq!(count_param(r, "code"), 0);
    assert_eq!(count_param(r, "error_description"), 0, "no free text: {loc}");
    assert_page_headers(r);
}

async fn client_for(env: &Env, uris: &[&str]) -> String {
    env.register_with(json!({ "redirect_uris": uris })).await["client_id"].as_str().unwrap().to_owned()
}

/// Whether the response sends the browser on to the sign-in (remembered consent), rather
/// than showing the consent page.
fn went_upstream(r: &Reply) -> bool {
    r.status == StatusCode::FOUND && r.location().is_some_and(|l| l.path() == "/dev-login")
}

// ---------------------------------------------------------------------------------------
// E. Authorization endpoint

#[tokio::test]
async fn e01_redirect_uri_compared_as_raw_string() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = client_for(&env, &[C_CB]).await;
        let (_, challenge) = pkce();
        let before = env.census().await;
        for bad in [
            "https://C.EXAMPLE/cb",
            "https://c.example:443/cb",
            "https://c.example/cb/",
            "https://c.example/cb?x=1",
            "https://c.example/cb#f",
            "https://c.example@evil/cb",
            "https://c.example.evil.com/cb",
            "https://c.example/cb/../evil",
            "https://c.example/%63b",
            "http://c.example/cb",
        ] {
            let r = Browser::default()
                .get(&env, &authorize_query(&client, &challenge, "s", &[("redirect_uri", bad)]))
                .await;
            assert_error_page(&r, StatusCode::BAD_REQUEST);
            assert!(!r.text().contains("evil"), "{backend:?} {bad}: the page does not echo the URI");
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
        let ok =
            Browser::default().get(&env, &authorize_query(&client, &challenge, "s", &[("redirect_uri", C_CB)])).await;
        assert_eq!(ok.status, StatusCode::OK, "{backend:?}: the registered URI works");
    }
}

#[tokio::test]
async fn e02_loopback_redirect_any_port() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = client_for(&env, &["http://127.0.0.1/cb"]).await;
        let (_, challenge) = pkce();
        for port in ["51004", "1", "65535"] {
            let uri = format!("http://127.0.0.1:{port}/cb");
            let r = Browser::default()
                .get(&env, &authorize_query(&client, &challenge, "s", &[("redirect_uri", &uri)]))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{backend:?} {uri}: {}", r.text());
            assert!(r.text().contains(&uri), "the consent page names the redirect address");
        }
    }
}

#[tokio::test]
async fn e03_loopback_redirect_otherwise_exact() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = client_for(&env, &["http://127.0.0.1/cb"]).await;
        let (_, challenge) = pkce();
        let before = env.census().await;
        for bad in [
            "http://127.0.0.1.evil.com:51004/cb",
            "http://localhost:51004/cb",
            "http://[::1]:51004/cb",
            "http://127.0.0.1:51004/other",
            "http://127.0.0.1:51004/cb?x=1",
            "http://127.0.0.1:51004/cb/",
            "https://127.0.0.1:51004/cb",
            "http://127.0.0.2:51004/cb",
            "http://0x7f000001:51004/cb",
        ] {
            let r = Browser::default()
                .get(&env, &authorize_query(&client, &challenge, "s", &[("redirect_uri", bad)]))
                .await;
            assert_error_page(&r, StatusCode::BAD_REQUEST);
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
    }
}

#[tokio::test]
async fn e04_unknown_or_missing_client_id() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let (_, challenge) = pkce();
        let before = env.census().await;
        for client in ["unknown-client", "https://evil.example/client.json", ""] {
            let r = Browser::default().get(&env, &authorize_query(client, &challenge, "s", &[])).await;
            assert_error_page(&r, StatusCode::BAD_REQUEST);
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
    }
}

#[tokio::test]
async fn e05_missing_redirect_uri_with_several_registered() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let two = client_for(&env, &[REDIRECT, C_CB]).await;
        let (_, challenge) = pkce();
        let r = Browser::default().get(&env, &authorize_query(&two, &challenge, "s", &[("redirect_uri", "")])).await;
        assert_error_page(&r, StatusCode::BAD_REQUEST);
        // Control: with one registered URI, it may be left out.
        let one = client_for(&env, &[C_CB]).await;
        let r = Browser::default().get(&env, &authorize_query(&one, &challenge, "s", &[("redirect_uri", "")])).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.text());
        assert!(r.text().contains(C_CB));
    }
}

#[tokio::test]
async fn e06_no_code_challenge_is_refused_by_redirect() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let public = env.register().await;
        let (confidential, _) = env.register_confidential("client_secret_basic").await;
        let before = env.census().await;
        for client in [&public, &confidential] {
            let q = authorize_query(client, "", "st-e06", &[("code_challenge_method", "")]);
            let r = Browser::default().get(&env, &q).await;
            assert_error_redirect(&r, "invalid_request", Some("st-e06"));
            assert!(r.headers.get("set-cookie").is_none(), "{backend:?}: no browser state either");
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
    }
}

#[tokio::test]
async fn e07_only_well_formed_s256_challenges() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let (_, good) = pkce();
        let before = env.census().await;
        let cases: Vec<(String, String)> = vec![
            ("plain".into(), good.clone()),
            ("S256".into(), String::new()),
            ("s256".into(), good.clone()),
            (String::new(), good.clone()),
            ("S256".into(), good[..42].to_owned()),
            ("S256".into(), format!("{good}A")),
            ("S256".into(), format!("{}=", &good[..42])),
            ("S256".into(), format!("{}+", &good[..42])),
            ("S256".into(), format!("{}/", &good[..42])),
        ];
        for (method, challenge) in &cases {
            let q = authorize_query(&client, challenge, "st-e07", &[("code_challenge_method", method)]);
            let r = Browser::default().get(&env, &q).await;
            assert_error_redirect(&r, "invalid_request", Some("st-e07"));
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
    }
}

#[tokio::test]
async fn e08_duplicated_parameters_get_an_error_page() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let (_, challenge) = pkce();
        let (_, other) = pkce();
        let base = authorize_query(&client, &challenge, "st-e08", &[]);
        let before = env.census().await;
        for extra in [
            "redirect_uri=https%3A%2F%2Fevil.example%2Fcb".to_owned(),
            format!("redirect_uri={}", url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()),
            format!("client_id={client}"),
            "client_id=other-client".to_owned(),
            "state=second".to_owned(),
            format!("code_challenge={other}"),
            "response_type=code".to_owned(),
            "scope=mcp%3Aadmin".to_owned(),
        ] {
            for q in [format!("{base}&{extra}"), format!("/authorize?{extra}&{}", &base["/authorize?".len()..])] {
                let r = Browser::default().get(&env, &q).await;
                assert_error_page(&r, StatusCode::BAD_REQUEST);
            }
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
    }
}

#[tokio::test]
async fn e09_only_response_type_code() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let (_, challenge) = pkce();
        let before = env.census().await;
        for rt in ["token", "id_token", "code token", "code id_token", "none", "CODE"] {
            let r = Browser::default()
                .get(&env, &authorize_query(&client, &challenge, "st-e09", &[("response_type", rt)]))
                .await;
            assert_error_redirect(&r, "unsupported_response_type", Some("st-e09"));
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
    }
}

#[tokio::test]
async fn e10_unsupported_scope_interstitial_for_registered_clients() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let (_, challenge) = pkce();
        let before = env.census().await;
        let state = "st\"<e10>&code=evil";
        for scope in ["mcp:read mcp:write", "admin", "MCP:READ", "mcp:read\tmcp:admin"] {
            let q = authorize_query(&client, &challenge, state, &[("scope", scope)]);
            let r = Browser::default().get(&env, &q).await;
            // A dynamically registered client is not trusted with an automatic redirect.
            assert_error_page(&r, StatusCode::BAD_REQUEST);
            assert_no_external_resources(&r);
            let body = r.text();
            assert!(body.contains("127.0.0.1"), "the page names where it would go: {body}");
            assert!(!body.contains("<e10>") && !body.contains("&code=evil"), "state escaped: {body}");
            // The link carries the standard error response.
            let href = body.split("href=\"").nth(1).and_then(|s| s.split('"').next()).expect("a continue link");
            let href = href.replace("&amp;", "&").replace("&#38;", "&");
            let link = url::Url::parse(&href).expect("absolute link");
            let pairs: Vec<(String, String)> =
                link.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            assert!(link.as_str().starts_with(REDIRECT));
            assert!(pairs.contains(&("error".into(), "invalid_scope".into())), "{pairs:?}");
            assert!(pairs.contains(&("state".into(), state.into())), "{pairs:?}");
            assert!(pairs.contains(&("iss".into(), ISSUER.into())), "{pairs:?}");
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
        // Control: every supported scope is fine, the registered `scope` does not cap it.
        let q = authorize_query(&client, &challenge, "s", &[("scope", "mcp:read mcp:admin")]);
        assert_eq!(Browser::default().get(&env, &q).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn e11_foreign_resource_is_invalid_target() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let (_, challenge) = pkce();
        let before = env.census().await;
        for resource in [
            "https://other.example/mcp",
            "https://auth.example.com/mcp/",
            "https://auth.example.com/other",
            "https://auth.example.com/mcp#x",
            "not a url",
        ] {
            let r = Browser::default()
                .get(&env, &authorize_query(&client, &challenge, "st-e11", &[("resource", resource)]))
                .await;
            assert_error_redirect(&r, "invalid_target", Some("st-e11"));
        }
        let twice = format!(
            "{}&resource={}",
            authorize_query(&client, &challenge, "st-e11", &[]),
            url::form_urlencoded::byte_serialize(b"https://other.example/mcp").collect::<String>()
        );
        assert_error_redirect(&Browser::default().get(&env, &twice).await, "invalid_target", Some("st-e11"));
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
        // SPEC 27: upper-case scheme and host name the same resource.
        let upper = authorize_query(&client, &challenge, "s", &[("resource", "HTTPS://AUTH.EXAMPLE.COM/mcp")]);
        assert_eq!(Browser::default().get(&env, &upper).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn e12_state_echoed_byte_exact_and_capped() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let hostile = ["<script>alert(1)</script>", "\"", "&code=evil", "a b+c%20d", "x\u{202e}y", "é#frag"];
        for state in hostile {
            // Error response.
            let r = Browser::default().get(&env, &authorize_query(&client, "", state, &[])).await;
            assert_error_redirect(&r, "invalid_request", Some(state));
            let raw = r.header("location");
            for bad in ["<", ">", "\"", "&code=", " ", "#"] {
                assert!(!raw.contains(bad), "{backend:?}: {bad:?} unencoded in {raw}");
            }
            // Success response, and the consent page on the way.
            let mut browser = Browser::default();
            let (verifier, challenge) = pkce();
            let q = authorize_query(&client, &challenge, state, &[]);
            let page = browser.get(&env, &q).await;
            assert!(!page.text().contains("<script>alert"), "state never in HTML unescaped");
            let r = approve(&env, &mut browser, &q).await;
            assert_eq!(r.location_param("state").as_deref(), Some(state));
            assert_eq!(count_param(&r, "state"), 1);
            assert_eq!(count_param(&r, "code"), 1, "{:?}", r.location());
            let code = r.location_param("code").unwrap();
            assert_eq!(redeem(&env, &client, &code, &verifier).await.status, StatusCode::OK);
        }
        // The cap: 2048 bytes echoed, longer refused (without echo).
        let (_, challenge) = pkce();
        let at_cap = "s".repeat(2048);
        let r = Browser::default().get(&env, &authorize_query(&client, &challenge, &at_cap, &[])).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}");
        for over in ["s".repeat(2049), "s".repeat(10 * 1024)] {
            let r = Browser::default().get(&env, &authorize_query(&client, &challenge, &over, &[])).await;
            assert_error_redirect(&r, "invalid_request", None);
        }
    }
}

#[tokio::test]
async fn e13_prompt_none_never_issues_silently() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let mut browser = Browser { user_agent_fetch_site: Some("none"), ..Browser::default() };
        let (_, challenge) = pkce();
        let before = env.census().await;
        let r = browser.get(&env, &authorize_query(&client, &challenge, "st-e13", &[("prompt", "none")])).await;
        assert_error_redirect(&r, "login_required", Some("st-e13"));
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
        // Even with a remembered consent.
        let (_, challenge) = pkce();
        approve(&env, &mut browser, &authorize_query(&client, &challenge, "s", &[])).await;
        let (_, challenge) = pkce();
        let remembered = browser.get(&env, &authorize_query(&client, &challenge, "s", &[])).await;
        assert!(went_upstream(&remembered), "control: consent is remembered");
        let (_, challenge) = pkce();
        let before = env.census().await;
        for prompt in ["none", "consent none"] {
            let r = browser.get(&env, &authorize_query(&client, &challenge, "st-e13", &[("prompt", prompt)])).await;
            assert_error_redirect(&r, "login_required", Some("st-e13"));
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
    }
}

#[tokio::test]
async fn e14_no_cors_on_authorize() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let (_, challenge) = pkce();
        let q = authorize_query(&client, &challenge, "s", &[]);
        let get = Request::get(&q).header("origin", "https://evil.example").body(Full::<Bytes>::default()).unwrap();
        let r = env.call(get).await;
        assert_eq!(r.status, StatusCode::OK);
        let preflight = Request::options(&q)
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "GET")
            .body(Full::default())
            .unwrap();
        let p = env.call(preflight).await;
        assert_eq!(p.status, StatusCode::METHOD_NOT_ALLOWED);
        for r in [&r, &p] {
            for h in ["access-control-allow-origin", "access-control-allow-credentials", "access-control-allow-methods"]
            {
                assert!(r.headers.get(h).is_none(), "{backend:?}: {h} on /authorize");
            }
        }
        // Control: the token endpoint does allow cross-origin calls.
        let t = env
            .call(Request::options("/token").header("origin", "https://evil.example").body(Full::default()).unwrap())
            .await;
        assert_eq!(t.header("access-control-allow-origin"), "*");
    }
}

#[tokio::test]
async fn e15_page_security_headers_everywhere() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let (_, challenge) = pkce();
        let mut browser = Browser::default();
        let consent = browser.get(&env, &authorize_query(&client, &challenge, "s", &[])).await;
        assert_eq!(consent.status, StatusCode::OK);
        let error = browser.get(&env, &authorize_query("nope", &challenge, "s", &[])).await;
        let interstitial = browser.get(&env, &authorize_query(&client, &challenge, "s", &[("scope", "x")])).await;
        let too_long = browser.get(&env, &format!("/authorize?junk={}", "a".repeat(20 * 1024))).await;
        let f = form_fields(&consent.text());
        let refused = browser.post(&env, "/consent", &[("request", &f["request"]), ("decision", "approve")]).await;
        let approved = browser
            .post(&env, "/consent", &[("request", &f["request"]), ("csrf", &f["csrf"]), ("decision", "approve")])
            .await;
        let loc = approved.location().unwrap();
        let login = browser.get(&env, &format!("{}?{}", loc.path(), loc.query().unwrap())).await;
        let bad_callback = browser.get(&env, "/callback?code=x&state=unknown").await;
        let redirect = browser.get(&env, &authorize_query(&client, "", "s", &[])).await;
        let pages = [
            (&consent, StatusCode::OK),
            (&error, StatusCode::BAD_REQUEST),
            (&interstitial, StatusCode::BAD_REQUEST),
            (&too_long, StatusCode::URI_TOO_LONG),
            (&refused, StatusCode::FORBIDDEN),
            (&login, StatusCode::OK),
            (&bad_callback, StatusCode::BAD_REQUEST),
        ];
        for (page, status) in pages {
            assert_eq!(page.status, status, "{backend:?}: {}", page.text());
            assert_page_headers(page);
            assert_no_external_resources(page);
            assert_eq!(page.header("x-content-type-options"), "nosniff");
        }
        for r in [&approved, &redirect] {
            assert!(r.status.is_redirection());
            assert_page_headers(r);
        }
    }
}

#[tokio::test]
async fn e16_iss_code_and_state_exactly_once() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let (_, challenge) = pkce();
        let r = approve(&env, &mut Browser::default(), &authorize_query(&client, &challenge, "st-e16", &[])).await;
        assert_eq!(r.status, StatusCode::FOUND);
        assert!(r.location().unwrap().as_str().starts_with(REDIRECT));
        assert_eq!(r.location_param("iss").as_deref(), Some(ISSUER));
        assert_eq!(r.location_param("state").as_deref(), Some("st-e16"));
        for name in ["iss", "state", "code"] {
            assert_eq!(count_param(&r, name), 1, "{backend:?}: {name}");
        }
        assert_eq!(location_params(&r).len(), 3, "nothing else: {:?}", r.location());
        let err = Browser::default()
            .get(&env, &authorize_query(&client, &challenge, "st-e16", &[("response_type", "token")]))
            .await;
        assert_error_redirect(&err, "unsupported_response_type", Some("st-e16"));
        // Without a state, none is invented.
        let (_, challenge) = pkce();
        let r = approve(&env, &mut Browser::default(), &authorize_query(&client, &challenge, "", &[])).await;
        assert_eq!(count_param(&r, "state"), 0);
        assert_eq!(r.location_param("iss").as_deref(), Some(ISSUER));
    }
}

#[tokio::test]
async fn e17_two_tabs_each_complete_with_their_own_state_and_verifier() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let (v1, c1) = pkce();
        let (v2, c2) = pkce();
        let p1 = browser.get(&env, &authorize_query(&client, &c1, "tab-1", &[])).await;
        let p2 = browser.get(&env, &authorize_query(&client, &c2, "tab-2", &[])).await;
        let (f1, f2) = (form_fields(&p1.text()), form_fields(&p2.text()));
        let a2 = browser
            .post(&env, "/consent", &[("request", &f2["request"]), ("csrf", &f2["csrf"]), ("decision", "approve")])
            .await;
        let a1 = browser
            .post(&env, "/consent", &[("request", &f1["request"]), ("csrf", &f1["csrf"]), ("decision", "approve")])
            .await;
        let r2 = follow_upstream(&env, &mut browser, a2).await;
        let r1 = follow_upstream(&env, &mut browser, a1).await;
        assert_eq!(r1.location_param("state").as_deref(), Some("tab-1"), "{backend:?}");
        assert_eq!(r2.location_param("state").as_deref(), Some("tab-2"));
        let (code1, code2) = (r1.location_param("code").unwrap(), r2.location_param("code").unwrap());
        assert_ne!(code1, code2);
        // Each code is bound to its own verifier.
        assert_eq!(redeem(&env, &client, &code1, &v2).await.json()["error"], "invalid_grant");
        assert_eq!(redeem(&env, &client, &code1, &v1).await.status, StatusCode::OK);
        assert_eq!(redeem(&env, &client, &code2, &v2).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn e18_constant_code_challenge_refused() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let (verifier, challenge) = pkce();
        let r = approve(&env, &mut browser, &authorize_query(&client, &challenge, "first", &[])).await;
        assert!(r.location_param("code").is_some());
        // The same challenge again, while and after the first code lives.
        let before = env.census().await;
        let again = browser.get(&env, &authorize_query(&client, &challenge, "second", &[])).await;
        assert_error_redirect(&again, "invalid_request", Some("second"));
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
        let code = r.location_param("code").unwrap();
        assert_eq!(redeem(&env, &client, &code, &verifier).await.status, StatusCode::OK);
        let again = browser.get(&env, &authorize_query(&client, &challenge, "third", &[])).await;
        assert_error_redirect(&again, "invalid_request", Some("third"));
        // Another client may use the same value (the check is per client).
        let other = env.register().await;
        let r = browser.get(&env, &authorize_query(&other, &challenge, "s", &[])).await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

/// SPEC 29: identical authorization requests (a client's pre-flight GET) are fine until a
/// code is issued, and the flow then completes.
#[tokio::test]
async fn spec29_duplicate_identical_authorize_gets() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let (verifier, challenge) = pkce();
        let q = authorize_query(&client, &challenge, "s29", &[]);
        assert_eq!(browser.get(&env, &q).await.status, StatusCode::OK);
        assert_eq!(browser.get(&env, &q).await.status, StatusCode::OK);
        let r = approve(&env, &mut browser, &q).await;
        let code = r.location_param("code").expect("code");
        assert_eq!(redeem(&env, &client, &code, &verifier).await.status, StatusCode::OK, "{backend:?}");
    }
}

#[tokio::test]
async fn e19_request_objects_are_refused() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let (_, challenge) = pkce();
        let before = env.census().await;
        let jar = "eyJhbGciOiJub25lIn0.eyJyZWRpcmVjdF91cmkiOiJodHRwczovL2V2aWwifQ.";
        let r =
            Browser::default().get(&env, &authorize_query(&client, &challenge, "st-e19", &[("request", jar)])).await;
        assert_error_redirect(&r, "request_not_supported", Some("st-e19"));
        let par = "urn:ietf:params:oauth:request_uri:abc";
        let r = Browser::default()
            .get(&env, &authorize_query(&client, &challenge, "st-e19", &[("request_uri", par)]))
            .await;
        assert_error_redirect(&r, "request_uri_not_supported", Some("st-e19"));
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
    }
}

#[tokio::test]
async fn e20_huge_query_string_refused_quickly() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let (_, challenge) = pkce();
        // 100 KB does not even make a request: `http` (and so hyper, with 414) refuses URIs
        // over 64 KiB before any service sees them.
        let huge = authorize_query(&client, &challenge, "s", &[("junk", &"a".repeat(100 * 1024))]);
        assert!(http::Uri::try_from(huge.as_str()).is_err());
        // Below that, the endpoint's own cap (16 KiB) answers 414 without further work.
        let before = env.census().await;
        for size in [17 * 1024, 60 * 1024] {
            let long = authorize_query(&client, &challenge, "s", &[("junk", &"a".repeat(size))]);
            let started = Instant::now();
            let r = Browser::default().get(&env, &long).await;
            assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
            assert_error_page(&r, StatusCode::URI_TOO_LONG);
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
        // Control: a long but reasonable request is served.
        let fine = authorize_query(&client, &challenge, "s", &[("junk", &"a".repeat(8 * 1024))]);
        assert_eq!(Browser::default().get(&env, &fine).await.status, StatusCode::OK);
    }
}

// ---------------------------------------------------------------------------------------
// J. Consent, CSRF and the upstream callback

#[tokio::test]
async fn j01_consent_post_needs_the_csrf_token_of_its_own_request() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let mut a = Browser::default();
        let mut b = Browser::default();
        let (_, c1) = pkce();
        let (_, c2) = pkce();
        let fa = form_fields(&a.get(&env, &authorize_query(&client, &c1, "s", &[])).await.text());
        let fb = form_fields(&b.get(&env, &authorize_query(&client, &c2, "s", &[])).await.text());
        let before = env.census().await;
        // (which browser: 'a' or 'b', form)
        let attempts: Vec<(char, Vec<(&str, &str)>)> = vec![
            // No CSRF token.
            ('a', vec![("request", &fa["request"]), ("decision", "approve")]),
            // The CSRF token of another session.
            ('a', vec![("request", &fa["request"]), ("csrf", &fb["csrf"]), ("decision", "approve")]),
            // Request and CSRF token of another browser.
            ('b', vec![("request", &fa["request"]), ("csrf", &fa["csrf"]), ("decision", "approve")]),
            // An empty one, a doubled one.
            ('a', vec![("request", &fa["request"]), ("csrf", ""), ("decision", "approve")]),
            (
                'a',
                vec![
                    ("request", &fa["request"]),
                    ("csrf", &fa["csrf"]),
                    ("csrf", &fa["csrf"]),
                    ("decision", "approve"),
                ],
            ),
        ];
        for (who, form) in attempts {
            let browser = if who == 'a' { &mut a } else { &mut b };
            let r = browser.post(&env, "/consent", &form).await;
            assert_error_page(&r, StatusCode::FORBIDDEN);
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
        // The real one works once; reusing it is refused the same way.
        let ok = a
            .post(&env, "/consent", &[("request", &fa["request"]), ("csrf", &fa["csrf"]), ("decision", "approve")])
            .await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER);
        let reused = a
            .post(&env, "/consent", &[("request", &fa["request"]), ("csrf", &fa["csrf"]), ("decision", "approve")])
            .await;
        assert_error_page(&reused, StatusCode::FORBIDDEN);
        assert_eq!(env.count("upstream_states").await, 1, "{backend:?}");
        assert_eq!(env.count("consents").await, 1);
    }
}

#[tokio::test]
async fn j02_approval_via_get_refused() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let (_, challenge) = pkce();
        let f = form_fields(&browser.get(&env, &authorize_query(&client, &challenge, "s", &[])).await.text());
        let before = env.census().await;
        let q = serde_urlencoded::to_string([
            ("request", &f["request"]),
            ("csrf", &f["csrf"]),
            ("decision", &"approve".into()),
        ])
        .unwrap();
        let r = browser.get(&env, &format!("/consent?{q}")).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{backend:?}");
        assert!(r.headers.get("location").is_none());
        assert_eq!(r.header("allow"), "POST");
        assert_eq!(env.census().await, before, "nothing stored");
    }
}

#[tokio::test]
async fn j03_cross_site_consent_post_refused() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let (_, challenge) = pkce();
        let f = form_fields(&browser.get(&env, &authorize_query(&client, &challenge, "s", &[])).await.text());
        let form = [("request", f["request"].as_str()), ("csrf", f["csrf"].as_str()), ("decision", "approve")];
        let before = env.census().await;
        let attempts: [(Option<&str>, Extra); 5] = [
            (Some("https://evil.example"), &[]),
            (Some("null"), &[]),
            (Some("http://auth.example.com"), &[]),
            (Some(ISSUER), &[("sec-fetch-site", "cross-site")]),
            (None, &[("sec-fetch-site", "cross-site")]),
        ];
        for (origin, extra) in attempts {
            let r = browser.post_with(&env, "/consent", &form, origin, extra).await;
            assert_error_page(&r, StatusCode::FORBIDDEN);
        }
        assert_eq!(env.census().await, before, "{backend:?}: nothing stored");
        // The legitimate submission still works (the refused ones consumed nothing).
        let ok = browser.post_with(&env, "/consent", &form, Some(ISSUER), &[("sec-fetch-site", "same-origin")]).await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER);
    }
}

#[tokio::test]
async fn j04_consent_page_cannot_be_framed() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let (_, challenge) = pkce();
        let page = Browser::default().get(&env, &authorize_query(&client, &challenge, "s", &[])).await;
        assert_eq!(page.status, StatusCode::OK, "{backend:?}");
        let csp = page.header("content-security-policy");
        assert!(csp.split(';').any(|d| d.trim() == "frame-ancestors 'none'"), "{csp}");
        assert_eq!(page.header("x-frame-options"), "DENY");
    }
}

#[tokio::test]
async fn j05_consent_for_one_client_does_not_cover_another() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let a = env.register().await;
        let b = env.register().await;
        let mut browser = Browser { user_agent_fetch_site: Some("none"), ..Browser::default() };
        let (_, challenge) = pkce();
        approve(&env, &mut browser, &authorize_query(&a, &challenge, "s", &[])).await;
        let (_, challenge) = pkce();
        assert!(went_upstream(&browser.get(&env, &authorize_query(&a, &challenge, "s", &[])).await), "control");
        let (_, challenge) = pkce();
        let r = browser.get(&env, &authorize_query(&b, &challenge, "s", &[])).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: consent page for B");
        assert!(r.text().contains(&b), "the page names client B");
    }
}

#[tokio::test]
async fn j06_consent_keyed_by_scopes_and_redirect_uri() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let r2 = "http://127.0.0.1:53682/other";
        let client = client_for(&env, &[REDIRECT, r2]).await;
        let mut browser = Browser { user_agent_fetch_site: Some("none"), ..Browser::default() };
        let (_, challenge) = pkce();
        approve(&env, &mut browser, &authorize_query(&client, &challenge, "s", &[])).await;
        let fresh = || pkce().1;
        assert!(went_upstream(&browser.get(&env, &authorize_query(&client, &fresh(), "s", &[])).await), "control");
        for extra in [
            vec![("scope", "mcp:read mcp:admin")],
            vec![("scope", "mcp:admin")],
            vec![("redirect_uri", r2)],
            vec![("redirect_uri", "http://127.0.0.1:9999/callback")],
        ] {
            let r = browser.get(&env, &authorize_query(&client, &fresh(), "s", &extra)).await;
            assert_eq!(r.status, StatusCode::OK, "{backend:?} {extra:?}: asked again");
        }
        // Narrower is also a different consent (the key is the exact set).
        let r = browser.get(&env, &authorize_query(&client, &fresh(), "s", &[("scope", "mcp:read")])).await;
        assert!(went_upstream(&r));
    }
}

#[tokio::test]
async fn j07_consent_page_sets_no_upstream_state() {
    for backend in BACKENDS {
        let (env, up) = env_with_upstream(backend, |b| b).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let (_, challenge) = pkce();
        let page = browser.get(&env, &authorize_query(&client, &challenge, "s", &[])).await;
        assert_eq!(page.status, StatusCode::OK);
        let cookies: Vec<&str> = page.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        assert!(cookies[0].starts_with("__Host-mcp-auth-browser="));
        assert_eq!(env.count("upstream_states").await, 0, "{backend:?}: no upstream state before consent");
        assert!(!page.text().contains(support::authz::UPSTREAM_HOST), "no upstream link on the page");
        assert_eq!(up.exchange_count(), 0);
        // After approval: exactly one, and no cookie for it either.
        let f = form_fields(&page.text());
        let r = browser
            .post(&env, "/consent", &[("request", &f["request"]), ("csrf", &f["csrf"]), ("decision", "approve")])
            .await;
        assert!(r.headers.get("set-cookie").is_none());
        assert_eq!(env.count("upstream_states").await, 1);
    }
}

#[tokio::test]
async fn j08_callback_state_missing_unknown_replayed_or_expired() {
    for backend in BACKENDS {
        let (env, up) = env_with_upstream(backend, |b| b).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let (_, challenge) = pkce();
        let to_up = consent_and_approve(&env, &mut browser, &authorize_query(&client, &challenge, "s", &[])).await;
        let state = upstream_state(&to_up);
        let code = up.login(&state);
        let iss = [("iss", UPSTREAM_ISSUER)];
        for path in [
            format!("/callback?code={code}&iss={UPSTREAM_ISSUER}"),
            callback_path(&code, "unknown-state", &iss),
            callback_path(&code, &format!("{state}x"), &iss),
            format!("/callback?code={code}&state=&iss={UPSTREAM_ISSUER}"),
        ] {
            assert_error_page(&browser.get(&env, &path).await, StatusCode::BAD_REQUEST);
        }
        assert_eq!(up.exchange_count(), 0, "{backend:?}: no token request upstream");
        let ok = browser.get(&env, &callback_path(&code, &state, &iss)).await;
        assert!(ok.location_param("code").is_some(), "{backend:?}: control");
        assert_eq!(up.exchange_count(), 1);
        let replay = browser.get(&env, &callback_path(&code, &state, &iss)).await;
        assert_error_page(&replay, StatusCode::BAD_REQUEST);
        assert_eq!(up.exchange_count(), 1, "replay: no token request upstream");
        // Expired: the upstream state lives 10 minutes.
        let (_, challenge) = pkce();
        let to_up = consent_and_approve(&env, &mut browser, &authorize_query(&client, &challenge, "s", &[])).await;
        let state = upstream_state(&to_up);
        let code = up.login(&state);
        env.clock.advance(Duration::from_secs(601));
        assert_error_page(&browser.get(&env, &callback_path(&code, &state, &iss)).await, StatusCode::BAD_REQUEST);
        assert_eq!(up.exchange_count(), 1);
    }
}

#[tokio::test]
async fn j09_callback_in_another_browser_refused() {
    for backend in BACKENDS {
        let (env, up) = env_with_upstream(backend, |b| b).await;
        let client = env.register().await;
        let mut victim = Browser::default();
        let (_, challenge) = pkce();
        let to_up = consent_and_approve(&env, &mut victim, &authorize_query(&client, &challenge, "s", &[])).await;
        let state = upstream_state(&to_up);
        let code = up.login(&state);
        let path = callback_path(&code, &state, &[("iss", UPSTREAM_ISSUER)]);
        let mut attacker = Browser::default();
        assert_error_page(&attacker.get(&env, &path).await, StatusCode::FORBIDDEN);
        // With a binding cookie of its own.
        let (_, c2) = pkce();
        attacker.get(&env, &authorize_query(&client, &c2, "s", &[])).await;
        assert!(!attacker.cookies.is_empty());
        assert_error_page(&attacker.get(&env, &path).await, StatusCode::FORBIDDEN);
        assert_eq!(up.exchange_count(), 0, "{backend:?}: no token request upstream");
        assert_eq!(env.count("codes").await, 0);
        // The refused attempts did not burn the victim's sign-in.
        let ok = victim.get(&env, &path).await;
        assert!(ok.location_param("code").is_some(), "{backend:?}: {}", ok.text());
    }
}

#[tokio::test]
async fn j10_callback_iss_checked() {
    for backend in BACKENDS {
        let (env, up) = env_with_upstream(backend, |b| b).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let cases: Vec<(IssuerAnswer, Extra, Option<&str>)> = vec![
            (Ok(Some((UPSTREAM_ISSUER.into(), true))), &[("iss", "https://evil.example")], Some("access_denied")),
            (Ok(Some((UPSTREAM_ISSUER.into(), true))), &[("iss", "https://idp.test.invalid/")], Some("access_denied")),
            (Ok(Some((UPSTREAM_ISSUER.into(), true))), &[], Some("access_denied")),
            (Ok(Some((UPSTREAM_ISSUER.into(), false))), &[("iss", "https://evil.example")], Some("access_denied")),
            (Err(()), &[("iss", UPSTREAM_ISSUER)], Some("temporarily_unavailable")),
            // Controls: the right iss; absent where the provider does not promise it.
            (Ok(Some((UPSTREAM_ISSUER.into(), true))), &[("iss", UPSTREAM_ISSUER)], None),
            (Ok(Some((UPSTREAM_ISSUER.into(), false))), &[], None),
        ];
        for (answer, extra, error) in cases {
            up.set(|k| k.issuer = answer.clone());
            let before = up.exchange_count();
            let (_, challenge) = pkce();
            let to_up =
                consent_and_approve(&env, &mut browser, &authorize_query(&client, &challenge, "st-j10", &[])).await;
            let state = upstream_state(&to_up);
            let code = up.login(&state);
            let r = browser.get(&env, &callback_path(&code, &state, extra)).await;
            match error {
                Some(e) => {
                    assert_error_redirect(&r, e, Some("st-j10"));
                    assert_eq!(up.exchange_count(), before, "{backend:?} {extra:?}: no token request upstream");
                }
                None => assert!(r.location_param("code").is_some(), "{backend:?} {extra:?}: {:?}", r.location()),
            }
        }
    }
}

#[tokio::test]
async fn j11_upstream_error_mapped_not_reflected() {
    for backend in BACKENDS {
        let (env, up) = env_with_upstream(backend, |b| b).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let (_, challenge) = pkce();
        let to_up = consent_and_approve(&env, &mut browser, &authorize_query(&client, &challenge, "st-j11", &[])).await;
        let state = upstream_state(&to_up);
        let q = serde_urlencoded::to_string([
            ("error", "<script>alert(1)</script>"),
            ("error_description", "Database 10.1.2.3 said <b>no</b>"),
            ("error_uri", "https://evil.example/"),
            ("state", &state),
            ("iss", UPSTREAM_ISSUER),
        ])
        .unwrap();
        let r = browser.get(&env, &format!("/callback?{q}")).await;
        assert_error_redirect(&r, "access_denied", Some("st-j11"));
        let raw = r.header("location").to_owned();
        for leak in ["script", "10.1.2.3", "Database", "evil", "error_uri"] {
            assert!(!raw.contains(leak), "{backend:?}: {leak} reflected in {raw}");
        }
        assert!(r.body.is_empty() || !r.text().contains("script"));
        assert_eq!(up.exchange_count(), 0);
        assert_eq!(env.count("grants").await, 0);
    }
}

#[tokio::test]
async fn j12_denial() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let mut browser = Browser { user_agent_fetch_site: Some("none"), ..Browser::default() };
        let (_, challenge) = pkce();
        let q = authorize_query(&client, &challenge, "st-j12", &[]);
        let f = form_fields(&browser.get(&env, &q).await.text());
        let r = browser
            .post(&env, "/consent", &[("request", &f["request"]), ("csrf", &f["csrf"]), ("decision", "deny")])
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{backend:?}: 303 after a form POST");
        assert_eq!(r.location_param("error").as_deref(), Some("access_denied"));
        assert_eq!(r.location_param("state").as_deref(), Some("st-j12"));
        assert_eq!(r.location_param("iss").as_deref(), Some(ISSUER));
        assert_eq!(count_param(&r, "code"), 0);
        assert_eq!(env.count("consents").await, 0, "nothing stored as approval");
        assert_eq!(env.count("upstream_states").await, 0);
        assert_eq!(env.count("authz_requests").await, 0, "the transaction is consumed");
        let (_, challenge) = pkce();
        let again = browser.get(&env, &authorize_query(&client, &challenge, "s", &[])).await;
        assert_eq!(again.status, StatusCode::OK, "asked again");
    }
}

#[tokio::test]
async fn j13_approve_twice_is_a_no_op() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let (_, challenge) = pkce();
        let f = form_fields(&browser.get(&env, &authorize_query(&client, &challenge, "s", &[])).await.text());
        let form = [("request", f["request"].as_str()), ("csrf", f["csrf"].as_str()), ("decision", "approve")];
        let first = browser.post(&env, "/consent", &form).await;
        assert_eq!(first.status, StatusCode::SEE_OTHER);
        let second = browser.post(&env, "/consent", &form).await;
        assert_error_page(&second, StatusCode::FORBIDDEN);
        assert!(second.text().contains("already used"), "a clear message");
        assert_eq!(env.count("upstream_states").await, 1, "{backend:?}: one sign-in");
        let r = follow_upstream(&env, &mut browser, first).await;
        assert!(r.location_param("code").is_some());
        assert_eq!(env.count("codes").await, 1, "one code");
    }
}

#[tokio::test]
async fn j14_consent_page_in_two_tabs() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let (_, challenge) = pkce();
        let q = authorize_query(&client, &challenge, "s", &[]);
        // Tab 1 completes before tab 2 is approved: tab 2 says it expired.
        let f1 = form_fields(&browser.get(&env, &q).await.text());
        let f2 = form_fields(&browser.get(&env, &q).await.text());
        assert_ne!(f1["csrf"], f2["csrf"]);
        let a1 = browser
            .post(&env, "/consent", &[("request", &f1["request"]), ("csrf", &f1["csrf"]), ("decision", "approve")])
            .await;
        assert!(follow_upstream(&env, &mut browser, a1).await.location_param("code").is_some());
        let a2 = browser
            .post(&env, "/consent", &[("request", &f2["request"]), ("csrf", &f2["csrf"]), ("decision", "approve")])
            .await;
        assert_error_page(&a2, StatusCode::FORBIDDEN);
        assert!(a2.text().contains("expired"), "{backend:?}: {}", a2.text());
        // Both approved before either returns: both usable up to the callback, one code.
        let (_, challenge) = pkce();
        let q = authorize_query(&client, &challenge, "st-j14", &[]);
        let f1 = form_fields(&browser.get(&env, &q).await.text());
        let f2 = form_fields(&browser.get(&env, &q).await.text());
        let a1 = browser
            .post(&env, "/consent", &[("request", &f1["request"]), ("csrf", &f1["csrf"]), ("decision", "approve")])
            .await;
        let a2 = browser
            .post(&env, "/consent", &[("request", &f2["request"]), ("csrf", &f2["csrf"]), ("decision", "approve")])
            .await;
        assert_eq!((a1.status, a2.status), (StatusCode::SEE_OTHER, StatusCode::SEE_OTHER));
        let r1 = follow_upstream(&env, &mut browser, a1).await;
        let r2 = follow_upstream(&env, &mut browser, a2).await;
        assert!(r1.location_param("code").is_some());
        assert_error_redirect(&r2, "invalid_request", Some("st-j14"));
    }
}

#[tokio::test]
async fn j15_cookie_attributes_and_tampering() {
    for backend in BACKENDS {
        let (env, up) = env_with_upstream(backend, |b| b).await;
        let client = env.register().await;
        let mut browser = Browser { user_agent_fetch_site: Some("none"), ..Browser::default() };
        let (_, challenge) = pkce();
        let page = browser.get(&env, &authorize_query(&client, &challenge, "s", &[])).await;
        let raw = page.header("set-cookie").to_owned();
        let c = cookie::Cookie::parse(raw.clone()).unwrap();
        assert!(c.name().starts_with("__Host-"), "{raw}");
        assert_eq!(c.secure(), Some(true), "{raw}");
        assert_eq!(c.http_only(), Some(true), "{raw}");
        assert_eq!(c.same_site(), Some(cookie::SameSite::Lax), "{raw}");
        assert_eq!(c.path(), Some("/"), "{raw}");
        assert_eq!(c.domain(), None, "{raw}");
        assert!(c.value().len() >= 43, "random value");
        // Tampered cookie at the consent POST: refused.
        let f = form_fields(&page.text());
        let real = browser.binding();
        let tampered = format!("{}{}", &real[..real.len() - 1], if real.ends_with('A') { "B" } else { "A" });
        browser.cookies.insert(support::authz::BROWSER_COOKIE.into(), tampered.clone());
        let form = [("request", f["request"].as_str()), ("csrf", f["csrf"].as_str()), ("decision", "approve")];
        assert_error_page(&browser.post(&env, "/consent", &form).await, StatusCode::FORBIDDEN);
        // Real cookie: approved (and remembered); tampered at the callback: refused.
        browser.cookies.insert(support::authz::BROWSER_COOKIE.into(), real.clone());
        let to_up = browser.post(&env, "/consent", &form).await;
        let state = upstream_state(&to_up);
        let code = up.login(&state);
        browser.cookies.insert(support::authz::BROWSER_COOKIE.into(), tampered.clone());
        let path = callback_path(&code, &state, &[("iss", UPSTREAM_ISSUER)]);
        assert_error_page(&browser.get(&env, &path).await, StatusCode::FORBIDDEN);
        assert_eq!(up.exchange_count(), 0, "{backend:?}");
        // A tampered cookie carries no remembered consent.
        let (_, challenge) = pkce();
        let r = browser.get(&env, &authorize_query(&client, &challenge, "s", &[])).await;
        assert_eq!(r.status, StatusCode::OK, "consent page again");
        browser.cookies.insert(support::authz::BROWSER_COOKIE.into(), real);
        let (_, challenge) = pkce();
        let r = browser.get(&env, &authorize_query(&client, &challenge, "s", &[])).await;
        assert_eq!(r.status, StatusCode::FOUND, "control: the real cookie has it");
        assert_eq!(r.location().unwrap().host_str(), Some(support::authz::UPSTREAM_HOST));
    }
}

#[tokio::test]
async fn j16_remembered_consent_only_on_user_started_navigation() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let (_, challenge) = pkce();
        approve(&env, &mut browser, &authorize_query(&client, &challenge, "s", &[])).await;
        for (site, remembered) in [
            (Some("none"), true),
            (Some("same-origin"), true),
            (Some("cross-site"), false),
            (Some("same-site"), false),
            (None, false),
        ] {
            browser.user_agent_fetch_site = site;
            let (_, challenge) = pkce();
            let r = browser.get(&env, &authorize_query(&client, &challenge, "s", &[])).await;
            if remembered {
                assert!(went_upstream(&r), "{backend:?} {site:?}: {} {:?}", r.status, r.location());
            } else {
                assert_eq!(r.status, StatusCode::OK, "{backend:?} {site:?}: consent page again");
                assert!(r.text().contains("Allow"));
            }
        }
    }
}

#[tokio::test]
async fn j17_upstream_exchange_failures_store_nothing() {
    for backend in BACKENDS {
        let (env, up) = env_with_upstream(backend, |b| b).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        // Unavailable; refused (token endpoint error); invalid (wrong token_type, ID token
        // with a bad aud or nonce).
        for (fail, error) in [
            (UpFail::Unavailable, "temporarily_unavailable"),
            (UpFail::Refused, "access_denied"),
            (UpFail::Invalid, "access_denied"),
        ] {
            up.set(|k| k.exchange_fails = Some(fail));
            let (_, challenge) = pkce();
            let to_up =
                consent_and_approve(&env, &mut browser, &authorize_query(&client, &challenge, "st-j17", &[])).await;
            let state = upstream_state(&to_up);
            let code = up.login(&state);
            let r = browser.get(&env, &callback_path(&code, &state, &[("iss", UPSTREAM_ISSUER)])).await;
            assert_error_redirect(&r, error, Some("st-j17"));
            assert!(!r.header("location").contains("sqlite") && !r.text().contains("sqlite"), "generic");
            for ns in ["grants", "upstream_tokens", "codes", "used_challenges", "upstream_states"] {
                assert_eq!(env.count(ns).await, 0, "{backend:?} {fail:?}: nothing in {ns}");
            }
        }
        // The wrong verifier or nonce (a code injected from another sign-in) fails the same way.
        up.set(|k| k.exchange_fails = None);
        let (_, c1) = pkce();
        let s1 = upstream_state(
            &consent_and_approve(&env, &mut browser, &authorize_query(&client, &c1, "st-j17", &[])).await,
        );
        let (_, c2) = pkce();
        let s2 = upstream_state(
            &consent_and_approve(&env, &mut browser, &authorize_query(&client, &c2, "other", &[])).await,
        );
        let code_for_s2 = up.login(&s2);
        let _ = up.login(&s1);
        let r = browser.get(&env, &callback_path(&code_for_s2, &s1, &[("iss", UPSTREAM_ISSUER)])).await;
        assert_error_redirect(&r, "access_denied", Some("st-j17"));
        assert_eq!(env.count("grants").await, 0, "{backend:?}");
    }
}

// E10 for an operator-registered client: a client the server trusts gets the standard
// `invalid_scope` redirect; its name is shown without the "not verified" note; a confidential
// one authenticates with its secret at the token endpoint.
#[tokio::test]
async fn e10_static_clients_get_the_redirect_and_a_verified_name() {
    use tower_mcp_auth::server::StaticClient;
    const SECRET: &str = "static-client-secret-0123456789abcdef";
    for backend in BACKENDS {
        let options = Options {
            upstream: std::sync::Arc::new(tower_mcp_auth::upstream::DevLogin::new("alice")),
            configure: Box::new(|b| {
                b.client(StaticClient::public("inspector", [REDIRECT]).name("Operator's Inspector"))
                    .client(StaticClient::confidential("backend", SECRET, [REDIRECT]))
            }),
        };
        let env = Env::with(backend, options).await;
        let (_, challenge) = pkce();
        let q = authorize_query("inspector", &challenge, "s-static", &[("scope", "mcp:write")]);
        let r = Browser::default().get(&env, &q).await;
        assert_eq!(r.status, StatusCode::FOUND, "{backend:?}: {}", r.text());
        assert_eq!(r.location_param("error").as_deref(), Some("invalid_scope"));
        assert_eq!(r.location_param("state").as_deref(), Some("s-static"));
        assert_eq!(r.location_param("iss").as_deref(), Some(ISSUER));
        let page = Browser::default().get(&env, &authorize_query("inspector", &challenge, "s", &[])).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.text().contains("Operator&#x27;s Inspector") || page.text().contains("Operator&#39;s Inspector"));
        assert!(!page.text().contains("not verified"), "{backend:?}");
        // The confidential static client: full flow, then the secret at the token endpoint.
        let (verifier, challenge) = pkce();
        let mut browser = Browser::default();
        let r = approve(&env, &mut browser, &authorize_query("backend", &challenge, "s", &[])).await;
        let code = r.location_param("code").unwrap();
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
            ("redirect_uri", REDIRECT),
        ];
        let wrong = basic("backend", "wrong-secret-0123456789abcdef012345");
        assert_eq!(
            env.post_form("/token", &form, &[("authorization", wrong.as_str())]).await.status,
            StatusCode::UNAUTHORIZED
        );
        let right = basic("backend", SECRET);
        let r = env.post_form("/token", &form, &[("authorization", right.as_str())]).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.text());
    }
}

#[tokio::test]
async fn static_clients_are_validated() {
    use tower_mcp_auth::server::{AuthorizationServer, StaticClient};
    for client in [
        StaticClient::public("https://client.example/doc.json", [REDIRECT]),
        StaticClient::public("c", ["http://evil.example/cb"]),
        StaticClient::public("c", Vec::<String>::new()),
        StaticClient::confidential("c", "short", [REDIRECT]),
    ] {
        let r = AuthorizationServer::builder(ISSUER, support::authz::resource())
            .store(std::sync::Arc::new(tower_mcp_auth::store::MemoryStore::new()))
            .encryption_keys(tower_mcp_auth::store::crypto::EncryptionKeys::generate())
            .upstream(std::sync::Arc::new(tower_mcp_auth::upstream::DevLogin::new("a")))
            .client(client.clone())
            .build()
            .await;
        assert!(r.is_err(), "{client:?}");
    }
}
