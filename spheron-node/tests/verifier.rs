//! Slark verifier nodes against a real anvil chain and providers' real HTTP proof-of-GPU
//! endpoints (signed simulated provers on loopback):
//!
//! - honest providers of several models pass every challenge, the verifiers' tallies, rewards
//!   and accuracy land on chain, and the operator quorum writes the epoch's tiers;
//! - a provider online only in the first part of each epoch (where a predictable schedule would
//!   put the challenges) is caught by the random schedule;
//! - a weaker GPU claiming a stronger one fails, the randomly assigned second verifier
//!   confirms, and the provider is slashed on chain;
//! - a lying verifier's verdicts against an honest provider are overturned by the re-check: it
//!   loses stake and rank, the provider keeps its stake.
//!
//! Timings are **simulated** (CPU provers paced at 1e-8 of each GPU's rate).
#![allow(clippy::unwrap_used, missing_docs)]

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use spheron_chain::anvil::{AnvilOptions, TestChain, find_anvil};
use spheron_chain::audit::{self, AuditConfig};
use spheron_chain::bindings::{SpheronMarket, TestToken};
use spheron_chain::quorum::{self, Kind};
use spheron_chain::registry::{self, Registration};
use spheron_chain::{Chain, MarketConfig};
use spheron_core::{GeoPoint, GpuModel};
use spheron_gpu::vram::{Keep, SimProver, VramSim};
use spheron_gpu::vram_http::VramLimits;
use spheron_gpu::{Fault, SignedProver, Simulation};
use spheron_node::challenge_gate::ChainGate;
use spheron_node::network::{NetworkFile, PaymentToken};
use spheron_node::operator::{OperatorConfig, OperatorNode};
use spheron_node::registry::{GpuGroup, ProviderMeta};
use spheron_node::verifier::{Conduct, Outcome, VerifierConfig, VerifierHandle, VerifierNode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const SPHN: u128 = 1_000_000_000_000_000_000;
const EPOCH: u32 = 8;

/// One scenario at a time: the provers are paced on the CPU.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn chain() -> Option<TestChain> {
    // `SPHERON_LOG=spheron_node=info` shows what the nodes do.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPHERON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    if let Err(e) = find_anvil() {
        if std::env::var_os("SPHERON_REQUIRE_ANVIL").is_some_and(|v| v != "0") {
            panic!("this test needs anvil: {e}");
        }
        eprintln!("*** SKIPPED: this test needs anvil: {e}");
        return None;
    }
    Some(
        TestChain::start_with(
            &MarketConfig::default(),
            &AnvilOptions {
                block_time_secs: Some(1),
                accounts: 16,
            },
        )
        .await
        .unwrap(),
    )
}

async fn mint(tc: &TestChain, to: Address, amount: u128) {
    let t = TestToken::new(tc.addresses.sphn, tc.chain.provider().clone());
    tc.chain
        .send(tc.admin(), t.mint(to, U256::from(amount)))
        .await
        .unwrap();
}

/// When a provider's gateway answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Presence {
    Always,
    /// Only in the first `share` of each epoch.
    EarlyInEpoch {
        share: f64,
    },
}

struct ProviderSpec {
    claims: GpuModel,
    runs_as: GpuModel,
    presence: Presence,
}

struct Net {
    tc: TestChain,
    net: NetworkFile,
    audit: Address,
    genesis: u64,
    /// The first epoch every party saw from its start.
    first: u64,
    providers: Vec<Address>,
    verifiers: Vec<(Address, VerifierHandle)>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Serves a signed simulated prover for `key` on loopback, a `runs_as` GPU claiming `claims`:
/// compute at `runs_as`'s rate, and a VRAM round that keeps what `runs_as`'s memory holds
/// (the top layers; everything when it is the claimed model). `online` gates every request.
async fn serve_prover(
    key: &PrivateKeySigner,
    runs_as: GpuModel,
    claims: GpuModel,
    online: Arc<AtomicBool>,
    gate: Arc<ChainGate>,
) -> (String, tokio::task::JoinHandle<()>) {
    let sim = Simulation::network();
    let prover = Arc::new(SignedProver::new(
        Arc::new(sim.prover(runs_as, None, Fault::None)),
        key.clone(),
    ));
    let memory = VramSim::network();
    let keep = if runs_as == claims {
        Keep::All
    } else {
        Keep::TopOf(runs_as)
    };
    let vram = SimProver::new(memory, runs_as, claims, keep).signed(key.clone());
    let limits = VramLimits::for_capacity(memory.capacity(claims));
    let router = spheron_gpu::http::router_gated(prover, Default::default(), gate.clone())
        .merge(spheron_gpu::vram_http::router_gated(
            Arc::new(vram),
            limits,
            gate,
        ))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let online = online.clone();
                async move {
                    use axum::response::IntoResponse;
                    if online.load(Ordering::SeqCst) {
                        next.run(req).await
                    } else {
                        axum::http::StatusCode::BAD_GATEWAY.into_response()
                    }
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, task)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64() as u64
}

impl Net {
    async fn start(
        tc: TestChain,
        specs: &[ProviderSpec],
        verifiers: &[Conduct],
        operators: usize,
        challenges: u16,
    ) -> Net {
        let admin = tc.admin();
        let cfg = AuditConfig {
            epoch_secs: EPOCH,
            max_checks_per_epoch: challenges,
            recheck_window_secs: 120,
            ..AuditConfig::default()
        };
        let audit = audit::deploy_audit(&tc.chain, admin, &tc.addresses, &cfg)
            .await
            .unwrap();
        mint(&tc, admin, 10_000 * SPHN).await;
        audit::fund_rewards(&tc.chain, audit, admin, 10_000 * SPHN)
            .await
            .unwrap();
        let (genesis, _) = audit::epoch_bounds(&tc.chain, audit, 0).await.unwrap();
        let net = NetworkFile {
            rpc_url: tc.endpoint(),
            chain_id: 31337,
            market: tc.addresses.market,
            operators: tc.addresses.operators,
            audit: Some(audit),
            sphn: tc.addresses.sphn,
            payment: PaymentToken {
                address: tc.addresses.stable,
                symbol: "USDS".into(),
                decimals: 6,
            },
            deploy_block: tc.deploy_block,
            bid_window_secs: 4,
            tenants: Vec::new(),
            parties: Vec::new(),
        };
        let mut keys = tc.keys[2..].iter().cloned();
        let mut tasks = Vec::new();
        let mut providers = Vec::new();
        let m = SpheronMarket::new(tc.addresses.market, tc.chain.provider().clone());
        for (i, spec) in specs.iter().enumerate() {
            let key = keys.next().unwrap();
            let who = key.address();
            let online = Arc::new(AtomicBool::new(spec.presence == Presence::Always));
            // The provider node's own gate: only registered verifiers (and tenants of its
            // leases) get a commitment.
            let gate = Arc::new(ChainGate::new(
                Arc::new(Chain::connect(&tc.endpoint(), [PrivateKeySigner::random()]).unwrap()),
                tc.addresses.market,
                tc.addresses.operators,
                who,
            ));
            let (url, task) =
                serve_prover(&key, spec.runs_as, spec.claims, online.clone(), gate).await;
            tasks.push(task);
            if let Presence::EarlyInEpoch { share } = spec.presence {
                let window = (f64::from(EPOCH) * share) as u64;
                tasks.push(tokio::spawn(async move {
                    loop {
                        let offset = now_secs().saturating_sub(genesis) % u64::from(EPOCH);
                        online.store(offset < window, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }));
            }
            let meta = ProviderMeta {
                name: format!("p{i}"),
                location: GeoPoint::new(50.0, 8.0).unwrap(),
                gpus: vec![GpuGroup {
                    model: spec.claims,
                    nodes: 1,
                    per_node: 8,
                }],
            };
            registry::register(
                &tc.chain,
                tc.addresses.market,
                who,
                &Registration {
                    endpoint: url,
                    region: "eu-central".into(),
                    public_key: vec![2; 33],
                    cert_hash: Default::default(),
                    meta: meta.to_json(),
                },
            )
            .await
            .unwrap();
            mint(&tc, who, 500 * SPHN).await;
            let t = TestToken::new(tc.addresses.sphn, tc.chain.provider().clone());
            tc.chain
                .send(who, t.approve(tc.addresses.market, U256::from(500 * SPHN)))
                .await
                .unwrap();
            tc.chain
                .send(who, m.deposit(tc.addresses.sphn, U256::from(500 * SPHN)))
                .await
                .unwrap();
            tc.chain.send(who, m.stake(500 * SPHN)).await.unwrap();
            providers.push(who);
        }
        let mut stops = Vec::new();
        let mut handles = Vec::new();
        for conduct in verifiers {
            let key = keys.next().unwrap();
            mint(&tc, key.address(), 1_000 * SPHN).await;
            let node = VerifierNode::start_with_key(
                net.clone(),
                key.clone(),
                VerifierConfig {
                    poll: Duration::from_millis(200),
                    challenges_per_epoch: challenges,
                    conduct: *conduct,
                    // The simulated provers share this machine's cores: one challenge at a
                    // time per verifier keeps their (simulated) timing honest.
                    max_in_flight: 1,
                    // Every provider here serves the (simulated) VRAM round.
                    vram: true,
                    ..VerifierConfig::default()
                },
            )
            .await
            .unwrap();
            handles.push((node.address(), node.handle()));
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            stops.push(tx);
            tasks.push(tokio::spawn(async move {
                node.run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            }));
        }
        for _ in 0..operators {
            let key = keys.next().unwrap();
            mint(&tc, key.address(), 1_000 * SPHN).await;
            let node = OperatorNode::start_with_key(
                net.clone(),
                key.clone(),
                OperatorConfig {
                    submit_grace: Duration::from_millis(500),
                    poll: Duration::from_millis(200),
                    ..OperatorConfig::default()
                },
            )
            .await
            .unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            stops.push(tx);
            tasks.push(tokio::spawn(async move {
                node.run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            }));
        }
        // Epochs already gone while the parties registered are not challenged in full.
        let first = audit::current_epoch(&tc.chain, audit).await.unwrap() + 1;
        Net {
            tc,
            net,
            audit,
            genesis,
            first,
            providers,
            verifiers: handles,
            stops,
            tasks,
        }
    }

    fn chain(&self) -> &Chain {
        &self.tc.chain
    }

    /// Waits until chain time reaches the start of `epoch`.
    async fn until_epoch(&self, epoch: u64) {
        let target = self.genesis + epoch * u64::from(EPOCH);
        loop {
            if self.chain().block_time().await.unwrap() >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn uptime(&self, epochs: std::ops::Range<u64>, provider: Address) -> (u32, u32) {
        let mut total = (0, 0);
        for e in epochs {
            let (p, f) = audit::uptime(self.chain(), self.audit, e, provider)
                .await
                .unwrap();
            total.0 += p;
            total.1 += f;
        }
        total
    }

    async fn stake_of(&self, provider: Address) -> u128 {
        let m = SpheronMarket::new(self.tc.addresses.market, self.chain().provider().clone());
        m.stakeOf(provider).call().await.unwrap().staked
    }

    fn stop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
    }
}

/// Polls `f` every 250 ms for up to `secs` seconds until it returns true.
async fn eventually(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < until {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn honest_providers_pass_and_the_quorum_writes_tiers() {
    let _serial = SERIAL.lock().await;
    let Some(tc) = chain().await else { return };
    let models = [
        GpuModel::H100Sxm,
        GpuModel::A100_80G,
        GpuModel::Rtx4090,
        GpuModel::T4,
    ];
    let specs: Vec<ProviderSpec> = models
        .iter()
        .map(|&m| ProviderSpec {
            claims: m,
            runs_as: m,
            presence: Presence::Always,
        })
        .collect();
    let mut n = Net::start(tc, &specs, &[Conduct::Honest, Conduct::Honest], 2, 2).await;
    // Two full epochs challenged; an epoch's records are final two epochs later.
    let (e0, e1) = (n.first, n.first + 2);
    n.until_epoch(e1 + 1).await;
    let mut passes = 0;
    for (p, m) in n.providers.iter().zip(models) {
        let (ok, bad) = n.uptime(e0..e1, *p).await;
        eprintln!("{m}: {ok} passes, {bad} fails over 2 epochs (simulated rates)");
        if bad > 0 {
            for (_, h) in &n.verifiers {
                eprintln!("{:?}", h.snapshot().checks);
            }
        }
        assert_eq!(bad, 0, "an honest {m} failed a challenge");
        passes += ok;
    }
    assert!(passes > 0, "no challenge was posted");
    // A stranger (no verifier stake, no lease) gets no commitment from the same gateways.
    let rec = registry::provider(n.chain(), n.tc.addresses.market, n.providers[0])
        .await
        .unwrap()
        .unwrap();
    let stranger = spheron_gpu::http::HttpProver::new(&rec.endpoint)
        .unwrap()
        .with_challenger(PrivateKeySigner::random(), None);
    let v = spheron_gpu::http::challenge(
        &Simulation::network().try_verifier().unwrap(),
        &stranger,
        spheron_core::AccountId(n.providers[0].0.0),
        models[0],
        [[1; 32], [2; 32]],
    )
    .await
    .verdict;
    assert!(
        format!("{v}").contains("403"),
        "a stranger's challenge: {v}"
    );
    for (v, _) in &n.verifiers {
        let s = audit::stats(n.chain(), n.audit, *v).await.unwrap();
        assert!(s.passes > 0, "verifier {v} posted no passes: {s:?}");
        assert_eq!(s.overturned, 0);
        let reward = audit::rewards_of(n.chain(), n.audit, *v).await.unwrap();
        assert!(
            reward > 0,
            "verifier {v} earned nothing for {} passes",
            s.passes
        );
    }
    let ranking = audit::ranking(n.chain(), n.audit).await.unwrap();
    assert_eq!(ranking.len(), 2);
    assert!(ranking.iter().all(|(_, acc)| *acc == 10_000), "{ranking:?}");
    // The operator quorum writes the first full epoch's tiers once its records are final.
    eventually(
        3 * u64::from(EPOCH),
        "the first full epoch's tiers on chain",
        async || {
            audit::tiers_submitted(n.chain(), n.audit, e0)
                .await
                .unwrap()
        },
    )
    .await;
    let m = SpheronMarket::new(n.tc.addresses.market, n.chain().provider().clone());
    for p in &n.providers {
        let tier = m.providerInfo(*p).call().await.unwrap().tier;
        // Perfect uptime with no leases and no ratings earns the top tier; a provider
        // climbs one tier per epoch towards it.
        eprintln!("provider {p}: tier {tier} on chain");
        assert!(tier >= 1, "provider {p} holds tier {tier}");
        assert!(audit::rewards_of(n.chain(), n.audit, *p).await.unwrap() > 0);
    }
    n.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_online_only_early_in_the_epoch_is_caught() {
    let _serial = SERIAL.lock().await;
    let Some(tc) = chain().await else { return };
    let specs = [
        ProviderSpec {
            claims: GpuModel::L4,
            runs_as: GpuModel::L4,
            presence: Presence::EarlyInEpoch { share: 0.25 },
        },
        ProviderSpec {
            claims: GpuModel::L4,
            runs_as: GpuModel::L4,
            presence: Presence::Always,
        },
    ];
    let mut n = Net::start(tc, &specs, &[Conduct::Honest, Conduct::Honest], 0, 3).await;
    let epochs = 4;
    let e0 = n.first;
    n.until_epoch(e0 + epochs + 1).await;
    let (ok, bad) = n.uptime(e0..e0 + epochs, n.providers[0]).await;
    let mut caught_epochs = 0;
    for e in e0..e0 + epochs {
        let (_, f) = n.uptime(e..e + 1, n.providers[0]).await;
        caught_epochs += u32::from(f > 0);
    }
    eprintln!(
        "part-time provider: {bad} of {} challenges found it offline; caught in {caught_epochs}/{epochs} epochs",
        ok + bad
    );
    let (control_ok, control_bad) = n.uptime(e0..e0 + epochs, n.providers[1]).await;
    if ok + bad == 0 {
        for (v, h) in &n.verifiers {
            let l = h.snapshot();
            eprintln!(
                "{v}: first {e0}, posted {:?}, checks {:?}",
                l.posted, l.checks
            );
        }
    }
    eprintln!("always-online control: {control_ok} passes, {control_bad} fails");
    if control_bad > 0 {
        for (_, h) in &n.verifiers {
            for c in h.snapshot().checks {
                if c.provider == n.providers[1] && c.outcome != Outcome::Passed {
                    eprintln!("control: {c:?}");
                }
            }
        }
    }
    assert_eq!(control_bad, 0);
    assert!(
        caught_epochs >= epochs as u32 - 1,
        "caught in only {caught_epochs}/{epochs} epochs"
    );
    // A gateway that refuses the ping is downtime, not fraud; one that drops in the middle
    // of a challenge has failed it (otherwise a cheater would hang up on every challenge it
    // cannot meet), and the case goes to the re-check.
    let cases: usize = n
        .verifiers
        .iter()
        .map(|(_, h)| h.snapshot().opened.len())
        .sum();
    eprintln!("part-time provider: {cases} cases opened for answers cut off mid-challenge");
    n.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_weaker_gpu_is_confirmed_by_the_recheck_and_slashed() {
    let _serial = SERIAL.lock().await;
    let Some(tc) = chain().await else { return };
    let specs = [ProviderSpec {
        claims: GpuModel::H100Sxm,
        runs_as: GpuModel::L40S,
        presence: Presence::Always,
    }];
    let mut n = Net::start(tc, &specs, &[Conduct::Honest, Conduct::Honest], 0, 1).await;
    let cheater = n.providers[0];
    let before = n.stake_of(cheater).await;
    let handles: Vec<VerifierHandle> = n.verifiers.iter().map(|(_, h)| h.clone()).collect();
    eventually(4 * u64::from(EPOCH), "a confirmed case", async || {
        handles.iter().any(|h| !h.snapshot().confirmed.is_empty())
    })
    .await;
    let after = n.stake_of(cheater).await;
    assert!(after < before, "stake {before} -> {after}");
    let failed = handles
        .iter()
        .flat_map(|h| h.snapshot().checks)
        .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
        .count();
    eprintln!("L40S claiming H100 SXM: {failed} failed challenges; stake {before} -> {after}");
    let mut confirmed = 0;
    for (v, _) in &n.verifiers {
        let s = audit::stats(n.chain(), n.audit, *v).await.unwrap();
        confirmed += s.confirmed;
        assert_eq!(s.overturned, 0);
    }
    assert!(confirmed >= 1);
    n.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_smaller_memory_is_caught_by_the_vram_round_and_slashed() {
    let _serial = SERIAL.lock().await;
    let Some(tc) = chain().await else { return };
    // An H100 SXM computes like an H200: only its 80 GB against the H200's 141 GB tell
    // them apart.
    let specs = [ProviderSpec {
        claims: GpuModel::H200,
        runs_as: GpuModel::H100Sxm,
        presence: Presence::Always,
    }];
    let mut n = Net::start(tc, &specs, &[Conduct::Honest, Conduct::Honest], 0, 1).await;
    let cheater = n.providers[0];
    let before = n.stake_of(cheater).await;
    let handles: Vec<VerifierHandle> = n.verifiers.iter().map(|(_, h)| h.clone()).collect();
    eventually(8 * u64::from(EPOCH), "a confirmed case", async || {
        handles.iter().any(|h| !h.snapshot().confirmed.is_empty())
    })
    .await;
    let after = n.stake_of(cheater).await;
    assert!(after < before, "stake {before} -> {after}");
    let checks: Vec<_> = handles.iter().flat_map(|h| h.snapshot().checks).collect();
    let vram_fails = checks
        .iter()
        .filter(|c| matches!(&c.outcome, Outcome::Failed(r) if r.contains("VRAM round")))
        .count();
    let passes = checks
        .iter()
        .filter(|c| c.outcome == Outcome::Passed)
        .count();
    eprintln!(
        "H100 SXM claiming H200: {vram_fails} VRAM failures, {passes} passes of {} checks; stake {before} -> {after} (simulated)",
        checks.len()
    );
    assert!(vram_fails >= 1);
    assert_eq!(passes, 0, "the VRAM round never passes a smaller memory");
    n.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lying_verifier_is_overturned_and_loses_stake_and_rank() {
    let _serial = SERIAL.lock().await;
    let Some(tc) = chain().await else { return };
    let specs = [ProviderSpec {
        claims: GpuModel::A10,
        runs_as: GpuModel::A10,
        presence: Presence::Always,
    }];
    let mut n = Net::start(tc, &specs, &[Conduct::FalseFailures, Conduct::Honest], 0, 2).await;
    let honest_provider = n.providers[0];
    let before = n.stake_of(honest_provider).await;
    let (liar, liar_log) = n.verifiers[0].clone();
    let (honest, _) = n.verifiers[1].clone();
    let liar_stake = async |n: &Net| {
        quorum::parties(n.chain(), n.net.operators, Kind::Verifier)
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.address == liar)
            .unwrap()
            .staked
    };
    let stake0 = liar_stake(&n).await;
    eventually(4 * u64::from(EPOCH), "an overturned case", async || {
        audit::stats(n.chain(), n.audit, liar)
            .await
            .unwrap()
            .overturned
            > 0
    })
    .await;
    let stake1 = liar_stake(&n).await;
    eventually(
        3 * u64::from(EPOCH),
        "the honest verifier's passes",
        async || {
            audit::stats(n.chain(), n.audit, honest)
                .await
                .unwrap()
                .passes
                > 0
        },
    )
    .await;
    assert!(
        stake1 < stake0,
        "the liar kept its stake: {stake0} -> {stake1}"
    );
    assert_eq!(
        n.stake_of(honest_provider).await,
        before,
        "the honest provider was slashed"
    );
    let ranking = audit::ranking(n.chain(), n.audit).await.unwrap();
    eprintln!(
        "lying verifier: {} cases opened, ranking {ranking:?}",
        liar_log.snapshot().opened.len()
    );
    assert_eq!(ranking.first().map(|r| r.0), Some(honest), "{ranking:?}");
    n.stop();
}
