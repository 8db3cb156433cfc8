//! The provider's HTTP gateway, the only way a tenant reaches a provider node.
//!
//! | method and path | auth | body | answer |
//! |---|---|---|---|
//! | `GET /status` | none | | [`NodeStatus`] |
//! | `GET /v2/ping`, `POST /v2/commit`, `POST /v2/open` | none (own session) | | proof of GPU, [`spheron_gpu::http`] |
//! | `PUT /lease/{id}/manifest` | tenant | [`SignedManifest`] | [`LeaseStatus`] |
//! | `GET /lease/{id}/status` | tenant | | [`LeaseStatus`] |
//! | `GET /lease/{id}/logs?from=N&follow=true` | tenant | | NDJSON of [`LogLine`] |
//! | `POST /lease/{id}/stop` | tenant | | [`LeaseStatus`] |
//! | `PUT /lease/{id}/workdir` | tenant | tar archive, up to [`MAX_WORKDIR_BYTES`] | [`WorkdirReceipt`] |
//! | `GET /lease/{id}/files?path=P` | tenant | | the bytes of file `P` of the lease's working directory, with an `ETag` (size and modification time); `304 Not Modified` when `If-None-Match` names the current one |
//! | `GET /lease/{id}/token` | tenant | | [`LeaseToken`](crate::ports::LeaseToken) |
//! | any `/lease/{id}/ports/{port}/{path}` | tenant, or the lease's token | proxied | the workload's answer, see [`crate::ports`] |
//!
//! Every refusal is a [`GatewayError`] as JSON with the status of its [`ErrorCode`].
//!
//! Each `/lease` request is checked in this order:
//!
//! 1. the lease id of the path parses and the body fits [`MAX_BODY_BYTES`] (else
//!    [`ErrorCode::BadRequest`]);
//! 2. the request signature recovers to the `x-spheron-signer` header over the real method,
//!    path-and-query, lease id and body ([`auth::recover_request`]: `Unsigned`,
//!    `BadSignature`);
//! 3. the expiry lies in `[now, now + MAX_EXPIRY_SECS]` (`Expired`);
//! 4. the lease exists on chain and is this provider's (`UnknownLease`);
//! 5. the signer is the lease's tenant (`WrongTenant`);
//! 6. only then is the nonce recorded (`Replayed` when seen before): someone who is not the
//!    tenant never gets to write into the provider's nonce store.
//!
//! A manifest is further checked: it recovers to the lease's tenant (`WrongTenant`), names
//! this chain and market (`WrongLease`), the path's lease (`WrongLease`) and this provider
//! (`WrongProvider`), has not expired (`Expired`), the lease is active on chain
//! (`LeaseNotActive`), and its own nonce is fresh (`Replayed`; recorded last, so a refused
//! manifest can be fixed and resent). Then [`LeaseBackend::launch`] runs it, with the
//! secrets that travel beside the signed workload ([`SignedManifest::into_workload`]).
//!
//! A working directory is uploaded before the manifest, while the lease is active and no
//! manifest was accepted (`AlreadyLaunched` after); the provider keeps one archive per lease
//! (a new upload replaces it). A manifest whose workload names a working directory launches
//! only if the stored archive hashes to the signed hash (`WorkloadMismatch`; `BadRequest`
//! when none was uploaded). Files are served from the workload's working directory while the
//! provider keeps it (until the lease ends plus a grace period, see
//! [`crate::local_launcher::OUTPUTS_GRACE`]), only at plain relative paths that resolve
//! inside it (`NoSuchFile` otherwise).
//!
//! The router must be served at the root (not nested under a prefix): the signed path is the
//! one the server sees.

use crate::auth::{self, SignedManifest};
use crate::wire::{ErrorCode, GatewayError, LeaseStatus, NodeStatus, WorkState, WorkdirReceipt};
use crate::workdir::{self, MAX_WORKDIR_BYTES};
use alloy::primitives::{Address, B256};
use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::StreamExt;
use serde::Deserialize;
use spheron_core::proof::ChallengeProver;
use spheron_core::{LogLine, Workload};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Content type of the log stream.
pub const NDJSON: &str = "application/x-ndjson";

/// A lease as recorded on chain, as the gateway needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainLease {
    /// The lease (its order id on chain).
    pub lease: u64,
    /// Its tenant.
    pub tenant: Address,
    /// The provider it was matched to.
    pub provider: Address,
    /// Whether it is active (matched, not closed).
    pub active: bool,
}

/// What the gateway needs from the provider node: the chain's view of leases, a nonce store,
/// and the launcher.
#[async_trait]
pub trait LeaseBackend: Send + Sync + 'static {
    /// This provider's account.
    fn provider(&self) -> Address;
    /// Chain id and market contract (for the EIP-712 domain).
    fn chain(&self) -> (u64, Address);
    /// Unix seconds now (for expiry checks).
    fn now(&self) -> u64;
    /// The lease as on chain; None when no such lease exists (never matched).
    async fn chain_lease(&self, lease: u64) -> Result<Option<ChainLease>, GatewayError>;
    /// Records `nonce` of `signer` until `expiry`; Ok(false) if it was seen before (a replay).
    async fn use_nonce(
        &self,
        signer: Address,
        nonce: B256,
        expiry: u64,
    ) -> Result<bool, GatewayError>;
    /// A verified manifest for an active lease of this provider: launch it (idempotency and
    /// "already launched" are the backend's business: AlreadyLaunched).
    async fn launch(
        &self,
        lease: &ChainLease,
        workload: Workload,
    ) -> Result<LeaseStatus, GatewayError>;
    /// The lease's workload status.
    async fn status(&self, lease: &ChainLease) -> Result<LeaseStatus, GatewayError>;
    /// The lease's log from line `from`, following new lines until the workload ends when `follow`.
    async fn logs(
        &self,
        lease: &ChainLease,
        from: u64,
        follow: bool,
    ) -> Result<spheron_core::LogStream, GatewayError>;
    /// Stops the lease's workload.
    async fn stop(&self, lease: &ChainLease) -> Result<LeaseStatus, GatewayError>;
    /// The node as a whole.
    async fn node_status(&self) -> NodeStatus;
    /// What this node would bid on `request` now ([`crate::wire::QuoteReply`]); the default:
    /// it gives no quotes (`BadRequest`).
    async fn quote(
        &self,
        _request: spheron_core::GpuRequest,
    ) -> Result<Option<crate::wire::QuotedBid>, GatewayError> {
        Err(bad_request("this node gives no quotes"))
    }
    /// Where this node keeps uploaded working directories (one archive per lease); `None`
    /// (the default): it takes none.
    fn upload_dir(&self) -> Option<PathBuf> {
        None
    }
    /// The working directory of the lease's workload while the node keeps it; `None` (the
    /// default) when it has none.
    async fn lease_dir(&self, _lease: &ChainLease) -> Option<PathBuf> {
        None
    }
    /// Where the gateway proxies `port` of lease `lease` ([`crate::ports`]): only while its
    /// workload runs ([`ErrorCode::NotRunning`]) and for a port it declared
    /// ([`ErrorCode::NoSuchPort`]). The default: this node exposes no ports.
    async fn service_addr(
        &self,
        lease: u64,
        port: u16,
    ) -> Result<std::net::SocketAddr, GatewayError> {
        Err(GatewayError::new(
            ErrorCode::NoSuchPort,
            format!("port {port} of lease {lease}: this node exposes no ports"),
        ))
    }
}

type Shared = Arc<dyn LeaseBackend>;

fn bad_request(msg: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorCode::BadRequest, msg)
}

/// A request that passed the signature, expiry, lease and tenant checks.
pub(crate) struct Authorized {
    pub(crate) lease: ChainLease,
    pub(crate) body: Bytes,
    uri: axum::http::Uri,
}

fn lease_id(path: &str) -> Result<u64, GatewayError> {
    let id = path
        .strip_prefix("/lease/")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| bad_request("expected /lease/{id}/..."))?;
    // Only plain decimal digits: no sign, no percent-encoding, no leading `+`.
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_request(format!("lease id `{id}` is not a number")));
    }
    id.parse()
        .map_err(|_| bad_request(format!("lease id `{id}` is out of range")))
}

async fn authorize(backend: &dyn LeaseBackend, req: Request) -> Result<Authorized, GatewayError> {
    authorize_up_to(backend, req, MAX_BODY_BYTES).await
}

pub(crate) async fn authorize_up_to(
    backend: &dyn LeaseBackend,
    req: Request,
    limit: usize,
) -> Result<Authorized, GatewayError> {
    let (parts, body) = req.into_parts();
    let lease = lease_id(parts.uri.path())?;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::new(
            ErrorCode::TooLarge,
            format!("the body is over {limit} bytes"),
        ));
    }
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| bad_request(format!("body unreadable or over {limit} bytes: {e}")))?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let (chain_id, market) = backend.chain();
    let (signer, nonce, expiry) = auth::recover_request(
        &auth::domain(chain_id, market),
        parts.method.as_str(),
        path_and_query,
        lease,
        &body,
        &parts.headers,
    )?;
    auth::check_expiry(expiry, backend.now())?;
    let found = backend
        .chain_lease(lease)
        .await?
        .filter(|l| l.provider == backend.provider())
        .ok_or_else(|| {
            GatewayError::new(
                ErrorCode::UnknownLease,
                format!("no lease {lease} with this provider"),
            )
        })?;
    if signer != found.tenant {
        return Err(GatewayError::new(
            ErrorCode::WrongTenant,
            format!("{signer:#x} is not the tenant of lease {lease}"),
        ));
    }
    if !backend.use_nonce(signer, nonce, expiry).await? {
        return Err(GatewayError::new(
            ErrorCode::Replayed,
            "this request's nonce was used before",
        ));
    }
    Ok(Authorized {
        lease: found,
        body,
        uri: parts.uri,
    })
}

fn json<T: serde::Serialize>(v: Result<T, GatewayError>) -> Response {
    match v {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn node_status(State(b): State<Shared>) -> Response {
    axum::Json(b.node_status().await).into_response()
}

/// Largest `POST /quote` body: a request's JSON is a few hundred bytes.
const MAX_QUOTE_BYTES: usize = 16 * 1024;

async fn quote(State(b): State<Shared>, req: Request) -> Response {
    let r = async {
        let body = axum::body::to_bytes(req.into_body(), MAX_QUOTE_BYTES)
            .await
            .map_err(|e| {
                GatewayError::new(
                    ErrorCode::TooLarge,
                    format!("quote body unreadable or over {MAX_QUOTE_BYTES} bytes: {e}"),
                )
            })?;
        let request: spheron_core::GpuRequest = serde_json::from_slice(&body)
            .map_err(|e| bad_request(format!("quote request JSON: {e}")))?;
        let bid = b.quote(request).await?;
        Ok(crate::wire::QuoteReply {
            provider: b.provider(),
            bid,
        })
    };
    json(r.await)
}

async fn check_manifest(
    backend: &dyn LeaseBackend,
    a: &Authorized,
) -> Result<SignedManifest, GatewayError> {
    let m: SignedManifest =
        serde_json::from_slice(&a.body).map_err(|e| bad_request(format!("manifest JSON: {e}")))?;
    let signer = auth::recover_manifest(&m)?;
    let lease = &a.lease;
    if signer != lease.tenant {
        return Err(GatewayError::new(
            ErrorCode::WrongTenant,
            format!(
                "the manifest is signed by {signer:#x}, not the tenant of lease {}",
                lease.lease
            ),
        ));
    }
    let (chain_id, market) = backend.chain();
    if m.chain_id != chain_id || m.market != market {
        return Err(GatewayError::new(
            ErrorCode::WrongLease,
            format!(
                "the manifest is for market {:#x} on chain {}, this is {market:#x} on {chain_id}",
                m.market, m.chain_id
            ),
        ));
    }
    if m.lease != lease.lease {
        return Err(GatewayError::new(
            ErrorCode::WrongLease,
            format!(
                "the manifest is for lease {}, sent for {}",
                m.lease, lease.lease
            ),
        ));
    }
    if m.provider != backend.provider() {
        return Err(GatewayError::new(
            ErrorCode::WrongProvider,
            format!("the manifest is for provider {:#x}", m.provider),
        ));
    }
    auth::check_expiry(m.expiry, backend.now())?;
    if !lease.active {
        return Err(GatewayError::new(
            ErrorCode::LeaseNotActive,
            format!("lease {} is not active on chain", lease.lease),
        ));
    }
    if !backend.use_nonce(signer, m.nonce, m.expiry).await? {
        return Err(GatewayError::new(
            ErrorCode::Replayed,
            "this manifest's nonce was used before",
        ));
    }
    Ok(m)
}

/// Where a lease's uploaded working directory is kept in the provider's upload directory `dir`
/// until its workload ends.
pub fn archive_path(dir: &std::path::Path, lease: u64) -> PathBuf {
    dir.join(format!("lease-{lease}.tar"))
}

pub(crate) fn internal(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(ErrorCode::Internal, e.to_string())
}

/// The content hash ([`auth::body_hash`]) of the file at `path`, streamed, off the async threads.
async fn hash_file(path: PathBuf) -> Result<alloy::primitives::B256, GatewayError> {
    tokio::task::spawn_blocking(move || {
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(&path)?)?;
        Ok::<_, std::io::Error>(alloy::primitives::B256::from(*h.finalize().as_bytes()))
    })
    .await
    .map_err(internal)?
    .map_err(internal)
}

async fn put_manifest(State(b): State<Shared>, req: Request) -> Response {
    let r = async {
        let a = authorize(&*b, req).await?;
        let m = check_manifest(&*b, &a).await?;
        let mut workload = m.into_workload()?;
        if let Some(w) = &mut workload.workdir {
            let signed = w.hash.clone().ok_or_else(|| {
                bad_request("the workload names a working directory without its hash")
            })?;
            let path = b
                .upload_dir()
                .map(|d| archive_path(&d, a.lease.lease))
                .filter(|p| p.is_file())
                .ok_or_else(|| {
                    bad_request(format!(
                        "no working directory was uploaded for lease {}",
                        a.lease.lease
                    ))
                })?;
            let stored = format!("{:#x}", hash_file(path.clone()).await?);
            if stored != signed {
                return Err(GatewayError::new(
                    ErrorCode::WorkloadMismatch,
                    format!(
                        "the uploaded working directory hashes to {stored}, the manifest names {signed}"
                    ),
                ));
            }
            w.source = Some(path);
        }
        // The launch may run in the background and unpacks the archive there; the provider
        // removes it when the lease's workload ends ([`archive_path`]).
        b.launch(&a.lease, workload).await
    };
    json(r.await)
}

async fn put_workdir(State(b): State<Shared>, req: Request) -> Response {
    let r = async {
        let a = authorize_up_to(&*b, req, MAX_WORKDIR_BYTES as usize).await?;
        let dir = b
            .upload_dir()
            .ok_or_else(|| bad_request("this provider takes no working directories"))?;
        if !a.lease.active {
            return Err(GatewayError::new(
                ErrorCode::LeaseNotActive,
                format!("lease {} is not active on chain", a.lease.lease),
            ));
        }
        let status = b.status(&a.lease).await?;
        if status.work != WorkState::AwaitingManifest {
            return Err(GatewayError::new(
                ErrorCode::AlreadyLaunched,
                format!(
                    "lease {} is {:?}: the working directory goes before the manifest",
                    a.lease.lease, status.work
                ),
            ));
        }
        let lease = a.lease.lease;
        let body = a.body;
        let receipt = tokio::task::spawn_blocking(move || -> std::io::Result<WorkdirReceipt> {
            std::fs::create_dir_all(&dir)?;
            let fin = archive_path(&dir, lease);
            let part = fin.with_extension("part");
            std::fs::write(&part, &body)?;
            std::fs::rename(&part, &fin)?;
            Ok(WorkdirReceipt {
                lease,
                hash: format!("{:#x}", auth::body_hash(&body)),
                bytes: body.len() as u64,
            })
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        Ok(receipt)
    };
    json(r.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesQuery {
    path: String,
}

/// Bytes read from a file in chunks.
fn file_stream(
    f: tokio::fs::File,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::unfold(Some(f), |f| async move {
        use tokio::io::AsyncReadExt;
        let mut f = f?;
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// The entity tag of a served file: its size and modification time (a checkpoint replaced by
/// a rename gets a new one).
fn file_tag(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{}-{mtime}\"", meta.len())
}

async fn get_file(State(b): State<Shared>, req: Request) -> Response {
    // A tenant polling a file sends the tag of its copy: an unchanged file is not sent again.
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let r = async {
        let a = authorize(&*b, req).await?;
        let q = Query::<FilesQuery>::try_from_uri(&a.uri)
            .map_err(|e| bad_request(format!("files query: {e}")))?
            .0;
        let no_file = || {
            GatewayError::new(
                ErrorCode::NoSuchFile,
                format!(
                    "no file `{}` in the working directory of lease {}",
                    q.path, a.lease.lease
                ),
            )
        };
        let root = b.lease_dir(&a.lease).await.ok_or_else(no_file)?;
        let path = workdir::resolve_inside(&root, &q.path)
            .filter(|p| p.is_file())
            .ok_or_else(no_file)?;
        let f = tokio::fs::File::open(&path).await.map_err(|_| no_file())?;
        let meta = f.metadata().await.map_err(internal)?;
        Ok::<_, GatewayError>((meta.len(), file_tag(&meta), file_stream(f)))
    };
    match r.await {
        Ok((_, tag, _)) if if_none_match.as_deref() == Some(tag.as_str()) => {
            let mut resp = axum::http::StatusCode::NOT_MODIFIED.into_response();
            if let Ok(v) = HeaderValue::from_str(&tag) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            resp
        }
        Ok((len, tag, stream)) => {
            let mut resp = Body::from_stream(stream).into_response();
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&tag) {
                h.insert(header::ETAG, v);
            }
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            resp
        }
        Err(e) => e.into_response(),
    }
}

async fn lease_status(State(b): State<Shared>, req: Request) -> Response {
    let r = async {
        let a = authorize(&*b, req).await?;
        b.status(&a.lease).await
    };
    json(r.await)
}

async fn stop(State(b): State<Shared>, req: Request) -> Response {
    let r = async {
        let a = authorize(&*b, req).await?;
        b.stop(&a.lease).await
    };
    json(r.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    #[serde(default)]
    from: u64,
    #[serde(default)]
    follow: bool,
}

fn ndjson_line(line: &LogLine) -> Bytes {
    // A LogLine always serializes; should it not, a notice (with no line data in it) takes
    // its place rather than ending the stream.
    let mut v = serde_json::to_vec(line).unwrap_or_else(|_| {
        format!(
            r#"{{"seq":{},"source":"System","line":"(unencodable line)"}}"#,
            line.seq
        )
        .into_bytes()
    });
    v.push(b'\n');
    Bytes::from(v)
}

async fn logs(State(b): State<Shared>, req: Request) -> Response {
    let r = async {
        let a = authorize(&*b, req).await?;
        let q = Query::<LogsQuery>::try_from_uri(&a.uri)
            .map_err(|e| bad_request(format!("logs query: {e}")))?
            .0;
        let stream = b.logs(&a.lease, q.from, q.follow).await?;
        Ok::<_, GatewayError>(stream.map(|line| Ok::<_, Infallible>(ndjson_line(&line))))
    };
    match r.await {
        Ok(stream) => {
            let mut resp = Body::from_stream(stream).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
            resp
        }
        Err(e) => e.into_response(),
    }
}

async fn no_route() -> GatewayError {
    bad_request("no such route")
}

async fn wrong_method() -> GatewayError {
    bad_request("method not allowed on this route")
}

/// The gateway's routes over `backend`, with the proof-of-GPU routes of `prover` merged in.
pub fn router(backend: Arc<dyn LeaseBackend>, prover: Arc<dyn ChallengeProver>) -> Router {
    lease_routes(backend)
        .merge(spheron_gpu::http::router(prover))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
}

/// The lease and node routes over `backend` (everything but proof of GPU).
fn lease_routes(backend: Arc<dyn LeaseBackend>) -> Router {
    Router::new()
        .route("/status", get(node_status))
        .route("/quote", post(quote))
        .route("/lease/{id}/manifest", put(put_manifest))
        .route("/lease/{id}/status", get(lease_status))
        .route("/lease/{id}/logs", get(logs))
        .route("/lease/{id}/stop", post(stop))
        .route("/lease/{id}/workdir", put(put_workdir))
        .route("/lease/{id}/files", get(get_file))
        .with_state(backend.clone())
        .merge(crate::ports::routes(backend))
}

/// [`router`] with the proof-of-GPU commit endpoint behind `gate`: only challengers it
/// admits make the provider's GPU work ([`crate::challenge_gate`]).
pub fn router_gated(
    backend: Arc<dyn LeaseBackend>,
    prover: Arc<dyn ChallengeProver>,
    gate: Arc<dyn spheron_gpu::http::ChallengeGate>,
) -> Router {
    lease_routes(backend)
        .merge(spheron_gpu::http::router_gated(
            prover,
            spheron_gpu::http::ServerLimits::default(),
            gate,
        ))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
}

/// Serves `router` on `listener` until the listener fails or the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

/// Serves `router` over TLS with `config` (see [`crate::tls::server_config`]) on `listener`
/// until the listener fails or the task is dropped. A failed or slow handshake only drops
/// that connection: accepting goes on.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    axum::serve(crate::tls::TlsListener::new(listener, config)?, router).await
}
