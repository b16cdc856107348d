//! SECURITY-CATALOGUE group B: JWT verification (RFC 8725, RFC 9068, RFC 7515, Wycheproof
//! structural cases). Tokens are checked through `JwtVerifier`; the HTTP mapping (401
//! `invalid_token`) is covered by `b00_control_through_the_stack` and tests/bearer.rs.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use jsonwebtoken::Algorithm as J;
use serde_json::{Value, json};
use support::idp::MockIdp;
use support::keys::{b64, hs256};
use support::stack::{open_policy, post, send, stack};
use support::{ISSUER, RESOURCE, TestKey, claims, now, with};
use tower_mcp_auth::clock::ManualClock;
use tower_mcp_auth::verify::{Algorithm, Issuer, KeySet, ScopeClaim, TokenVerifier};
use tower_mcp_auth::{AccessToken, BearerToken, JwtVerifier, VerifyError};

fn keys(k: &[&TestKey]) -> KeySet {
    KeySet::from_jwks_json(&TestKey::jwks(k).to_string()).unwrap()
}

fn verifier_with(k: &[&TestKey]) -> JwtVerifier {
    JwtVerifier::builder().issuer(Issuer::with_keys(ISSUER, keys(k))).audience(RESOURCE).build().unwrap()
}

async fn check(v: &JwtVerifier, token: &str) -> Result<AccessToken, VerifyError> {
    match BearerToken::new(token) {
        Some(t) => v.verify(&t).await,
        // Not even token68: the bearer layer answers 400 before any verifier runs.
        None => Err(VerifyError::invalid_token("not token68")),
    }
}

async fn assert_invalid(v: &JwtVerifier, token: &str, what: &str) {
    match check(v, token).await {
        Err(e) => assert!(e.is_invalid_token(), "{what}: {e:?}"),
        Ok(_) => panic!("{what}: accepted"),
    }
}

fn rsa() -> (TestKey, JwtVerifier) {
    let k = TestKey::rs256_a();
    let v = verifier_with(&[&k]);
    (k, v)
}

#[tokio::test]
async fn b00_control_through_the_stack() {
    let (k, v) = rsa();
    let (svc, seen) = stack(v, open_policy());
    let token = k.token(&claims(ISSUER, RESOURCE));
    assert_eq!(send(&svc, post(Some(&token), "{}")).await.status, StatusCode::OK);
    let t = seen.lock().unwrap()[0].token.clone().unwrap();
    assert_eq!(t.subject(), Some("user-1"));
    assert_eq!(t.client_id(), Some("client-1"));
    assert_eq!(t.issuer(), Some(ISSUER));
    assert_eq!(t.audience(), [RESOURCE]);
    assert!(t.scopes().contains("mcp:read"));
    assert!(t.expires_at().unwrap() > now());
    // And a bad token is a 401 invalid_token through the same stack.
    let bad = k.token(&with(claims(ISSUER, RESOURCE), json!({"aud": "https://other.example/mcp"})));
    let res = send(&svc, post(Some(&bad), "{}")).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.www_authenticate(),
        r#"Bearer error="invalid_token", scope="mcp:read", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#
    );
}

#[tokio::test]
async fn b00_every_asymmetric_family_verifies() {
    for k in [TestKey::rs256_a(), TestKey::es256(), TestKey::es384(), TestKey::ed25519()] {
        let v = verifier_with(&[&k]);
        check(&v, &k.token(&claims(ISSUER, RESOURCE))).await.unwrap_or_else(|e| panic!("{}: {e:?}", k.kid));
        // PEM keys too.
        let pem =
            KeySet::from_pem(&k.public_pem, Algorithm::from_name(k.jwk["alg"].as_str().unwrap()).unwrap(), Some(k.kid))
                .unwrap();
        let v = JwtVerifier::builder().issuer(Issuer::with_keys(ISSUER, pem)).audience(RESOURCE).build().unwrap();
        check(&v, &k.token(&claims(ISSUER, RESOURCE))).await.unwrap();
    }
}

#[tokio::test]
async fn b01_alg_none() {
    let (_, v) = rsa();
    let body = b64(claims(ISSUER, RESOURCE).to_string());
    for header in [
        json!({"alg": "none"}),
        json!({"alg": "none", "kid": "rs256-a"}),
        json!({"alg": "None"}),
        json!({"alg": "NONE"}),
    ] {
        assert_invalid(&v, &format!("{}.{body}.", b64(header.to_string())), "none, empty signature").await;
        assert_invalid(&v, &format!("{}.{body}.c2ln", b64(header.to_string())), "none, with signature").await;
    }
}

#[tokio::test]
async fn b02_hmac_keyed_with_the_public_key() {
    let (k, v) = rsa();
    let c = claims(ISSUER, RESOURCE);
    let der = {
        let pem = String::from_utf8(k.public_pem.clone()).unwrap();
        let b: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(b).unwrap()
    };
    let n = k.jwk["n"].as_str().unwrap().as_bytes().to_vec();
    for secret in [k.public_pem.clone(), der, k.jwk.to_string().into_bytes(), n] {
        for header in [json!({"alg": "HS256", "kid": "rs256-a"}), json!({"alg": "HS256"})] {
            assert_invalid(&v, &hs256(&secret, &header, &c), "HS256 with the public key").await;
        }
    }
}

#[tokio::test]
async fn b03_other_algorithm_with_a_key_bound_to_rs256() {
    let c = claims(ISSUER, RESOURCE);
    let v = verifier_with(&[&TestKey::rs256_a()]);
    for alg in [J::RS512, J::PS256, J::RS384, J::PS512] {
        let k = TestKey::rs256_a().with_alg(alg);
        let token = k.sign(&json!({"alg": support::keys::alg_name(alg), "kid": "rs256-a"}), &c);
        assert_invalid(&v, &token, "alg other than the key's").await;
    }
}

#[tokio::test]
async fn b04_ec_token_naming_the_rsa_key() {
    let rsa = TestKey::rs256_a();
    let ec = TestKey::es256();
    let v = verifier_with(&[&rsa, &ec]);
    let token = ec.sign(&json!({"alg": "ES256", "kid": "rs256-a"}), &claims(ISSUER, RESOURCE));
    assert_invalid(&v, &token, "ES256 with the RSA kid").await;
}

#[tokio::test]
async fn b05_embedded_jwk_is_never_used() {
    let (_, v) = rsa();
    let attacker = TestKey::es256();
    for header in [
        json!({"alg": "ES256", "jwk": attacker.jwk}),
        json!({"alg": "ES256", "kid": "es256", "jwk": attacker.jwk}),
        json!({"alg": "ES256", "x5c": ["MIIB"], "kid": "rs256-a"}),
    ] {
        assert_invalid(&v, &attacker.sign(&header, &claims(ISSUER, RESOURCE)), "embedded key").await;
    }
}

#[tokio::test]
async fn b06_jku_and_x5u_are_never_fetched() {
    let idp = MockIdp::start().await;
    let attacker = TestKey::es256();
    idp.set_keys(&[&TestKey::rs256_a()]);
    let v = JwtVerifier::builder()
        .issuer(Issuer::with_jwks_url(idp.issuer.clone(), idp.jwks_url()))
        .audience(RESOURCE)
        .build()
        .unwrap();
    for header in [
        json!({"alg": "ES256", "kid": "x", "jku": idp.trap_url()}),
        json!({"alg": "ES256", "kid": "y", "x5u": format!("{}/cert.pem", idp.trap_url())}),
    ] {
        assert_invalid(&v, &attacker.sign(&header, &claims(&idp.issuer, RESOURCE)), "jku/x5u").await;
    }
    assert_eq!(idp.trap_hits(), 0);
}

#[tokio::test]
async fn b07_hostile_kids_are_opaque_and_rate_limited() {
    let idp = MockIdp::start().await;
    let k = TestKey::rs256_a();
    idp.set_keys(&[&k]);
    let v = JwtVerifier::builder()
        .issuer(Issuer::with_jwks_url(idp.issuer.clone(), idp.jwks_url()))
        .audience(RESOURCE)
        .jwks_refresh_cooldown(Duration::from_secs(3600))
        .build()
        .unwrap();
    check(&v, &k.token(&claims(&idp.issuer, RESOURCE))).await.unwrap();
    let long = "k".repeat(10 * 1024);
    for kid in ["../../dev/null", "' OR '1'='1", long.as_str(), "a\u{0}b", "", "/etc/passwd"] {
        let token = k.sign(&json!({"alg": "RS256", "kid": kid}), &claims(&idp.issuer, RESOURCE));
        assert_invalid(&v, &token, "hostile kid").await;
    }
    // One fetch to start, at most one refresh for all unknown kids within the cooldown.
    assert!(idp.jwks_hits() <= 2, "{} fetches", idp.jwks_hits());
}

#[tokio::test]
async fn b08_crit_is_rejected() {
    let (k, v) = rsa();
    for header in [
        json!({"alg": "RS256", "kid": "rs256-a", "crit": ["exp"]}),
        json!({"alg": "RS256", "kid": "rs256-a", "crit": ["b64"], "b64": false}),
        json!({"alg": "RS256", "kid": "rs256-a", "crit": []}),
    ] {
        assert_invalid(&v, &k.sign(&header, &claims(ISSUER, RESOURCE)), "crit").await;
    }
}

#[tokio::test]
async fn b09_nested_jwe_and_json_serialization() {
    let (k, v) = rsa();
    let c = claims(ISSUER, RESOURCE);
    assert_invalid(&v, &k.sign(&json!({"alg": "RS256", "kid": "rs256-a", "cty": "JWT"}), &c), "cty JWT").await;
    assert_invalid(&v, &k.sign(&json!({"alg": "RS256", "kid": "rs256-a", "enc": "A256GCM"}), &c), "enc").await;
    let jwe = format!("{}.{}.{}.{}.{}", b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#), "a", "b", "c", "d");
    assert_invalid(&v, &jwe, "JWE").await;
    let t = k.token(&c);
    let parts: Vec<&str> = t.split('.').collect();
    let json_serialized = json!({"payload": parts[1], "protected": parts[0], "signature": parts[2]}).to_string();
    assert!(check(&v, &json_serialized).await.is_err());
}

#[tokio::test]
async fn b10_exp_required_and_typed() {
    let (k, v) = rsa();
    let base = claims(ISSUER, RESOURCE);
    for exp in [Value::Null, json!("9999999999"), json!(-1), json!(1e300), json!(true), json!([now() + 300])] {
        let c = with(base.clone(), json!({"exp": exp}));
        assert_invalid(&v, &k.token(&c), &format!("exp {exp}")).await;
    }
}

fn clocked(k: &TestKey, clock: Arc<ManualClock>) -> JwtVerifier {
    JwtVerifier::builder()
        .issuer(Issuer::with_keys(ISSUER, keys(&[k])))
        .audience(RESOURCE)
        .leeway(Duration::from_secs(30))
        .clock(clock)
        .build()
        .unwrap()
}

#[tokio::test]
async fn b11_exp_boundary_with_explicit_leeway() {
    let k = TestKey::rs256_a();
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let v = clocked(&k, clock.clone());
    let t = |exp: i64| k.token(&with(claims(ISSUER, RESOURCE), json!({"exp": exp, "iat": 1_799_999_000})));
    let now = 1_800_000_000;
    assert_invalid(&v, &t(now - 30 - 2), "exp beyond leeway").await;
    check(&v, &t(now - 30 + 2)).await.unwrap();
    // Moving time forward expires it.
    let token = t(now + 10);
    check(&v, &token).await.unwrap();
    clock.advance(Duration::from_secs(40));
    assert_invalid(&v, &token, "expired after the clock moved").await;
}

#[tokio::test]
async fn b12_nbf_checked() {
    let (k, v) = rsa();
    for nbf in [json!(now() + 3600), json!("x"), json!(true)] {
        assert_invalid(&v, &k.token(&with(claims(ISSUER, RESOURCE), json!({"nbf": nbf}))), "nbf").await;
    }
    check(&v, &k.token(&with(claims(ISSUER, RESOURCE), json!({"nbf": now() - 10})))).await.unwrap();
}

#[tokio::test]
async fn b13_iat_in_the_future() {
    let (k, v) = rsa();
    assert_invalid(&v, &k.token(&with(claims(ISSUER, RESOURCE), json!({"iat": now() + 3600}))), "iat").await;
    assert_invalid(&v, &k.token(&with(claims(ISSUER, RESOURCE), json!({"iat": "yesterday"}))), "iat type").await;
}

#[tokio::test]
async fn b14_b15_audience() {
    let (k, v) = rsa();
    let base = claims(ISSUER, RESOURCE);
    for aud in [
        Value::Null,
        json!("https://other.example/mcp"),
        json!(format!("{RESOURCE}/")),
        json!([]),
        json!(42),
        json!({}),
        json!([42]),
        json!(["https://other.example/mcp"]),
    ] {
        assert_invalid(&v, &k.token(&with(base.clone(), json!({"aud": aud}))), &format!("aud {aud}")).await;
    }
    // Policy: an array that contains the resource is accepted.
    check(&v, &k.token(&with(base.clone(), json!({"aud": [RESOURCE, "https://other.example"]})))).await.unwrap();
    // SPEC 27: upper-case scheme and host are the same resource.
    check(&v, &k.token(&with(base, json!({"aud": "HTTPS://MCP.EXAMPLE.COM/mcp"})))).await.unwrap();
}

#[tokio::test]
async fn b16_issuer_exact() {
    let (k, v) = rsa();
    for iss in [Value::Null, json!(format!("{ISSUER}/")), json!([ISSUER]), json!("HTTPS://IDP.EXAMPLE.COM"), json!(7)] {
        assert_invalid(&v, &k.token(&with(claims(ISSUER, RESOURCE), json!({"iss": iss}))), &format!("iss {iss}")).await;
    }
}

#[tokio::test]
async fn b17_keys_belong_to_their_issuer() {
    let i_key = TestKey::rs256_a();
    let j_key = TestKey::rs256_b();
    let j = "https://other-idp.example";
    // Only I configured.
    let v = verifier_with(&[&i_key]);
    assert_invalid(&v, &j_key.token(&claims(j, RESOURCE)), "issuer J").await;
    assert_invalid(&v, &j_key.token(&claims(ISSUER, RESOURCE)), "claims I, signed by J").await;
    // Both configured, each with its own keys: J's key never verifies a token claiming I.
    let v = JwtVerifier::builder()
        .issuer(Issuer::with_keys(ISSUER, keys(&[&i_key])))
        .issuer(Issuer::with_keys(j, keys(&[&j_key])))
        .audience(RESOURCE)
        .build()
        .unwrap();
    check(&v, &i_key.token(&claims(ISSUER, RESOURCE))).await.unwrap();
    check(&v, &j_key.token(&claims(j, RESOURCE))).await.unwrap();
    assert_invalid(&v, &j_key.token(&claims(ISSUER, RESOURCE)), "J's key for I").await;
    assert_invalid(&v, &i_key.token(&claims(j, RESOURCE)), "I's key for J").await;
}

#[tokio::test]
async fn b18_b19_other_token_kinds() {
    let (k, v) = rsa();
    let id_token = with(claims(ISSUER, "client-1"), json!({"nonce": "n-0S6_WzA2Mj", "azp": "client-1"}));
    assert_invalid(&v, &k.sign(&json!({"alg": "RS256", "kid": "rs256-a", "typ": "JWT"}), &id_token), "ID token").await;
    let assertion = with(claims("client-1", "https://idp.example.com/token"), json!({"sub": "client-1"}));
    let h = json!({"alg": "RS256", "kid": "rs256-a", "typ": "client-authentication+jwt"});
    assert_invalid(&v, &k.sign(&h, &assertion), "client assertion").await;
    // Typed as a client assertion but otherwise acceptable claims: the type alone rejects it.
    assert_invalid(&v, &k.sign(&h, &claims(ISSUER, RESOURCE)), "client-authentication+jwt typ").await;
    for typ in ["id_token+jwt", "logout+jwt", "secevent+jwt", "dpop+jwt", "application/jose"] {
        let h = json!({"alg": "RS256", "kid": "rs256-a", "typ": typ});
        assert_invalid(&v, &k.sign(&h, &claims(ISSUER, RESOURCE)), typ).await;
    }
}

#[tokio::test]
async fn b20_typ_policy() {
    let k = TestKey::rs256_a();
    let strict = JwtVerifier::builder()
        .issuer(Issuer::with_keys(ISSUER, keys(&[&k])))
        .audience(RESOURCE)
        .require_at_jwt(true)
        .build()
        .unwrap();
    let lenient = verifier_with(&[&k]);
    let c = claims(ISSUER, RESOURCE);
    for typ in [json!("JWT"), Value::Null] {
        let mut h = json!({"alg": "RS256", "kid": "rs256-a"});
        if !typ.is_null() {
            h["typ"] = typ.clone();
        }
        assert_invalid(&strict, &k.sign(&h, &c), "strict typ").await;
        check(&lenient, &k.sign(&h, &c)).await.unwrap();
    }
    for typ in ["at+jwt", "application/at+jwt", "AT+JWT"] {
        check(&strict, &k.sign(&json!({"alg": "RS256", "kid": "rs256-a", "typ": typ}), &c)).await.unwrap();
    }
}

#[tokio::test]
async fn b21_duplicate_members() {
    let (k, v) = rsa();
    let c = claims(ISSUER, RESOURCE);
    let payload = c.to_string();
    let dup_aud = format!("{},\"aud\":\"https://evil.example\"}}", &payload[..payload.len() - 1]);
    assert_invalid(&v, &k.sign_parts(&k.header().to_string(), &dup_aud), "duplicate aud").await;
    let dup_alg = r#"{"alg":"RS256","kid":"rs256-a","alg":"none"}"#;
    assert_invalid(&v, &k.sign_parts(dup_alg, &payload), "duplicate alg").await;
    let dup_kid = r#"{"alg":"RS256","kid":"other","kid":"rs256-a"}"#;
    assert_invalid(&v, &k.sign_parts(dup_kid, &payload), "duplicate kid").await;
}

#[tokio::test]
async fn b22_structure() {
    let (k, v) = rsa();
    let t = k.token(&claims(ISSUER, RESOURCE));
    let p: Vec<&str> = t.split('.').collect();
    // Proper padding where the length needs it, a lone '=' otherwise: either way not the
    // unpadded form RFC 7515 requires.
    let padded = |s: &str| format!("{s}{}", "=".repeat(((4 - s.len() % 4) % 4).max(1)));
    let std_alphabet = |s: &str| s.replace('-', "+").replace('_', "/");
    let cases = [
        format!("{}.{}.{}", padded(p[0]), p[1], p[2]),
        format!("{}.{}.{}", p[0], padded(p[1]), p[2]),
        format!("{}.{}.{}=", p[0], p[1], p[2]),
        format!("{}.{}.{}", std_alphabet(p[0]), std_alphabet(p[1]), std_alphabet(p[2])),
        format!("{} .{}.{}", p[0], p[1], p[2]),
        format!("{}.{}", p[0], p[1]),
        format!("{}.{}.{}.{}", p[0], p[1], p[2], p[2]),
        format!("{}..{}", p[0], p[2]),
        format!(".{}.{}", p[1], p[2]),
        format!("{}.{}.", p[0], p[1]),
        format!("{}.{}.{}", p[0], p[1], &p[2][..p[2].len() - 1]),
    ];
    for case in &cases {
        assert_invalid(&v, case, case).await;
    }
    // Sanity: the untouched token passes, so each case failed for its own defect.
    check(&v, &t).await.unwrap();
}

#[tokio::test]
async fn b23_payload_shapes() {
    let (k, v) = rsa();
    let h = k.header().to_string();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for payload in ["[]", "\"str\"", "\u{feff}{}", "42", "null", deep.as_str()] {
        assert_invalid(&v, &k.sign_parts(&h, payload), "payload shape").await;
    }
    // Invalid UTF-8 inside the payload.
    let input = format!("{}.{}", b64(&h), b64(b"{\"iss\":\"\xff\"}"));
    let token = format!("{input}.{}", k.signature(input.as_bytes()));
    assert_invalid(&v, &token, "invalid UTF-8").await;
}

#[tokio::test]
async fn b24_ecdsa_signature_forms() {
    let k = TestKey::es256();
    let v = verifier_with(&[&k]);
    let t = k.token(&claims(ISSUER, RESOURCE));
    let (input, _) = t.rsplit_once('.').unwrap();
    let zero = b64([0u8; 64]);
    let short = b64([1u8; 63]);
    // A DER-encoded signature of the right shape (SEQUENCE of two INTEGERs).
    let mut der = vec![0x30, 0x44, 0x02, 0x20];
    der.extend([0x11; 32]);
    der.extend([0x02, 0x20]);
    der.extend([0x22; 32]);
    for sig in [zero, short, b64(der), b64([0xffu8; 64])] {
        assert_invalid(&v, &format!("{input}.{sig}"), "ES256 signature form").await;
    }
}

#[tokio::test]
async fn b27_clock_skew() {
    let k = TestKey::rs256_a();
    let real = now();
    let c = with(claims(ISSUER, RESOURCE), json!({"iat": real, "nbf": real, "exp": real + 300}));
    let token = k.token(&c);
    for (skew, ok) in [(-20i64, true), (20, true), (-5 * 60, false), (5 * 60 + 31, false), (5 * 60, true)] {
        let clock = Arc::new(ManualClock::new(real + skew));
        let v = clocked(&k, clock);
        assert_eq!(check(&v, &token).await.is_ok(), ok, "skew {skew}");
    }
}

#[tokio::test]
async fn hmac_needs_the_dangerous_opt_in() {
    let secret = [9u8; 32];
    let keys = KeySet::dangerous_hmac_secret(&secret, Algorithm::HS256, Some("h")).unwrap();
    let refused = JwtVerifier::builder().issuer(Issuer::with_keys(ISSUER, keys.clone())).audience(RESOURCE).build();
    assert!(refused.is_err(), "an HMAC key without the opt-in must not build");
    let refused = JwtVerifier::builder()
        .issuer(Issuer::with_keys(ISSUER, keys.clone()))
        .audience(RESOURCE)
        .algorithms([Algorithm::HS256])
        .build();
    assert!(refused.is_err());
    let v = JwtVerifier::builder()
        .issuer(Issuer::with_keys(ISSUER, keys))
        .audience(RESOURCE)
        .algorithms([Algorithm::HS256])
        .dangerous_allow_hmac()
        .build()
        .unwrap();
    check(&v, &hs256(&secret, &json!({"alg": "HS256", "kid": "h"}), &claims(ISSUER, RESOURCE))).await.unwrap();
}

#[tokio::test]
async fn builders_fail_closed() {
    let k = keys(&[&TestKey::rs256_a()]);
    assert!(JwtVerifier::builder().issuer(Issuer::with_keys(ISSUER, k.clone())).build().is_err(), "no audience");
    assert!(JwtVerifier::builder().audience(RESOURCE).build().is_err(), "no issuer");
    assert!(
        JwtVerifier::builder()
            .issuer(Issuer::with_keys(ISSUER, k.clone()))
            .audience(RESOURCE)
            .leeway(Duration::from_secs(3600))
            .build()
            .is_err()
    );
    assert!(
        JwtVerifier::builder()
            .issuer(Issuer::with_keys(ISSUER, k.clone()))
            .audience(RESOURCE)
            .algorithms([Algorithm::ES256])
            .build()
            .is_err(),
        "a key whose algorithm is not allowed"
    );
    assert!(JwtVerifier::from_issuer("http://idp.example.com", RESOURCE).is_err(), "http issuer");
    assert!(JwtVerifier::from_issuer("http://127.0.0.1:9", RESOURCE).is_ok(), "loopback http is allowed");
    assert!(KeySet::from_pem(&TestKey::rsa1024().public_pem, Algorithm::RS256, None).is_err(), "RSA 1024");
    assert!(KeySet::from_jwk_json(&TestKey::rsa1024().jwk.to_string()).is_err(), "RSA 1024 JWK");
}

#[tokio::test]
async fn scope_claims_and_mapping_hook() {
    let k = TestKey::rs256_a();
    let v = JwtVerifier::builder()
        .issuer(Issuer::with_keys(ISSUER, keys(&[&k])))
        .audience(RESOURCE)
        .scope_claim(ScopeClaim::Auto)
        .map_claims(|claims, token| {
            if let Some(Value::Object(up)) = claims.get("upstream") {
                token.set_upstream_claims(up.clone());
            }
            if claims.get("tenant").and_then(Value::as_str) == Some("blocked") {
                return Err(VerifyError::invalid_token("tenant blocked"));
            }
            token.insert_extension(String::from("mapped"));
            Ok(())
        })
        .build()
        .unwrap();
    let c = with(
        claims(ISSUER, RESOURCE),
        json!({"scope": null, "scp": ["mcp:read", "mcp:write"], "upstream": {"email": "a@example.com"}}),
    );
    let t = check(&v, &k.token(&c)).await.unwrap();
    assert!(t.scopes().contains("mcp:write"));
    assert_eq!(t.upstream_claims().unwrap()["email"], "a@example.com");
    assert_eq!(t.extension::<String>().map(String::as_str), Some("mapped"));
    assert_eq!(t.claim("upstream").unwrap()["email"], "a@example.com");
    let blocked = with(claims(ISSUER, RESOURCE), json!({"tenant": "blocked"}));
    assert_invalid(&v, &k.token(&blocked), "hook rejection").await;
    // D06: conflicting scope and scp.
    let conflict = with(claims(ISSUER, RESOURCE), json!({"scope": "mcp:read", "scp": ["mcp:admin"]}));
    assert_invalid(&v, &k.token(&conflict), "scope/scp conflict").await;
    // azp stands in for client_id.
    let azp = with(claims(ISSUER, RESOURCE), json!({"client_id": null, "azp": "app-7"}));
    assert_eq!(check(&v, &k.token(&azp)).await.unwrap().client_id(), Some("app-7"));
}
