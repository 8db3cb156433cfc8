//! Cost control on the embedded marketplace with real subprocesses: the idle detector stops
//! an idle lease and the tenant pays only until the stop; a chatty lease is not stopped; a
//! lease's spend cap ends it without being exceeded; a marketplace's cap refuses the rent
//! that would go over it, before anything is published.

use futures::StreamExt;
use spheron::money::accrued_cost;
use spheron::prelude::*;
use spheron::{SimClock, Step};
use std::sync::Arc;
use std::time::Duration;

const USD: u128 = 1_000_000;

/// One test at a time: the simulated provers' challenges are paced in real time, and four
/// rents at once on a busy machine can make the only us-east H100 answer late.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A marketplace on the system clock (the idle detector watches real output).
async fn real_time_market() -> Marketplace {
    Marketplace::local()
        .bid_window(Duration::ZERO)
        .seed(1)
        .tenant_funds(Amount(100 * USD))
        .build()
        .await
        .expect("marketplace")
}

fn request() -> spheron::GpuRequestBuilder {
    GpuRequest::builder()
        .gpu("h100")
        .hours(2)
        .max_price_per_gpu_hour(Amount(3 * USD))
        .region("us-east")
}

/// Waits for the lease to close, failing the test instead of hanging.
async fn closed(lease: &LeaseHandle) -> LeaseReport {
    tokio::time::timeout(Duration::from_secs(60), lease.wait())
        .await
        .expect("the lease closes within a minute")
}

#[tokio::test]
async fn the_idle_detector_stops_an_idle_lease_and_the_tenant_pays_only_until_then() {
    let _serial = SERIAL.lock().await;
    let m = real_time_market().await;
    let lease = m
        .rent(
            request()
                .idle_timeout(Duration::from_secs(2))
                .build()
                .expect("request"),
            // Says one thing, then nothing for far longer than the timeout.
            Workload::command(["sh", "-c", "echo starting; exec sleep 30"]),
        )
        .await
        .expect("rent");
    let r = closed(&lease).await;
    let LeaseState::Closed(CloseReason::Idle { idle_secs }) = r.state.clone() else {
        panic!("expected an idle close, got {}", r.state);
    };
    assert!(idle_secs >= 2, "idle for {idle_secs} s");
    let s = r.settlement.expect("settled");
    // Billed from the start to the stop: at least the timeout, far less than the 30 s sleep
    // (generous bounds; the poll interval is half a second).
    assert!(
        (2..=15).contains(&s.seconds),
        "billed {} s for an idle timeout of 2 s",
        s.seconds
    );
    let ended = r.ended_at.expect("ended");
    assert_eq!(s.seconds, ended.secs_since(r.started_at));
    assert_eq!(
        s.paid,
        accrued_cost(r.price_per_gpu_hour, r.gpus, s.seconds).expect("cost")
    );
    assert_eq!(s.paid.0 + s.refunded.0, r.budget.0);
    assert!(
        s.paid.0 * 100 < r.budget.0,
        "paid {} of {}",
        s.paid,
        r.budget
    );
    assert!(m.ledger_totals().expect("ledger").is_balanced());
}

#[tokio::test]
async fn a_chatty_lease_is_not_stopped_as_idle() {
    let _serial = SERIAL.lock().await;
    let m = real_time_market().await;
    let lease = m
        .rent(
            request()
                .idle_timeout(Duration::from_secs(2))
                .build()
                .expect("request"),
            // Quiet for 1 s at a time, 5 s in all: never quiet for the 2 s timeout.
            Workload::command([
                "sh",
                "-c",
                "for i in 1 2 3 4 5; do echo tick $i; sleep 1; done",
            ]),
        )
        .await
        .expect("rent");
    let r = closed(&lease).await;
    assert_eq!(r.state, LeaseState::Closed(CloseReason::Completed));
    let ticks = lease
        .logs()
        .expect("logs")
        .filter(|l| futures::future::ready(l.line.starts_with("tick")))
        .count()
        .await;
    assert_eq!(ticks, 5);
}

#[tokio::test]
async fn a_lease_spend_cap_ends_the_lease_without_being_exceeded() {
    let _serial = SERIAL.lock().await;
    let clock = SimClock::default();
    let m = Marketplace::local()
        .clock(Arc::new(clock.clone()))
        .bid_window(Duration::ZERO)
        .seed(1)
        .tenant_funds(Amount(100 * USD))
        .build()
        .await
        .expect("marketplace");
    // 0.5 USD buys 10 minutes at the 3 USD ceiling, more at a lower bid.
    let cap = Amount(USD / 2);
    let lease = m
        .rent(
            request().max_spend(cap).build().expect("request"),
            Workload::command(["sleep", "30"]),
        )
        .await
        .expect("rent");
    // Only the cap is locked, not the 6 USD budget.
    assert_eq!(lease.snapshot().budget, cap);
    clock.advance(Duration::from_secs(3600));
    let r = closed(&lease).await;
    assert_eq!(r.state, LeaseState::Closed(CloseReason::SpendCapReached));
    let s = r.settlement.expect("settled");
    assert!(s.paid <= cap, "paid {} over the cap {cap}", s.paid);
    // It ran until the last second the cap pays for at the lease's price.
    let secs = spheron::cost::seconds_within(cap, r.price_per_gpu_hour, r.gpus);
    assert_eq!(s.seconds, secs);
    assert!(secs >= 600, "{secs} s");
    assert!(
        accrued_cost(r.price_per_gpu_hour, r.gpus, secs + 1).expect("cost") > cap,
        "one more second would cross the cap"
    );
    assert_eq!(s.paid.0 + s.refunded.0, cap.0);
    assert!(m.ledger_totals().expect("ledger").is_balanced());
}

#[tokio::test]
async fn a_marketplace_spend_cap_refuses_the_rent_that_would_exceed_it() {
    let _serial = SERIAL.lock().await;
    let clock = SimClock::default();
    let m = Marketplace::local()
        .clock(Arc::new(clock.clone()))
        .bid_window(Duration::ZERO)
        .seed(1)
        .tenant_funds(Amount(100 * USD))
        .spend_cap(Amount(10 * USD))
        .build()
        .await
        .expect("marketplace");
    // Each rent locks 2 h x 3 USD = 6 USD.
    let first = m
        .rent(
            request().build().expect("request"),
            Workload::command(["sleep", "30"]),
        )
        .await
        .expect("first rent");
    let mut events = m.events();
    let refused = m
        .rent(
            request().build().expect("request"),
            Workload::command(["sleep", "30"]),
        )
        .await;
    match refused {
        Err(Error::SpendCapExceeded {
            cap,
            committed,
            requested,
        }) => assert_eq!(
            (cap, committed, requested),
            (Amount(10 * USD), Amount(6 * USD), Amount(6 * USD))
        ),
        other => panic!("expected SpendCapExceeded, got {other:?}"),
    }
    // Nothing was published or locked for the refused rent.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.next())
            .await
            .is_err(),
        "the refused rent emitted progress"
    );
    assert_eq!(
        m.balance(m.tenant()).await.expect("balance").locked,
        Amount(6 * USD)
    );
    // Half an hour later the first lease stops: what it paid stays committed, its refund
    // returns to the allowance, and the next rent fits.
    clock.advance(Duration::from_secs(1800));
    let r = first.stop().await.expect("stop");
    let paid = r.settlement.expect("settled").paid;
    assert_eq!(
        paid,
        accrued_cost(r.price_per_gpu_hour, 1, 1800).expect("cost")
    );
    let limit = m.spend_limit().expect("a cap is set");
    assert_eq!(limit.committed(), paid);
    let third = m
        .rent(
            request().build().expect("request"),
            Workload::command(["sleep", "30"]),
        )
        .await
        .expect("third rent fits after the refund");
    assert_eq!(limit.committed().0, paid.0 + 6 * USD);
    let mut later = m.events();
    third.stop().await.expect("stop");
    assert!(matches!(
        later.next().await.map(|e| e.step),
        Some(Step::Settled { .. })
    ));
}
