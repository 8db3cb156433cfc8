//! A provider's GPU inventory read from its cluster: per node, allocatable `nvidia.com/gpu` of the
//! model named by the node's `nvidia.com/gpu.product` label, minus what non-finished pods bound
//! to the node request.

use crate::error::{Error, Result};
use crate::labels::{GPU_PRODUCT_LABEL, GPU_RESOURCE, model_from_product};
use crate::labels::{MANAGED_BY, MANAGED_BY_LABEL};
use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use spheron_core::market::ProviderAgent;
use spheron_core::{Bid, GpuNode, Inventory, Order, ProviderId, Registry};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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
    let mut unbound: Vec<&Pod> = Vec::new();
    for p in pods.iter().filter(|p| pod_holds_gpus(p)) {
        if pod_gpu_request(p) == 0 {
            continue;
        }
        match p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(node) => {
                let e = used.entry(node).or_default();
                *e = e.saturating_add(pod_gpu_request(p));
            }
            None => unbound.push(p),
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
    // Pods not bound yet will hold GPUs as soon as the scheduler binds them: count each against
    // the node it is pinned to, else the node of its GPU product with the most free GPUs, else
    // the node with the most free GPUs (never offering GPUs a pending pod is about to take).
    for p in unbound {
        let want = pod_gpu_request(p);
        let (hosts, products) = affinity_of(p);
        let pick = out
            .iter_mut()
            .filter(|n| hosts.is_empty() || hosts.contains(&n.name))
            .filter(|n| {
                products.is_empty()
                    || products
                        .iter()
                        .any(|pr| model_from_product(pr) == Some(n.model))
            })
            .max_by_key(|n| n.free);
        if let Some(n) = pick {
            n.free = n.free.saturating_sub(want);
        }
    }
    Inventory { nodes: out }
}

/// The `kubernetes.io/hostname` and `nvidia.com/gpu.product` values a pod's required node
/// affinity (or node selector) allows; empty when unconstrained.
fn affinity_of(p: &Pod) -> (Vec<String>, Vec<String>) {
    let (mut hosts, mut products) = (Vec::new(), Vec::new());
    let Some(spec) = &p.spec else {
        return (hosts, products);
    };
    if let Some(sel) = &spec.node_selector {
        hosts.extend(sel.get("kubernetes.io/hostname").cloned());
        products.extend(sel.get(GPU_PRODUCT_LABEL).cloned());
    }
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|s| s.node_selector_terms.as_slice())
        .unwrap_or_default();
    for e in terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .filter(|e| e.operator == "In")
    {
        let vals = e.values.clone().unwrap_or_default();
        match e.key.as_str() {
            "kubernetes.io/hostname" => hosts.extend(vals),
            k if k == GPU_PRODUCT_LABEL => products.extend(vals),
            _ => {}
        }
    }
    (hosts, products)
}

/// Merges the cluster's view with the reservations the registry holds, so that a sync never
/// drops GPUs reserved for a lease whose pod is not created or bound yet.
///
/// Per node it keeps a tally of the registry's reservations: what the registry's users
/// reserved or released since the last sync (the registry's used GPUs minus what that sync
/// wrote). The node's used GPUs are then what non-spheron pods use plus the larger of the tally
/// and what spheron's own lease pods use (a reservation whose pod is bound is not counted
/// twice).
#[derive(Debug, Default)]
pub struct ReservationTracker {
    /// Per node: (used GPUs written by the last sync, reservations counted in flight).
    nodes: BTreeMap<String, (u32, u32)>,
}

impl ReservationTracker {
    /// The inventory to write, from the `cluster`'s and the `registry`'s current one.
    /// `cluster` counts every pod, `leases` only spheron's lease pods (both from
    /// [`inventory_from`]).
    pub fn merge(
        &mut self,
        cluster: &Inventory,
        leases: &Inventory,
        registry: &Inventory,
    ) -> Inventory {
        let mut out = cluster.clone();
        for n in &mut out.nodes {
            let cluster_used = n.total.saturating_sub(n.free);
            let lease_used = leases
                .nodes
                .iter()
                .find(|l| l.name == n.name)
                .map(|l| l.total.saturating_sub(l.free))
                .unwrap_or(0);
            let other_used = cluster_used.saturating_sub(lease_used);
            let reg_used = registry
                .nodes
                .iter()
                .find(|r| r.name == n.name)
                .map(|r| r.total.saturating_sub(r.free));
            let (written, held) = self.nodes.get(&n.name).copied().unwrap_or((0, 0));
            let held = match reg_used {
                // Reservations (positive) and releases (negative) made since the last sync.
                Some(r) if self.nodes.contains_key(&n.name) => {
                    (i64::from(held) + i64::from(r) - i64::from(written))
                        .clamp(0, i64::from(n.total)) as u32
                }
                _ => 0,
            };
            // A reservation whose pod the cluster already counts is not counted twice: the
            // node holds at least what either side says.
            let used = other_used.saturating_add(lease_used.max(held)).min(n.total);
            n.free = n.total - used;
            self.nodes.insert(n.name.clone(), (used, held));
        }
        self.nodes
            .retain(|name, _| out.nodes.iter().any(|n| &n.name == name));
        out
    }
}

/// Reads a cluster's GPU inventory. [`KubeInventory::sync`] (used before every bid) reads
/// nodes and pods from watch-fed caches started on first use, never a full list per bid, and
/// keeps the registry's in-flight reservations ([`ReservationTracker`]).
#[derive(Clone)]
pub struct KubeInventory {
    client: Client,
    cache: Arc<tokio::sync::OnceCell<Caches>>,
    trackers: Arc<Mutex<BTreeMap<ProviderId, ReservationTracker>>>,
}

struct Caches {
    nodes: reflector::Store<Node>,
    pods: reflector::Store<Pod>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Caches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl std::fmt::Debug for KubeInventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeInventory").finish_non_exhaustive()
    }
}

/// Pods that hold GPUs: not finished (the API server filters the rest out of the watch).
const HOLDING: &str = "status.phase!=Succeeded,status.phase!=Failed";

fn cache_of<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> (reflector::Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let task = tokio::spawn(
        reflector(writer, watcher(api, cfg))
            .default_backoff()
            .for_each(|_| futures::future::ready(())),
    );
    (reader, task)
}

impl KubeInventory {
    /// An inventory reader on `client`.
    pub fn new(client: Client) -> Self {
        KubeInventory {
            client,
            cache: Arc::new(tokio::sync::OnceCell::new()),
            trackers: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The nodes of the cluster (a fresh list).
    pub async fn nodes(&self) -> Result<Vec<Node>> {
        Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| Error::api("list nodes", e))
    }

    /// Free and total GPUs per node, now, from fresh lists (for one-off reads; bids use the
    /// caches through [`KubeInventory::sync`]).
    pub async fn fetch(&self) -> Result<Inventory> {
        let nodes = self.nodes().await?;
        let pods = Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default().fields(HOLDING))
            .await
            .map_err(|e| Error::api("list pods", e))?
            .items;
        Ok(inventory_from(&nodes, &pods))
    }

    async fn caches(&self) -> Result<&Caches> {
        self.cache
            .get_or_try_init(|| async {
                let (nodes, t1) = cache_of(
                    Api::<Node>::all(self.client.clone()),
                    watcher::Config::default(),
                );
                let (pods, t2) = cache_of(
                    Api::<Pod>::all(self.client.clone()),
                    watcher::Config::default().fields(HOLDING),
                );
                let caches = Caches {
                    nodes,
                    pods,
                    tasks: vec![t1, t2],
                };
                let ready = async {
                    caches.nodes.wait_until_ready().await?;
                    caches.pods.wait_until_ready().await
                };
                match tokio::time::timeout(std::time::Duration::from_secs(60), ready).await {
                    Ok(Ok(())) => Ok(caches),
                    _ => Err(Error::Timeout {
                        what: "the node and pod caches to fill".into(),
                        seconds: 60,
                    }),
                }
            })
            .await
    }

    /// The inventory from the watch-fed caches: every pod, and spheron's lease pods alone.
    pub async fn cached(&self) -> Result<(Inventory, Inventory)> {
        let c = self.caches().await?;
        let nodes: Vec<Node> = c.nodes.state().iter().map(|n| (**n).clone()).collect();
        let pods: Vec<Pod> = c.pods.state().iter().map(|p| (**p).clone()).collect();
        let leases: Vec<Pod> = pods
            .iter()
            .filter(|p| {
                p.metadata.labels.as_ref().is_some_and(|l| {
                    l.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
                })
            })
            .cloned()
            .collect();
        Ok((
            inventory_from(&nodes, &pods),
            inventory_from(&nodes, &leases),
        ))
    }

    /// Writes the cluster's inventory into `registry` for `provider`, keeping the GPUs the
    /// registry reserved for leases whose pods the cluster does not show yet.
    pub async fn sync(&self, registry: &Registry, provider: ProviderId) -> Result<Inventory> {
        let (cluster, leases) = self.cached().await?;
        let trackers = self.trackers.clone();
        registry
            .update(provider, |p| {
                let mut t = trackers.lock().unwrap_or_else(|e| e.into_inner());
                let merged = t
                    .entry(provider)
                    .or_default()
                    .merge(&cluster, &leases, &p.inventory);
                p.inventory = merged.clone();
                merged
            })
            .map_err(|e| Error::InvalidField {
                field: "provider",
                reason: e.to_string(),
            })
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

    #[test]
    fn unbound_pods_count_and_reservations_survive_a_sync() {
        let nodes = [
            node("a", "NVIDIA-H100-80GB-HBM3", 8),
            node("b", "NVIDIA-H100-80GB-HBM3", 8),
        ];
        // A pending pod that is not bound yet takes GPUs from the node with the most free.
        let mut pending = pod("a", 4, "Pending");
        pending.spec.as_mut().unwrap().node_name = None;
        let inv = inventory_from(&nodes, &[pod("a", 2, "Running"), pending]);
        assert_eq!(inv.free(GpuModel::H100Sxm), 10);
        assert_eq!(inv.largest_free_block(GpuModel::H100Sxm), 6);

        // Reservations the registry made after a sync are kept by the next one.
        let mut t = ReservationTracker::default();
        let empty = inventory_from(&nodes, &[]);
        let first = t.merge(&empty, &empty, &Inventory::default());
        assert_eq!(first.free(GpuModel::H100Sxm), 16);
        let mut registry = first.clone();
        registry.reserve(GpuModel::H100Sxm, 8).unwrap();
        let second = t.merge(&empty, &empty, &registry);
        assert_eq!(second.free(GpuModel::H100Sxm), 8, "the reservation is kept");
        // Its pod binds: counted once, not twice.
        let bound = inventory_from(&nodes, &[pod("a", 8, "Running")]);
        let third = t.merge(&bound, &bound, &second);
        assert_eq!(third.free(GpuModel::H100Sxm), 8);
        // The lease ends: released in the registry and gone from the cluster.
        let mut released = third.clone();
        let n = third
            .nodes
            .iter()
            .find(|n| n.free == 0)
            .unwrap()
            .name
            .clone();
        released
            .nodes
            .iter_mut()
            .find(|x| x.name == n)
            .unwrap()
            .free = 8;
        let fourth = t.merge(&empty, &empty, &released);
        assert_eq!(fourth.free(GpuModel::H100Sxm), 16);
    }
}
