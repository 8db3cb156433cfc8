//! A provider's GPU inventory read from its cluster: per node, allocatable `nvidia.com/gpu` of the
//! model named by the node's `nvidia.com/gpu.product` label, minus what non-finished pods bound
//! to the node request.

use crate::error::{Error, Result};
use crate::labels::{GPU_PRODUCT_LABEL, GPU_RESOURCE, model_from_product};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ListParams;
use kube::{Api, Client};
use spheron_core::market::ProviderAgent;
use spheron_core::{Bid, GpuNode, Inventory, Order, ProviderId, Registry};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Whole GPUs in a quantity (`"8"`); fractional or malformed values count as none.
fn gpu_count(q: &Quantity) -> u32 {
    q.0.trim().parse::<u32>().unwrap_or(0)
}

/// The GPUs a pod holds while bound: the larger of the sum over its containers and the largest
/// init container, requests falling back to limits (as the scheduler counts them).
pub fn pod_gpu_request(pod: &Pod) -> u32 {
    let Some(spec) = &pod.spec else { return 0 };
    let of = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()
            .and_then(|r| {
                r.requests
                    .as_ref()
                    .and_then(|m| m.get(GPU_RESOURCE))
                    .or_else(|| r.limits.as_ref().and_then(|m| m.get(GPU_RESOURCE)))
            })
            .map(gpu_count)
            .unwrap_or(0)
    };
    let main: u32 = spec.containers.iter().map(of).fold(0, u32::saturating_add);
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(of)
        .max()
        .unwrap_or(0);
    main.max(init)
}

fn pod_holds_gpus(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded") | Some("Failed"))
}

fn node_usable(node: &Node) -> bool {
    let unschedulable = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_none_or(|c| c.status == "True");
    !unschedulable && ready
}

/// The inventory of `nodes` given the `pods` of the cluster (pure: no API calls).
///
/// Nodes without a known GPU product label, without allocatable GPUs, cordoned or not Ready are
/// left out. Pods that finished (Succeeded or Failed) or are not bound to a node hold nothing.
pub fn inventory_from(nodes: &[Node], pods: &[Pod]) -> Inventory {
    let mut used: BTreeMap<&str, u32> = BTreeMap::new();
    for p in pods.iter().filter(|p| pod_holds_gpus(p)) {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            let e = used.entry(node).or_default();
            *e = e.saturating_add(pod_gpu_request(p));
        }
    }
    let mut out: Vec<GpuNode> = nodes
        .iter()
        .filter(|n| node_usable(n))
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let model = n
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(GPU_PRODUCT_LABEL))
                .and_then(|p| model_from_product(p))?;
            let total = n
                .status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get(GPU_RESOURCE))
                .map(gpu_count)
                .unwrap_or(0);
            (total > 0).then(|| GpuNode {
                free: total.saturating_sub(used.get(name.as_str()).copied().unwrap_or(0)),
                name,
                model,
                total,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Inventory { nodes: out }
}

/// Reads a cluster's GPU inventory.
#[derive(Clone)]
pub struct KubeInventory {
    client: Client,
}

impl std::fmt::Debug for KubeInventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeInventory").finish_non_exhaustive()
    }
}

impl KubeInventory {
    /// An inventory reader on `client`.
    pub fn new(client: Client) -> Self {
        KubeInventory { client }
    }

    /// The nodes of the cluster.
    pub async fn nodes(&self) -> Result<Vec<Node>> {
        Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| Error::api("list nodes", e))
    }

    /// Free and total GPUs per node, now.
    pub async fn fetch(&self) -> Result<Inventory> {
        let nodes = self.nodes().await?;
        let pods = Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed"))
            .await
            .map_err(|e| Error::api("list pods", e))?
            .items;
        Ok(inventory_from(&nodes, &pods))
    }

    /// Replaces `provider`'s inventory in `registry` with the cluster's.
    pub async fn sync(&self, registry: &Registry, provider: ProviderId) -> Result<Inventory> {
        let inv = self.fetch().await?;
        registry
            .update(provider, |p| p.inventory = inv.clone())
            .map_err(|e| Error::InvalidField {
                field: "provider",
                reason: e.to_string(),
            })?;
        Ok(inv)
    }
}

/// A provider agent backed by a cluster: before each bid it refreshes the provider's inventory
/// in the registry from the cluster, then lets the inner agent (for example a
/// [`spheron_core::StrategyAgent`] on the same registry) price the bid. The inner agent bids only
/// where one node has enough free GPUs, so fragmented capacity is never offered.
pub struct KubeProviderAgent {
    inventory: KubeInventory,
    registry: Arc<Registry>,
    inner: Arc<dyn ProviderAgent>,
}

impl std::fmt::Debug for KubeProviderAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeProviderAgent")
            .field("provider", &self.inner.provider())
            .finish_non_exhaustive()
    }
}

impl KubeProviderAgent {
    /// Wraps `inner`, keeping `registry`'s entry for its provider in step with the cluster.
    pub fn new(
        inventory: KubeInventory,
        registry: Arc<Registry>,
        inner: Arc<dyn ProviderAgent>,
    ) -> Self {
        KubeProviderAgent {
            inventory,
            registry,
            inner,
        }
    }
}

#[async_trait]
impl ProviderAgent for KubeProviderAgent {
    fn provider(&self) -> ProviderId {
        self.inner.provider()
    }

    async fn on_order(&self, order: &Order) -> Option<Bid> {
        if let Err(e) = self
            .inventory
            .sync(&self.registry, self.inner.provider())
            .await
        {
            // Without a fresh view of the cluster, do not promise capacity.
            tracing::warn!(provider = %self.inner.provider(), error = %e, "inventory refresh failed; not bidding");
            return None;
        }
        self.inner.on_order(order).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, NodeSpec, NodeStatus, PodSpec, PodStatus, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use spheron_core::GpuModel;

    fn node(name: &str, product: &str, gpus: u32) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(
                    GPU_PRODUCT_LABEL.to_string(),
                    product.to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([(
                    GPU_RESOURCE.to_string(),
                    Quantity(gpus.to_string()),
                )])),
                ..Default::default()
            }),
        }
    }

    fn pod(node: &str, gpus: u32, phase: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                containers: vec![Container {
                    resources: Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([(
                            GPU_RESOURCE.to_string(),
                            Quantity(gpus.to_string()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn allocatable_minus_running_requests() {
        let nodes = [
            node("a", "NVIDIA-H100-80GB-HBM3", 8),
            node("b", "NVIDIA-L4", 4),
            node("c", "AMD-MI300X", 8),
        ];
        let pods = [
            pod("a", 3, "Running"),
            pod("a", 2, "Succeeded"),
            pod("b", 1, "Pending"),
        ];
        let inv = inventory_from(&nodes, &pods);
        assert_eq!(inv.nodes.len(), 2);
        assert_eq!(inv.free(GpuModel::H100Sxm), 5);
        assert_eq!(inv.free(GpuModel::L4), 3);
        let mut cordoned = node("d", "NVIDIA-L4", 4);
        cordoned.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        assert_eq!(inventory_from(&[cordoned], &[]).nodes.len(), 0);
    }
}
