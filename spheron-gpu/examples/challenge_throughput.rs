//! How many challenges one verifier process sustains over loopback HTTP, and what each costs
//! it in CPU.
//!
//! The provers (signed, simulated: CPU provers paced at 1e-8 of an L4, a 1 s commit phase
//! like the network simulation's) run in a child process, so this process's CPU time is the
//! verifier's alone: HTTP, JSON, the signature recovery, the Merkle paths and the Freivalds
//! check at the simulation's n. The Freivalds cost at production n is measured separately
//! (`verifier_cost`).
//!
//! ```sh
//! cargo run --release -p spheron-gpu --example challenge_throughput -- 20 32
//! ```
//! (seconds, challenges in flight).

use alloy_signer_local::PrivateKeySigner;
use spheron_core::GpuModel;
use spheron_gpu::binding::provider_id;
use spheron_gpu::http::{HttpProver, challenge, serve};
use spheron_gpu::{Fault, SignedProver, Simulation};
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PROVERS: usize = 8;

/// This process's user + system CPU time, from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of the whole line are the 12th and 13th after the command name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

async fn provers() {
    let mut tasks = Vec::new();
    for _ in 0..PROVERS {
        let key = PrivateKeySigner::random();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        println!("{url} {}", provider_id(&key));
        let inner = Simulation::network().prover(GpuModel::L4, None, Fault::None);
        let prover = Arc::new(SignedProver::new(Arc::new(inner), key));
        tasks.push(tokio::spawn(serve(listener, prover)));
    }
    println!("ready");
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        provers().await;
        return;
    }
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let in_flight: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(32);
    let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("--serve")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the provers");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut targets = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("provers' output");
        if line == "ready" {
            break;
        }
        let (url, id) = line.split_once(' ').expect("url and id");
        let bytes: [u8; 20] = alloy_primitives::hex::decode(id.trim_start_matches("0x"))
            .ok()
            .and_then(|b| b.try_into().ok())
            .expect("a 20-byte provider id");
        let id = spheron_core::AccountId(bytes);
        targets.push((HttpProver::new(url).expect("url"), id));
    }
    let targets = Arc::new(targets);
    let verifier = Arc::new(
        Simulation::network()
            .try_verifier()
            .expect("valid simulation"),
    );
    let (passed, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let cpu0 = cpu_time();
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for t in 0..in_flight {
        let (targets, verifier) = (targets.clone(), verifier.clone());
        let (passed, failed) = (passed.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while Instant::now() < until {
                let (prover, id) = &targets[i % targets.len()];
                let mut entropy = [[0u8; 32]; 2];
                for e in &mut entropy {
                    getrandom::fill(e).expect("OS entropy");
                }
                let r = challenge(verifier.as_ref(), prover, *id, GpuModel::L4, entropy).await;
                if r.verdict.passed() {
                    passed.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed: {}", r.verdict);
                }
                i += in_flight;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    let _ = child.kill();
    let _ = child.wait();
    let (p, f) = (
        passed.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let done = p + f;
    println!(
        "{done} challenges in {:.1} s with {in_flight} in flight over {PROVERS} simulated provers: \
         {:.0} per minute ({p} passed, {f} failed); verifier CPU {:.2} ms per challenge \
         ({:.0} per minute per core at this n)",
        wall.as_secs_f64(),
        done as f64 * 60.0 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e3 / done.max(1) as f64,
        60.0 / (cpu.as_secs_f64() / done.max(1) as f64).max(1e-9),
    );
}
