//! The browser part of the flow: the authorization endpoint, the consent form, the
//! development login page, and the upstream provider's callback.

use base64::Engine;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};
use url::Url;

use super::Core;
use super::audit::{AuditKind, Event};
use super::pages::{self, ConsentPage, DevLoginPage, InterstitialPage};
use super::records::{
    AuthorizationRequest, CODES, CONSENTS, ClientKind, ClientRecord, CodeRecord, GRANTS, GrantRecord, REQUESTS,
    UPSTREAM_STATES, UPSTREAM_TOKENS, USED_CHALLENGES, UpstreamState, decode, encode,
};
use super::web::{
    EndpointBody, Params, cookie, cross_site, is_form, method_not_allowed, redirect, set_cookie, time_like::Secs,
};
use crate::cimd::HostDecision;
use crate::store::crypto::{random_token, secret_hash, secure_eq};
use crate::upstream::{self, UpstreamErrorKind};
use crate::verify::claims_resource_eq;

/// The browser-binding cookie.
pub(crate) const BROWSER_COOKIE: &str = "__Host-mcp-auth-browser";
/// Longest `state` accepted (echoed back verbatim).
const MAX_STATE: usize = 2048;
/// Longest query string the authorization endpoint reads.
const MAX_QUERY: usize = 16 * 1024;
/// Parameters of an authorization request that may appear once only. A request repeating one
/// is ambiguous (which `state` to echo, which challenge to bind), so it gets an error page,
/// never a redirect. (`resource` may repeat per RFC 8707; it is refused as `invalid_target`.)
const SINGLE: [&str; 10] = [
    "client_id",
    "redirect_uri",
    "state",
    "response_type",
    "code_challenge",
    "code_challenge_method",
    "scope",
    "prompt",
    "request",
    "request_uri",
];

fn page(status: StatusCode, title: &str, message: &str) -> Response<EndpointBody> {
    pages::error(status, title, message)
}

pub(crate) fn unavailable_page() -> Response<EndpointBody> {
    page(StatusCode::SERVICE_UNAVAILABLE, "Temporarily unavailable", "The sign-in service is temporarily unavailable.")
}

/// Whether `requested` may be used as redirect URI given the `registered` ones: an exact
/// string match, or, for loopback `http` redirect URIs, the same URI on another port
/// (RFC 8252 §7.3).
pub(crate) fn redirect_allowed(registered: &[String], requested: &str) -> bool {
    if registered.iter().any(|r| r == requested) {
        return true;
    }
    let Ok(req) = Url::parse(requested) else { return false };
    // Only a URI whose parsed form is the string itself (no dot segments, case or encoding
    // tricks) can match a registered one on another port.
    if req.as_str() != requested {
        return false;
    }
    let loopback = |u: &Url| u.scheme() == "http" && is_loopback_host(u);
    if !loopback(&req) || req.fragment().is_some() || !req.username().is_empty() || req.password().is_some() {
        return false;
    }
    registered.iter().filter_map(|r| Url::parse(r).ok()).any(|reg| {
        loopback(&reg)
            && reg.host_str() == req.host_str()
            && reg.path() == req.path()
            && reg.query() == req.query()
            && reg.fragment().is_none()
    })
}

fn is_loopback_host(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn host_of(uri: &str) -> String {
    Url::parse(uri).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_else(|| uri.to_owned())
}

/// The authorization response location: `redirect_uri` with `params`, `state` and `iss`.
fn response_location(core: &Core, redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>) -> String {
    let Ok(mut url) = Url::parse(redirect_uri) else { return redirect_uri.to_owned() };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(s) = state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", &core.issuer);
    }
    url.into()
}

struct Target<'a> {
    redirect_uri: &'a str,
    state: Option<&'a str>,
}

fn error_redirect(core: &Core, t: &Target<'_>, error: &'static str, after_post: bool) -> Response<EndpointBody> {
    let mut res = redirect(&response_location(core, t.redirect_uri, &[("error", error)], t.state), after_post);
    pages::page_headers(&mut res);
    super::audit::Refusal::attach(&mut res, error, "error sent to the client's redirect URI");
    res
}

fn browser_hash(value: &str) -> String {
    secret_hash(value)
}

/// Storage key of a PKCE challenge a code was issued for (per client).
fn challenge_key(client_id: &str, challenge: &str) -> String {
    secret_hash(&format!("{client_id}\n{challenge}"))
}

fn consent_key(req: &AuthorizationRequest) -> String {
    let mut scopes = req.scopes.clone();
    scopes.sort();
    secret_hash(&format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.browser,
        req.client_id,
        req.redirect_uri,
        scopes.join(" "),
        req.resource,
        req.client_version.as_deref().unwrap_or_default(),
    ))
}

pub(crate) async fn authorize(core: &Core, parts: &Parts) -> Response<EndpointBody> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return method_not_allowed("GET");
    }
    let query = parts.uri.query().unwrap_or("");
    if query.len() > MAX_QUERY {
        return page(StatusCode::URI_TOO_LONG, "Invalid authorization request", "The request is too long.");
    }
    let params = Params::parse(query.as_bytes());
    let bad_page = |m: &str| page(StatusCode::BAD_REQUEST, "Invalid authorization request", m);
    if SINGLE.iter().any(|name| params.one(name).is_err()) {
        return bad_page("The request repeats a parameter.");
    }

    // Until the redirect URI is established, every error is a page, never a redirect.
    let client_id = match params.one("client_id") {
        Ok(Some(c)) => c,
        Ok(None) => return bad_page("The request does not name an application (client_id)."),
        Err(_) => return bad_page("The request names the application more than once."),
    };
    let client = match core.client(&parts.extensions, client_id).await {
        Ok(v) => v,
        Err(_) => return unavailable_page(),
    };
    let Some(client) = client else {
        return bad_page("This application is not registered here (or its registration expired).");
    };
    let (redirect_uri, given) = match params.one("redirect_uri") {
        Err(_) => return bad_page("The request gives more than one redirect address."),
        Ok(Some(r)) if redirect_allowed(&client.redirect_uris, r) => (r.to_owned(), true),
        Ok(Some(_)) => return bad_page("The redirect address is not one registered for this application."),
        Ok(None) => match client.redirect_uris.as_slice() {
            [only] => (only.clone(), false),
            _ => return bad_page("The request must name one of the application's redirect addresses."),
        },
    };

    let state = match params.one("state") {
        Ok(s) => s,
        Err(_) => {
            return error_redirect(
                core,
                &Target { redirect_uri: &redirect_uri, state: None },
                "invalid_request",
                false,
            );
        }
    };
    if state.is_some_and(|s| s.len() > MAX_STATE) {
        return error_redirect(core, &Target { redirect_uri: &redirect_uri, state: None }, "invalid_request", false);
    }
    let target = Target { redirect_uri: &redirect_uri, state };
    let fail = |e: &'static str| error_redirect(core, &target, e, false);
    // Request objects (JAR, PAR) are not supported: refuse rather than silently drop what
    // the client signed.
    if params.has("request") {
        return fail("request_not_supported");
    }
    if params.has("request_uri") {
        return fail("request_uri_not_supported");
    }

    let (Ok(response_type), Ok(method), Ok(challenge), Ok(scope), Ok(prompt)) = (
        params.one("response_type"),
        params.one("code_challenge_method"),
        params.one("code_challenge"),
        params.one("scope"),
        params.one("prompt"),
    ) else {
        return fail("invalid_request");
    };
    match response_type {
        Some("code") => {}
        Some(_) => return fail("unsupported_response_type"),
        None => return fail("invalid_request"),
    }
    // PKCE: S256 only, and the challenge must be a SHA-256 in base64url (43 characters).
    let challenge = match (method, challenge) {
        (Some("S256"), Some(c))
            if c.len() == 43 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            c
        }
        _ => return fail("invalid_request"),
    };
    // A constant challenge defeats PKCE: refuse one a code was already issued for (RFC 9700
    // §2.1.1). Identical repeated requests are fine until then (clients pre-flight).
    match core.store(core.store.get(USED_CHALLENGES, &challenge_key(&client.client_id, challenge))).await {
        Ok(None) => {}
        Ok(Some(_)) => return fail("invalid_request"),
        Err(_) => return unavailable_page(),
    }
    let scopes: Vec<String> = match scope {
        None => core.default_scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        Some(s) => s.split(' ').filter(|x| !x.is_empty()).map(str::to_owned).collect(),
    };
    if scopes.iter().any(|s| !core.scopes.iter().any(|k| k == s.as_str())) {
        let location = response_location(core, &redirect_uri, &[("error", "invalid_scope")], state);
        if client.kind == ClientKind::Dynamic {
            // Self-registered clients get no automatic redirect for this (RFC 9700 §4.11.2).
            return pages::html(
                StatusCode::BAD_REQUEST,
                &InterstitialPage {
                    message: "The application asked for permissions this server does not offer.",
                    redirect_host: &host_of(&redirect_uri),
                    location: &location,
                },
            );
        }
        return fail("invalid_scope");
    }
    let resource = match params.one("resource") {
        Err(_) => return fail("invalid_target"),
        Ok(Some(r)) if claims_resource_eq(core.resource.resource(), r) => core.resource.resource().to_owned(),
        Ok(Some(_)) => return fail("invalid_target"),
        Ok(None) => core.resource.resource().to_owned(),
    };
    if prompt.is_some_and(|p| p.split(' ').any(|v| v == "none")) {
        // No silent issuance: a sign-in at the provider and consent are always interactive.
        return fail("login_required");
    }

    let existing = cookie(&parts.headers, BROWSER_COOKIE);
    let browser_value = existing.clone().unwrap_or_else(random_token);
    let csrf = random_token();
    let request = AuthorizationRequest {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        redirect_uri_given: given,
        state: state.map(str::to_owned),
        code_challenge: challenge.to_owned(),
        scopes,
        resource,
        browser: browser_hash(&browser_value),
        csrf: secret_hash(&csrf),
        created_at: core.now(),
        client_version: client.version.clone(),
    };

    let remembered = if core.lifetimes.consent.is_zero() || existing.is_none() {
        false
    } else {
        // A remembered consent is only honoured on a navigation the user started
        // (`Sec-Fetch-Site: none` or same-origin); otherwise ask again.
        let fetch_site = parts.headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        let trusted = matches!(fetch_site, Some("none" | "same-origin"));
        trusted && matches!(core.store(core.store.get(CONSENTS, &consent_key(&request))).await, Ok(Some(_)))
    };

    let mut res = if core.auto_approve || remembered || core.auto_approved(&client) {
        start_upstream(core, request, false).await
    } else {
        let request_id = random_token();
        match core
            .store(core.store.put(REQUESTS, &secret_hash(&request_id), encode(&request), Some(core.lifetimes.request)))
            .await
        {
            Ok(()) => consent_page(core, &client, &request, &request_id, &csrf),
            Err(_) => return unavailable_page(),
        }
    };
    if existing.is_none() {
        set_cookie(&mut res, BROWSER_COOKIE, &browser_value, Secs(400 * 24 * 3600));
    }
    res
}

fn consent_page(
    core: &Core,
    client: &ClientRecord,
    request: &AuthorizationRequest,
    request_id: &str,
    csrf: &str,
) -> Response<EndpointBody> {
    let redirect_host = host_of(&request.redirect_uri);
    let is_local = |u: &str| Url::parse(u).ok().is_some_and(|u| is_loopback_host(&u));
    let localhost_only = client.redirect_uris.iter().all(|u| is_local(u));
    let name = client.client_name.as_deref().unwrap_or(&client.client_id);
    let document = client.kind == ClientKind::Document;
    let domain = if document { host_of(&client.client_id) } else { String::new() };
    let trusted =
        document && core.cimd.as_ref().is_some_and(|c| c.config.decide_host(&domain) != HostDecision::Accepted);
    pages::html(
        StatusCode::OK,
        &ConsentPage {
            resource: &request.resource,
            client_name: name,
            unverified: client.kind == ClientKind::Dynamic,
            client_domain: &domain,
            trusted_domain: trusted,
            client_id: &client.client_id,
            redirect_uri: &request.redirect_uri,
            redirect_host: &redirect_host,
            localhost_only,
            scopes: &request.scopes,
            upstream_name: core.upstream.display_name(),
            upstream_scopes: core.upstream.scopes(),
            action: &core.paths.consent,
            request: request_id,
            csrf,
        },
    )
}

/// Stores the upstream `state` (only now, after consent) and sends the browser to the
/// provider.
async fn start_upstream(core: &Core, request: AuthorizationRequest, after_post: bool) -> Response<EndpointBody> {
    let verifier = random_token();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let nonce = random_token();
    let state = random_token();
    let key = secret_hash(&state);
    let Ok(sealed_verifier) = core.enc.seal(verifier.as_bytes(), key.as_bytes()) else { return unavailable_page() };
    let record = UpstreamState { request: request.clone(), sealed_verifier, nonce: nonce.clone() };
    if core.store(core.store.put(UPSTREAM_STATES, &key, encode(&record), Some(core.lifetimes.request))).await.is_err() {
        return unavailable_page();
    }
    let callback = core.url(&core.paths.callback);
    let location = match (core.auto_approve, core.upstream.as_dev_login()) {
        (true, Some(dev)) => {
            // Automated tests: skip the development login page as well.
            let Ok(code) = core.store(dev.issue_shared_code(&*core.store, &nonce, &challenge)).await else {
                return unavailable_page();
            };
            let Ok(mut url) = Url::parse(&callback) else { return unavailable_page() };
            url.query_pairs_mut().append_pair("code", &code).append_pair("state", &state);
            url.to_string()
        }
        _ => {
            let req = upstream::AuthorizationRequest {
                state: &state,
                redirect_uri: &callback,
                code_challenge: &challenge,
                nonce: &nonce,
                server_issuer: &core.issuer,
            };
            match core.upstream.authorization_url(&req).await {
                Ok(url) => url.to_string(),
                Err(e) => {
                    tracing::warn!(error = %e, "upstream authorization URL unavailable");
                    return error_redirect(
                        core,
                        &Target { redirect_uri: &request.redirect_uri, state: request.state.as_deref() },
                        "temporarily_unavailable",
                        after_post,
                    );
                }
            }
        }
    };
    let mut res = redirect(&location, after_post);
    pages::page_headers(&mut res);
    res
}

pub(crate) async fn consent(core: &Core, parts: &Parts, body: &[u8]) -> Response<EndpointBody> {
    if parts.method != Method::POST {
        return method_not_allowed("POST");
    }
    let forbidden = || {
        page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This consent could not be verified. Start the sign-in again from the application.",
        )
    };
    if cross_site(&parts.headers, &core.origin) {
        return forbidden();
    }
    if !is_form(&parts.headers) {
        return page(StatusCode::BAD_REQUEST, "Invalid request", "The consent form was not submitted correctly.");
    }
    let params = Params::parse(body);
    let (Ok(Some(request_id)), Ok(Some(csrf)), Ok(decision)) =
        (params.one("request"), params.one("csrf"), params.one("decision"))
    else {
        return forbidden();
    };
    let expired = || {
        page(
            StatusCode::FORBIDDEN,
            "Sign-in expired",
            "This consent page has expired or was already used. Start the sign-in again from the application.",
        )
    };
    let key = secret_hash(request_id);
    let request = match core.store(core.store.get(REQUESTS, &key)).await {
        Ok(v) => v.as_deref().and_then(decode::<AuthorizationRequest>),
        Err(_) => return unavailable_page(),
    };
    let Some(request) = request else { return expired() };
    let browser = cookie(&parts.headers, BROWSER_COOKIE).map(|b| browser_hash(&b)).unwrap_or_default();
    if !secure_eq(browser.as_bytes(), request.browser.as_bytes())
        || !secure_eq(secret_hash(csrf).as_bytes(), request.csrf.as_bytes())
    {
        return forbidden();
    }
    match core.store(core.store.take(REQUESTS, &key)).await {
        Ok(Some(_)) => {}
        Ok(None) => return expired(),
        Err(_) => return unavailable_page(),
    }
    let target = Target { redirect_uri: &request.redirect_uri, state: request.state.as_deref() };
    match decision {
        Some("approve") => {
            // The same request approved in another tab already produced its code.
            match core
                .store(core.store.get(USED_CHALLENGES, &challenge_key(&request.client_id, &request.code_challenge)))
                .await
            {
                Ok(None) => {}
                Ok(Some(_)) => return expired(),
                Err(_) => return unavailable_page(),
            }
            if !core.lifetimes.consent.is_zero()
                && core
                    .store(core.store.put(
                        CONSENTS,
                        &consent_key(&request),
                        b"1".to_vec(),
                        Some(core.lifetimes.consent),
                    ))
                    .await
                    .is_err()
            {
                return unavailable_page();
            }
            core.audit(parts, Event::new(AuditKind::ConsentGiven).client(&request.client_id));
            start_upstream(core, request, true).await
        }
        Some("deny") => {
            core.audit(parts, Event::new(AuditKind::ConsentDenied).client(&request.client_id));
            // The user's choice, not a refused request.
            let mut res = error_redirect(core, &target, "access_denied", true);
            res.extensions_mut().remove::<super::audit::Refusal>();
            res
        }
        _ => forbidden(),
    }
}

pub(crate) async fn dev_login(core: &Core, parts: &Parts, body: &[u8]) -> Response<EndpointBody> {
    let Some(dev) = core.upstream.as_dev_login() else {
        return super::web::status(StatusCode::NOT_FOUND);
    };
    let params = match parts.method {
        Method::GET => Params::parse(parts.uri.query().unwrap_or("").as_bytes()),
        Method::POST if is_form(&parts.headers) && !cross_site(&parts.headers, &core.origin) => Params::parse(body),
        Method::POST => return page(StatusCode::FORBIDDEN, "Request refused", "Cross-site sign-in refused."),
        _ => return method_not_allowed("GET, POST"),
    };
    let (Ok(Some(state)), Ok(Some(nonce)), Ok(Some(challenge))) =
        (params.one("state"), params.one("nonce"), params.one("code_challenge"))
    else {
        return page(StatusCode::BAD_REQUEST, "Invalid sign-in", "The sign-in request is incomplete.");
    };
    if parts.method == Method::GET {
        return pages::html(
            StatusCode::OK,
            &DevLoginPage { user: dev.user(), action: &core.paths.dev_login, state, nonce, code_challenge: challenge },
        );
    }
    let Ok(code) = core.store(dev.issue_shared_code(&*core.store, nonce, challenge)).await else {
        return unavailable_page();
    };
    let Ok(mut url) = Url::parse(&core.url(&core.paths.callback)) else { return unavailable_page() };
    url.query_pairs_mut().append_pair("code", &code).append_pair("state", state);
    let mut res = redirect(url.as_str(), true);
    pages::page_headers(&mut res);
    res
}

pub(crate) async fn callback(core: &Core, parts: &Parts) -> Response<EndpointBody> {
    if parts.method != Method::GET {
        return method_not_allowed("GET");
    }
    let params = Params::parse(parts.uri.query().unwrap_or("").as_bytes());
    let invalid = || {
        page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "This sign-in is invalid, expired or was already completed. Start again from the application.",
        )
    };
    let Ok(Some(state)) = params.one("state") else { return invalid() };
    let key = secret_hash(state);
    let stored = match core.store(core.store.get(UPSTREAM_STATES, &key)).await {
        Ok(v) => v.as_deref().and_then(decode::<UpstreamState>),
        Err(_) => return unavailable_page(),
    };
    let Some(stored) = stored else { return invalid() };
    // The state belongs to the browser that consented.
    let browser = cookie(&parts.headers, BROWSER_COOKIE).map(|b| browser_hash(&b)).unwrap_or_default();
    if !secure_eq(browser.as_bytes(), stored.request.browser.as_bytes()) {
        return page(StatusCode::FORBIDDEN, "Sign-in refused", "This sign-in was started in another browser.");
    }
    match core.store(core.store.take(UPSTREAM_STATES, &key)).await {
        Ok(Some(_)) => {}
        Ok(None) => return invalid(),
        Err(_) => return unavailable_page(),
    }
    let request = stored.request;
    let target = Target { redirect_uri: &request.redirect_uri, state: request.state.as_deref() };

    // RFC 9207: the response must come from the provider this sign-in was sent to.
    let (Ok(iss), Ok(error), Ok(code)) = (params.one("iss"), params.one("error"), params.one("code")) else {
        return error_redirect(core, &target, "access_denied", false);
    };
    match core.upstream.response_issuer().await {
        Ok(Some((expected, required))) => {
            if iss.is_some_and(|i| i != expected) || (iss.is_none() && required) {
                tracing::warn!("upstream callback with a wrong or missing iss; refused");
                return error_redirect(core, &target, "access_denied", false);
            }
        }
        Ok(None) => {}
        Err(_) => return error_redirect(core, &target, "temporarily_unavailable", false),
    }
    if error.is_some() {
        // The provider's error text is never reflected.
        return error_redirect(core, &target, "access_denied", false);
    }
    let Some(code) = code else { return error_redirect(core, &target, "access_denied", false) };
    let Ok(verifier) = core.enc.open(&stored.sealed_verifier, key.as_bytes()) else { return invalid() };
    let Ok(verifier) = String::from_utf8(verifier) else { return invalid() };
    // One code per PKCE challenge (RFC 9700 §2.1.1): claimed here, atomically, released
    // again if no code is issued after all.
    let ckey = challenge_key(&request.client_id, &request.code_challenge);
    let claim_ttl = Some(core.lifetimes.request.max(core.lifetimes.code));
    match core.store(core.store.insert_if_absent(USED_CHALLENGES, &ckey, b"1".to_vec(), claim_ttl)).await {
        Ok(true) => {}
        Ok(false) => return error_redirect(core, &target, "invalid_request", false),
        Err(_) => return error_redirect(core, &target, "temporarily_unavailable", false),
    }
    let release = || async { core.store(core.store.delete(USED_CHALLENGES, &ckey)).await };
    let callback_url = core.url(&core.paths.callback);
    let exchanged = match core.upstream.as_dev_login() {
        // The development login's codes are in the store, for every instance.
        Some(dev) => match core
            .store(async { Ok(dev.exchange_shared(&*core.store, code, &verifier, &stored.nonce).await) })
            .await
        {
            Ok(r) => r,
            Err(_) => Err(crate::upstream::UpstreamError::unavailable("store deadline exceeded")),
        },
        None => core.upstream.exchange(code, &verifier, &callback_url, &stored.nonce).await,
    };
    let grant = match exchanged {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "upstream sign-in failed");
            let _ = release().await;
            let error =
                if e.kind() == UpstreamErrorKind::Unavailable { "temporarily_unavailable" } else { "access_denied" };
            return error_redirect(core, &target, error, false);
        }
    };

    // Persist the grant, the upstream tokens and the code, in that order; the code reaches the
    // client only once all three are stored.
    let grant_id = random_token();
    let record = GrantRecord {
        grant_id: grant_id.clone(),
        client_id: request.client_id.clone(),
        subject: grant.identity.subject.clone(),
        scopes: request.scopes.clone(),
        resource: request.resource.clone(),
        upstream_claims: grant.identity.claims.clone(),
        created_at: core.now(),
        revoked: false,
    };
    let code = random_token();
    let code_record = CodeRecord {
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        redirect_uri_given: request.redirect_uri_given,
        code_challenge: request.code_challenge.clone(),
        grant_id: grant_id.clone(),
    };
    let sealed = serde_json::to_vec(&grant.tokens)
        .ok()
        .map(zeroize::Zeroizing::new)
        .and_then(|tokens| core.enc.seal(&tokens, &super::verifier::upstream_aad(&grant_id)).ok());
    let ttl = Some(core.lifetimes.refresh_token);
    let stored = async {
        let sealed = sealed.ok_or_else(|| crate::store::StoreError::unavailable("cannot seal"))?;
        core.store(core.store.put(GRANTS, &grant_id, encode(&record), ttl)).await?;
        core.store(core.store.put(UPSTREAM_TOKENS, &grant_id, sealed, ttl)).await?;
        core.store(core.store.put(CODES, &secret_hash(&code), encode(&code_record), Some(core.lifetimes.code))).await
    };
    if stored.await.is_err() {
        // Nothing half-written: no grant or upstream tokens without a code (best effort; a
        // store that is down has most likely stored nothing), and the provider's tokens are
        // given back.
        let _ = core.store(core.store.delete(UPSTREAM_TOKENS, &grant_id)).await;
        let _ = core.store(core.store.delete(GRANTS, &grant_id)).await;
        let _ = release().await;
        if let Err(e) = core.upstream.revoke(&grant.tokens).await {
            tracing::debug!(error = %e, "upstream revocation failed");
        }
        return error_redirect(core, &target, "temporarily_unavailable", false);
    }
    core.audit(parts, Event::new(AuditKind::CodeIssued).client(&request.client_id).subject(&record.subject));
    let location = response_location(core, &request.redirect_uri, &[("code", &code)], request.state.as_deref());
    let mut res = redirect(&location, false);
    pages::page_headers(&mut res);
    res
}

#[cfg(test)]
mod tests {
    use super::redirect_allowed;

    #[test]
    fn e01_e02_e03_redirect_matching() {
        let reg = vec!["https://c.example/cb".to_owned(), "http://127.0.0.1/cb".to_owned()];
        assert!(redirect_allowed(&reg, "https://c.example/cb"));
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
            assert!(!redirect_allowed(&reg, bad), "{bad}");
        }
        assert!(redirect_allowed(&reg, "http://127.0.0.1:51004/cb"));
        for bad in [
            "http://127.0.0.1.evil.com:51004/cb",
            "http://localhost:51004/cb",
            "http://[::1]:51004/cb",
            "http://127.0.0.1:51004/other",
            "http://127.0.0.1:51004/cb?x=1",
            "https://127.0.0.1:51004/cb",
        ] {
            assert!(!redirect_allowed(&reg, bad), "{bad}");
        }
    }
}
