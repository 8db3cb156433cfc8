//! Network figures on a running devnet (see BENCHMARKS.md):
//!
//! ```sh
//! spheron devnet --dir /tmp/bench --scale 25          # terminal 1 (1 s blocks)
//! cargo run --release -p spheron-cli --example network_bench -- /tmp/bench/network.json latency 20
//! cargo run --release -p spheron-cli --example network_bench -- /tmp/bench/network.json idle 100
//! ```
//!
//! - `latency N`: N sequential rents of one H100 running `true`; time from `rent()` to the
//!   workload running, split by step (publish, bid window, match, challenge, manifest and
//!   launch), p50 and p95.
//! - `idle N`: N leases (rented one after another) of one RTX 4090 each running `sleep 3600` on the
//!   `sfo-4090` provider; then its node process's resident memory and CPU over 30 s, idle.
//!   The leases are stopped at the end.

#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use spheron::prelude::*;
use spheron_core::ProgressEvent;
use spheron_node::network::NetworkFile;
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn at(events: &[ProgressEvent], f: impl Fn(&Step) -> bool) -> Option<u64> {
    events.iter().find(|e| f(&e.step)).map(|e| e.at.0)
}

async fn latency(net_path: &str, key: &str, n: usize) {
    let market = Marketplace::connect(net_path, key).await.unwrap();
    let names = [
        "publish",
        "bid window",
        "match",
        "challenge",
        "manifest+launch",
        "total",
    ];
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for i in 0..n {
        let request = GpuRequest::builder()
            .gpu("h100")
            .hours(1)
            .max_price_per_gpu_hour(Amount(5_000_000))
            .build()
            .unwrap();
        let t0 = spheron_core::Clock::now(&spheron_core::SystemClock).0;
        let lease = market
            .rent(request, Workload::command(["true"]))
            .await
            .unwrap();
        let r = lease.snapshot();
        let ev = &r.progress;
        let published = at(ev, |s| matches!(s, Step::Published { .. })).unwrap();
        let bids = at(ev, |s| matches!(s, Step::BidsIn { .. })).unwrap();
        let matched = at(ev, |s| matches!(s, Step::Matched { .. })).unwrap();
        let verified = at(ev, |s| matches!(s, Step::Verified { .. })).unwrap();
        let launching = at(ev, |s| matches!(s, Step::Launching { .. })).unwrap();
        let running = at(ev, |s| matches!(s, Step::Running { .. })).unwrap();
        let row = [
            published - t0,
            bids - published,
            matched - bids,
            verified - matched,
            running - launching,
            running - t0,
        ];
        eprintln!("rent {i}: {row:?} ms");
        for (c, v) in cols.iter_mut().zip(row) {
            c.push(v as f64 / 1000.0);
        }
        lease.wait().await;
    }
    println!("| step | p50 (s) | p95 (s) |");
    println!("|---|---:|---:|");
    for (name, c) in names.iter().zip(cols.iter_mut()) {
        println!("| {name} | {:.2} | {:.2} |", pct(c, 0.5), pct(c, 0.95));
    }
}

fn proc_stat(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted after the command name.
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    (rss_kb, ticks)
}

async fn idle(net_path: &str, key: &str, n: usize) {
    let net = NetworkFile::load(std::path::Path::new(net_path)).unwrap();
    let market = Marketplace::connect(net_path, key).await.unwrap();
    let providers = market.providers().await.unwrap();
    let sfo = providers
        .iter()
        .find(|r| {
            spheron_node::registry::provider_from_record(r).is_ok_and(|p| p.name == "sfo-4090")
        })
        .expect("the devnet's sfo-4090 provider");
    let pid = net
        .parties
        .iter()
        .find(|p| p.address == sfo.address)
        .unwrap()
        .pid;
    let (rss0, _) = proc_stat(pid);
    let started = Instant::now();
    let leases: Vec<LeaseHandle> = futures::stream::iter(0..n)
        .map(|_| {
            let market = market.clone();
            async move {
                let request = GpuRequest::builder()
                    .gpu("rtx4090")
                    .hours(1)
                    .max_price_per_gpu_hour(Amount(1_000_000))
                    .build()
                    .unwrap();
                // On a loaded 2-core machine a paced simulated prover can miss its deadline:
                // try again rather than abort the measurement.
                let mut tries = 0;
                loop {
                    match market
                        .rent(request.clone(), Workload::command(["sleep", "3600"]))
                        .await
                    {
                        Ok(l) => break l,
                        Err(e) if tries < 5 => {
                            tries += 1;
                            eprintln!("rent failed, retrying: {e}");
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        })
        .buffer_unordered(1)
        .collect()
        .await;
    eprintln!(
        "{} leases running after {:?}",
        leases.len(),
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss1, t1) = proc_stat(pid);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (rss2, t2) = proc_stat(pid);
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (t2 - t1) as f64 / hz / 30.0 * 100.0;
    println!("| provider node, {n} idle leases | value |");
    println!("|---|---:|");
    println!("| RSS before the leases | {:.1} MB |", rss0 as f64 / 1024.0);
    println!(
        "| RSS with {n} leases | {:.1} MB |",
        rss2.max(rss1) as f64 / 1024.0
    );
    println!("| CPU while idle (30 s average) | {cpu:.1} % of one core |");
    for l in leases {
        let _ = l.stop().await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (net_path, mode, n) = match args.as_slice() {
        [_, net, mode, n] => (net.clone(), mode.clone(), n.parse::<usize>().unwrap()),
        _ => {
            eprintln!("usage: network_bench NETWORK_JSON latency|idle N");
            std::process::exit(2);
        }
    };
    let net = NetworkFile::load(std::path::Path::new(&net_path)).unwrap();
    let key = net.tenants[0].key.clone();
    match mode.as_str() {
        "latency" => latency(&net_path, &key, n).await,
        "idle" => idle(&net_path, &key, n).await,
        other => eprintln!("unknown mode {other}"),
    }
}
