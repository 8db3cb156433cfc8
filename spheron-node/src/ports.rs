//! Services: the gateway's proxy to the ports a lease's workload exposes
//! ([`Workload::port`](spheron_core::Workload::port)).
//!
//! | method and path | auth | answer |
//! |---|---|---|
//! | `GET /lease/{id}/token` | tenant (signed) | [`LeaseToken`]: the lease's bearer token |
//! | any `/lease/{id}/ports/{port}/{path}` | tenant (signed), or the lease's token | the workload's answer |
//!
//! A proxied request reaches the workload's `port` (for the local launcher, the loopback port
//! it was given) at `/{path}` with the same method, query, headers (minus hop-by-hop headers,
//! `Host`, the `x-spheron-*` headers and the token) and body, streamed; the answer comes back
//! the same way, status and headers included (redirects are passed on, not followed). It is
//! served only while the lease's workload runs ([`ErrorCode::NotRunning`] otherwise) and only
//! for a declared port ([`ErrorCode::NoSuchPort`]).
//!
//! Authentication, one of:
//!
//! - a request signed by the lease's tenant, checked like every `/lease` route (the body,
//!   which the signature covers, is read whole first, up to [`MAX_PROXY_BODY_BYTES`]);
//! - the lease's **token**, as `Authorization: Bearer <token>` or `x-spheron-token: <token>`,
//!   so that the tenant can hand the URL and token to ordinary HTTP clients (curl, a
//!   browser extension, an OpenAI client's `api_key`). The token is derived from a random
//!   secret the gateway draws when it first needs one and the lease id (keccak-256), so it is
//!   unguessable, differs per lease and needs no storage; it changes when the node restarts.
//!   It is compared in constant time; a missing credential is [`ErrorCode::Unsigned`], a wrong
//!   one (another lease's included) [`ErrorCode::BadToken`], both 401. The `Authorization`
//!   header reaches the workload only when it did not carry the token.
//!
//! Limits: request bodies over [`MAX_PROXY_BODY_BYTES`] are refused ([`ErrorCode::TooLarge`],
//! or the upload is cut); the whole exchange, answer body included, must finish within
//! [`PROXY_TIMEOUT`] ([`ErrorCode::UpstreamTimeout`] when the answer's head is late); a
//! workload that does not answer is [`ErrorCode::UpstreamFailed`] (502). No WebSocket or
//! other `Upgrade`.

use crate::gateway::{LeaseBackend, authorize_up_to, internal};
use crate::wire::{ErrorCode, GatewayError};
use alloy::primitives::keccak256;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest request body the proxy carries to a workload, in bytes.
pub const MAX_PROXY_BODY_BYTES: usize = 16 << 20;

/// Longest a proxied exchange may take, answer body included.
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(300);

/// The header that may carry the lease's token instead of `Authorization`.
pub const TOKEN_HEADER: &str = "x-spheron-token";

/// The header the gateway adds to every answer that came from the workload (so that a
/// client tells the workload's own 404 from the gateway's refusal).
pub const PROXY_HEADER: &str = "x-spheron-proxied";

/// `GET /lease/{id}/token`: the bearer token that opens the lease's ports.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseToken {
    /// The lease.
    pub lease: u64,
    /// The token (64 hex digits).
    pub token: String,
}

impl std::fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseToken")
            .field("lease", &self.lease)
            .field("token", &"***")
            .finish()
    }
}

/// The path of `port` of `lease` on a gateway (ends in `/`).
pub fn port_path(lease: u64, port: u16) -> String {
    format!("/lease/{lease}/ports/{port}/")
}

#[derive(Clone)]
struct PortState {
    backend: Arc<dyn LeaseBackend>,
    secret: Arc<Mutex<Option<[u8; 32]>>>,
    http: reqwest::Client,
}

impl PortState {
    /// The lease's token; the secret is drawn from the OS on first use (never a guessable
    /// fallback).
    fn token(&self, lease: u64) -> Result<String, GatewayError> {
        let mut s = self.secret.lock().unwrap_or_else(|p| p.into_inner());
        let secret = match *s {
            Some(k) => k,
            None => {
                let mut k = [0u8; 32];
                getrandom::fill(&mut k).map_err(|e| internal(format!("entropy: {e}")))?;
                *s = Some(k);
                k
            }
        };
        drop(s);
        let mut msg = Vec::with_capacity(64);
        msg.extend_from_slice(b"spheron-lease-token\0");
        msg.extend_from_slice(&secret);
        msg.extend_from_slice(&lease.to_be_bytes());
        Ok(hex::encode(keccak256(&msg)))
    }
}

/// Equal in constant time (for equal lengths; lengths are not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The routes of this module over `backend`, to merge into the gateway's.
pub(crate) fn routes(backend: Arc<dyn LeaseBackend>) -> Router {
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    let state = PortState {
        backend,
        secret: Arc::new(Mutex::new(None)),
        http,
    };
    Router::new()
        .route("/lease/{id}/token", get(lease_token))
        .route("/lease/{id}/ports/{port}", any(proxy))
        .route("/lease/{id}/ports/{port}/", any(proxy))
        .route("/lease/{id}/ports/{port}/{*path}", any(proxy))
        .with_state(state)
}

async fn lease_token(State(s): State<PortState>, req: Request) -> Response {
    let r = async {
        let a = authorize_up_to(&*s.backend, req, 0).await?;
        Ok::<_, GatewayError>(LeaseToken {
            lease: a.lease.lease,
            token: s.token(a.lease.lease)?,
        })
    };
    match r.await {
        Ok(t) => axum::Json(t).into_response(),
        Err(e) => e.into_response(),
    }
}

fn bad_request(msg: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorCode::BadRequest, msg)
}

/// `(lease, port, rest)` of `/lease/{id}/ports/{port}{rest}`; `rest` starts with `/`.
fn parse_path(path: &str) -> Result<(u64, u16, String), GatewayError> {
    let bad = || {
        bad_request(format!(
            "expected /lease/{{id}}/ports/{{port}}/..., got `{path}`"
        ))
    };
    let rest = path.strip_prefix("/lease/").ok_or_else(bad)?;
    let (id, rest) = rest.split_once('/').ok_or_else(bad)?;
    let rest = rest.strip_prefix("ports/").ok_or_else(bad)?;
    let (port, rest) = match rest.split_once('/') {
        Some((p, r)) => (p, format!("/{r}")),
        None => (rest, "/".to_string()),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(id) {
        return Err(bad_request(format!("lease id `{id}` is not a number")));
    }
    let lease = id
        .parse()
        .map_err(|_| bad_request(format!("lease id `{id}` is out of range")))?;
    let port = Some(port)
        .filter(|p| digits(p))
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            GatewayError::new(
                ErrorCode::NoSuchPort,
                format!("`{port}` is not a port (1-65535)"),
            )
        })?;
    Ok((lease, port, rest))
}

/// The token a request carries: `(token, whether it came in Authorization)`.
fn presented_token(h: &HeaderMap) -> Option<(String, bool)> {
    if let Some(v) = h.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
        return Some((v.trim().to_string(), false));
    }
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, t) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| (t.trim().to_string(), true))
}

/// Hop-by-hop headers (RFC 9110 7.6.1) and those the `Connection` header names.
fn hop_by_hop(h: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ]
    .into();
    for v in h.get_all(header::CONNECTION) {
        if let Ok(v) = v.to_str() {
            names.extend(
                v.split(',')
                    .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
            );
        }
    }
    names
}

/// What a request sends on: its headers without the hop-by-hop, `Host`, signature and token
/// headers (and `Authorization` when it carried the token). `Content-Length` stays, so a
/// body is sent with its length (servers that take no chunked uploads get what they need).
fn forward_headers(h: &HeaderMap, token_in_authorization: bool) -> HeaderMap {
    let mut out = h.clone();
    for n in hop_by_hop(h) {
        out.remove(n);
    }
    out.remove(header::HOST);
    for n in [
        crate::auth::SIGNER_HEADER,
        crate::auth::EXPIRY_HEADER,
        crate::auth::NONCE_HEADER,
        crate::auth::SIGNATURE_HEADER,
        TOKEN_HEADER,
    ] {
        out.remove(n);
    }
    if token_in_authorization {
        out.remove(header::AUTHORIZATION);
    }
    out
}

/// A request body read as it comes, failing once over `limit` bytes; an empty one stays
/// empty (not an empty chunked stream, which a bodyless GET must not carry).
fn capped(body: Body, limit: usize) -> reqwest::Body {
    use axum::body::HttpBody;
    if body.size_hint().exact() == Some(0) {
        return reqwest::Body::from(Vec::new());
    }
    let stream = body.into_data_stream().scan(0usize, move |seen, chunk| {
        let item = chunk.map_err(std::io::Error::other).and_then(|c: Bytes| {
            *seen += c.len();
            if *seen > limit {
                Err(std::io::Error::other(format!(
                    "the body is over {limit} bytes"
                )))
            } else {
                Ok(c)
            }
        });
        futures::future::ready(Some(item))
    });
    reqwest::Body::wrap_stream(stream)
}

async fn proxy(State(s): State<PortState>, req: Request) -> Response {
    match proxy_inner(&s, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn proxy_inner(s: &PortState, req: Request) -> Result<Response, GatewayError> {
    let (lease, port, rest) = parse_path(req.uri().path())?;
    let query = req.uri().query().map(str::to_string);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_PROXY_BODY_BYTES as u64) {
        return Err(GatewayError::new(
            ErrorCode::TooLarge,
            format!("the body is over {MAX_PROXY_BODY_BYTES} bytes"),
        ));
    }
    let signed = req.headers().contains_key(crate::auth::SIGNER_HEADER);
    let (method, headers, body) = if signed {
        let method = req.method().clone();
        let headers = forward_headers(req.headers(), false);
        let a = authorize_up_to(&*s.backend, req, MAX_PROXY_BODY_BYTES).await?;
        (method, headers, reqwest::Body::from(a.body))
    } else {
        let (presented, in_auth) = presented_token(req.headers()).ok_or_else(|| {
            GatewayError::new(
                ErrorCode::Unsigned,
                format!(
                    "send a request signed by the tenant, or the lease's token as \
                     `Authorization: Bearer <token>` or `{TOKEN_HEADER}`"
                ),
            )
        })?;
        if !ct_eq(presented.as_bytes(), s.token(lease)?.as_bytes()) {
            return Err(GatewayError::new(
                ErrorCode::BadToken,
                format!("the token is not lease {lease}'s"),
            ));
        }
        let (parts, body) = req.into_parts();
        let headers = forward_headers(&parts.headers, in_auth);
        (parts.method, headers, capped(body, MAX_PROXY_BODY_BYTES))
    };
    let addr = s.backend.service_addr(lease, port).await?;
    let url = match query {
        Some(q) => format!("http://{addr}{rest}?{q}"),
        None => format!("http://{addr}{rest}"),
    };
    let mut headers = headers;
    if let Ok(v) = HeaderValue::from_str(&format!("/lease/{lease}/ports/{port}")) {
        headers.insert("x-forwarded-prefix", v);
    }
    let resp = s
        .http
        .request(method, url)
        .headers(headers)
        .body(body)
        .timeout(PROXY_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                GatewayError::new(
                    ErrorCode::UpstreamTimeout,
                    format!("port {port} of lease {lease} did not answer within {PROXY_TIMEOUT:?}"),
                )
            } else {
                GatewayError::new(
                    ErrorCode::UpstreamFailed,
                    format!("port {port} of lease {lease} did not answer: {e}"),
                )
            }
        })?;
    let status = resp.status();
    let mut out_headers = resp.headers().clone();
    for n in hop_by_hop(resp.headers()) {
        out_headers.remove(n);
    }
    out_headers.insert(PROXY_HEADER, HeaderValue::from_static("1"));
    let mut out = Body::from_stream(resp.bytes_stream()).into_response();
    *out.status_mut() = status;
    *out.headers_mut() = out_headers;
    Ok(out)
}

/// Serves `listener` as a plain-HTTP forwarder to `port` of `lease` through `client`'s gateway
/// (its certificate pinned): every request to the listener goes to the workload's port at the
/// same path, with the lease's token added, and its answer comes back (what
/// `spheron lease proxy` runs). Clients of the listener need no token and no certificate, so
/// bind it to loopback. Runs until the listener fails or the task is dropped; fetching the
/// token first may fail (the gateway's refusal).
pub async fn forward(
    client: crate::gateway_client::GatewayClient,
    lease: u64,
    port: u16,
    listener: tokio::net::TcpListener,
) -> Result<(), GatewayError> {
    let token = Arc::new(client.lease_token(lease).await?.token);
    let handler = move |req: Request| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let (parts, body) = req.into_parts();
            let pq = parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
            let headers = forward_headers(&parts.headers, false);
            let r = client
                .port_request(
                    lease,
                    port,
                    crate::gateway_client::PortAuth::Token(&token),
                    parts.method,
                    &pq,
                    headers,
                    capped(body, MAX_PROXY_BODY_BYTES),
                )
                .await;
            match r {
                Ok(resp) => {
                    let status = resp.status();
                    let mut h = resp.headers().clone();
                    for n in hop_by_hop(resp.headers()) {
                        h.remove(n);
                    }
                    let mut out = Body::from_stream(resp.bytes_stream()).into_response();
                    *out.status_mut() = status;
                    *out.headers_mut() = h;
                    out
                }
                Err(e) => e.into_response(),
            }
        }
    };
    let app = Router::new().fallback(handler);
    axum::serve(listener, app)
        .await
        .map_err(|e| internal(format!("forwarder: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_bad_ones_are_typed() {
        assert_eq!(
            parse_path("/lease/7/ports/8000/a/b.txt").unwrap(),
            (7, 8000, "/a/b.txt".to_string())
        );
        assert_eq!(parse_path("/lease/7/ports/8000").unwrap().2, "/");
        assert_eq!(parse_path("/lease/7/ports/8000/").unwrap().2, "/");
        for (p, code) in [
            ("/lease/x/ports/8000/", ErrorCode::BadRequest),
            ("/lease/7/ports/0/", ErrorCode::NoSuchPort),
            ("/lease/7/ports/70000/", ErrorCode::NoSuchPort),
            ("/lease/7/ports/+80/", ErrorCode::NoSuchPort),
        ] {
            assert_eq!(parse_path(p).unwrap_err().error, code, "{p}");
        }
    }

    #[test]
    fn tokens_come_from_either_header_and_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        h.insert(header::CONNECTION, "x-custom".parse().unwrap());
        h.insert("x-custom", "1".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        assert_eq!(presented_token(&h), Some(("abc".into(), true)));
        let f = forward_headers(&h, true);
        assert!(f.get(header::AUTHORIZATION).is_none());
        assert!(f.get("x-custom").is_none(), "named by Connection");
        assert!(f.get("x-keep").is_some());
        h.insert(TOKEN_HEADER, "def".parse().unwrap());
        assert_eq!(presented_token(&h), Some(("def".into(), false)));
        let f = forward_headers(&h, false);
        assert!(f.get(header::AUTHORIZATION).is_some(), "the workload's own");
        assert!(f.get(TOKEN_HEADER).is_none());
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"ab", b"abc"));
    }
}
