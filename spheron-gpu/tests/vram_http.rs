//! The VRAM round over real HTTP on loopback ([`VramSim::network`] bounds): honest provers
//! pass with the round-trip credit the verifier measures (capped), cheaters still fail with
//! the largest credit, one session
//! holds the memory at a time (a second fill gets a typed busy reply), and the server refuses
//! challenges over its limits or without a challenger's signature. Timings are **simulated**
//! (CPU provers paced at their model's scaled bandwidth).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use alloy_signer_local::PrivateKeySigner;
use async_trait::async_trait;
use spheron_core::{GpuModel, ProviderId};
use spheron_gpu::http::{ChallengeGate, Challenger, HttpProver};
use spheron_gpu::vram::{
    Keep, MAX_RTT_CREDIT_US, SimProver, VramFailure, VramProver, VramProverError, VramSim,
    VramVerdict,
};
use spheron_gpu::vram_http::{self, VramLimits};
use std::sync::Arc;
use std::time::Duration;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Serves `router` with the ping route the gateway has beside it.
async fn serve(router: axum::Router) -> String {
    let router = router.route(
        spheron_gpu::http::PING_PATH,
        axum::routing::get(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    url
}

fn limits() -> VramLimits {
    VramLimits::for_capacity(VramSim::standard().capacity(GpuModel::H200))
}

/// The verifier's own round trip to `p`, as a verifier node measures it.
async fn credit(p: &HttpProver) -> Duration {
    let a = p.ping().await.unwrap();
    let b = p.ping().await.unwrap();
    a.min(b)
}

/// A VRAM check against `p` as a verifier node runs it: a busy reply (the previous trial's
/// session still holds the memory after its failed round) is waited out, and a round that
/// failed on time alone is asked again with a fresh challenge, up to 3 attempts in all
/// (scheduling noise on this shared machine only ever makes an answer slower; a smaller
/// memory is late every time). Returns the verdict and the attempts that were late.
async fn run(
    p: &HttpProver,
    provider: &str,
    claimed: GpuModel,
    rtt: Duration,
) -> (VramVerdict, u32) {
    let v = VramSim::network().verifier().with_rtt_credit(rtt);
    let mut late = 0;
    let mut last = None;
    for _ in 0..6 {
        let ch = v
            .challenge(Some(ProviderId::from_label(provider)), claimed)
            .unwrap();
        match v.run(&ch, p).await {
            VramVerdict::Fail(VramFailure::Busy { retry_after_ms }) => {
                tokio::time::sleep(Duration::from_millis(retry_after_ms + 50)).await;
            }
            verdict @ VramVerdict::Fail(
                VramFailure::RoundLate { .. } | VramFailure::FillLate { .. },
            ) => {
                late += 1;
                last = Some(verdict);
                if late == 3 {
                    break;
                }
            }
            other => return (other, late),
        }
    }
    (last.expect("busy every time"), late)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_provers_pass_over_http() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    for model in [
        GpuModel::H200,
        GpuModel::H100Sxm,
        GpuModel::A100_80G,
        GpuModel::A100_40G,
    ] {
        let url = serve(vram_http::router(
            Arc::new(SimProver::honest(sim, model)),
            limits(),
        ))
        .await;
        let p = HttpProver::new(&url).unwrap();
        let (mut passed, mut late) = (0, 0);
        for _ in 0..5 {
            let rtt = credit(&p).await;
            let (v, l) = run(&p, "honest", model, rtt).await;
            assert!(v.passed(), "{model}: {v:?}");
            passed += 1;
            late += l;
        }
        println!(
            "honest {model} over HTTP: {passed}/5 passed, {late} late attempt(s) asked again (simulated)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smaller_memory_fails_even_with_the_largest_credit() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    for (actual, claimed) in [
        (GpuModel::H100Sxm, GpuModel::H200),
        (GpuModel::A100_40G, GpuModel::A100_80G),
    ] {
        let cheat = SimProver::new(sim, actual, claimed, Keep::TopOf(actual));
        let url = serve(vram_http::router(Arc::new(cheat), limits())).await;
        let p = HttpProver::new(&url).unwrap();
        let mut failed = 0;
        for _ in 0..5 {
            let (v, _) = run(
                &p,
                "cheat",
                claimed,
                Duration::from_micros(MAX_RTT_CREDIT_US),
            )
            .await;
            assert!(
                matches!(v, VramVerdict::Fail(VramFailure::RoundLate { .. })),
                "{actual} claiming {claimed}: {v:?}"
            );
            println!("  {v:?}");
            failed += 1;
        }
        println!(
            "{actual} claiming {claimed} over HTTP, 30 ms credit: {failed}/5 failed (simulated)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_holds_the_memory_and_a_second_fill_is_busy() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    let url = serve(vram_http::router(
        Arc::new(SimProver::honest(sim, GpuModel::H100Sxm)),
        limits(),
    ))
    .await;
    let p = HttpProver::new(&url).unwrap();
    let v = VramSim::network().verifier();
    let first = v.challenge(None, GpuModel::H100Sxm).unwrap();
    let second = v.challenge(None, GpuModel::H100Sxm).unwrap();
    p.fill(&first).await.unwrap();
    match p.fill(&second).await {
        Err(VramProverError::Busy { retry_after_ms }) => assert!(retry_after_ms > 0),
        other => panic!("a second fill while the first holds the memory: {other:?}"),
    }
    // A round for a session that is not the active one is refused.
    let stray = spheron_gpu::vram::RoundRequest {
        session: second.session,
        round: 0,
        positions: vec![0],
    };
    assert!(matches!(p.open(&stray).await, Err(VramProverError::Failed(m)) if m.contains("409")));
    let whole = v.run(&second, &p).await;
    assert!(
        matches!(whole, VramVerdict::Fail(VramFailure::Busy { .. })),
        "while the first session holds the memory: {whole:?}"
    );
    // A session whose verifier went away without its rounds frees the memory after the
    // session TTL (a short-TTL server shows it) ...
    let short = VramLimits {
        session_ttl: Duration::from_millis(200),
        ..limits()
    };
    let url2 = serve(vram_http::router(
        Arc::new(SimProver::honest(sim, GpuModel::H100Sxm)),
        short,
    ))
    .await;
    let p2 = HttpProver::new(&url2).unwrap();
    p2.fill(&first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = v.run(&second, &p2).await;
    assert!(
        !matches!(after, VramVerdict::Fail(VramFailure::Busy { .. })),
        "{after:?}"
    );
    // ... and a finished (or failed) session frees it at once.
    let third = v.challenge(None, GpuModel::H100Sxm).unwrap();
    let next = v.run(&third, &p2).await;
    assert!(
        !matches!(next, VramVerdict::Fail(VramFailure::Busy { .. })),
        "{next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_over_the_limits_are_refused() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    // This prover's memory holds an H100's array, not an H200's.
    let url = serve(vram_http::router(
        Arc::new(SimProver::honest(sim, GpuModel::H100Sxm)),
        VramLimits::for_capacity(sim.capacity(GpuModel::H100Sxm)),
    ))
    .await;
    let p = HttpProver::new(&url).unwrap();
    let v = VramSim::network().verifier();
    let big = v.challenge(None, GpuModel::H200).unwrap();
    let e = p.fill(&big).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("more than this prover's memory holds"),
        "{e}"
    );
    let mut zero = v.challenge(None, GpuModel::H100Sxm).unwrap();
    zero.rounds = 0;
    assert!(
        p.fill(&zero)
            .await
            .unwrap_err()
            .to_string()
            .contains("rounds")
    );
    let mut deep = v.challenge(None, GpuModel::H100Sxm).unwrap();
    deep.geometry.degree = 1000;
    assert!(
        p.fill(&deep)
            .await
            .unwrap_err()
            .to_string()
            .contains("degree")
    );
}

struct OnlyVerifier(alloy_primitives::Address);

#[async_trait]
impl ChallengeGate for OnlyVerifier {
    async fn admit(&self, who: &Challenger) -> Result<(), String> {
        (who.account == self.0)
            .then_some(())
            .ok_or_else(|| format!("{:#x} is not a registered verifier", who.account))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_provider_fills_only_for_admitted_challengers() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    let verifier = PrivateKeySigner::random();
    let provider_key = PrivateKeySigner::random();
    let provider = spheron_core::AccountId(provider_key.address().0.0);
    let prover = SimProver::honest(sim, GpuModel::H100Sxm).signed(provider_key);
    let url = serve(vram_http::router_gated(
        Arc::new(prover),
        limits(),
        Arc::new(OnlyVerifier(verifier.address())),
    ))
    .await;
    let v = VramSim::network().verifier().requiring_signatures();
    let anon = HttpProver::new(&url).unwrap();
    let ch = v.challenge(Some(provider), GpuModel::H100Sxm).unwrap();
    assert!(
        anon.fill(&ch)
            .await
            .unwrap_err()
            .to_string()
            .contains("401")
    );
    let stranger = HttpProver::new(&url)
        .unwrap()
        .with_challenger(PrivateKeySigner::random(), None);
    assert!(
        stranger
            .fill(&ch)
            .await
            .unwrap_err()
            .to_string()
            .contains("403")
    );
    let admitted = HttpProver::new(&url)
        .unwrap()
        .with_challenger(verifier, None);
    let rtt = credit(&admitted).await;
    let v = v.with_rtt_credit(rtt);
    let ch = v.challenge(Some(provider), GpuModel::H100Sxm).unwrap();
    let verdict = v.run(&ch, &admitted).await;
    assert!(
        verdict.passed() || matches!(verdict, VramVerdict::Fail(VramFailure::RoundLate { .. })),
        "an admitted challenger gets a signed, checkable answer: {verdict:?}"
    );
}
