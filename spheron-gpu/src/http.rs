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
}

type Reply<T> = std::result::Result<Json<T>, axum::response::Response>;

fn error_reply(e: spheron_core::Error) -> axum::response::Response {
    use axum::response::IntoResponse;
    match e {
        spheron_core::Error::ProverBusy { retry_after_ms } => {
            let secs = retry_after_ms.div_ceil(1000).max(1).to_string();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::RETRY_AFTER, secs)],
                Json(BusyReply { retry_after_ms }),
            )
                .into_response()
        }
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

async fn commit_handler(State(s): State<Shared>, Json(ch): Json<Challenge>) -> Reply<Commitment> {
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

/// The provider-side routes for `prover` under `limits`.
pub fn router_with(prover: Arc<dyn ChallengeProver>, limits: ServerLimits) -> axum::Router {
    axum::Router::new()
        .route(PING_PATH, get(|| async { StatusCode::NO_CONTENT }))
        .route(COMMIT_PATH, post(commit_handler))
        .route(OPEN_PATH, post(open_handler))
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body))
        .with_state(Shared { prover, limits })
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
enum Failure {
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

    async fn post<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
        timeout: Duration,
    ) -> std::result::Result<R, Failure> {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .timeout(timeout)
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
