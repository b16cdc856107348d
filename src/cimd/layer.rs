//! [`CimdClientLayer`]: resolves URL-shaped client IDs before the authorization, token and
//! revocation endpoints.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tower_layer::Layer;
use tower_service::Service;

use super::{Cached, CimdError, is_url_shaped};
use crate::server::Core;
use crate::server::records::ClientRecord;
use crate::server::web::{self, EndpointBody, Params};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client resolved from its metadata document, in the request extensions of the
/// endpoints behind [`CimdClientLayer`].
#[derive(Clone)]
pub struct VerifiedClient {
    pub(crate) cached: Arc<Cached>,
}

impl fmt::Debug for VerifiedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedClient").field("client_id", &self.client_id()).finish_non_exhaustive()
    }
}

impl VerifiedClient {
    pub(crate) fn record(&self) -> &ClientRecord {
        &self.cached.record
    }

    /// The client ID (the document's URL).
    pub fn client_id(&self) -> &str {
        &self.cached.record.client_id
    }

    /// The name the document gives.
    pub fn client_name(&self) -> &str {
        self.cached.record.client_name.as_deref().unwrap_or_default()
    }

    /// The redirect URIs the document lists.
    pub fn redirect_uris(&self) -> &[String] {
        &self.cached.record.redirect_uris
    }

    /// Whether the host is on the trust policy's allow list.
    pub fn trusted(&self) -> bool {
        self.cached.decision_trusted
    }
}

/// Resolves URL-shaped `client_id`s (client ID metadata documents) for the endpoints behind
/// it: the authorization endpoint (`client_id` in the query), the token and revocation
/// endpoints (`client_id` in the form, or the subject of a `client_assertion`). A resolved
/// client goes into the request extensions as a [`VerifiedClient`]; a client ID that cannot be
/// resolved gets an error page (GET) or `401 invalid_client` (POST), the same whatever the
/// reason. Other requests pass through untouched (bodies are buffered, up to 64 KiB).
///
/// Get one from [`AuthorizationServer::cimd_layer`](crate::server::AuthorizationServer::cimd_layer).
#[derive(Clone)]
pub struct CimdClientLayer {
    core: Arc<Core>,
}

impl fmt::Debug for CimdClientLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CimdClientLayer").finish_non_exhaustive()
    }
}

impl CimdClientLayer {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

impl<S> Layer<S> for CimdClientLayer {
    type Service = CimdClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CimdClientService { inner, core: self.core.clone() }
    }
}

/// The service of [`CimdClientLayer`].
#[derive(Clone)]
pub struct CimdClientService<S> {
    inner: S,
    core: Arc<Core>,
}

impl<S> fmt::Debug for CimdClientService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CimdClientService").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for CimdClientService<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<EndpointBody>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<EndpointBody>;
    type Error = Infallible;
    type Future = crate::server::EndpointFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let core = self.core.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let body = match web::read_body(body).await {
                Ok(b) => b,
                Err(web::BodyError::TooLarge) => {
                    return Ok(web::oauth_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "invalid_request",
                        "request body too large",
                    ));
                }
                Err(web::BodyError::Unreadable) => {
                    return Ok(web::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "request body unreadable"));
                }
            };
            if let Err(res) = resolve_request(&core, &mut parts, &body).await {
                return Ok(res);
            }
            inner.call(Request::from_parts(parts, Full::new(body))).await
        })
    }
}

/// The client ID a request names, if any.
pub(crate) fn requested_client_id(parts: &Parts, body: &[u8]) -> Option<String> {
    let params = match parts.method {
        Method::GET | Method::HEAD => Params::parse(parts.uri.query().unwrap_or("").as_bytes()),
        Method::POST if web::is_form(&parts.headers) => Params::parse(body),
        _ => return None,
    };
    match params.one("client_id") {
        Ok(Some(id)) => Some(id.to_owned()),
        Ok(None) if parts.method == Method::POST => match params.one("client_assertion") {
            Ok(Some(a)) => crate::server::assertion::claimed_client(a),
            _ => None,
        },
        // A repeated client_id: the endpoint refuses the request itself.
        _ => None,
    }
}

/// Resolves the request's URL-shaped client ID into its extensions; `Err` is the answer to
/// send instead.
pub(crate) async fn resolve_request(core: &Core, parts: &mut Parts, body: &[u8]) -> Result<(), Response<EndpointBody>> {
    let Some(cimd) = core.cimd.as_ref() else { return Ok(()) };
    if parts.extensions.get::<VerifiedClient>().is_some() {
        return Ok(());
    }
    let Some(client_id) = requested_client_id(parts, body).filter(|id| is_url_shaped(id)) else { return Ok(()) };
    let source = match parts.extensions.get::<crate::server::limits::Source>() {
        Some(s) => s.0,
        None => crate::server::limits::source_key(&parts.extensions, &parts.headers, &core.trusted_proxies),
    };
    match cimd.resolve(core, &client_id, source).await {
        Ok(cached) => {
            parts.extensions.insert(VerifiedClient { cached });
            Ok(())
        }
        Err(e) => {
            tracing::info!(client_id = %client_id, reason = %e, "client ID metadata document not usable");
            let page = parts.method != Method::POST;
            if let CimdError::RateLimited { retry_after_secs } = e {
                return Err(web::too_many_requests(page, retry_after_secs));
            }
            Err(match (e, page) {
                (CimdError::Unavailable, true) => crate::server::authorize::unavailable_page(),
                (CimdError::Unavailable, false) => web::unavailable(),
                (_, true) => crate::server::pages::error(
                    StatusCode::BAD_REQUEST,
                    "Invalid authorization request",
                    "This application could not be verified: its client metadata document could not be used.",
                ),
                (_, false) => {
                    web::oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed")
                }
            })
        }
    }
}
