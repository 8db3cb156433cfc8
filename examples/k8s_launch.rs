//! Rent GPUs from the embedded marketplace and run the workload on the Kubernetes cluster named
//! by `KUBECONFIG` (or the in-cluster service account).
//!
//! ```text
//! cargo run --example k8s_launch --features k8s
//! ```
//!
//! The cluster plays the provider: its GPU nodes (allocatable `nvidia.com/gpu` and the
//! `nvidia.com/gpu.product` label of NVIDIA GPU feature discovery) are read first, a provider
//! offering the model with the largest free block on one node joins the market, and the rented
//! workload runs there as a Job in its own namespace, which is deleted when the lease ends.
//! `SPHERON_IMAGE` overrides the container image. The `SPHERON_FAKE_*` variables are ignored by
//! real kubelets; they let the kwok-run test cluster of spheron-k8s finish the job.

use futures::StreamExt;
use spheron::k8s::kube;
use spheron::k8s::{KubeInventory, KubeLauncher};
use spheron::prelude::*;
use spheron::{BidStrategy, LogSource, ProviderSpec, SimFleet};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = kube::Client::try_default().await?;
    let inventory = KubeInventory::new(client.clone()).fetch().await?;
    println!("GPU nodes in the cluster:");
    for n in &inventory.nodes {
        println!(
            "  {:<24} {:<10} {}/{} free",
            n.name,
            n.model.name(),
            n.free,
            n.total
        );
    }
    let Some(model) = inventory
        .models()
        .into_iter()
        .max_by_key(|m| inventory.largest_free_block(*m))
        .filter(|m| inventory.largest_free_block(*m) > 0)
    else {
        return Err("no node has a free GPU with a known nvidia.com/gpu.product label".into());
    };
    let block = inventory.largest_free_block(model);
    let nodes = inventory.nodes.iter().filter(|n| n.model == model).count() as u32;
    println!(
        "offering {model}: {nodes} node(s), largest free block {block}",
        model = model.name()
    );

    let provider = ProviderSpec {
        name: "my-cluster",
        region: "eu-west",
        location: (50.11, 8.68),
        model,
        nodes,
        per_node: block,
        price: 2_000_000, // 2.00 per GPU-hour in a 6-decimal token
        stake: 2_000_000_000,
        uptime: (990, 10),
        leases: (100, 1),
        feedback: (450, 100),
        tier: 5,
        strategy: BidStrategy::ListPrice,
        fault: spheron::gpu::Fault::None,
        actual_model: None,
    };
    let market = Marketplace::local()
        .fleet(SimFleet::new().provider(provider))
        .launcher(Arc::new(KubeLauncher::new(client)))
        .tenant_funds(Amount(50_000_000))
        .build()
        .await?;

    let request = GpuRequest::builder()
        .gpu(model.name())
        .count(1)
        .hours(1)
        .max_price_per_gpu_hour(Amount(3_000_000))
        .build()?;
    let image = std::env::var("SPHERON_IMAGE")
        .unwrap_or_else(|_| "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04".to_string());
    let workload = Workload::command(["nvidia-smi", "-L"])
        .image(image)
        .env("SPHERON_FAKE_EXIT", "0")
        .env("SPHERON_FAKE_RUN", "3s");
    let lease = market.rent(request, workload).await?;
    println!(
        "lease {} running in namespace spheron-{}",
        lease.id(),
        lease.id()
    );

    let mut logs = lease.logs()?;
    while let Some(line) = logs.next().await {
        let tag = if line.source == LogSource::System {
            "#"
        } else {
            "|"
        };
        println!("  {tag} {}", line.line);
    }
    let report = lease.wait().await;
    println!(
        "{} on {}: cost {}, refunded {:?}",
        report.state,
        report.provider_name,
        market.token().format(report.cost),
        report.refunded().map(|a| market.token().format(a))
    );
    Ok(())
}
