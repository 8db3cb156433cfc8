#![cfg(feature = "http")]
//! The HTTP transport over loopback: a provider endpoint (axum) challenged by the verifier
//! client (reqwest) with real timing.

use spheron_core::proof::{FailReason, Verdict};
use spheron_core::{GpuModel, ProviderId};
use spheron_gpu::http::{COMMIT_PATH, HttpProver, challenge, serve};
use spheron_gpu::{Fault, Simulation};
use std::sync::Arc;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn provider(actual: GpuModel, fault: Fault) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let prover = Arc::new(Simulation::standard().prover(actual, None, fault));
    tokio::spawn(serve(listener, prover));
    url
}

async fn verdict(url: &str, claimed: GpuModel, seed: u8) -> (Verdict, u64) {
    let sim = Simulation::standard();
    let remote = HttpProver::new(url).expect("url");
    let r = challenge(
        &sim.try_verifier().expect("valid simulation"),
        &remote,
        ProviderId::from_label("remote"),
        claimed,
        [[seed; 32], [seed ^ 0xff; 32]],
    )
    .await;
    (r.verdict, r.timing.rtt_us)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_remote_provider_passes_with_measured_rtt() {
    let _g = SERIAL.lock().await;
    let url = provider(GpuModel::H100Sxm, Fault::None).await;
    for seed in 0..3 {
        let (v, rtt) = verdict(&url, GpuModel::H100Sxm, seed).await;
        assert!(v.passed(), "{v}");
        assert!(rtt > 0, "round trip not measured");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_cheats_fail() {
    let _g = SERIAL.lock().await;
    let weak = provider(GpuModel::A10, Fault::None).await;
    let (v, _) = verdict(&weak, GpuModel::H100Sxm, 1).await;
    assert!(
        matches!(
            v,
            Verdict::Fail(FailReason::TooSlow { .. } | FailReason::Late { .. })
        ),
        "{v}"
    );
    let broken = provider(GpuModel::H100Sxm, Fault::CorruptProducts).await;
    let (v, _) = verdict(&broken, GpuModel::H100Sxm, 2).await;
    assert!(matches!(v, Verdict::Fail(FailReason::BadRow(_))), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_garbled_endpoints_fail_typed() {
    let _g = SERIAL.lock().await;
    // Nothing listens on a port we bound and released.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", l.local_addr().expect("addr"));
    drop(l);
    let (v, _) = verdict(&dead, GpuModel::H100Sxm, 3).await;
    assert!(matches!(v, Verdict::Fail(FailReason::Malformed(_))), "{v}");

    assert!(HttpProver::new("ftp://example").is_err());

    // A garbled challenge body is refused by the endpoint with a client error.
    let url = provider(GpuModel::L4, Fault::None).await;
    let resp = reqwest::Client::new()
        .post(format!("{url}{COMMIT_PATH}"))
        .header("content-type", "application/json")
        .body("{\"version\": 2, \"n\": \"many\"}")
        .send()
        .await
        .expect("send");
    assert!(resp.status().is_client_error(), "{}", resp.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_answers_are_refused_unread() {
    let _g = SERIAL.lock().await;
    let url = provider(GpuModel::H100Sxm, Fault::None).await;
    let sim = Simulation::standard();
    // A commitment is a few hundred bytes of JSON: a 64-byte cap refuses it.
    let tiny = HttpProver::new(&url).expect("url").with_max_body(64);
    let r = challenge(
        &sim.try_verifier().expect("valid simulation"),
        &tiny,
        ProviderId::from_label("remote"),
        GpuModel::H100Sxm,
        [[9; 32], [10; 32]],
    )
    .await;
    match r.verdict {
        Verdict::Fail(FailReason::Malformed(m)) => {
            assert!(m.contains("larger than 64 bytes"), "{m}")
        }
        other => panic!("expected a malformed verdict, got {other}"),
    }
}
