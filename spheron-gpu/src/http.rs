//! The HTTP transport: a provider-side endpoint answering challenges (axum) and a verifier
//! client (reqwest), so a verifier node challenges a provider over the network with timing on
//! its own clock.
//!
//! Endpoints (JSON bodies, the `spheron_core::proof` wire types):
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /v2/ping` | | `204 No Content` (round-trip probe) |
//! | `POST /v2/commit` | [`Challenge`] | [`Commitment`]; `503` + [`BusyReply`] at capacity; `422` with the prover's error; `504` past the server's time limit |
//! | `POST /v2/open` | [`Reveal`] | [`Opening`], or `422` / `504` |
//!
//! The server bounds every request ([`ServerLimits`]: body size, time per commit and per
//! open); the prover behind it bounds `n`, `K`, samples and sessions. The client never follows
//! redirects (a redirect is a failed answer: otherwise a cheater could point the verifier at
//! another provider), caps response bodies, and turns a `503` busy reply into
//! [`spheron_core::Error::ProverBusy`], which
//! [`run_challenge`](spheron_core::proof::run_challenge) retries with a fresh challenge.
//!
//! [`challenge`] runs a whole exchange against an [`HttpProver`]: the round trip is timed with
//! a ping before and after on the verifier's clock, the commitment from sending the challenge
//! to receiving the root, and `min(rtt before, rtt after)` goes to the verifier, which
//! subtracts it capped at a small fraction of the commit phase.
//!
//! ```
//! use spheron_core::{GpuModel, ProviderId};
//! use spheron_gpu::http::{HttpProver, challenge, serve};
//! use spheron_gpu::{Fault, Simulation};
//! use std::sync::Arc;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let sim = Simulation::standard();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let url = format!("http://{}", listener.local_addr().unwrap());
//! let prover = Arc::new(sim.prover(GpuModel::L4, None, Fault::None)); // in-process, unsigned
//! tokio::spawn(serve(listener, prover));
//!
//! let remote = HttpProver::new(&url).unwrap();
//! let report = challenge(
//!     &sim.try_verifier().unwrap(),
//!     &remote,
//!     ProviderId::from_label("l4-host"),
//!     GpuModel::L4,
//!     [[7; 32], [8; 32]],
//! )
//! .await;
//! assert!(report.verdict.passed(), "{}", report.verdict);
//! # });
//! ```

use crate::error::{Error, Result};
use async_trait::async_trait;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use spheron_core::proof::{
    Challenge, ChallengeProver, ChallengeVerifier, Commitment, Opening, ProofReport, Reveal,
};
use spheron_core::{GpuModel, ProviderId};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Path of the round-trip probe.
pub const PING_PATH: &str = "/v2/ping";
/// Path answering a [`Challenge`] with a [`Commitment`].
pub const COMMIT_PATH: &str = "/v2/commit";
/// Path answering a [`Reveal`] with an [`Opening`].
pub const OPEN_PATH: &str = "/v2/open";

/// Header naming the challenger's account on a commit request.
pub const CHALLENGER_HEADER: &str = "x-spheron-challenger";
/// Header with the unix time (seconds) after which the challenger's signature is void.
pub const EXPIRY_HEADER: &str = "x-spheron-challenge-expiry";
/// Header with the lease the challenge is for (a tenant's challenge before its manifest).
pub const LEASE_HEADER: &str = "x-spheron-lease";
/// Header with the challenger's 65-byte signature, 0x-hex (see [`challenger_message`]).
pub const SIGNATURE_HEADER: &str = "x-spheron-challenge-signature";
/// Longest validity a challenger may give its signature, seconds.
pub const MAX_CHALLENGE_VALIDITY_SECS: u64 = 120;

/// Who sent a commit request, as its signed headers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenger {
    /// The challenger's account (its signature recovers to it).
    pub account: alloy_primitives::Address,
    /// The lease it challenges for, if it named one.
    pub lease: Option<u64>,
}

/// Decides who may challenge a provider: the expensive commit runs only for an admitted
/// challenger. The provider node admits registered verifiers and the tenants of its own
/// matched leases, both as recorded on chain.
#[async_trait]
pub trait ChallengeGate: Send + Sync {
    /// `Ok` to answer `who`, else why not.
    async fn admit(&self, who: &Challenger) -> std::result::Result<(), String>;
}

/// The message a challenger signs (EIP-191) for a commit request:
/// `"spheron challenge v1" || blake3(body) || expiry (u64 BE) || lease (u64 BE, 0 for none)`.
/// The body is the challenge itself, which names the provider, so a signature is good for
/// one provider and one challenge only.
pub fn challenger_message(body: &[u8], expiry: u64, lease: Option<u64>) -> Vec<u8> {
    let mut m = Vec::with_capacity(20 + 32 + 16);
    m.extend_from_slice(b"spheron challenge v1");
    m.extend_from_slice(blake3::hash(body).as_bytes());
    m.extend_from_slice(&expiry.to_be_bytes());
    m.extend_from_slice(&lease.unwrap_or(0).to_be_bytes());
    m
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks the signed headers of a commit request over `body`: the challenger they name.
pub fn authenticate(
    headers: &axum::http::HeaderMap,
    body: &[u8],
    now: u64,
) -> std::result::Result<Challenger, String> {
    let get = |name: &str| -> std::result::Result<&str, String> {
        headers
            .get(name)
            .ok_or_else(|| format!("missing header {name}"))?
            .to_str()
            .map_err(|_| format!("header {name} is not text"))
    };
    let account: alloy_primitives::Address = get(CHALLENGER_HEADER)?
        .parse()
        .map_err(|e| format!("{CHALLENGER_HEADER}: {e}"))?;
    let expiry: u64 = get(EXPIRY_HEADER)?
        .parse()
        .map_err(|e| format!("{EXPIRY_HEADER}: {e}"))?;
    if expiry < now {
        return Err(format!("the signature expired at {expiry} (now {now})"));
    }
    if expiry > now + MAX_CHALLENGE_VALIDITY_SECS {
        return Err(format!(
            "the signature is valid until {expiry}, more than {MAX_CHALLENGE_VALIDITY_SECS} s ahead"
        ));
    }
    let lease = match headers.get(LEASE_HEADER) {
        None => None,
        Some(_) => Some(
            get(LEASE_HEADER)?
                .parse::<u64>()
                .map_err(|e| format!("{LEASE_HEADER}: {e}"))?,
        ),
    };
    let raw = alloy_primitives::hex::decode(get(SIGNATURE_HEADER)?.trim_start_matches("0x"))
        .map_err(|e| format!("{SIGNATURE_HEADER}: {e}"))?;
    let sig = alloy_primitives::Signature::try_from(raw.as_slice())
        .map_err(|e| format!("{SIGNATURE_HEADER}: {e}"))?;
    let signer = sig
        .recover_address_from_msg(challenger_message(body, expiry, lease))
        .map_err(|e| format!("the signature does not recover: {e}"))?;
    if signer != account {
        return Err(format!("signed by {signer:#x}, not by {account:#x}"));
    }
    Ok(Challenger { account, lease })
}

/// The body of a `503` answer: the prover is at capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BusyReply {
    /// How long to wait before asking again, in milliseconds.
    pub retry_after_ms: u64,
}

/// Server-side bounds on the proof-of-GPU endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Longest a commit may run before the server answers `504`.
    pub commit_timeout: Duration,
    /// Longest an open may run.
    pub open_timeout: Duration,
    /// Largest request body in bytes.
    pub max_body: usize,
}

impl Default for ServerLimits {
    /// 300 s per commit, 30 s per open, 64 KiB bodies (a reveal with 256 samples is ~10 KiB).
    fn default() -> Self {
        ServerLimits {
            commit_timeout: Duration::from_secs(300),
            open_timeout: Duration::from_secs(30),
            max_body: 64 << 10,
        }
    }
}

#[derive(Clone)]
struct Shared {
    prover: Arc<dyn ChallengeProver>,
    limits: ServerLimits,
    gate: Option<Arc<dyn ChallengeGate>>,
}

type Reply<T> = std::result::Result<Json<T>, axum::response::Response>;

/// The `503` a prover at capacity answers: a [`BusyReply`] and `Retry-After`.
pub(crate) fn busy_reply(retry_after_ms: u64) -> axum::response::Response {
    use axum::response::IntoResponse;
    let secs = retry_after_ms.div_ceil(1000).max(1).to_string();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, secs)],
        Json(BusyReply { retry_after_ms }),
    )
        .into_response()
}

fn error_reply(e: spheron_core::Error) -> axum::response::Response {
    use axum::response::IntoResponse;
    match e {
        spheron_core::Error::ProverBusy { retry_after_ms } => busy_reply(retry_after_ms),
        other => (StatusCode::UNPROCESSABLE_ENTITY, other.to_string()).into_response(),
    }
}

fn timeout_reply(what: &str, limit: Duration) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        StatusCode::GATEWAY_TIMEOUT,
        format!("{what} ran past the server's {} s limit", limit.as_secs()),
    )
        .into_response()
}

async fn commit_handler(
    State(s): State<Shared>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Reply<Commitment> {
    use axum::response::IntoResponse;
    if let Some(gate) = &s.gate {
        let who = authenticate(&headers, &body, unix_now()).map_err(|e| {
            (StatusCode::UNAUTHORIZED, format!("challenge refused: {e}")).into_response()
        })?;
        gate.admit(&who).await.map_err(|e| {
            (StatusCode::FORBIDDEN, format!("challenge refused: {e}")).into_response()
        })?;
    }
    let ch: Challenge = serde_json::from_slice(&body).map_err(|e| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("not a challenge: {e}"),
        )
            .into_response()
    })?;
    let limit = s.limits.commit_timeout;
    match tokio::time::timeout(limit, s.prover.commit(&ch)).await {
        Ok(r) => r.map(Json).map_err(error_reply),
        Err(_) => Err(timeout_reply("commit", limit)),
    }
}

async fn open_handler(State(s): State<Shared>, Json(r): Json<Reveal>) -> Reply<Opening> {
    let limit = s.limits.open_timeout;
    match tokio::time::timeout(limit, s.prover.open(&r)).await {
        Ok(r) => r.map(Json).map_err(error_reply),
        Err(_) => Err(timeout_reply("open", limit)),
    }
}

/// The provider-side routes for `prover`, with [`ServerLimits::default`].
pub fn router(prover: Arc<dyn ChallengeProver>) -> axum::Router {
    router_with(prover, ServerLimits::default())
}

/// The provider-side routes for `prover` under `limits`, answering anyone.
pub fn router_with(prover: Arc<dyn ChallengeProver>, limits: ServerLimits) -> axum::Router {
    routes(Shared {
        prover,
        limits,
        gate: None,
    })
}

/// The provider-side routes for `prover` under `limits`, committing only for challengers
/// whose signed headers ([`authenticate`]) `gate` admits: a `401` for missing or bad
/// signatures, a `403` for a challenger the gate refuses. Pings and openings need no
/// signature (an opening answers only a session the prover committed to).
pub fn router_gated(
    prover: Arc<dyn ChallengeProver>,
    limits: ServerLimits,
    gate: Arc<dyn ChallengeGate>,
) -> axum::Router {
    routes(Shared {
        prover,
        limits,
        gate: Some(gate),
    })
}

fn routes(shared: Shared) -> axum::Router {
    axum::Router::new()
        .route(PING_PATH, get(|| async { StatusCode::NO_CONTENT }))
        .route(COMMIT_PATH, post(commit_handler))
        .route(OPEN_PATH, post(open_handler))
        .layer(axum::extract::DefaultBodyLimit::max(shared.limits.max_body))
        .with_state(shared)
}

/// Serves `prover` on `listener` until the task is dropped or the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, prover: Arc<dyn ChallengeProver>) {
    let addr = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, router(prover)).await {
        tracing::warn!(?addr, error = %e, "proof-of-GPU endpoint stopped");
    }
}

/// Why a request failed: a transport error, or a typed busy reply.
#[derive(Debug)]
pub(crate) enum Failure {
    Transport(Error),
    Busy(BusyReply),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Transport(e)
    }
}

impl From<Failure> for spheron_core::Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Transport(e) => e.into(),
            Failure::Busy(b) => spheron_core::Error::ProverBusy {
                retry_after_ms: b.retry_after_ms,
            },
        }
    }
}

/// A remote provider's prover, reached over HTTP.
#[derive(Clone, Debug)]
pub struct HttpProver {
    base: String,
    client: reqwest::Client,
    timeout: Duration,
    max_body: usize,
    /// Whatever `base` depends on, kept alive with the client ([`HttpProver::with_keepalive`]).
    keepalive: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
    /// Who signs commit requests ([`HttpProver::with_challenger`]).
    challenger: Option<(alloy_signer_local::PrivateKeySigner, Option<u64>)>,
}

/// Default cap on a response body: 64 MiB.
pub const DEFAULT_MAX_BODY: usize = 64 << 20;

impl HttpProver {
    /// A client for the endpoint at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: &str) -> Result<Self> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Transport {
                url: base,
                reason: "expected an http:// or https:// URL".into(),
            });
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Transport {
                url: base.clone(),
                reason: e.to_string(),
            })?;
        Ok(HttpProver {
            base,
            client,
            timeout: Duration::from_secs(120),
            max_body: DEFAULT_MAX_BODY,
            keepalive: None,
            challenger: None,
        })
    }

    /// Keeps `guard` alive as long as this client or a clone of it: something the URL depends
    /// on, such as a local forwarder to the real endpoint.
    #[must_use]
    pub fn with_keepalive(
        mut self,
        guard: std::sync::Arc<dyn std::any::Any + Send + Sync>,
    ) -> Self {
        self.keepalive = Some(guard);
        self
    }

    /// Signs every commit request with `key` (a registered verifier, or the tenant of `lease`),
    /// so a gated provider ([`router_gated`]) answers it.
    #[must_use]
    pub fn with_challenger(
        mut self,
        key: alloy_signer_local::PrivateKeySigner,
        lease: Option<u64>,
    ) -> Self {
        self.challenger = Some((key, lease));
        self
    }

    /// Largest response body accepted, in bytes (default 64 MiB: an opening at n = 16384
    /// with 64 rows is a few MiB of JSON). A larger answer is a transport error, read no further.
    #[must_use]
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    async fn read_capped(&self, path: &str, mut resp: reqwest::Response) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.err(path, e))? {
            if buf.len() + chunk.len() > self.max_body {
                return Err(self.err(
                    path,
                    format!("response body larger than {} bytes", self.max_body),
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }

    /// Upper bound on any one request (default 120 s; commitments are also bounded by the
    /// challenge's deadline).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The endpoint's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn err(&self, path: &str, reason: impl ToString) -> Error {
        Error::Transport {
            url: format!("{}{path}", self.base),
            reason: reason.to_string(),
        }
    }

    /// One round trip to the ping endpoint.
    pub async fn ping(&self) -> Result<Duration> {
        let started = Instant::now();
        let resp = self
            .client
            .get(format!("{}{PING_PATH}", self.base))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.err(PING_PATH, e))?;
        if resp.status().is_redirection() {
            return Err(self.err(
                PING_PATH,
                format!("status {}: redirects are not followed", resp.status()),
            ));
        }
        if !resp.status().is_success() {
            return Err(self.err(PING_PATH, format!("status {}", resp.status())));
        }
        Ok(started.elapsed())
    }

    pub(crate) async fn post<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
        timeout: Duration,
    ) -> std::result::Result<R, Failure> {
        let bytes = serde_json::to_vec(body).map_err(|e| self.err(path, e))?;
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .timeout(timeout);
        // The requests that make the provider's GPU work are signed.
        if (path == COMMIT_PATH || path == crate::vram_http::FILL_PATH)
            && let Some((key, lease)) = &self.challenger
        {
            use alloy_signer::SignerSync;
            let expiry = unix_now() + 60;
            let sig = key
                .sign_message_sync(&challenger_message(&bytes, expiry, *lease))
                .map_err(|e| self.err(path, format!("signing the challenge: {e}")))?;
            req = req
                .header(CHALLENGER_HEADER, format!("{:#x}", key.address()))
                .header(EXPIRY_HEADER, expiry.to_string())
                .header(
                    SIGNATURE_HEADER,
                    format!("0x{}", alloy_primitives::hex::encode(sig.as_bytes())),
                );
            if let Some(l) = lease {
                req = req.header(LEASE_HEADER, l.to_string());
            }
        }
        let resp = req
            .body(bytes)
            .send()
            .await
            .map_err(|e| self.err(path, e))?;
        let status = resp.status();
        let bytes = self.read_capped(path, resp).await?;
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE
            && let Ok(b) = serde_json::from_slice::<BusyReply>(&bytes)
        {
            return Err(Failure::Busy(b));
        }
        if status.is_redirection() {
            return Err(self
                .err(path, format!("status {status}: redirects are not followed"))
                .into());
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            return Err(self.err(path, format!("status {status}: {text}")).into());
        }
        serde_json::from_slice(&bytes).map_err(|e| self.err(path, format!("bad body: {e}")).into())
    }
}

#[async_trait]
impl ChallengeProver for HttpProver {
    async fn commit(&self, challenge: &Challenge) -> spheron_core::Result<Commitment> {
        // No point waiting far past the deadline: the answer would be late anyway.
        let bound = Duration::from_micros(challenge.deadline_us)
            .saturating_add(Duration::from_secs(1))
            .min(self.timeout);
        Ok(self.post(COMMIT_PATH, challenge, bound).await?)
    }

    async fn open(&self, reveal: &Reveal) -> spheron_core::Result<Opening> {
        Ok(self.post(OPEN_PATH, reveal, self.timeout).await?)
    }

    async fn round_trip(&self) -> spheron_core::Result<Option<Duration>> {
        Ok(Some(self.ping().await?))
    }
}

/// Challenges the provider behind `prover` once, with round-trip compensation (see the module
/// docs), through [`run_challenge`](spheron_core::proof::run_challenge). Transport failures become
/// failing verdicts (`Malformed`, or `Late` when the commitment did not arrive by the deadline).
pub async fn challenge(
    verifier: &dyn ChallengeVerifier,
    prover: &HttpProver,
    provider: ProviderId,
    claimed: GpuModel,
    entropy: [[u8; 32]; 2],
) -> ProofReport {
    // The first ping opens the connection, so the probe before the commit measures a warm
    // round trip.
    let _ = prover.ping().await;
    spheron_core::proof::run_challenge(verifier, prover, provider, claimed, entropy).await
}
