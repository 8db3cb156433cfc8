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

// ------------------------------------------------ binding, redirects, capacity ----

use alloy_signer_local::PrivateKeySigner;
use spheron_gpu::binding::provider_id;
use spheron_gpu::http::{BusyReply, router};
use spheron_gpu::{Capacity, SignedProver};
use std::time::Duration;

async fn signed_provider(
    actual: GpuModel,
    capacity: Capacity,
) -> (String, ProviderId, Arc<SignedProver>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let key = PrivateKeySigner::random();
    let inner = Simulation::network()
        .prover(actual, None, Fault::None)
        .with_capacity(capacity);
    let prover = Arc::new(SignedProver::new(Arc::new(inner), key.clone()));
    tokio::spawn(serve(listener, prover.clone()));
    (url, provider_id(&key), prover)
}

async fn network_verdict(url: &str, id: ProviderId, claimed: GpuModel, seed: u8) -> Verdict {
    let remote = HttpProver::new(url).expect("url");
    challenge(
        &Simulation::network()
            .try_verifier()
            .expect("valid simulation"),
        &remote,
        id,
        claimed,
        [[seed; 32], [seed ^ 0xff; 32]],
    )
    .await
    .verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_verifiers_challenging_one_signed_provider_at_once_both_pass() {
    let _g = SERIAL.lock().await;
    let (url, id, _) = signed_provider(GpuModel::H100Sxm, Capacity::default()).await;
    let rounds = 4;
    let mut passed = 0;
    for t in 0..rounds {
        let (a, b) = tokio::join!(
            network_verdict(&url, id, GpuModel::H100Sxm, 2 * t),
            network_verdict(&url, id, GpuModel::H100Sxm, 2 * t + 1),
        );
        assert!(a.passed(), "{a}");
        assert!(b.passed(), "{b}");
        passed += 2;
    }
    println!(
        "two verifiers at once over HTTP (signed): {passed}/{} passed",
        2 * rounds
    );
    // Another provider's id: the signature does not match.
    let other = ProviderId::from_label("someone else");
    let v = network_verdict(&url, other, GpuModel::H100Sxm, 99).await;
    assert!(matches!(v, Verdict::Fail(FailReason::Malformed(_))), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_prover_answers_a_typed_busy_reply_and_is_retried() {
    let _g = SERIAL.lock().await;
    // One session at a time (a GPU prover's shape): a second challenge meets a busy reply.
    let capacity = Capacity {
        sessions: 1,
        commits: 1,
        retry_after: Duration::from_millis(1000),
        ..Capacity::default()
    };
    let (url, id, prover) = signed_provider(GpuModel::L4, capacity).await;
    // Fill the only session with a commitment that is never opened ...
    let sim = Simulation::network();
    let v = sim.try_verifier().expect("valid simulation");
    let mut held = spheron_core::proof::ChallengeVerifier::issue(&v, GpuModel::L4, [1; 32]);
    held.provider = Some(id);
    spheron_core::proof::ChallengeProver::commit(prover.as_ref(), &held)
        .await
        .expect("first commit");
    // ... so the next commit gets 503 with a typed body, not a failure.
    let mut next = spheron_core::proof::ChallengeVerifier::issue(&v, GpuModel::L4, [2; 32]);
    next.provider = Some(id);
    let resp = reqwest::Client::new()
        .post(format!("{url}{COMMIT_PATH}"))
        .json(&next)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let busy: BusyReply = resp.json().await.expect("busy body");
    assert_eq!(busy.retry_after_ms, 1000);
    // Through the client, every attempt meets the held session: a typed Busy verdict.
    let v = network_verdict(&url, id, GpuModel::L4, 3).await;
    assert!(matches!(v, Verdict::Fail(FailReason::Busy { .. })), "{v}");
    // Two challenges at once to the one-session prover: the second is retried after the
    // first is opened, and both pass.
    let (url, id, _) = signed_provider(GpuModel::L4, capacity).await;
    let (a, b) = tokio::join!(
        network_verdict(&url, id, GpuModel::L4, 4),
        network_verdict(&url, id, GpuModel::L4, 5),
    );
    assert!(a.passed() && b.passed(), "{a} / {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let _g = SERIAL.lock().await;
    let (target, id, _) = signed_provider(GpuModel::H100Sxm, Capacity::default()).await;
    // The target answers directly ...
    assert!(
        network_verdict(&target, id, GpuModel::H100Sxm, 1)
            .await
            .passed()
    );
    // ... but a front that redirects every request to it (307 keeps the method and body)
    // is a failed answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let front = format!("http://{}", listener.local_addr().expect("addr"));
    let to = target.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let to = to.clone();
        async move { axum::response::Redirect::temporary(&format!("{to}{}", uri.path())) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let trials = 5;
    let mut caught = 0;
    for t in 0..trials {
        match network_verdict(&front, id, GpuModel::H100Sxm, 10 + t).await {
            Verdict::Fail(FailReason::Malformed(m)) if m.contains("redirect") => caught += 1,
            other => panic!("redirect: {other}"),
        }
    }
    println!("redirect to an honest provider: detection {caught}/{trials}");
    // The plain router is still usable on its own.
    let _ = router(Arc::new(spheron_gpu::CpuProver::new(None)));
}

/// Admits a fixed set of challengers.
struct Allow(Vec<alloy_primitives::Address>);

#[async_trait::async_trait]
impl spheron_gpu::http::ChallengeGate for Allow {
    async fn admit(&self, who: &spheron_gpu::http::Challenger) -> Result<(), String> {
        if self.0.contains(&who.account) {
            Ok(())
        } else {
            Err(format!("{:#x} is not admitted", who.account))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_provider_commits_only_for_admitted_signed_challengers() {
    let _g = SERIAL.lock().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let key = PrivateKeySigner::random();
    let id = provider_id(&key);
    let admitted = PrivateKeySigner::random();
    let stranger = PrivateKeySigner::random();
    let prover = Arc::new(SignedProver::new(
        Arc::new(Simulation::network().prover(GpuModel::L4, None, Fault::None)),
        key,
    ));
    let router = spheron_gpu::http::router_gated(
        prover,
        spheron_gpu::http::ServerLimits::default(),
        Arc::new(Allow(vec![admitted.address()])),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    let verifier = Simulation::network()
        .try_verifier()
        .expect("valid simulation");
    let run = async |remote: HttpProver, seed: u8| {
        challenge(
            &verifier,
            &remote,
            id,
            GpuModel::L4,
            [[seed; 32], [!seed; 32]],
        )
        .await
        .verdict
    };
    // An admitted, signed challenger is answered.
    let ok = run(
        HttpProver::new(&url)
            .expect("url")
            .with_challenger(admitted.clone(), None),
        1,
    )
    .await;
    assert!(ok.passed(), "{ok}");
    // Unsigned and signed-by-a-stranger challenges get no commitment.
    for (remote, what) in [
        (HttpProver::new(&url).expect("url"), "unsigned"),
        (
            HttpProver::new(&url)
                .expect("url")
                .with_challenger(stranger.clone(), None),
            "stranger",
        ),
    ] {
        let v = run(remote, 2).await;
        assert!(
            matches!(v, Verdict::Fail(FailReason::Malformed(_))),
            "{what}: {v}"
        );
    }
    // The raw answers: 401 without or with a bad signature, 403 for a stranger.
    let sim_v = Simulation::network().try_verifier().expect("valid");
    let mut ch = spheron_core::proof::ChallengeVerifier::issue(&sim_v, GpuModel::L4, [3; 32]);
    ch.provider = Some(id);
    let body = serde_json::to_vec(&ch).expect("json");
    let post = |headers: Vec<(&'static str, String)>| {
        let mut r = reqwest::Client::new()
            .post(format!("{url}{COMMIT_PATH}"))
            .header("content-type", "application/json")
            .body(body.clone());
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    let signed = |k: &PrivateKeySigner, b: &[u8], expiry: u64| {
        use alloy_signer::SignerSync;
        let sig = k
            .sign_message_sync(&spheron_gpu::http::challenger_message(b, expiry, None))
            .expect("sign");
        vec![
            (
                spheron_gpu::http::CHALLENGER_HEADER,
                format!("{:#x}", k.address()),
            ),
            (spheron_gpu::http::EXPIRY_HEADER, expiry.to_string()),
            (
                spheron_gpu::http::SIGNATURE_HEADER,
                format!("0x{}", alloy_primitives::hex::encode(sig.as_bytes())),
            ),
        ]
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert_eq!(post(vec![]).await.expect("send").status(), 401);
    assert_eq!(
        post(signed(&stranger, &body, now + 30))
            .await
            .expect("send")
            .status(),
        403
    );
    // A signature over another body (a challenge for another provider) does not recover.
    assert_eq!(
        post(signed(&admitted, b"another challenge", now + 30))
            .await
            .expect("send")
            .status(),
        401
    );
    // Expired, and valid for too long.
    assert_eq!(
        post(signed(&admitted, &body, now - 5))
            .await
            .expect("send")
            .status(),
        401
    );
    assert_eq!(
        post(signed(&admitted, &body, now + 3_600))
            .await
            .expect("send")
            .status(),
        401
    );
    assert_eq!(
        post(signed(&admitted, &body, now + 30))
            .await
            .expect("send")
            .status(),
        200
    );
}
