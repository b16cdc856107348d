//! What the authorization server keeps in its [`Store`](crate::store::Store), one namespace per
//! kind of record. Secrets appear only as hashes (codes, refresh tokens, client secrets) or
//! sealed with the encryption keys (upstream tokens, the PKCE verifier towards the upstream,
//! signing keys).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::Namespace;

pub(crate) const CLIENTS: Namespace = Namespace::new("clients");
pub(crate) const REQUESTS: Namespace = Namespace::new("authz_requests");
pub(crate) const UPSTREAM_STATES: Namespace = Namespace::new("upstream_states");
pub(crate) const CODES: Namespace = Namespace::new("codes");
pub(crate) const USED_CODES: Namespace = Namespace::new("used_codes");
/// PKCE challenges a code was issued for, per client, to refuse constant challenges.
pub(crate) const USED_CHALLENGES: Namespace = Namespace::new("used_challenges");
pub(crate) const GRANTS: Namespace = Namespace::new("grants");
pub(crate) const UPSTREAM_TOKENS: Namespace = Namespace::new("upstream_tokens");
pub(crate) const REFRESH: Namespace = Namespace::new("refresh_tokens");
pub(crate) const USED_REFRESH: Namespace = Namespace::new("used_refresh_tokens");
pub(crate) const REVOKED_JTI: Namespace = Namespace::new("revoked_jti");
pub(crate) const CONSENTS: Namespace = Namespace::new("consents");
pub(crate) const META: Namespace = Namespace::new("meta");
/// Validated client ID metadata documents, under the SHA-256 of their URL.
pub(crate) const CIMD_DOCUMENTS: Namespace = Namespace::new("cimd_documents");
/// `private_key_jwt` assertions already used, under the SHA-256 of client ID and `jti`.
pub(crate) const USED_ASSERTIONS: Namespace = Namespace::new("used_client_assertions");

/// How a client came to be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClientKind {
    /// Registered through RFC 7591 dynamic client registration: self-asserted metadata.
    Dynamic,
    /// Configured by the operator.
    Static,
    /// Described by a client ID metadata document (the client ID is its https URL).
    Document,
}

/// A registered client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClientRecord {
    pub(crate) client_id: String,
    pub(crate) kind: ClientKind,
    /// base64url(SHA-256(secret)), for confidential clients.
    pub(crate) secret_hash: Option<String>,
    pub(crate) token_endpoint_auth_method: String,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) grant_types: Vec<String>,
    pub(crate) response_types: Vec<String>,
    pub(crate) client_name: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) application_type: Option<String>,
    /// Other registered metadata, echoed in the registration response.
    pub(crate) extra: Map<String, Value>,
    pub(crate) issued_at: i64,
    /// Whether a token was ever issued to it (unused registrations expire).
    pub(crate) used: bool,
    /// Inline public keys (`private_key_jwt`).
    #[serde(default)]
    pub(crate) jwks: Option<Value>,
    /// Where the public keys are published (`private_key_jwt`).
    #[serde(default)]
    pub(crate) jwks_uri: Option<String>,
    /// For metadata documents: the fingerprint of the security-relevant members (a change
    /// asks for consent again).
    #[serde(default)]
    pub(crate) version: Option<String>,
}

impl ClientRecord {
    pub(crate) fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == "none"
    }

    pub(crate) fn allows_refresh(&self) -> bool {
        self.grant_types.iter().any(|g| g == "refresh_token")
    }
}

/// A validated authorization request, kept while the user consents (and signs in upstream).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AuthorizationRequest {
    pub(crate) client_id: String,
    /// The redirect URI to answer to (the one in the request, or the only registered one).
    pub(crate) redirect_uri: String,
    /// Whether the request named `redirect_uri` (then the token request must repeat it).
    pub(crate) redirect_uri_given: bool,
    pub(crate) state: Option<String>,
    pub(crate) code_challenge: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) resource: String,
    /// SHA-256 of the browser-binding cookie that started the request.
    pub(crate) browser: String,
    /// SHA-256 of the consent form's CSRF token.
    pub(crate) csrf: String,
    pub(crate) created_at: i64,
    /// The client metadata version consented to (metadata documents).
    #[serde(default)]
    pub(crate) client_version: Option<String>,
}

/// Set just before redirecting to the upstream provider, taken at its callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UpstreamState {
    pub(crate) request: AuthorizationRequest,
    /// The PKCE verifier towards the upstream, sealed.
    pub(crate) sealed_verifier: Vec<u8>,
    pub(crate) nonce: String,
}

/// An authorization code, stored under its hash for 60 s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CodeRecord {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) redirect_uri_given: bool,
    pub(crate) code_challenge: String,
    pub(crate) grant_id: String,
}

/// A redeemed authorization code (stored under its hash), to recognise a replay: only a
/// replay by the same client with the right PKCE verifier revokes what the code issued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UsedCodeRecord {
    pub(crate) grant_id: String,
    pub(crate) client_id: String,
    pub(crate) code_challenge: String,
}

/// One user's authorization of one client: the family every refresh token of the grant
/// belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GrantRecord {
    pub(crate) grant_id: String,
    pub(crate) client_id: String,
    pub(crate) subject: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) resource: String,
    pub(crate) upstream_claims: Map<String, Value>,
    pub(crate) created_at: i64,
    /// Set when the grant is revoked (refresh-token reuse, revocation); everything issued
    /// under it stops working.
    pub(crate) revoked: bool,
}

/// A refresh token, stored under its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RefreshRecord {
    pub(crate) grant_id: String,
    pub(crate) client_id: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) expires_at: i64,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs to JSON cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}
