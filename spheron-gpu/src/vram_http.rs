//! The VRAM-residency round ([`crate::vram`]) over HTTP: provider-side routes (axum) and the
//! verifier's client ([`HttpProver`] implements [`VramProver`]), so verifier nodes run the
//! round against providers on the network with timing on their own clock.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /v2/vram/fill` | [`VramChallenge`] (signed like a commit: [`crate::http::authenticate`]) | [`VramCommitment`]; `503` + [`BusyReply`](crate::http::BusyReply) while another session holds the memory; `422` for a challenge over the limits or the prover's error; `504` past the time limit |
//! | `POST /v2/vram/open` | [`RoundRequest`] | [`RoundAnswer`]; `409` for a session that is not the active one |
//!
//! A GPU's memory holds one array at a time, so the server keeps one active session: from
//! its fill until its last round is answered, a round fails, or the time its own bounds allow
//! an honest exchange (plus 0.5 s, at most [`VramLimits::session_ttl`]) passes. A second
//! fill meanwhile gets a typed busy reply, which the verifier counts as neither a pass nor a
//! fail. The server bounds what a challenger may ask ([`VramLimits`]): the array's size (at
//! most what the prover's memory holds), rounds, openings and parents, so a challenge cannot
//! make the provider allocate more than its claimed memory.

use crate::http::{ChallengeGate, Failure, HttpProver, authenticate, busy_reply, unix_now};
use crate::vram::{
    RoundAnswer, RoundRequest, VramChallenge, VramCommitment, VramProver, VramProverError,
};
use async_trait::async_trait;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of the fill: answers a [`VramChallenge`] with a [`VramCommitment`].
pub const FILL_PATH: &str = "/v2/vram/fill";
/// Path of one round of openings.
pub const OPEN_PATH: &str = "/v2/vram/open";

/// What a provider's VRAM routes accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VramLimits {
    /// Most labels an array may have (the prover's memory at its scale).
    pub max_labels: u64,
    /// Most layers.
    pub max_layers: u32,
    /// Most parents per label.
    pub max_degree: u32,
    /// Most rounds.
    pub max_rounds: u32,
    /// Most openings per round.
    pub max_queries: u32,
    /// Longest a session holds the memory without finishing its rounds.
    pub session_ttl: Duration,
    /// Longest fill before `504`.
    pub fill_timeout: Duration,
    /// Longest round before `504`.
    pub open_timeout: Duration,
}

impl VramLimits {
    /// Limits for a prover whose memory holds `max_labels` labels: 64 layers, 16 parents,
    /// 32 rounds of 64 openings, sessions of 30 s, 60 s fills and 10 s rounds.
    pub fn for_capacity(max_labels: u64) -> Self {
        VramLimits {
            max_labels,
            max_layers: 64,
            max_degree: 16,
            max_rounds: 32,
            max_queries: 64,
            session_ttl: Duration::from_secs(30),
            fill_timeout: Duration::from_secs(60),
            open_timeout: Duration::from_secs(10),
        }
    }

    /// Why `ch` is over these limits, if it is.
    pub fn check(&self, ch: &VramChallenge) -> Option<String> {
        let g = &ch.geometry;
        if g.layers < 2 || g.layers > self.max_layers {
            return Some(format!(
                "{} layers is outside 2..={}",
                g.layers, self.max_layers
            ));
        }
        if g.labels_per_layer == 0 {
            return Some("a layer has no labels".into());
        }
        if g.degree == 0 || g.degree > self.max_degree {
            return Some(format!(
                "degree {} is outside 1..={}",
                g.degree, self.max_degree
            ));
        }
        if g.total() > self.max_labels {
            return Some(format!(
                "{} labels is more than this prover's memory holds ({})",
                g.total(),
                self.max_labels
            ));
        }
        if ch.rounds == 0 || ch.rounds > self.max_rounds {
            return Some(format!(
                "{} rounds is outside 1..={}",
                ch.rounds, self.max_rounds
            ));
        }
        if ch.queries == 0 || ch.queries > self.max_queries {
            return Some(format!(
                "{} openings per round is outside 1..={}",
                ch.queries, self.max_queries
            ));
        }
        None
    }
}

/// The session whose array is in memory.
struct Active {
    session: [u8; 16],
    rounds: u32,
    since: Instant,
    /// How long from `since` it may hold the memory: what the challenge's own bounds allow an
    /// honest fill (then, from the commitment, all its rounds) plus 0.5 s, at most
    /// [`VramLimits::session_ttl`]; a verifier that stops after a failed round frees the
    /// memory soon.
    ttl: Duration,
}

fn slack(us: u64, cap: Duration) -> Duration {
    Duration::from_micros(us)
        .saturating_add(SESSION_SLACK)
        .min(cap)
}

/// What a session may take beyond its own bounds (network, the verifier's checks).
const SESSION_SLACK: Duration = Duration::from_millis(500);

#[derive(Clone)]
struct Shared {
    prover: Arc<dyn VramProver>,
    limits: VramLimits,
    gate: Option<Arc<dyn ChallengeGate>>,
    active: Arc<Mutex<Option<Active>>>,
}

fn reply(status: StatusCode, msg: String) -> Response {
    (status, msg).into_response()
}

fn prover_error(e: VramProverError) -> Response {
    match e {
        VramProverError::Busy { retry_after_ms } => busy_reply(retry_after_ms),
        VramProverError::Failed(m) => reply(StatusCode::UNPROCESSABLE_ENTITY, m),
    }
}

async fn fill_handler(
    State(s): State<Shared>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<VramCommitment>, Response> {
    if let Some(gate) = &s.gate {
        let who = authenticate(&headers, &body, unix_now()).map_err(|e| {
            reply(
                StatusCode::UNAUTHORIZED,
                format!("VRAM challenge refused: {e}"),
            )
        })?;
        gate.admit(&who).await.map_err(|e| {
            reply(
                StatusCode::FORBIDDEN,
                format!("VRAM challenge refused: {e}"),
            )
        })?;
    }
    let ch: VramChallenge = serde_json::from_slice(&body).map_err(|e| {
        reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("not a VRAM challenge: {e}"),
        )
    })?;
    if let Some(why) = s.limits.check(&ch) {
        return Err(reply(StatusCode::UNPROCESSABLE_ENTITY, why));
    }
    {
        let mut active = s.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = active.as_ref() {
            let age = a.since.elapsed();
            if age < a.ttl {
                let left = a.ttl - age;
                return Err(busy_reply(
                    u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1),
                ));
            }
        }
        *active = Some(Active {
            session: ch.session,
            rounds: ch.rounds,
            since: Instant::now(),
            ttl: slack(ch.fill_deadline_us, s.limits.session_ttl),
        });
    }
    let limit = s.limits.fill_timeout;
    let out = match tokio::time::timeout(limit, s.prover.fill(&ch)).await {
        Ok(Ok(c)) => {
            let mut active = s.active.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(a) = active.as_mut().filter(|a| a.session == ch.session) {
                a.since = Instant::now();
                a.ttl = slack(
                    ch.round_bound_us.saturating_mul(u64::from(ch.rounds)),
                    s.limits.session_ttl,
                );
            }
            return Ok(Json(c));
        }
        Ok(Err(e)) => prover_error(e),
        Err(_) => reply(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the fill ran past the server's {} s limit", limit.as_secs()),
        ),
    };
    release(&s, &ch.session);
    Err(out)
}

/// Frees the memory held by `session`, if it is the active one.
fn release(s: &Shared, session: &[u8; 16]) {
    let mut active = s.active.lock().unwrap_or_else(|p| p.into_inner());
    if active.as_ref().is_some_and(|a| &a.session == session) {
        *active = None;
    }
}

async fn open_handler(
    State(s): State<Shared>,
    Json(req): Json<RoundRequest>,
) -> Result<Json<RoundAnswer>, Response> {
    let last = {
        let active = s.active.lock().unwrap_or_else(|p| p.into_inner());
        match active.as_ref() {
            Some(a) if a.session == req.session && a.since.elapsed() < a.ttl => {
                req.round + 1 >= a.rounds
            }
            _ => {
                return Err(reply(
                    StatusCode::CONFLICT,
                    "no active VRAM session with this id (never filled, finished or expired)"
                        .into(),
                ));
            }
        }
    };
    let limit = s.limits.open_timeout;
    let out = match tokio::time::timeout(limit, s.prover.open(&req)).await {
        Ok(Ok(a)) => Ok(Json(a)),
        Ok(Err(e)) => Err(prover_error(e)),
        Err(_) => Err(reply(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the round ran past the server's {} s limit",
                limit.as_secs()
            ),
        )),
    };
    if last || out.is_err() {
        release(&s, &req.session);
    }
    out
}

fn routes(shared: Shared) -> axum::Router {
    axum::Router::new()
        .route(FILL_PATH, post(fill_handler))
        .route(OPEN_PATH, post(open_handler))
        .with_state(shared)
}

/// The VRAM routes for `prover` under `limits`, answering anyone (tests, local tools).
pub fn router(prover: Arc<dyn VramProver>, limits: VramLimits) -> axum::Router {
    routes(Shared {
        prover,
        limits,
        gate: None,
        active: Arc::default(),
    })
}

/// The VRAM routes for `prover` under `limits`, filling only for challengers whose signed
/// headers `gate` admits (`401` / `403` otherwise), like the compute commit.
pub fn router_gated(
    prover: Arc<dyn VramProver>,
    limits: VramLimits,
    gate: Arc<dyn ChallengeGate>,
) -> axum::Router {
    routes(Shared {
        prover,
        limits,
        gate: Some(gate),
        active: Arc::default(),
    })
}

fn client_error(f: Failure) -> VramProverError {
    match f {
        Failure::Busy(b) => VramProverError::Busy {
            retry_after_ms: b.retry_after_ms,
        },
        Failure::Transport(e) => VramProverError::Failed(e.to_string()),
    }
}

#[async_trait]
impl VramProver for HttpProver {
    async fn fill(&self, ch: &VramChallenge) -> Result<VramCommitment, VramProverError> {
        // No point waiting far past the deadline: a late commitment fails anyway.
        let bound =
            Duration::from_micros(ch.fill_deadline_us).saturating_add(Duration::from_secs(1));
        self.post(FILL_PATH, ch, bound).await.map_err(client_error)
    }

    async fn open(&self, req: &RoundRequest) -> Result<RoundAnswer, VramProverError> {
        self.post(OPEN_PATH, req, Duration::from_secs(10))
            .await
            .map_err(client_error)
    }
}
