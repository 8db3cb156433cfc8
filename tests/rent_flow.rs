//! The whole rent flow on the embedded marketplace with real subprocesses and a simulated
//! clock: a workload that succeeds, one that exits non-zero, one stopped mid-lease.

use futures::StreamExt;
use spheron::prelude::*;
use spheron::{LogSource, SimClock};
use std::sync::Arc;
use std::time::Duration;

const USD: u128 = 1_000_000;

async fn market(clock: &SimClock) -> Marketplace {
    Marketplace::local()
        .clock(Arc::new(clock.clone()))
        .bid_window(Duration::ZERO)
        .seed(1)
        .tenant_funds(Amount(100 * USD))
        .build()
        .await
        .expect("marketplace")
}

fn h100_request() -> GpuRequest {
    GpuRequest::builder()
        .gpu("h100")
        .hours(2)
        .max_price_per_gpu_hour(Amount(3 * USD))
        .region("us-east")
        .build()
        .expect("request")
}

#[tokio::test]
async fn successful_workload_completes_and_logs_arrive_in_order() {
    let clock = SimClock::default();
    let m = market(&clock).await;
    let lease = m
        .rent(
            h100_request(),
            Workload::command(["sh", "-c", "echo one; echo two >&2; seq 1 200; echo three"]),
        )
        .await
        .expect("rent");
    assert_eq!(lease.state(), LeaseState::Active);
    let lines: Vec<(LogSource, String)> = lease
        .logs()
        .expect("logs")
        .map(|l| (l.source, l.line))
        .collect()
        .await;
    // stdout and stderr are separate pipes: order holds within each stream.
    let stdout: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| *s == LogSource::Stdout)
        .map(|(_, l)| l.as_str())
        .collect();
    let expected: Vec<String> = (1..=200).map(|i| i.to_string()).collect();
    assert_eq!(stdout[0], "one");
    assert_eq!(
        stdout[1..201],
        expected.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    assert_eq!(stdout[201], "three");
    assert!(
        lines
            .iter()
            .any(|(s, l)| *s == LogSource::Stderr && l == "two")
    );
    let r = lease.wait().await;
    assert_eq!(r.state, LeaseState::Closed(CloseReason::Completed));
    // The simulated clock never moved: nothing is billed, everything comes back.
    let s = r.settlement.expect("settled");
    assert_eq!((s.paid, s.refunded), (Amount(0), r.budget));
    assert_eq!(
        m.balance(m.tenant()).await.expect("balance").available,
        Amount(100 * USD)
    );
    assert!(m.ledger_totals().expect("ledger").is_balanced());
    // Stopping a closed lease is a typed error.
    assert!(matches!(lease.stop().await, Err(Error::LeaseClosed(_))));
}

#[tokio::test]
async fn failing_workload_closes_with_its_exit_code() {
    let clock = SimClock::default();
    let m = market(&clock).await;
    let lease = m
        .rent(
            h100_request(),
            Workload::command(["sh", "-c", "echo bad; exit 3"]),
        )
        .await
        .expect("rent");
    let r = lease.wait().await;
    assert_eq!(
        r.state,
        LeaseState::Closed(CloseReason::WorkloadFailed { exit_code: Some(3) })
    );
    // Not the provider's fault: its failed count stays as it was.
    let p = m.provider(r.provider).expect("provider");
    assert_eq!(p.stats.leases_failed, 3);
}

#[tokio::test]
async fn stopped_mid_lease_settles_pro_rata_with_exact_refund() {
    let clock = SimClock::default();
    let m = market(&clock).await;
    let lease = m
        .rent(h100_request(), Workload::command(["sleep", "30"]))
        .await
        .expect("rent");
    let price = lease.snapshot().price_per_gpu_hour;
    let provider = lease.snapshot().provider;
    let earned_before = m.balance(provider).await.expect("balance").available;
    clock.advance(Duration::from_secs(1800) + Duration::from_millis(700));
    assert_eq!(
        lease.report().await.expect("report").cost,
        Amount(price.0 / 2)
    );
    let r = lease.stop().await.expect("stop");
    assert_eq!(r.state, LeaseState::Closed(CloseReason::TenantStopped));
    let s = r.settlement.expect("settled");
    assert_eq!(s.seconds, 1800);
    assert_eq!(s.paid, Amount(price.0 * 1800 / 3600));
    assert_eq!(s.paid.0 + s.refunded.0, r.budget.0);
    assert_eq!(
        m.balance(provider).await.expect("balance").available.0 - earned_before.0,
        s.paid.0
    );
    assert_eq!(
        m.balance(m.tenant()).await.expect("balance").available,
        Amount(100 * USD - s.paid.0)
    );
    assert!(m.ledger_totals().expect("ledger").is_balanced());
    // The GPUs went back to the provider.
    let p = m.provider(provider).expect("provider");
    assert_eq!(p.inventory.free(r.model), 64);
}

#[tokio::test]
async fn lease_that_outlives_its_duration_expires() {
    let clock = SimClock::default();
    let m = market(&clock).await;
    let lease = m
        .rent(h100_request(), Workload::command(["sleep", "30"]))
        .await
        .expect("rent");
    clock.advance(Duration::from_secs(3 * 3600));
    let r = lease.wait().await;
    assert_eq!(r.state, LeaseState::Closed(CloseReason::Expired));
    let s = r.settlement.expect("settled");
    // Billed for the whole paid duration, capped by the lock.
    assert_eq!(s.paid.0, r.price_per_gpu_hour.0 * 2);
}

/// Ranks by price alone, so the test does not depend on the default matcher's weights.
struct CheapestFirst;

impl spheron::Matcher for CheapestFirst {
    fn rank(
        &self,
        order: &spheron::Order,
        candidates: &[spheron::Candidate],
    ) -> spheron::Result<spheron::Ranking> {
        let mut ranked: Vec<spheron::Ranked> = candidates
            .iter()
            .filter(|c| c.bid.price_per_gpu_hour <= order.request.max_price_per_gpu_hour)
            .map(|c| spheron::Ranked {
                candidate: c.clone(),
                score: 1.0 / c.bid.price_per_gpu_hour.0 as f64,
                breakdown: Vec::new(),
            })
            .collect();
        ranked.sort_by_key(|r| (r.candidate.bid.price_per_gpu_hour, r.candidate.bid.provider));
        Ok(spheron::Ranking {
            order: order.id,
            ranked,
            rejected: Vec::new(),
        })
    }
}

#[tokio::test]
async fn failover_penalises_the_cheater_and_takes_the_next_bid() {
    let clock = SimClock::default();
    let m = Marketplace::local()
        .clock(Arc::new(clock.clone()))
        .bid_window(Duration::ZERO)
        .matcher(Arc::new(CheapestFirst))
        .tenant_funds(Amount(100 * USD))
        .build()
        .await
        .expect("marketplace");
    // fra-bargain is the cheapest H100 seller in the standard fleet, and its prover cheats.
    let bargain = AccountId::from_label("fra-bargain");
    let request = GpuRequest::builder()
        .gpu("h100")
        .hours(1)
        .max_price_per_gpu_hour(Amount(3 * USD))
        .build()
        .expect("request");
    let lease = m
        .rent(request, Workload::command(["true"]))
        .await
        .expect("rent");
    let r = lease.wait().await;
    assert_ne!(r.provider, bargain);
    assert!(
        r.skipped.iter().any(|s| s.provider == bargain
            && matches!(s.reason, spheron::RejectReason::ChallengeFailed(_)))
    );
    assert!(r.progress.iter().any(|e| matches!(
        &e.step,
        spheron::Step::ChallengeFailed { provider, .. } if *provider == bargain
    )));
    let cheater = m.provider(bargain).expect("provider");
    assert_eq!(cheater.stats.challenges_failed, 1);
    assert_eq!(cheater.tier, spheron::TrustTier(0));
    let staked = m.balance(bargain).await.expect("balance").staked;
    assert_eq!(staked, Amount(250 * USD)); // wrong products are fraud: half the stake
    // One penalty path: the verifier earns the bounty share (50%), the treasury the rest.
    assert_eq!(
        m.balance(m.verifier_account())
            .await
            .expect("balance")
            .available,
        Amount(125 * USD)
    );
    // The epoch processor records the violation the flow applied, not a relabelled one.
    let failed = r
        .progress
        .iter()
        .find_map(|e| match &e.step {
            spheron::Step::ChallengeFailed { penalty, .. } => penalty.clone(),
            _ => None,
        })
        .expect("the flow's penalty record");
    assert_eq!(failed.violation, spheron::Violation::Fraud);
    assert_eq!(failed.slashed, Amount(250 * USD));
    assert_eq!(failed.bounty, Amount(125 * USD));
    assert!(m.ledger_totals().expect("ledger").is_balanced());
}

#[tokio::test]
async fn bad_requests_get_typed_errors_and_lock_nothing() {
    let clock = SimClock::default();
    let m = market(&clock).await;
    // Nobody sells 16 H100s on one node.
    let big = GpuRequest::builder()
        .gpu("h100")
        .count(16)
        .hours(1)
        .max_price_per_gpu_hour(Amount(3 * USD))
        .build()
        .expect("request");
    match m.rent(big, Workload::command(["true"])).await {
        Err(Error::NoMatch { rejected, .. }) => {
            // Every provider is explained: H100 sellers lack an 8+8 node, others sell other GPUs.
            assert_eq!(rejected.len(), 12);
            assert!(rejected.iter().any(|r| matches!(
                r.reason,
                spheron::RejectReason::InsufficientGpus {
                    free: 8,
                    wanted: 16
                }
            )));
        }
        other => panic!("expected NoMatch, got {other:?}"),
    }
    // More than the tenant has.
    let pricey = GpuRequest::builder()
        .gpu("h100")
        .count(8)
        .hours(10)
        .max_price_per_gpu_hour(Amount(3 * USD))
        .build()
        .expect("request");
    assert!(matches!(
        m.rent(pricey, Workload::command(["true"])).await,
        Err(Error::InsufficientFunds { .. })
    ));
    // A program that does not exist.
    match m
        .rent(
            h100_request(),
            Workload::command(["/nonexistent/spheron-test"]),
        )
        .await
    {
        Err(Error::Launch(msg)) => assert!(msg.contains("nonexistent")),
        other => panic!("expected a launch error, got {other:?}"),
    }
    let b = m.balance(m.tenant()).await.expect("balance");
    assert_eq!((b.available, b.locked), (Amount(100 * USD), Amount(0)));
    assert!(m.ledger_totals().expect("ledger").is_balanced());
}

#[tokio::test]
async fn embedded_endpoints_are_the_workloads_loopback_port() {
    use std::io::{Read, Write};
    let clock = SimClock::default();
    let m = market(&clock).await;
    let server = Workload::command([
        "sh",
        "-c",
        "printf embedded > hello.txt; exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
    ])
    .port(8000);
    let lease = m.rent(h100_request(), server).await.expect("rent");
    let e = lease.endpoint(8000).await.expect("endpoint");
    assert!(e.url.starts_with("http://127.0.0.1:"), "{}", e.url);
    assert!(e.token.is_none() && e.headers().is_empty());
    let err = lease.endpoint(8001).await.unwrap_err();
    assert!(
        matches!(err, spheron::Error::InvalidField { field: "ports", .. }),
        "{err}"
    );
    let addr = e
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let body = tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                write!(s, "GET /hello.txt HTTP/1.0\r\n\r\n").unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                return out;
            }
            assert!(std::time::Instant::now() < until, "never listened");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    assert!(body.ends_with("embedded"), "{body}");
    lease.stop().await.expect("stop");
    let err = lease.endpoint(8000).await.unwrap_err();
    assert!(matches!(err, spheron::Error::LeaseClosed(_)), "{err}");
}
