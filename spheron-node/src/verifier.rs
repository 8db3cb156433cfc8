//! The verifier node (Slark): challenges providers at times they cannot predict, records
//! what it saw on chain, and re-checks the failures other verifiers report.
//!
//! Each verifier is registered and staked in `SpheronOperators` as a verifier (it registers
//! itself at start when it is not). Time is cut into the epochs of the `SpheronAudit`
//! contract. At the start of each epoch the node draws, for every provider that may bid,
//! `challenges_per_epoch` times inside the epoch from a pseudo-random function keyed by its
//! own secret key and mixed with the chain (the hash of the newest block when it draws):
//! nobody without the verifier's key can compute them, so a provider cannot be online only
//! when it is challenged. At each time it challenges the provider through its gateway (TLS
//! pinned to the registered certificate hash) with fresh OS entropy, on the provider's first
//! listed GPU model:
//!
//! - a pass counts for the provider's uptime and earns the verifier its reward per valid
//!   verification;
//! - an unreachable gateway counts against uptime (it is not fraud: no case);
//! - a busy reply on every attempt is a missed challenge, counted neither way;
//! - a failed proof counts against uptime and opens a **case**: the verifier signs an EIP-712
//!   `Verdict` and posts it with `openCase`. The contract assigns a second verifier from a
//!   block hash the accuser could not know; that verifier challenges the provider itself and
//!   either confirms (the contract slashes the provider with both signatures and both
//!   verifiers share the reporter's part) or overturns (the accuser loses rank and stake).
//!
//! Once an epoch is over, the node posts its tallies (`postChecks`): uptime per epoch, the
//! verifiers' rewards and their ranking by accuracy all live in the contract.

use crate::error::{Error, Result};
use crate::gateway_client::GatewayClient;
use crate::network::NetworkFile;
use crate::registry::ProviderMeta;
use alloy::primitives::{Address, B256, keccak256};
use alloy::providers::Provider as _;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use serde::Serialize;
use spheron_chain::Chain;
use spheron_chain::audit::{self, CheckTally, OpenedCase};
use spheron_chain::quorum::{self, Kind, VerdictClaim};
use spheron_chain::registry;
use spheron_core::GpuModel;
use spheron_core::proof::{ChallengeVerifier, FailReason, Verdict};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a verifier reports what it saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Conduct {
    /// Reports every challenge as it came out.
    #[default]
    Honest,
    /// Reports every challenge it runs as failed and opens a case for each: what a lying
    /// verifier does. For tests of the re-check only.
    FalseFailures,
}

/// Verifier settings.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// Poll interval.
    pub poll: Duration,
    /// SPHN (base units) to stake when the verifier is not registered yet.
    pub stake: u128,
    /// The endpoint string registered on chain (verifiers meet only through the chain;
    /// it names the node for operators' dashboards).
    pub endpoint: String,
    /// Challenges per provider per epoch (R); at most the contract's `maxChecksPerEpoch`.
    pub challenges_per_epoch: u16,
    /// SPHN (base units) a verdict asks to slash (the market caps it).
    pub slash_amount: u128,
    /// Longest a challenge may take, probes included.
    pub challenge_timeout: Duration,
    /// Seconds at the end of an epoch in which no challenge is scheduled, so an answer
    /// lands inside the epoch it was drawn for.
    pub tail_secs: u64,
    /// How it reports (tests of a lying verifier change it).
    pub conduct: Conduct,
    /// Most challenges running at once (each waits out the provider's commit phase,
    /// seconds on real GPUs; the verifier's own work is milliseconds).
    pub max_in_flight: usize,
    /// Whether every challenge also runs the VRAM-residency round (simulated provers only:
    /// there are no CUDA kernels for it yet). A provider that does not serve it fails.
    pub vram: bool,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            poll: Duration::from_millis(250),
            stake: 1_000 * 10u128.pow(18),
            endpoint: String::new(),
            challenges_per_epoch: 2,
            slash_amount: 50 * 10u128.pow(18),
            challenge_timeout: Duration::from_secs(30),
            tail_secs: 2,
            conduct: Conduct::Honest,
            max_in_flight: 32,
            vram: false,
        }
    }
}

/// What one challenge came to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Outcome {
    /// The proof held.
    Passed,
    /// The gateway did not answer: counted against uptime, not fraud.
    Offline(String),
    /// The prover was busy on every attempt: a missed challenge, counted neither way.
    Missed,
    /// The proof failed: counted against uptime and a case is opened.
    Failed(String),
}

/// One challenge this node ran (its in-memory log, for tests and the status line).
#[derive(Clone, Debug, Serialize)]
pub struct CheckRecord {
    /// Epoch it was drawn for.
    pub epoch: u64,
    /// The provider challenged.
    pub provider: Address,
    /// Chain time it ran at (seconds).
    pub at: u64,
    /// What came of it.
    pub outcome: Outcome,
}

/// What the node did, shared with whoever holds a [`VerifierHandle`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifierLog {
    /// Every challenge run (bounded: the newest [`LOG_CAP`]).
    pub checks: Vec<CheckRecord>,
    /// Epochs whose tallies were posted.
    pub posted: Vec<u64>,
    /// Cases opened by this node.
    pub opened: Vec<u64>,
    /// Cases this node confirmed.
    pub confirmed: Vec<u64>,
    /// Cases this node overturned.
    pub overturned: Vec<u64>,
}

/// Most check records kept in [`VerifierLog::checks`].
pub const LOG_CAP: usize = 4096;

/// A read handle on a running node's log.
#[derive(Clone, Debug, Default)]
pub struct VerifierHandle(Arc<Mutex<VerifierLog>>);

impl VerifierHandle {
    /// A copy of the log now.
    pub fn snapshot(&self) -> VerifierLog {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut VerifierLog)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A provider as the verifier challenges it.
#[derive(Clone, Debug)]
struct Target {
    address: Address,
    endpoint: String,
    cert_hash: B256,
    model: GpuModel,
}

/// One epoch's plan and tallies.
#[derive(Debug, Default)]
struct EpochWork {
    epoch: u64,
    /// `(time, provider)`, soonest first.
    due: Vec<(u64, Address)>,
    targets: BTreeMap<Address, Target>,
    tallies: BTreeMap<Address, (u16, u16)>,
    ran: u32,
    in_flight: u32,
}

/// What a challenge task needs: shared by the node and its in-flight challenges.
struct Challenger {
    key: PrivateKeySigner,
    chain_id: u64,
    market: Address,
    verifier: Arc<dyn ChallengeVerifier>,
    timeout: Duration,
    conduct: Conduct,
    vram: bool,
}

/// Attempts at a provider whose proof failed on time alone: scheduling noise only ever makes
/// an answer slower, so a pass in any attempt counts; a wrong row, path or signature fails at
/// once.
pub const TIMING_ATTEMPTS: u32 = 3;

/// VRAM rounds tried at a provider whose memory another session holds.
const VRAM_BUSY_WAITS: u32 = 3;

/// The prefix of a timing failure's reason.
const TIMING: &str = "timing: ";

/// A finished challenge.
struct Done {
    epoch: u64,
    index: u32,
    at: u64,
    target: Target,
    outcome: Outcome,
}

impl Challenger {
    /// Challenges `target` once.
    /// Challenges `target`; a proof that failed on time alone is asked again (up to
    /// [`TIMING_ATTEMPTS`] in all) and passes if any attempt passes: scheduling noise only
    /// ever makes an answer slower, and a GPU weaker than it claims misses every deadline,
    /// while a wrong row, path or signature fails at once.
    async fn check(&self, target: &Target) -> Outcome {
        let mut outcome = self.challenge(target).await;
        for _ in 1..TIMING_ATTEMPTS {
            match &outcome {
                Outcome::Failed(reason) if reason.starts_with(TIMING) => {
                    tracing::info!(provider = %target.address, %reason, "timing failure: asking again");
                    outcome = self.challenge(target).await;
                }
                _ => break,
            }
        }
        match (self.conduct, outcome) {
            (Conduct::FalseFailures, Outcome::Passed) => {
                Outcome::Failed("reported failed by a lying verifier".into())
            }
            (_, o) => o,
        }
    }

    async fn challenge(&self, target: &Target) -> Outcome {
        let gateway = match GatewayClient::new_pinned(
            &target.endpoint,
            self.key.clone(),
            self.chain_id,
            self.market,
            target.cert_hash,
        ) {
            Ok(g) => g,
            Err(e) => return Outcome::Offline(format!("gateway unusable: {e}")),
        };
        // Signed with the verifier's registered key: providers commit only for challengers
        // the chain vouches for.
        let prover = gateway
            .prover()
            .with_timeout(self.timeout)
            .with_challenger(self.key.clone(), None);
        // Reachability first: an unreachable gateway is downtime, not a failed proof.
        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), prover.ping())
            .await
            .map_err(|_| "no answer to the ping in 5 s".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            return Outcome::Offline(e);
        }
        let entropy = match os_entropy() {
            Ok(e) => e,
            Err(e) => return Outcome::Missed.tap_warn(&e.to_string()),
        };
        let pid = spheron_core::AccountId(target.address.0.0);
        let report = tokio::time::timeout(
            self.timeout,
            spheron_gpu::http::challenge(
                self.verifier.as_ref(),
                &prover,
                pid,
                target.model,
                entropy,
            ),
        )
        .await;
        match report {
            Err(_) => Outcome::Failed(format!("no answer within {} s", self.timeout.as_secs())),
            Ok(r) => match r.verdict {
                Verdict::Pass { .. } if self.vram => self.vram_round(target, &prover, pid).await,
                Verdict::Pass { .. } => Outcome::Passed,
                Verdict::Fail(FailReason::Busy { .. }) => Outcome::Missed,
                Verdict::Fail(reason @ (FailReason::Late { .. } | FailReason::TooSlow { .. })) => {
                    Outcome::Failed(format!("{TIMING}{reason}"))
                }
                Verdict::Fail(reason) => Outcome::Failed(reason.to_string()),
            },
        }
    }
}

impl Challenger {
    /// The VRAM-residency round ([`spheron_gpu::vram`], simulated) against the provider that
    /// just passed the compute challenge: its memory must hold the claimed model's array.
    /// Bounds from [`VramSim::network`](spheron_gpu::vram::VramSim::network), credited with
    /// the round trip this verifier measures itself (capped).
    async fn vram_round(
        &self,
        target: &Target,
        prover: &spheron_gpu::http::HttpProver,
        pid: spheron_core::AccountId,
    ) -> Outcome {
        use spheron_gpu::vram::{VramFailure, VramSim, VramVerdict};
        let rtt = match (prover.ping().await, prover.ping().await) {
            (Ok(a), Ok(b)) => a.min(b),
            (Err(e), _) | (_, Err(e)) => return Outcome::Offline(e.to_string()),
        };
        let v = VramSim::network()
            .verifier()
            .requiring_signatures()
            .with_rtt_credit(rtt);
        // The memory holds one session: one that another verifier (or this one's previous,
        // failed attempt) holds is waited out, a few seconds at most, then counted as missed.
        let mut verdict = None;
        for _ in 0..VRAM_BUSY_WAITS {
            let ch = match v.challenge(Some(pid), target.model) {
                Ok(c) => c,
                Err(e) => return Outcome::Missed.tap_warn(&e.to_string()),
            };
            match tokio::time::timeout(self.timeout, v.run(&ch, prover)).await {
                Ok(VramVerdict::Fail(VramFailure::Busy { retry_after_ms })) => {
                    verdict = Some(Ok(VramVerdict::Fail(VramFailure::Busy { retry_after_ms })));
                    let wait = Duration::from_millis(retry_after_ms.min(5_000) + 100);
                    tokio::time::sleep(wait).await;
                }
                other => {
                    verdict = Some(other);
                    break;
                }
            }
        }
        match verdict.unwrap_or(Ok(VramVerdict::Fail(VramFailure::Busy {
            retry_after_ms: 0,
        }))) {
            Err(_) => Outcome::Failed(format!(
                "VRAM round: no answer within {} s",
                self.timeout.as_secs()
            )),
            Ok(VramVerdict::Pass { .. }) => Outcome::Passed,
            Ok(VramVerdict::Fail(VramFailure::Busy { .. })) => Outcome::Missed,
            Ok(VramVerdict::Fail(
                f @ (VramFailure::RoundLate { .. } | VramFailure::FillLate { .. }),
            )) => Outcome::Failed(format!("{TIMING}VRAM round: {f}")),
            Ok(VramVerdict::Fail(f)) => Outcome::Failed(format!("VRAM round: {f}")),
        }
    }
}

/// The verifier node; see the [module docs](self).
pub struct VerifierNode {
    net: NetworkFile,
    audit: Address,
    chain: Arc<Chain>,
    key: PrivateKeySigner,
    me: Address,
    domain: Eip712Domain,
    challenger: Arc<Challenger>,
    config: VerifierConfig,
    slots: Arc<tokio::sync::Semaphore>,
    done_tx: tokio::sync::mpsc::UnboundedSender<Done>,
    done_rx: tokio::sync::mpsc::UnboundedReceiver<Done>,
    genesis: u64,
    epoch_secs: u64,
    max_checks: u16,
    work: Option<EpochWork>,
    unposted: Vec<EpochWork>,
    cases_from: u64,
    /// Cases opened by others whose re-checker is not drawn yet, or is this node.
    pending: BTreeMap<u64, OpenedCase>,
    /// Re-check attempts per case that found the provider unreachable or busy.
    retries: BTreeMap<u64, u32>,
    /// No tallies are posted before this (a refused post waits a little).
    post_after: Option<tokio::time::Instant>,
    log: VerifierHandle,
}

/// Re-check attempts (one per poll) before a case with an unreachable provider is left to
/// expire.
const RECHECK_TRIES: u32 = 20;

impl std::fmt::Debug for VerifierNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierNode")
            .field("verifier", &self.me)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

fn chain_err(e: spheron_chain::Error) -> Error {
    Error::Chain(e)
}

/// 64 bytes of OS entropy for a challenge; an error (never a fallback) when the OS has none.
pub(crate) fn os_entropy() -> Result<[[u8; 32]; 2]> {
    let mut out = [[0u8; 32]; 2];
    for e in &mut out {
        getrandom::fill(e)
            .map_err(|e| Error::config("entropy", format!("the OS gave no randomness: {e}")))?;
    }
    Ok(out)
}

/// The challenge times of `provider` in `epoch` (`[start, start + usable)`), drawn from a
/// pseudo-random function keyed by the verifier's secret `key` and mixed with `chain_seed`.
/// Without the key the times cannot be computed; with it they are reproducible.
pub fn schedule(
    key: &PrivateKeySigner,
    chain_seed: B256,
    epoch: u64,
    provider: Address,
    start: u64,
    usable: u64,
    count: u16,
) -> Vec<u64> {
    let secret = key.to_bytes();
    let mut times: Vec<u64> = (0..count)
        .map(|i| {
            let mut m = Vec::with_capacity(32 + 24 + 32 + 8 + 20 + 2);
            m.extend_from_slice(secret.as_slice());
            m.extend_from_slice(b"spheron slark schedule v1");
            m.extend_from_slice(chain_seed.as_slice());
            m.extend_from_slice(&epoch.to_be_bytes());
            m.extend_from_slice(provider.as_slice());
            m.extend_from_slice(&i.to_be_bytes());
            let h = keccak256(&m);
            let x = u64::from_be_bytes(h[..8].try_into().unwrap_or([0; 8]));
            start + x % usable.max(1)
        })
        .collect();
    times.sort_unstable();
    times
}

impl VerifierNode {
    /// Connects with the verifier's key (read from `key_file`) to the network in `network`.
    pub async fn start(network: &Path, key_file: &Path, config: VerifierConfig) -> Result<Self> {
        let net = NetworkFile::load(network)?;
        Self::start_with_key(net, crate::network::load_key(key_file)?, config).await
    }

    /// Like [`VerifierNode::start`] with the network and key in hand: registers and stakes the
    /// verifier when it is not yet, and reads the audit contract's epochs.
    pub async fn start_with_key(
        net: NetworkFile,
        key: PrivateKeySigner,
        config: VerifierConfig,
    ) -> Result<Self> {
        let audit = net
            .audit
            .ok_or_else(|| Error::config("network", "the network file names no audit contract"))?;
        if config.challenges_per_epoch == 0 {
            return Err(Error::config("challenges_per_epoch", "must be at least 1"));
        }
        let me = key.address();
        let chain = Arc::new(Chain::connect(&net.rpc_url, [key.clone()])?);
        let endpoint = if config.endpoint.is_empty() {
            format!("verifier:{me}")
        } else {
            config.endpoint.clone()
        };
        crate::network::ensure_party(&chain, &net, me, Kind::Verifier, &endpoint, config.stake)
            .await?;
        let (genesis, end0) = audit::epoch_bounds(&chain, audit, 0)
            .await
            .map_err(chain_err)?;
        let max_checks =
            spheron_chain::bindings::SpheronAudit::new(audit, chain.provider().clone())
                .maxChecksPerEpoch()
                .call()
                .await
                .map_err(|e| chain_err(spheron_chain::client::decode(e)))?;
        if config.challenges_per_epoch > max_checks {
            return Err(Error::config(
                "challenges_per_epoch",
                format!(
                    "{} is more than the contract counts per epoch ({max_checks})",
                    config.challenges_per_epoch
                ),
            ));
        }
        let verifier = spheron_gpu::Simulation::network()
            .try_verifier()
            .map_err(|e| Error::config("verifier", e.to_string()))?;
        let head = chain
            .provider()
            .get_block_number()
            .await
            .map_err(|e| Error::Chain(spheron_chain::Error::Rpc(e.to_string())))?;
        tracing::info!(verifier = %me, %audit, "verifier ready");
        let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(VerifierNode {
            domain: quorum::domain(net.chain_id, net.operators),
            challenger: Arc::new(Challenger {
                key: key.clone(),
                chain_id: net.chain_id,
                market: net.market,
                verifier: Arc::new(verifier),
                timeout: config.challenge_timeout,
                vram: config.vram,
                conduct: config.conduct,
            }),
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
            done_tx,
            done_rx,
            net,
            audit,
            chain,
            key,
            me,
            config,
            genesis,
            epoch_secs: end0.saturating_sub(genesis).max(1),
            max_checks,
            work: None,
            unposted: Vec::new(),
            cases_from: head,
            pending: BTreeMap::new(),
            retries: BTreeMap::new(),
            post_after: None,
            log: VerifierHandle::default(),
        })
    }

    /// Replaces the proof-of-GPU verifier (default: the network simulation's).
    #[must_use]
    pub fn with_verifier(mut self, verifier: Arc<dyn ChallengeVerifier>) -> Self {
        self.challenger = Arc::new(Challenger {
            key: self.key.clone(),
            chain_id: self.net.chain_id,
            market: self.net.market,
            verifier,
            timeout: self.config.challenge_timeout,
            conduct: self.config.conduct,
            vram: self.config.vram,
        });
        self
    }

    /// The verifier's account.
    pub fn address(&self) -> Address {
        self.me
    }

    /// A handle on what the node does.
    pub fn handle(&self) -> VerifierHandle {
        self.log.clone()
    }

    async fn chain_now(&self) -> Result<(u64, B256, u64)> {
        let block = self
            .chain
            .provider()
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|e| Error::Chain(spheron_chain::Error::Rpc(e.to_string())))?
            .ok_or_else(|| Error::Chain(spheron_chain::Error::Rpc("no latest block".into())))?;
        Ok((
            block.header.timestamp,
            block.header.hash,
            block.header.number,
        ))
    }

    /// Challenges, posts and re-checks until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(self.config.poll) => {}
            }
            if let Err(e) = self.step().await {
                tracing::warn!(verifier = %self.me, error = %e, "verifier step");
            }
        }
        Ok(())
    }

    async fn step(&mut self) -> Result<()> {
        let (now, hash, head) = self.chain_now().await?;
        let epoch = now.saturating_sub(self.genesis) / self.epoch_secs;
        if self.work.as_ref().is_none_or(|w| w.epoch != epoch) {
            if let Some(done) = self.work.take() {
                self.unposted.push(done);
            }
            self.work = Some(self.plan(epoch, hash, now).await?);
        }
        self.collect().await;
        self.post_finished(epoch).await;
        self.run_due(now);
        self.follow_cases(head).await;
        Ok(())
    }

    /// Draws `epoch`'s challenge times; times before `now` (a node started mid-epoch) are
    /// dropped rather than run in a burst.
    async fn plan(&self, epoch: u64, chain_seed: B256, now: u64) -> Result<EpochWork> {
        let start = self.genesis + epoch * self.epoch_secs;
        let usable = self.epoch_secs.saturating_sub(self.config.tail_secs).max(1);
        let mut work = EpochWork {
            epoch,
            ..EpochWork::default()
        };
        let records = registry::providers(&self.chain, self.net.market)
            .await
            .map_err(chain_err)?;
        for rec in records.into_iter().filter(|r| r.can_bid) {
            let Some(model) = serde_json::from_str::<ProviderMeta>(&rec.meta)
                .ok()
                .and_then(|m| m.gpus.first().map(|g| g.model))
            else {
                tracing::debug!(provider = %rec.address, "no GPU listed: not challenged");
                continue;
            };
            for t in schedule(
                &self.key,
                chain_seed,
                epoch,
                rec.address,
                start,
                usable,
                self.config.challenges_per_epoch,
            )
            .into_iter()
            .filter(|t| *t >= now)
            {
                work.due.push((t, rec.address));
            }
            work.targets.insert(
                rec.address,
                Target {
                    address: rec.address,
                    endpoint: rec.endpoint,
                    cert_hash: rec.cert_hash,
                    model,
                },
            );
        }
        work.due.sort_unstable();
        tracing::debug!(verifier = %self.me, epoch, challenges = work.due.len(), "epoch planned");
        Ok(work)
    }

    async fn post_finished(&mut self, epoch: u64) {
        if self
            .post_after
            .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            return;
        }
        let mut keep = Vec::new();
        for w in std::mem::take(&mut self.unposted) {
            if w.in_flight > 0 && w.epoch + 1 >= epoch {
                // Challenges of that epoch still running: post once they are in.
                keep.push(w);
                continue;
            }
            if w.epoch + 1 < epoch {
                tracing::warn!(epoch = w.epoch, "tallies not posted in time: dropped");
                continue;
            }
            // The contract counts checks only of providers that may bid now (one slashed
            // out of its stake or banned since is left out, or the whole batch is refused).
            let mut tallies: Vec<CheckTally> = Vec::new();
            for (a, (p, f)) in w.tallies.iter().filter(|(_, (p, f))| p + f > 0) {
                match registry::provider(&self.chain, self.net.market, *a).await {
                    Ok(Some(r)) if r.can_bid => tallies.push(CheckTally {
                        provider: *a,
                        passes: *p,
                        fails: *f,
                    }),
                    Ok(_) => {
                        tracing::info!(provider = %a, "may no longer bid: its tally is left out")
                    }
                    Err(e) => tracing::warn!(provider = %a, error = %e, "reading the provider"),
                }
            }
            if tallies.is_empty() {
                continue;
            }
            match audit::post_checks(&self.chain, self.audit, self.me, w.epoch, &tallies).await {
                Ok(_) => {
                    tracing::info!(verifier = %self.me, epoch = w.epoch, providers = tallies.len(), "tallies posted");
                    self.log.update(|l| l.posted.push(w.epoch));
                }
                Err(e) => {
                    tracing::warn!(epoch = w.epoch, error = %e, "posting tallies: trying again in 3 s");
                    self.post_after = Some(tokio::time::Instant::now() + Duration::from_secs(3));
                    keep.push(w);
                }
            }
        }
        self.unposted = keep;
    }

    /// Starts every challenge that is due (at most `max_in_flight` at once).
    fn run_due(&mut self, now: u64) {
        let Some(work) = self.work.as_mut() else {
            return;
        };
        while let Some(&(t, provider)) = work.due.first() {
            if t > now {
                return;
            }
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                return;
            };
            work.due.remove(0);
            let Some(target) = work.targets.get(&provider).cloned() else {
                continue;
            };
            let index = work.ran;
            work.ran += 1;
            work.in_flight += 1;
            let epoch = work.epoch;
            let challenger = self.challenger.clone();
            let done = self.done_tx.clone();
            tokio::spawn(async move {
                let outcome = challenger.check(&target).await;
                let _ = done.send(Done {
                    epoch,
                    index,
                    at: now,
                    target,
                    outcome,
                });
                drop(permit);
            });
        }
    }

    /// Records the challenges that finished: tallies, cases, the log.
    async fn collect(&mut self) {
        while let Ok(d) = self.done_rx.try_recv() {
            let provider = d.target.address;
            tracing::info!(verifier = %self.me, epoch = d.epoch, %provider, outcome = ?d.outcome, "challenge");
            let max = self.max_checks;
            let work = self
                .work
                .iter_mut()
                .chain(self.unposted.iter_mut())
                .find(|w| w.epoch == d.epoch);
            if let Some(w) = work {
                w.in_flight = w.in_flight.saturating_sub(1);
                let e = w.tallies.entry(provider).or_insert((0, 0));
                if e.0 + e.1 < max {
                    match &d.outcome {
                        Outcome::Passed => e.0 += 1,
                        Outcome::Offline(_) | Outcome::Failed(_) => e.1 += 1,
                        Outcome::Missed => {}
                    }
                }
            }
            if let Outcome::Failed(reason) = &d.outcome
                && let Err(e) = self.accuse(&d.target, d.epoch, d.index, reason).await
            {
                tracing::warn!(%provider, error = %e, "opening a case");
            }
            self.log.update(|l| {
                if l.checks.len() >= LOG_CAP {
                    l.checks.remove(0);
                }
                l.checks.push(CheckRecord {
                    epoch: d.epoch,
                    provider,
                    at: d.at,
                    outcome: d.outcome,
                });
            });
        }
    }

    fn verdict(
        &self,
        target: &Target,
        epoch: u64,
        index: u32,
        issued_at: u64,
        nonce: [u8; 32],
    ) -> VerdictClaim {
        let mut m = Vec::with_capacity(20 + 20 + 8 + 4 + 32);
        m.extend_from_slice(self.me.as_slice());
        m.extend_from_slice(target.address.as_slice());
        m.extend_from_slice(&epoch.to_be_bytes());
        m.extend_from_slice(&index.to_be_bytes());
        m.extend_from_slice(&nonce);
        VerdictClaim {
            market: self.net.market,
            provider: target.address,
            session: keccak256(&m),
            model: registry::model_bytes(target.model),
            amount: self.config.slash_amount,
            issued_at,
        }
    }

    async fn accuse(&self, target: &Target, epoch: u64, index: u32, reason: &str) -> Result<()> {
        let (now, _, _) = self.chain_now().await?;
        let v = self.verdict(target, epoch, index, now, os_entropy()?[0]);
        let sig = quorum::sign_verdict(&self.key, &self.domain, &v)
            .await
            .map_err(chain_err)?;
        let id = audit::open_case(&self.chain, self.audit, self.me, &v, &sig)
            .await
            .map_err(chain_err)?;
        tracing::warn!(verifier = %self.me, provider = %target.address, case = id, %reason, "case opened");
        self.log.update(|l| l.opened.push(id));
        Ok(())
    }

    async fn follow_cases(&mut self, head: u64) {
        if head >= self.cases_from {
            match audit::opened_cases(&self.chain, self.audit, self.cases_from, head).await {
                Ok(cases) => {
                    for c in cases.into_iter().filter(|c| c.accuser != self.me) {
                        self.pending.insert(c.id, c);
                    }
                    self.cases_from = head + 1;
                }
                Err(e) => tracing::warn!(error = %e, "reading cases"),
            }
        }
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        for id in ids {
            let assignee = match audit::assignee(&self.chain, self.audit, id).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(case = id, error = %e, "reading the assignee");
                    continue;
                }
            };
            match assignee {
                None => {}
                Some(a) if a != self.me => {
                    self.pending.remove(&id);
                }
                Some(_) => {
                    if let Some(case) = self.pending.remove(&id)
                        && let Err(e) = self.recheck(case.clone()).await
                    {
                        tracing::warn!(case = id, error = %e, "re-check");
                    }
                }
            }
        }
    }

    /// Re-checks a case assigned to this node: challenges the provider itself, then
    /// confirms or overturns.
    async fn recheck(&mut self, case: OpenedCase) -> Result<()> {
        let rec = registry::provider(&self.chain, self.net.market, case.verdict.provider)
            .await
            .map_err(chain_err)?
            .ok_or_else(|| Error::config("case", "the accused provider is not registered"))?;
        let model = registry::model_of(case.verdict.model)
            .ok_or_else(|| Error::config("case", "the verdict names no catalogued model"))?;
        let target = Target {
            address: rec.address,
            endpoint: rec.endpoint,
            cert_hash: rec.cert_hash,
            model,
        };
        let outcome = self.challenger.check(&target).await;
        tracing::info!(verifier = %self.me, case = case.id, ?outcome, "re-check");
        match outcome {
            Outcome::Failed(_) => {
                let sig = quorum::sign_verdict(&self.key, &self.domain, &case.verdict)
                    .await
                    .map_err(chain_err)?;
                audit::confirm_case(
                    &self.chain,
                    self.audit,
                    self.me,
                    case.id,
                    &case.verdict,
                    &case.signature,
                    &sig,
                )
                .await
                .map_err(chain_err)?;
                self.log.update(|l| l.confirmed.push(case.id));
            }
            Outcome::Passed => {
                audit::overturn_case(&self.chain, self.audit, self.me, case.id)
                    .await
                    .map_err(chain_err)?;
                self.log.update(|l| l.overturned.push(case.id));
            }
            Outcome::Missed | Outcome::Offline(_) => {
                // Neither a pass nor a fail: ask again later, until the window closes.
                let tries = self.retries.entry(case.id).or_insert(0);
                *tries += 1;
                if *tries < RECHECK_TRIES {
                    self.pending.insert(case.id, case);
                } else {
                    tracing::warn!(
                        case = case.id,
                        "provider unreachable for the re-check: the case expires"
                    );
                }
            }
        }
        Ok(())
    }
}

trait TapWarn {
    fn tap_warn(self, why: &str) -> Self;
}

impl TapWarn for Outcome {
    fn tap_warn(self, why: &str) -> Self {
        tracing::warn!(%why, "challenge not run");
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_fixed_by_the_key_and_unknowable_without_it() {
        let key = PrivateKeySigner::random();
        let other = PrivateKeySigner::random();
        let p = Address::repeat_byte(7);
        let seed = B256::repeat_byte(1);
        let a = schedule(&key, seed, 5, p, 1_000, 50, 8);
        assert_eq!(
            a,
            schedule(&key, seed, 5, p, 1_000, 50, 8),
            "reproducible with the key"
        );
        assert!(a.windows(2).all(|w| w[0] <= w[1]), "sorted");
        assert!(a.iter().all(|t| (1_000..1_050).contains(t)), "{a:?}");
        // Another key, epoch, provider or chain seed draws other times.
        assert_ne!(a, schedule(&other, seed, 5, p, 1_000, 50, 8));
        assert_ne!(a, schedule(&key, seed, 6, p, 1_000, 50, 8));
        assert_ne!(
            a,
            schedule(&key, seed, 5, Address::repeat_byte(8), 1_000, 50, 8)
        );
        assert_ne!(a, schedule(&key, B256::repeat_byte(2), 5, p, 1_000, 50, 8));
    }

    #[test]
    fn the_schedule_covers_the_epoch_evenly() {
        // Over many epochs the offsets spread over the whole usable window: a provider that is
        // online in a quarter of it meets about a quarter of the challenges.
        let key = PrivateKeySigner::random();
        let p = Address::repeat_byte(3);
        let mut quarters = [0u32; 4];
        for epoch in 0..500 {
            for t in schedule(&key, B256::ZERO, epoch, p, 0, 100, 4) {
                quarters[(t / 25) as usize] += 1;
            }
        }
        for q in quarters {
            assert!((400..600).contains(&q), "{quarters:?}");
        }
    }
}
