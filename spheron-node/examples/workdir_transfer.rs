//! Working directory upload and output download throughput through a real gateway on
//! loopback (plain HTTP, one tenant, the tenant-signed request auth the gateway uses).
//!
//! ```sh
//! cargo run -p spheron-node --example workdir_transfer            # 100 MB
//! cargo run -p spheron-node --example workdir_transfer -- 20      # 20 MB
//! ```
//!
//! Builds a workdir of `MB` megabytes (10 files of pseudo-random bytes), then times: packing
//! it (tar + BLAKE3), uploading the archive (`PUT /lease/1/workdir`: the signature over
//! the body hash, the transfer, the provider's BLAKE3 and write to disk), the manifest
//! launch that checks the stored archive's hash and unpacks it, and downloading a
//! `MB`-megabyte output file (`GET /lease/1/files`, streamed to disk). The backend is in
//! memory (no chain): what is measured is the gateway's data path.

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use async_trait::async_trait;
use spheron_core::{Inventory, LogStream, Workload};
use spheron_gpu::CpuProver;
use spheron_node::gateway::{self, ChainLease, LeaseBackend};
use spheron_node::gateway_client::GatewayClient;
use spheron_node::{GatewayError, LeaseStatus, NodeStatus, WorkState};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const CHAIN: u64 = 31337;

struct Bench {
    tenant: Address,
    dir: PathBuf,
    nonces: Mutex<HashSet<B256>>,
    launched: Mutex<bool>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[async_trait]
impl LeaseBackend for Bench {
    fn provider(&self) -> Address {
        Address::repeat_byte(0x50)
    }
    fn chain(&self) -> (u64, Address) {
        (CHAIN, Address::repeat_byte(0x4d))
    }
    fn now(&self) -> u64 {
        now()
    }
    async fn chain_lease(&self, lease: u64) -> Result<Option<ChainLease>, GatewayError> {
        Ok(Some(ChainLease {
            lease,
            tenant: self.tenant,
            provider: self.provider(),
            active: true,
        }))
    }
    async fn use_nonce(&self, _: Address, nonce: B256, _: u64) -> Result<bool, GatewayError> {
        Ok(self
            .nonces
            .lock()
            .map(|mut n| n.insert(nonce))
            .unwrap_or(false))
    }
    async fn launch(&self, l: &ChainLease, w: Workload) -> Result<LeaseStatus, GatewayError> {
        let run = self.dir.join("run");
        if let Some(src) = w.workdir.and_then(|w| w.source) {
            let f = std::fs::File::open(src).map_err(internal)?;
            spheron_node::workdir::unpack(std::io::BufReader::new(f), &run).map_err(internal)?;
        }
        if let Ok(mut launched) = self.launched.lock() {
            *launched = true;
        }
        self.status(l).await
    }
    async fn status(&self, l: &ChainLease) -> Result<LeaseStatus, GatewayError> {
        let running = self.launched.lock().map(|l| *l).unwrap_or(false);
        Ok(LeaseStatus {
            lease: l.lease,
            tenant: l.tenant,
            work: if running {
                WorkState::Running
            } else {
                WorkState::AwaitingManifest
            },
            open_on_chain: true,
            started_at: None,
            ended_at: None,
            activity: None,
        })
    }
    async fn logs(&self, _: &ChainLease, _: u64, _: bool) -> Result<LogStream, GatewayError> {
        Ok(Box::pin(futures::stream::empty()))
    }
    async fn stop(&self, l: &ChainLease) -> Result<LeaseStatus, GatewayError> {
        self.status(l).await
    }
    async fn node_status(&self) -> NodeStatus {
        NodeStatus {
            provider: self.provider(),
            name: "bench".into(),
            region: "local".into(),
            models: Vec::new(),
            inventory: Inventory::default(),
            running_leases: 0,
            last_block: 0,
            version: "bench".into(),
        }
    }
    fn upload_dir(&self) -> Option<PathBuf> {
        Some(self.dir.join("uploads"))
    }
    async fn lease_dir(&self, _: &ChainLease) -> Option<PathBuf> {
        Some(self.dir.join("run"))
    }
}

fn internal(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(spheron_node::ErrorCode::Internal, e.to_string())
}

/// `n` pseudo-random bytes (xorshift: incompressible enough, and fast to make).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mb: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100);
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("workdir");
    std::fs::create_dir_all(&src)?;
    for i in 0..10 {
        std::fs::write(
            src.join(format!("shard-{i}.bin")),
            noise(mb * 100_000, i + 1),
        )?;
    }
    let tenant = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x11))?;
    let backend = Arc::new(Bench {
        tenant: tenant.address(),
        dir: tmp.path().join("provider"),
        nonces: Mutex::default(),
        launched: Mutex::new(false),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(gateway::serve(
        listener,
        gateway::router(backend.clone(), Arc::new(CpuProver::new(None))),
    ));
    let client = GatewayClient::new(&url, tenant, CHAIN, Address::repeat_byte(0x4d))?;

    let t = Instant::now();
    let packed = spheron_node::workdir::pack(&src, spheron_node::workdir::MAX_WORKDIR_BYTES)?;
    let pack_s = t.elapsed().as_secs_f64();
    let bytes = packed.archive.len() as u64;

    let t = Instant::now();
    let receipt = client.upload_workdir(1, packed.archive).await?;
    let upload_s = t.elapsed().as_secs_f64();
    assert_eq!(receipt.hash, format!("{:#x}", packed.hash));

    let mut w = Workload::command(["true"]);
    w.workdir = Some(spheron_core::Workdir {
        source: None,
        hash: Some(receipt.hash),
        bytes,
    });
    let t = Instant::now();
    client
        .send_manifest(1, Address::repeat_byte(0x50), &w, 60)
        .await?;
    let launch_s = t.elapsed().as_secs_f64();

    let out = tmp.path().join("provider/run/outputs");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("model.ckpt"), noise(mb * 1_000_000, 99))?;
    let dest = tmp.path().join("model.ckpt");
    let t = Instant::now();
    let got = client.download(1, "outputs/model.ckpt", &dest).await?;
    let download_s = t.elapsed().as_secs_f64();

    println!("workdir: {mb} MB in 10 files, archive {bytes} bytes");
    println!(
        "pack (tar + BLAKE3)       {pack_s:7.3} s  {:8.1} MB/s",
        mbps(bytes, pack_s)
    );
    println!(
        "upload (PUT /lease/1/workdir) {upload_s:7.3} s  {:8.1} MB/s",
        mbps(bytes, upload_s)
    );
    println!(
        "manifest: hash check + unpack {launch_s:7.3} s  {:8.1} MB/s",
        mbps(bytes, launch_s)
    );
    println!(
        "download (GET /lease/1/files) {download_s:7.3} s  {:8.1} MB/s",
        mbps(got, download_s)
    );
    Ok(())
}
