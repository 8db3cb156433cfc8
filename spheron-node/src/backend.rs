//! Where a provider node runs workloads and reads its GPU inventory, as its config file says:
//!
//! - `launcher = "local"` (the default): each workload a process on this machine
//!   ([`LocalLauncher`]), the GPUs as the `[[gpus]]` entries list them.
//! - `launcher = "kubernetes"` (feature `kubernetes`, on in the `spheron` binary): each lease in
//!   its own hardened namespace of a cluster (`spheron_k8s::KubeLauncher`), the GPUs read from
//!   the cluster's nodes and refreshed before every bid (`spheron_k8s::KubeInventory`,
//!   `spheron_k8s::KubeProviderAgent`); `[[gpus]]` entries then only price the models. Settings
//!   in a `[kubernetes]` table ([`KubernetesConfig`]):
//!
//! ```toml
//! launcher = "kubernetes"
//!
//! [[gpus]]
//! model = "h100-sxm"
//! price = "2.40"
//!
//! [kubernetes]
//! kubeconfig = "provider.kubeconfig"   # or in_cluster = true; neither: KUBECONFIG, ~/.kube/config
//! namespace_prefix = "spheron"
//! runtime_class = "nvidia"
//! ingress_namespaces = ["ingress-nginx"]
//! blocked_cidrs = ["10.244.0.0/16", "10.96.0.0/12", "192.168.0.0/24"]
//! start_timeout_secs = 50
//!
//! [kubernetes.per_gpu]
//! cpu_millis = 8000
//! memory_mib = 65536
//! ephemeral_storage_mib = 102400
//! shm_mib = 8192
//! ```

use crate::error::{Error, Result};
use crate::local_launcher::LocalLauncher;
use serde::Deserialize;
use spheron_core::{
    Amount, GpuModel, Inventory, ProviderAgent, Registry, StrategyAgent, WorkloadId,
    WorkloadLauncher,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Which launcher and inventory a provider node uses (`launcher = "..."` in its config).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LauncherKind {
    /// Processes on this machine; GPUs as configured.
    #[default]
    Local,
    /// A Kubernetes cluster; GPUs from its nodes. Needs the `kubernetes` feature.
    Kubernetes,
}

/// The CPU, memory, ephemeral storage and `/dev/shm` each leased GPU brings
/// (`[kubernetes.per_gpu]`); unset values keep `spheron_k8s`'s defaults (8 cores, 64 GiB,
/// 100 GiB, 8 GiB).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PerGpuConfig {
    /// CPU, millicores.
    pub cpu_millis: Option<u64>,
    /// Memory, MiB (`/dev/shm` counts against it).
    pub memory_mib: Option<u64>,
    /// Ephemeral storage, MiB.
    pub ephemeral_storage_mib: Option<u64>,
    /// Memory-backed `/dev/shm`, MiB.
    pub shm_mib: Option<u64>,
}

/// The `[kubernetes]` table of a provider's config. Unset values keep the launcher's
/// defaults (see `spheron_k8s::RenderOptions` and `KubeLauncherBuilder`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file (relative to the config file). Unset and not `in_cluster`: the
    /// `KUBECONFIG` variable, then `~/.kube/config`, then the in-cluster service account.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[serde(default)]
    pub context: Option<String>,
    /// Use the service account of the pod the node runs in (deploy it with
    /// `spheron-k8s/deploy/rbac.yaml`), never a kubeconfig file.
    #[serde(default)]
    pub in_cluster: bool,
    /// Lease namespaces are `<prefix>-lease-<n>` (default `spheron`).
    #[serde(default)]
    pub namespace_prefix: Option<String>,
    /// Resources per leased GPU (requests = limits: Guaranteed QoS).
    #[serde(default)]
    pub per_gpu: PerGpuConfig,
    /// RuntimeClass of tenant pods (for example `nvidia`, `gvisor`, `kata`); default none.
    #[serde(default)]
    pub runtime_class: Option<String>,
    /// Namespaces allowed to connect to tenant pods (default `["ingress-nginx"]`; `[]`: none).
    #[serde(default)]
    pub ingress_namespaces: Option<Vec<String>>,
    /// Egress exclusions: the cluster's pod, service and node ranges tenant pods may not reach
    /// (link-local is always excluded). Default: the private ranges 10/8, 172.16/12,
    /// 192.168/16, 100.64/10 and fc00::/7.
    #[serde(default)]
    pub blocked_cidrs: Option<Vec<String>>,
    /// Namespace of the cluster DNS that tenant pods may query (default `kube-system`).
    #[serde(default)]
    pub dns_namespace: Option<String>,
    /// User id tenant containers run as (default 1000; never root).
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// Mount tenant root filesystems read-only (with a writable `/tmp`). Default off.
    #[serde(default)]
    pub read_only_root_filesystem: bool,
    /// Seconds a launch waits for the container to run before it fails (typed reason, the
    /// namespace deleted, the tenant refunded). Default 50: under the tenants' default 60 s
    /// launch timeout, so the provider reports the failure first.
    #[serde(default = "default_start_timeout")]
    pub start_timeout_secs: u64,
    /// Seconds `stop` waits for a lease namespace to be gone (default 120).
    #[serde(default)]
    pub deletion_timeout_secs: Option<u64>,
    /// Seconds after a lease's paid end before the launcher tears it down by itself if the
    /// node did not (default 30).
    #[serde(default)]
    pub expiry_grace_secs: Option<u64>,
}

fn default_start_timeout() -> u64 {
    50
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            kubeconfig: None,
            context: None,
            in_cluster: false,
            namespace_prefix: None,
            per_gpu: PerGpuConfig::default(),
            runtime_class: None,
            ingress_namespaces: None,
            blocked_cidrs: None,
            dns_namespace: None,
            run_as_user: None,
            read_only_root_filesystem: false,
            start_timeout_secs: default_start_timeout(),
            deletion_timeout_secs: None,
            expiry_grace_secs: None,
        }
    }
}

/// The launcher, inventory and bidding agent of a provider node, built from its config.
pub struct Backend {
    launcher: Arc<dyn WorkloadLauncher>,
    local: Option<Arc<LocalLauncher>>,
    #[cfg(feature = "kubernetes")]
    kube: Option<KubeParts>,
}

#[cfg(feature = "kubernetes")]
struct KubeParts {
    launcher: spheron_k8s::KubeLauncher,
    inventory: spheron_k8s::KubeInventory,
    prefix: String,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Processes on this machine.
    pub fn local() -> Self {
        let local = Arc::new(LocalLauncher::new());
        Backend {
            launcher: local.clone(),
            local: Some(local),
            #[cfg(feature = "kubernetes")]
            kube: None,
        }
    }

    /// The backend `kind` with its `[kubernetes]` settings (`None`: all defaults). Connects
    /// to the cluster (no API call yet) for `kubernetes`.
    pub async fn new(kind: LauncherKind, kubernetes: Option<&KubernetesConfig>) -> Result<Self> {
        match (kind, kubernetes) {
            (LauncherKind::Local, None) => Ok(Self::local()),
            (LauncherKind::Local, Some(_)) => Err(Error::config(
                "kubernetes",
                "a [kubernetes] table needs launcher = \"kubernetes\"",
            )),
            (LauncherKind::Kubernetes, k) => Self::kubernetes(k.cloned().unwrap_or_default()).await,
        }
    }

    #[cfg(not(feature = "kubernetes"))]
    async fn kubernetes(_: KubernetesConfig) -> Result<Self> {
        Err(Error::config(
            "launcher",
            "this build has no Kubernetes support (build spheron-node with the `kubernetes` feature)",
        ))
    }

    #[cfg(feature = "kubernetes")]
    async fn kubernetes(k: KubernetesConfig) -> Result<Self> {
        let client = kube_client(&k).await?;
        let launcher = kube_launcher(client.clone(), &k)?;
        let prefix = k
            .namespace_prefix
            .clone()
            .unwrap_or_else(|| spheron_k8s::RenderOptions::default().namespace_prefix);
        Ok(Backend {
            launcher: Arc::new(launcher.clone()),
            local: None,
            kube: Some(KubeParts {
                launcher,
                inventory: spheron_k8s::KubeInventory::new(client),
                prefix,
            }),
        })
    }

    /// Which backend this is.
    pub fn kind(&self) -> LauncherKind {
        if self.local.is_some() {
            LauncherKind::Local
        } else {
            LauncherKind::Kubernetes
        }
    }

    /// Whether the gateway can proxy the ports workloads declare ([`crate::ports`]): the
    /// local launcher's loopback ports, yes; Kubernetes, not yet (the pod gets its
    /// `containerPort`s and a ClusterIP Service, but the node does not proxy into the
    /// cluster), so such workloads are refused rather than run with unreachable ports.
    pub fn proxies_ports(&self) -> bool {
        self.local.is_some()
    }

    /// The workload launcher.
    pub fn launcher(&self) -> Arc<dyn WorkloadLauncher> {
        self.launcher.clone()
    }

    /// Where the local launcher kept a lease's working directory (`None` on Kubernetes, where
    /// files stay in the pod).
    pub fn workdir_of_lease(&self, lease: spheron_core::LeaseId) -> Option<std::path::PathBuf> {
        self.local.as_ref().and_then(|l| l.workdir_of_lease(lease))
    }

    /// The process group of a local workload (`None` on Kubernetes).
    pub fn pid(&self, id: &WorkloadId) -> Option<u32> {
        self.local.as_ref().and_then(|l| l.pid(id))
    }

    /// The inventory to register: `configured` for the local launcher; for Kubernetes, the
    /// cluster's GPU nodes of the models that have a price (the others cannot be sold).
    pub async fn inventory(
        &self,
        configured: Inventory,
        prices: &BTreeMap<GpuModel, Amount>,
    ) -> Result<Inventory> {
        #[cfg(feature = "kubernetes")]
        if let Some(k) = &self.kube {
            let mut inv = k.inventory.fetch().await.map_err(k8s_err)?;
            inv.nodes.retain(|n| prices.contains_key(&n.model));
            if inv.nodes.is_empty() {
                let models: Vec<&str> = prices.keys().map(|m| m.name()).collect();
                return Err(Error::config(
                    "gpus",
                    format!(
                        "the cluster has no schedulable GPU node of the priced models ({})",
                        models.join(", ")
                    ),
                ));
            }
            return Ok(inv);
        }
        let _ = prices;
        Ok(configured)
    }

    /// The bidding agent: `inner` itself for the local launcher; for Kubernetes, `inner`
    /// behind a refresh of the provider's inventory in `registry` from the cluster before
    /// every bid (reservations in flight kept).
    pub fn agent(&self, inner: StrategyAgent, registry: Arc<Registry>) -> Arc<dyn ProviderAgent> {
        #[cfg(feature = "kubernetes")]
        if let Some(k) = &self.kube {
            return Arc::new(spheron_k8s::KubeProviderAgent::new(
                k.inventory.clone(),
                registry,
                Arc::new(inner),
            ));
        }
        let _ = registry;
        Arc::new(inner)
    }

    /// After a restart: the workloads of the leases that still run, by lease id. On
    /// Kubernetes the launcher reconciles the lease namespaces (live ones reattached, expired
    /// or half-made ones deleted); local processes cannot be reattached (none).
    pub async fn reattach(&self) -> Result<BTreeMap<u64, WorkloadId>> {
        #[cfg(feature = "kubernetes")]
        if let Some(k) = &self.kube {
            let r = k.launcher.reconcile().await.map_err(k8s_err)?;
            let lease_of = format!("{}-lease-", k.prefix);
            return Ok(r
                .reattached
                .into_iter()
                .filter_map(|w| Some((w.0.strip_prefix(&lease_of)?.parse().ok()?, w)))
                .collect());
        }
        Ok(BTreeMap::new())
    }
}

#[cfg(feature = "kubernetes")]
fn k8s_err(e: spheron_k8s::Error) -> Error {
    match e {
        spheron_k8s::Error::Config { field, reason }
        | spheron_k8s::Error::InvalidField { field, reason } => {
            Error::config(format!("kubernetes.{field}"), reason)
        }
        spheron_k8s::Error::InvalidName {
            field,
            name,
            reason,
        } => Error::config(format!("kubernetes.{field}"), format!("`{name}`: {reason}")),
        other => Error::Core(other.into()),
    }
}

#[cfg(feature = "kubernetes")]
async fn kube_client(k: &KubernetesConfig) -> Result<spheron_k8s::kube::Client> {
    use spheron_k8s::kube::config::{Config, KubeConfigOptions, Kubeconfig};
    let opts = KubeConfigOptions {
        context: k.context.clone(),
        ..Default::default()
    };
    let config = match (&k.kubeconfig, k.in_cluster) {
        (Some(_), true) => {
            return Err(Error::config(
                "kubernetes.in_cluster",
                "set either kubeconfig or in_cluster, not both",
            ));
        }
        (Some(path), false) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| {
                Error::config("kubernetes.kubeconfig", format!("{}: {e}", path.display()))
            })?;
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| Error::config("kubernetes.kubeconfig", e.to_string()))?
        }
        (None, true) => Config::incluster()
            .map_err(|e| Error::config("kubernetes.in_cluster", e.to_string()))?,
        (None, false) => Config::infer()
            .await
            .map_err(|e| Error::config("kubernetes.kubeconfig", format!("none given and {e}")))?,
    };
    spheron_k8s::kube::Client::try_from(config)
        .map_err(|e| Error::config("kubernetes", format!("cannot build a client: {e}")))
}

#[cfg(feature = "kubernetes")]
fn kube_launcher(
    client: spheron_k8s::kube::Client,
    k: &KubernetesConfig,
) -> Result<spheron_k8s::KubeLauncher> {
    use std::time::Duration;
    for (field, v) in [
        ("kubernetes.start_timeout_secs", Some(k.start_timeout_secs)),
        ("kubernetes.deletion_timeout_secs", k.deletion_timeout_secs),
    ] {
        if v == Some(0) {
            return Err(Error::config(field, "must be at least 1"));
        }
    }
    let mut r = spheron_k8s::RenderOptions::default();
    if let Some(p) = &k.namespace_prefix {
        r.namespace_prefix = p.clone();
    }
    // The registry's node names are the cluster's (the inventory comes from it): place each
    // lease's pod on the node reserved for it.
    r.pin_to_reserved_node = true;
    let g = &k.per_gpu;
    r.per_gpu = spheron_k8s::PerGpu {
        cpu_millis: g.cpu_millis.unwrap_or(r.per_gpu.cpu_millis),
        memory_mib: g.memory_mib.unwrap_or(r.per_gpu.memory_mib),
        ephemeral_storage_mib: g
            .ephemeral_storage_mib
            .unwrap_or(r.per_gpu.ephemeral_storage_mib),
        shm_mib: g.shm_mib.unwrap_or(r.per_gpu.shm_mib),
    };
    r.runtime_class.clone_from(&k.runtime_class);
    if let Some(n) = &k.ingress_namespaces {
        r.ingress_namespaces.clone_from(n);
    }
    if let Some(c) = &k.blocked_cidrs {
        r.blocked_cidrs.clone_from(c);
    }
    if let Some(d) = &k.dns_namespace {
        r.dns_namespace.clone_from(d);
    }
    if let Some(u) = k.run_as_user {
        r.run_as_user = u;
    }
    r.read_only_root_filesystem = k.read_only_root_filesystem;
    let mut b = spheron_k8s::KubeLauncher::builder(client)
        .render_options(r)
        .start_timeout(Duration::from_secs(k.start_timeout_secs));
    if let Some(s) = k.deletion_timeout_secs {
        b = b.deletion_timeout(Duration::from_secs(s));
    }
    if let Some(s) = k.expiry_grace_secs {
        b = b.expiry_grace(Duration::from_secs(s));
    }
    b.build().map_err(k8s_err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::provider::ProviderConfig;

    const BASE: &str = "name = \"x\"\nnetwork = \"n.json\"\nkey_file = \"k\"\n\
        listen = \"127.0.0.1:1\"\nregion = \"r\"\nlat = 0.0\nlon = 0.0\nstake = \"1\"\n\
        data_dir = \"d\"\n";

    fn load(dir: &std::path::Path, text: &str) -> Result<ProviderConfig> {
        let path = dir.join("p.toml");
        std::fs::write(&path, text).unwrap();
        ProviderConfig::load(&path)
    }

    #[test]
    fn the_launcher_is_local_unless_the_config_says_kubernetes() {
        let dir = tempfile::tempdir().unwrap();
        let gpus = "[[gpus]]\nmodel = \"h100-sxm\"\nper_node = 8\nprice = \"2\"\n";
        let cfg = load(dir.path(), &format!("{BASE}{gpus}")).unwrap();
        assert_eq!(cfg.launcher, LauncherKind::Local);
        assert!(cfg.kubernetes.is_none());
        let cfg = load(
            dir.path(),
            &format!(
                "{BASE}launcher = \"kubernetes\"\n[[gpus]]\nmodel = \"h100-sxm\"\nprice = \"2\"\n\
                 [kubernetes]\nkubeconfig = \"kc\"\nnamespace_prefix = \"acme\"\n\
                 blocked_cidrs = [\"10.244.0.0/16\"]\n[kubernetes.per_gpu]\ncpu_millis = 4000\n"
            ),
        )
        .unwrap();
        assert_eq!(cfg.launcher, LauncherKind::Kubernetes);
        let k = cfg.kubernetes.clone().unwrap();
        assert_eq!(
            k.kubeconfig.unwrap(),
            dir.path().join("kc"),
            "relative to the file"
        );
        assert_eq!(k.per_gpu.cpu_millis, Some(4000));
        assert_eq!(k.start_timeout_secs, 50);
        // On Kubernetes, `gpus` entries only price models: no per_node needed.
        let (inv, prices) = cfg
            .inventory_and_prices(&spheron_core::Token::usd())
            .unwrap();
        assert!(inv.nodes.is_empty());
        assert_eq!(prices.len(), 1);
        // The local launcher still needs per_node.
        let err = load(
            dir.path(),
            &format!("{BASE}[[gpus]]\nmodel = \"h100-sxm\"\nprice = \"2\"\n"),
        )
        .unwrap()
        .inventory_and_prices(&spheron_core::Token::usd())
        .unwrap_err()
        .to_string();
        assert!(err.contains("gpus[0]"), "{err}");
    }

    #[test]
    fn bad_launcher_settings_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let gpus = "[[gpus]]\nmodel = \"h100-sxm\"\nprice = \"2\"\n";
        let err = load(dir.path(), &format!("{BASE}launcher = \"nomad\"\n{gpus}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nomad") && err.contains("kubernetes"), "{err}");
        let err = load(
            dir.path(),
            &format!("{BASE}launcher = \"kubernetes\"\n{gpus}[kubernetes]\nbogus = 1\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = load(
            dir.path(),
            &format!(
                "{BASE}launcher = \"kubernetes\"\n{gpus}[kubernetes]\nstart_timeout_secs = \"soon\"\n"
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("start_timeout_secs"), "{err}");
    }

    #[tokio::test]
    async fn a_kubernetes_table_needs_the_kubernetes_launcher() {
        let e = Backend::new(LauncherKind::Local, Some(&KubernetesConfig::default()))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Config { field, .. } if field == "kubernetes"),
            "{e}"
        );
        let local = Backend::new(LauncherKind::Local, None).await.unwrap();
        assert_eq!(local.kind(), LauncherKind::Local);
        assert!(local.proxies_ports());
    }

    #[cfg(feature = "kubernetes")]
    #[tokio::test]
    async fn kubernetes_settings_are_checked_before_any_call() {
        let dir = tempfile::tempdir().unwrap();
        // A cluster that is never contacted: every check here needs none.
        let kc = dir.path().join("kc");
        std::fs::write(
            &kc,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n\
             users:\n- name: u\n  user:\n    token: t\n",
        )
        .unwrap();
        let with = |f: &dyn Fn(&mut KubernetesConfig)| {
            let mut k = KubernetesConfig {
                kubeconfig: Some(kc.clone()),
                ..Default::default()
            };
            f(&mut k);
            k
        };
        let field_of = |r: Result<Backend>| match r {
            Err(Error::Config { field, .. }) => field,
            Err(e) => panic!("expected a config error, got {e}"),
            Ok(_) => panic!("expected a config error"),
        };
        let ok = Backend::new(LauncherKind::Kubernetes, Some(&with(&|_| {})))
            .await
            .unwrap();
        assert_eq!(ok.kind(), LauncherKind::Kubernetes);
        assert!(
            !ok.proxies_ports(),
            "a Kubernetes node refuses declared ports"
        );
        assert!(ok.pid(&WorkloadId("spheron-lease-1".into())).is_none());
        for (k, field) in [
            (
                with(&|k| k.namespace_prefix = Some("Bad_Prefix".into())),
                "kubernetes.namespace_prefix",
            ),
            (
                with(&|k| k.per_gpu.shm_mib = Some(1 << 20)),
                "kubernetes.per_gpu.shm_mib",
            ),
            (
                with(&|k| k.per_gpu.cpu_millis = Some(0)),
                "kubernetes.per_gpu.cpu_millis",
            ),
            (
                with(&|k| k.runtime_class = Some("no spaces".into())),
                "kubernetes.runtime_class",
            ),
            (
                with(&|k| k.ingress_namespaces = Some(vec!["UPPER".into()])),
                "kubernetes.ingress_namespaces",
            ),
            (
                with(&|k| k.blocked_cidrs = Some(vec!["10.0.0.0/99".into()])),
                "kubernetes.blocked_cidrs",
            ),
            (with(&|k| k.run_as_user = Some(0)), "kubernetes.run_as_user"),
            (
                with(&|k| k.start_timeout_secs = 0),
                "kubernetes.start_timeout_secs",
            ),
            (
                with(&|k| k.kubeconfig = Some(dir.path().join("missing"))),
                "kubernetes.kubeconfig",
            ),
            (with(&|k| k.in_cluster = true), "kubernetes.in_cluster"),
        ] {
            assert_eq!(
                field_of(Backend::new(LauncherKind::Kubernetes, Some(&k)).await),
                field,
                "{k:?}"
            );
        }
    }
}
