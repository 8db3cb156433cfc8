//! The network end to end, on real processes: one `spheron devnet` (anvil, three provider
//! nodes and the operator, each its own OS process with its own key), rented from through the
//! CLI and through `Marketplace::connect`, a lease found and stopped by a fresh process, the
//! gateway attacked with real leases on the real chain, and a provider killed with SIGKILL in
//! the middle of a lease and restarted from its database.
//!
//! One devnet serves every scenario (they run in order in one test) to keep CI time down.

#![allow(clippy::unwrap_used, missing_docs)]

use futures::StreamExt;
use spheron::chain::alloy::primitives::{Address, B256};
use spheron::prelude::*;
use spheron::{NetworkMarket, TenantConfig};
use spheron_node::gateway_client::GatewayClient;
use spheron_node::network::{NetworkFile, parse_key};
use spheron_node::{ErrorCode, WorkState};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{anvil_available, cli, start_devnet, text};

/// Short verification epochs, so the verifiers' tallies land while the test runs.
const SHORT_EPOCHS: &[&str] = &["--epoch-secs", "10"];

/// One devnet at a time: two at once on a small machine make the simulated provers late.
static ONE_DEVNET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn request(max_price: u128) -> GpuRequest {
    GpuRequest::builder()
        .gpu("h100")
        .count(1)
        .hours(1)
        .max_price_per_gpu_hour(Amount(max_price))
        .build()
        .unwrap()
}

async fn connect(net: &Path, key: &str) -> NetworkMarket {
    let config = TenantConfig {
        gateway_failures: 4,
        ..TenantConfig::default()
    };
    Marketplace::connect_with(net, key, config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_end_to_end() {
    if !anvil_available() {
        return;
    }
    let _one = ONE_DEVNET.lock().await;
    // The tenant's warnings (retried closes, failovers) show in the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("spheron_node=warn"))
        .with_test_writer()
        .try_init();
    let mut devnet = start_devnet(3, SHORT_EPOCHS);
    let net_path = devnet.network();
    let net = NetworkFile::load(&net_path).unwrap();
    let tenant = net.tenants[0].key.clone();
    let other_tenant = net.tenants[1].key.clone();
    let providers: Vec<_> = net
        .parties
        .iter()
        .filter(|p| p.role == "provider")
        .cloned()
        .collect();
    assert_eq!(providers.len(), 3);

    // The tenant side never sees a provider's key: the network file names parties by address
    // only, and each provider's key lives in its own file.
    let net_text = std::fs::read_to_string(&net_path).unwrap();
    for entry in std::fs::read_dir(devnet.dir.path().join("keys")).unwrap() {
        let key = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(
            !net_text.contains(key.trim().trim_start_matches("0x")),
            "a party's key leaked into network.json"
        );
    }

    // 0. Quote through the CLI: every provider's gateway answers with its bid strategy's
    //    price (the devnet lists 2.20, 2.40 and 2.80 for its first three H100 providers);
    //    nothing is published.
    let out = cli(
        &net_path,
        &tenant,
        &[
            "quote",
            "--gpu",
            "h100",
            "--hours",
            "2",
            "--max-price",
            "5",
            "--json",
        ],
    );
    assert!(out.status.success(), "quote failed: {}", text(&out.stderr));
    let q: serde_json::Value = serde_json::from_slice(&out.stdout).expect("quote JSON");
    let prices: Vec<&str> = q["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["price_per_gpu_hour"].as_str().unwrap())
        .collect();
    assert_eq!(prices, ["2200000", "2400000", "2800000"], "{q}");
    assert_eq!(
        q["quotes"][0]["cost"], "4400000",
        "2 hours of 1 GPU at 2.20"
    );
    let out = cli(
        &net_path,
        &tenant,
        &[
            "quote",
            "--gpu",
            "h100",
            "--max-price",
            "2.30",
            "--region",
            "eu-central",
        ],
    );
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("no provider quotes this request"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("would not bid"),
        "the provider over the ceiling says why: {}",
        text(&out.stderr)
    );

    // 1. Rent through the CLI: the workload runs on the provider's side and its output comes
    //    back through the gateway; the CLI exits with the workload's status.
    let out = cli(
        &net_path,
        &tenant,
        &[
            "rent",
            "--gpu",
            "h100",
            "--hours",
            "1",
            "--max-price",
            "5",
            "--json",
            "--",
            "sh",
            "-c",
            "echo ran-on-$SPHERON_PROVIDER",
        ],
    );
    let stdout = text(&out.stdout);
    eprintln!("rent stderr:\n{}", text(&out.stderr));
    assert!(out.status.success(), "rent failed: {stdout}");
    let ran_on = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ran-on-"))
        .expect("the workload's line came through the gateway")
        .to_lowercase();
    assert!(
        providers
            .iter()
            .any(|p| p.address.to_string().to_lowercase() == ran_on),
        "ran on {ran_on}, not one of the providers"
    );
    let report: LeaseReport =
        serde_json::from_str(stdout.lines().last().unwrap()).expect("the --json report");
    let s = report.settlement.expect("settled");
    assert_eq!(
        s.paid.0 + s.refunded.0,
        report.budget.0,
        "cost + refund = lock"
    );
    assert_eq!(report.state, LeaseState::Closed(CloseReason::Completed));

    // 2. Rent through Marketplace::connect; check the settlement against the chain.
    let market = connect(&net_path, &tenant).await;
    let (before, _) = market.balance().await.unwrap();
    let lease = market
        .rent(
            request(5_000_000),
            Workload::command(["sh", "-c", "echo from-connect; exit 3"]),
        )
        .await
        .unwrap();
    let lines: Vec<String> = lease.logs().unwrap().map(|l| l.line).collect().await;
    assert!(lines.iter().any(|l| l == "from-connect"), "{lines:?}");
    let report = lease.wait().await;
    assert_eq!(
        report.state,
        LeaseState::Closed(CloseReason::WorkloadFailed { exit_code: Some(3) })
    );
    assert!(
        !report.choice.breakdown.is_empty(),
        "the match is explained"
    );
    assert!(report.proof.verdict.passed());
    let s = report.settlement.unwrap();
    assert_eq!(s.paid.0 + s.refunded.0, report.budget.0);
    let on_chain = market.settlement(report.lease.0).await.unwrap().unwrap();
    assert_eq!(on_chain, s);
    let (after, _) = market.balance().await.unwrap();
    assert_eq!(
        after.0,
        before.0 - s.paid.0,
        "the tenant paid exactly the cost"
    );

    // 2b. A rent dropped half-way unwinds: its order is cancelled and the lock refunded.
    let (before, _) = market.balance().await.unwrap();
    let mut events = market.events();
    let task = tokio::spawn({
        let m = market.clone();
        async move {
            m.rent(request(5_000_000), Workload::command(["sleep", "300"]))
                .await
        }
    });
    while let Some(e) = events.next().await {
        if matches!(e.step, Step::Published { .. }) {
            break;
        }
    }
    task.abort();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (available, locked) = market.balance().await.unwrap();
        if locked.0 == 0 {
            assert_eq!(available, before, "the whole lock came back");
            break;
        }
        assert!(
            Instant::now() < until,
            "the dropped rent's lock was never released"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // 2c. A launch that fails on the provider fails over to the next bid, up to the attempt
    //     limit; the tenant pays only the seconds each failed lease was open.
    let err = market
        .rent(
            request(5_000_000),
            Workload::command(["/nonexistent/spheron-test-program"]),
        )
        .await
        .unwrap_err();
    let spheron_core::Error::NoMatch { rejected, .. } = err else {
        panic!("expected NoMatch, got {err}");
    };
    let launch_failures = rejected
        .iter()
        .filter(|r| r.reason.to_string().contains("launch failed"))
        .count();
    // On a loaded machine a paced simulated prover can miss its deadline: that attempt
    // fails over too, as a failed challenge instead of a failed launch.
    let challenge_failures = rejected
        .iter()
        .filter(|r| matches!(r.reason, spheron_core::RejectReason::ChallengeFailed(_)))
        .count();
    assert!(launch_failures >= 1, "{rejected:?}");
    assert_eq!(launch_failures + challenge_failures, 3, "{rejected:?}");
    // Each failed lease is closed by the tenant and by its provider, whichever lands first.
    let until = Instant::now() + Duration::from_secs(30);
    let (available, locked) = loop {
        let (available, locked) = market.balance().await.unwrap();
        if locked.0 == 0 {
            break (available, locked);
        }
        assert!(
            Instant::now() < until,
            "a failed lease kept its lock: {locked:?} {:?}",
            market.leases().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(locked.0, 0);
    assert!(
        before.0 - available.0 < 5_000,
        "paid only seconds: {}",
        before.0 - available.0
    );

    // 2d. Cost control. The idle detector: a workload that goes quiet is stopped by the
    //     tenant after its idle timeout (from the activity the gateway reports: log output
    //     only, the devnet's GPUs are simulated), and the chain bills only until the stop.
    let idle_request = GpuRequest::builder()
        .gpu("h100")
        .hours(1)
        .max_price_per_gpu_hour(Amount(5_000_000))
        .idle_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let lease = market
        .rent(
            idle_request,
            Workload::command(["sh", "-c", "echo working; exec sleep 300"]),
        )
        .await
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(90), lease.wait())
        .await
        .expect("the idle lease is stopped");
    let LeaseState::Closed(CloseReason::Idle { idle_secs }) = report.state.clone() else {
        panic!("expected an idle close, got {}", report.state);
    };
    assert!(idle_secs >= 3, "idle for {idle_secs} s");
    let s = report.settlement.unwrap();
    // Generous bounds: the chain's seconds from start to the close transaction.
    assert!((3..=40).contains(&s.seconds), "billed {} s", s.seconds);
    assert_eq!(
        s.paid,
        spheron::money::accrued_cost(report.price_per_gpu_hour, report.gpus, s.seconds).unwrap(),
        "price x elapsed until the stop"
    );
    assert_eq!(s.paid.0 + s.refunded.0, report.budget.0);
    assert!(
        s.paid.0 * 50 < report.budget.0,
        "paid {} of {}",
        s.paid,
        report.budget
    );
    assert_eq!(market.settlement(report.lease.0).await.unwrap(), Some(s));

    //     A lease's spend cap, through the CLI: 0.011111 buys 8 s at the 5-per-hour ceiling,
    //     so the order asks for 8 s, the chain locks at most the cap, and the lease ends as
    //     `spend cap reached` with the cap never exceeded.
    let cap = 11_111u128;
    let out = cli(
        &net_path,
        &tenant,
        &[
            "rent",
            "--gpu",
            "h100",
            "--hours",
            "1",
            "--max-price",
            "5",
            "--max-spend",
            "0.011111",
            "--json",
            "--",
            "sleep",
            "300",
        ],
    );
    let stdout = text(&out.stdout);
    eprintln!("capped rent stderr:\n{}", text(&out.stderr));
    let report: LeaseReport =
        serde_json::from_str(stdout.lines().last().unwrap()).expect("the --json report");
    assert_eq!(
        report.state,
        LeaseState::Closed(CloseReason::SpendCapReached)
    );
    assert!(
        report.budget.0 <= cap,
        "locked {} over the cap",
        report.budget
    );
    let s = report.settlement.expect("settled");
    assert!(s.paid.0 <= cap, "paid {} over the cap {cap}", s.paid);
    assert!(s.seconds <= 8, "billed {} s", s.seconds);
    assert_eq!(s.paid.0 + s.refunded.0, report.budget.0);

    // 3. A fresh process finds and stops a lease that this process started.
    let lease = market
        .rent(request(5_000_000), Workload::command(["sleep", "300"]))
        .await
        .unwrap();
    let id = lease.id().0;
    let out = cli(&net_path, &tenant, &["lease", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = list
        .iter()
        .find(|l| l["id"] == id)
        .expect("the lease is listed from the chain");
    assert_eq!(row["state"], "leased");

    // 4. The gateway, attacked with this real lease on the real chain.
    let matched = report_provider(&market, id).await;
    let endpoint = providers
        .iter()
        .find(|p| p.address == matched)
        .unwrap()
        .endpoint
        .clone();
    let pin = cert_hash(&market, matched).await;
    assert_ne!(
        pin,
        B256::ZERO,
        "the devnet serves HTTPS with a registered certificate"
    );
    let stranger = GatewayClient::new_pinned(
        &endpoint,
        parse_key(&other_tenant).unwrap(),
        net.chain_id,
        net.market,
        pin,
    )
    .unwrap();
    let e = stranger.status(id).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::WrongTenant);
    let owner = GatewayClient::new_pinned(
        &endpoint,
        parse_key(&tenant).unwrap(),
        net.chain_id,
        net.market,
        pin,
    )
    .unwrap();
    let again = owner
        .send_manifest(id, matched, &Workload::command(["echo", "twice"]), 60)
        .await
        .unwrap_err();
    assert_eq!(
        again.error,
        ErrorCode::AlreadyLaunched,
        "never launched twice"
    );
    let elsewhere = providers.iter().find(|p| p.address != matched).unwrap();
    let other_gw = GatewayClient::new_pinned(
        &elsewhere.endpoint,
        parse_key(&tenant).unwrap(),
        net.chain_id,
        net.market,
        cert_hash(&market, elsewhere.address).await,
    )
    .unwrap();
    // A client pinned to another provider's certificate is refused before any request.
    let mitm = GatewayClient::new_pinned(
        &elsewhere.endpoint,
        parse_key(&tenant).unwrap(),
        net.chain_id,
        net.market,
        pin,
    )
    .unwrap();
    assert_eq!(
        mitm.node_status().await.unwrap_err().error,
        ErrorCode::UntrustedCertificate
    );
    let e = other_gw
        .send_manifest(id, elsewhere.address, &Workload::command(["echo", "x"]), 60)
        .await
        .unwrap_err();
    assert_eq!(
        e.error,
        ErrorCode::UnknownLease,
        "not that provider's lease"
    );
    let (status, body) = unsigned_get(&endpoint, pin, &format!("/lease/{id}/status")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"error\":\"unsigned\""), "{body}");

    let out = cli(
        &net_path,
        &tenant,
        &["lease", "stop", &id.to_string(), "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stopped: spheron_core::Settlement = serde_json::from_slice(&out.stdout).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), lease.wait())
        .await
        .expect("the first process sees the stop");
    assert_eq!(report.state, LeaseState::Closed(CloseReason::TenantStopped));
    assert_eq!(report.settlement, Some(stopped));
    assert_eq!(stopped.paid.0 + stopped.refunded.0, report.budget.0);
    let status = owner.status(id).await.unwrap();
    assert_eq!(
        status.work,
        WorkState::Stopped,
        "the provider stopped the workload"
    );

    // 5. SIGKILL the matched provider in the middle of a lease.
    let marker = devnet.dir.path().join("marker");
    let script = format!("echo $$ >> {}; sleep 300", marker.display());
    let lease = market
        .rent(request(5_000_000), Workload::command(["sh", "-c", &script]))
        .await
        .unwrap();
    let id = lease.id().0;
    let victim = report_provider(&market, id).await;
    let party = net
        .parties
        .iter()
        .find(|p| p.address == victim)
        .unwrap()
        .clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(party.pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), lease.wait())
        .await
        .expect("the tenant notices the dead provider");
    match &report.state {
        LeaseState::Closed(CloseReason::ProviderFailed { detail }) => {
            assert!(detail.contains("gateway"), "{detail}")
        }
        other => panic!("expected ProviderFailed, got {other}"),
    }
    let s = report.settlement.expect("settled on chain");
    assert!(s.refunded.0 > 0 && s.paid.0 > 0, "pro rata: {s:?}");
    assert_eq!(s.paid.0 + s.refunded.0, report.budget.0);

    // The orphaned workload still runs until the provider comes back.
    let pid: i32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Alive and not a zombie (an orphan whose new parent has not reaped it yet is dead).
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
    };
    assert!(alive(pid));
    let restarted = Command::new(&party.restart[0])
        .args(&party.restart[1..])
        .env("SPHERON_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    devnet.extra.push(restarted);
    // Back up: its gateway answers, it killed the workload it could not reattach, and it
    // reports the lease from its database as closed, without launching it again.
    let pin_victim = cert_hash(&market, victim).await;
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match owner_of(&party.endpoint, &tenant, &net, pin_victim)
            .status(id)
            .await
        {
            Ok(s) if !s.open_on_chain => break s,
            _ if Instant::now() > until => panic!("restarted provider did not resume"),
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    };
    assert!(
        matches!(status.work, WorkState::Failed { .. }),
        "{status:?}"
    );
    assert!(!alive(pid), "the orphaned workload was killed");
    let starts = std::fs::read_to_string(&marker).unwrap().lines().count();
    assert_eq!(starts, 1, "launched exactly once");

    // The restarted provider serves new rents (retried: on a loaded machine its paced
    // simulated prover can miss one challenge deadline, and it is the only one allowed).
    let mut tries = 0;
    let lease = loop {
        let only_victim = GpuRequest::builder()
            .gpu("h100")
            .hours(1)
            .max_price_per_gpu_hour(Amount(5_000_000))
            .allow_provider(AccountId(victim.into_array()))
            .build()
            .unwrap();
        match market
            .rent(only_victim, Workload::command(["echo", "back"]))
            .await
        {
            Ok(l) => break l,
            Err(e) if tries < 2 => {
                tries += 1;
                eprintln!("rent on the restarted provider failed, retrying: {e}");
            }
            Err(e) => panic!("the restarted provider serves no rent: {e}"),
        }
    };
    let report = lease.wait().await;
    assert_eq!(report.state, LeaseState::Closed(CloseReason::Completed));

    // The two verifier nodes challenged the providers at random through their gateways
    // while all of the above ran, and posted their tallies on chain: `spheron verifiers`
    // reads their records and ranking from the audit contract.
    assert!(net.audit.is_some(), "the devnet deployed no audit contract");
    let until = Instant::now() + Duration::from_secs(60);
    let verifiers = loop {
        let out = cli(&net_path, &tenant, &["verifiers", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let passes: u64 = rows.iter().map(|r| r["passes"].as_u64().unwrap()).sum();
        if rows.len() == 2 && passes > 0 {
            break rows;
        }
        assert!(
            Instant::now() < until,
            "no verifier tallies on chain: {rows:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!("verifiers: {verifiers:?}");
    let table = cli(&net_path, &tenant, &["verifiers"]);
    assert!(table.status.success());
    assert!(
        text(&table.stdout).contains("ACCURACY"),
        "{}",
        text(&table.stdout)
    );
}

fn owner_of(endpoint: &str, key: &str, net: &NetworkFile, pin: B256) -> GatewayClient {
    GatewayClient::new_pinned(
        endpoint,
        parse_key(key).unwrap(),
        net.chain_id,
        net.market,
        pin,
    )
    .unwrap()
}

async fn cert_hash(market: &NetworkMarket, provider: Address) -> B256 {
    market
        .providers()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.address == provider)
        .unwrap()
        .cert_hash
}

/// A raw HTTP/1.1 GET over TLS pinned to `pin`, with no signature headers.
async fn unsigned_get(endpoint: &str, pin: B256, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let config = spheron_node::tls::pinned_client_config(pin).unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

async fn report_provider(market: &NetworkMarket, id: u64) -> Address {
    market.lease(id).await.unwrap().provider.unwrap()
}

#[test]
fn rent_refuses_a_bad_checkpoint_policy_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("no-network.json");
    for (flags, field) in [
        (&["--checkpoint", "ckpt"][..], "checkpoint"),
        (&["--checkpoint", "outputs/../x"][..], "checkpoint"),
        (
            &["--checkpoint", "outputs/ckpt", "--checkpoint-every", "0s"][..],
            "checkpoint_every",
        ),
    ] {
        let mut args = vec!["rent", "--gpu", "h100", "--max-price", "5"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "true"]);
        let out = cli(&net, "0x01", &args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{flags:?} accepted");
        assert!(err.contains(field), "{flags:?}: {err}");
        assert!(
            !err.contains("no-network.json"),
            "{flags:?} connected first: {err}"
        );
    }
    // --checkpoint-every without --checkpoint is a usage error.
    let out = cli(
        &net,
        "0x01",
        &[
            "rent",
            "--gpu",
            "h100",
            "--max-price",
            "5",
            "--checkpoint-every",
            "5s",
            "--",
            "true",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--checkpoint"),
        "{}",
        text(&out.stderr)
    );
}

/// A lease with a checkpoint policy loses its provider (SIGKILL) in the middle of a run and
/// resumes on the other provider from the last checkpoint the tenant downloaded: the step
/// count continues from it, the report lists the failover, and the two leases together
/// cost at most the first budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_resumes_from_the_checkpoint() {
    if !anvil_available() {
        return;
    }
    let _one = ONE_DEVNET.lock().await;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("spheron_node=info"))
        .with_test_writer()
        .try_init();
    // Three providers: on a loaded machine one may miss a challenge deadline, and the
    // resume still has another to go to.
    let devnet = start_devnet(3, SHORT_EPOCHS);
    let net_path = devnet.network();
    let net = NetworkFile::load(&net_path).unwrap();
    let tenant = net.tenants[0].key.clone();
    let market = connect(&net_path, &tenant).await;
    let mut events = market.events();

    // Counts to 40, checkpointing every step atomically (a temporary name, then a rename),
    // and continues from `SPHERON_RESUME_FROM` when it is set.
    let script = r#"
        step=0
        if [ -n "$SPHERON_RESUME_FROM" ]; then step=$(cat "$SPHERON_RESUME_FROM"); echo "resumed-from-$step"; fi
        start=$step
        while [ "$step" -lt 40 ]; do
          step=$((step + 1))
          echo "$step" > outputs/ckpt.tmp && mv outputs/ckpt.tmp outputs/ckpt
          echo "step-$step"
          sleep 0.5
        done
        echo "start=$start end=$step" > outputs/result
    "#;
    let kept = devnet.dir.path().join("tenant-checkpoints");
    let policy = spheron::Checkpoint::new("outputs/ckpt", Duration::from_secs(1))
        .unwrap()
        .local_dir(&kept);
    let req = request(5_000_000);
    let budget = req.budget().unwrap();
    let lease = market
        .rent_with_checkpoint(req, Workload::command(["sh", "-c", script]), policy)
        .await
        .unwrap();
    let first = lease.id();
    let victim = report_provider(&market, first.0).await;

    // Wait until the tenant holds a checkpoint of step 3 or later, then kill the provider.
    let until = Instant::now() + Duration::from_secs(60);
    let checkpointed: u32 = loop {
        let step = std::fs::read_to_string(kept.join("ckpt"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if step >= 3 {
            break step;
        }
        assert!(Instant::now() < until, "no checkpoint reached the tenant");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(checkpointed < 40, "the run ended before the kill");
    let party = net.parties.iter().find(|p| p.address == victim).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(party.pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let report = tokio::time::timeout(Duration::from_secs(300), lease.wait())
        .await
        .expect("the resumed lease finishes");
    assert_eq!(report.state, LeaseState::Closed(CloseReason::Completed));
    assert_eq!(report.resumed.len(), 1, "{:?}", report.resumed);
    let r = &report.resumed[0];
    assert_eq!(r.from_lease, first);
    assert_eq!(r.from_provider, AccountId(victim.into_array()));
    assert!(r.reason.is_provider_fault(), "{}", r.reason);
    assert_eq!(r.to_lease, report.lease);
    assert_ne!(report.lease, first);
    assert_ne!(
        report.provider, r.from_provider,
        "resumed on another provider"
    );
    assert!(
        r.checkpoint_bytes > 0 && r.checkpoint_hash.is_some(),
        "{r:?}"
    );
    assert!(
        report
            .progress
            .iter()
            .any(|e| matches!(e.step, Step::Resuming { resume: 1, .. })),
        "the report's progress shows the failover"
    );

    // The second lease continued from the checkpoint, not from 0.
    let out = devnet.dir.path().join("result");
    market
        .download(report.lease.0, "outputs/result", &out)
        .await
        .unwrap();
    let result = std::fs::read_to_string(&out).unwrap();
    let start: u32 = result
        .trim()
        .strip_prefix("start=")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected result: {result}"));
    assert!(
        start >= checkpointed,
        "resumed from step {start}, the tenant held {checkpointed}"
    );
    assert!(result.trim().ends_with("end=40"), "{result}");

    // No second is paid twice: the second order asked only for the time left, and the two
    // leases together cost at most the first budget.
    let first_settled = market.settlement(first.0).await.unwrap().unwrap();
    assert_eq!(first_settled.paid, r.paid);
    assert_eq!(first_settled.seconds, r.seconds);
    let second = market.lease(report.lease.0).await.unwrap();
    assert_eq!(second.duration_secs, 3600 - r.seconds);
    assert_eq!(report.total_cost().0, r.paid.0 + report.cost.0);
    assert!(
        report.total_cost() <= budget,
        "{} > {budget}",
        report.total_cost()
    );

    // The progress stream announced it as it happened.
    let mut saw = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), events.next()).await {
        saw |= matches!(e.step, Step::Resuming { .. });
    }
    assert!(saw, "no Resuming progress event");
}
