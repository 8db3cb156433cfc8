//! [`KubeLauncher`]: each lease in its own namespace, status from pod, Job and event watches,
//! logs streamed from the API server, teardown by deleting the namespace.
//!
//! `launch` resolves once the workload's container runs (billing starts then), or fails with
//! [`Error::NotStarted`] after the start timeout, naming the last waiting reason
//! (`ImagePullBackOff`, `Unschedulable`, `FailedCreate`, ...), with the namespace deleted.
//! [`KubeLauncher::reconcile`] rebuilds the launcher's state from the labelled namespaces after
//! a restart.

use crate::error::{Error, Result};
use crate::labels::{
    ENDS_AT_ANNOTATION, GPU_PRODUCT_LABEL, GPU_RESOURCE, LEASE_LABEL, MANAGED_BY, MANAGED_BY_LABEL,
    TENANT_LABEL, WORKLOAD_KIND_ANNOTATION, WORKLOAD_NAME_ANNOTATION, model_from_product,
};
use crate::names::validate_dns_label;
use crate::render::{
    CONTAINER_NAME, LeaseObjects, LeaseOptions, PerGpu, RenderOptions, WorkloadObjects, render_with,
};
use async_trait::async_trait;
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Event as K8sEvent, LimitRange, Namespace, Node, Pod, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use spheron_core::{
    Clock, LaunchSpec, LogBuffer, LogSource, LogStream, SystemClock, Timestamp, Workload,
    WorkloadId, WorkloadLauncher, WorkloadStatus,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Settings of a [`KubeLauncher`]; `Default` + `#[must_use]` setters, checked in
/// [`KubeLauncherBuilder::build`].
pub struct KubeLauncherBuilder {
    client: Client,
    render: RenderOptions,
    workload_name: String,
    clock: Arc<dyn Clock>,
    expiry_grace: Duration,
    deletion_timeout: Duration,
    check_capacity: bool,
    finished_retention: Option<Duration>,
    start_timeout: Duration,
    state_retention: Duration,
}

impl std::fmt::Debug for KubeLauncherBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLauncherBuilder")
            .field("render", &self.render)
            .field("workload_name", &self.workload_name)
            .field("expiry_grace", &self.expiry_grace)
            .field("deletion_timeout", &self.deletion_timeout)
            .field("check_capacity", &self.check_capacity)
            .field("start_timeout", &self.start_timeout)
            .finish_non_exhaustive()
    }
}

impl KubeLauncherBuilder {
    /// Namespaces are named `<prefix>-lease-<n>` (default prefix `spheron`).
    #[must_use]
    pub fn namespace_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.render.namespace_prefix = prefix.into();
        self
    }

    /// Every rendering option at once (hardening, network ranges, resources per GPU); the
    /// namespace prefix and pinning set before are replaced too.
    #[must_use]
    pub fn render_options(mut self, opts: RenderOptions) -> Self {
        self.render = opts;
        self
    }

    /// CPU, memory, ephemeral storage and `/dev/shm` per leased GPU.
    #[must_use]
    pub fn per_gpu(mut self, per_gpu: PerGpu) -> Self {
        self.render.per_gpu = per_gpu;
        self
    }

    /// The cluster's pod, service and node ranges, which tenant pods may not reach (besides
    /// link-local, always blocked). See [`RenderOptions::blocked_cidrs`] for the default.
    #[must_use]
    pub fn blocked_cidrs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, cidrs: I) -> Self {
        self.render.blocked_cidrs = cidrs.into_iter().map(Into::into).collect();
        self
    }

    /// Namespaces allowed to connect to tenant pods (default `ingress-nginx`).
    #[must_use]
    pub fn ingress_namespaces<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        namespaces: I,
    ) -> Self {
        self.render.ingress_namespaces = namespaces.into_iter().map(Into::into).collect();
        self
    }

    /// Run tenant pods under this RuntimeClass (default: the cluster's default runtime).
    #[must_use]
    pub fn runtime_class(mut self, class: impl Into<String>) -> Self {
        self.render.runtime_class = Some(class.into());
        self
    }

    /// The name of the Job or Deployment (and Service) in each namespace (default `workload`).
    #[must_use]
    pub fn workload_name(mut self, name: impl Into<String>) -> Self {
        self.workload_name = name.into();
        self
    }

    /// Pin pods to the node named in [`LaunchSpec::node`] (use when the provider's registry
    /// inventory comes from [`crate::KubeInventory`], so node names are the cluster's). Default off.
    #[must_use]
    pub fn pin_to_reserved_node(mut self, pin: bool) -> Self {
        self.render.pin_to_reserved_node = pin;
        self
    }

    /// The clock on which [`LaunchSpec::ends_at`] is read (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long after `ends_at` the launcher tears a lease down by itself if nobody stopped it
    /// (default 30 s, so the tenant side settles first).
    #[must_use]
    pub fn expiry_grace(mut self, grace: Duration) -> Self {
        self.expiry_grace = grace;
        self
    }

    /// How long `stop` waits for the namespace to disappear (default 120 s).
    #[must_use]
    pub fn deletion_timeout(mut self, timeout: Duration) -> Self {
        self.deletion_timeout = timeout;
        self
    }

    /// How long `launch` waits for the container to run before it deletes the lease's
    /// namespace and fails with [`Error::NotStarted`] (default 10 minutes: large images take
    /// a while to pull).
    #[must_use]
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long a stopped or finished lease's status and logs stay readable from the launcher
    /// before its state is dropped (default 10 minutes).
    #[must_use]
    pub fn state_retention(mut self, keep: Duration) -> Self {
        self.state_retention = keep;
        self
    }

    /// How long a finished workload's namespace is kept before it is deleted: `Some(ZERO)`
    /// (the default) deletes it right after the end is reported and the logs drained, so a
    /// closed lease leaves nothing in the cluster; `None` keeps it until `stop`. Logs stay
    /// readable from the launcher either way.
    #[must_use]
    pub fn finished_retention(mut self, keep: Option<Duration>) -> Self {
        self.finished_retention = keep;
        self
    }

    /// Refuse launches asking for more GPUs than any node of the model has (default on).
    #[must_use]
    pub fn check_capacity(mut self, check: bool) -> Self {
        self.check_capacity = check;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<KubeLauncher> {
        validate_dns_label("namespace_prefix", &self.render.namespace_prefix).map_err(|e| {
            Error::Config {
                field: "namespace_prefix",
                reason: e.to_string(),
            }
        })?;
        if self.render.namespace_prefix.len() > 40 {
            return Err(Error::Config {
                field: "namespace_prefix",
                reason: "at most 40 characters, leaving room for the lease id".into(),
            });
        }
        self.render.validate()?;
        crate::names::validate_dns1035_label("workload_name", &self.workload_name).map_err(
            |e| Error::Config {
                field: "workload_name",
                reason: e.to_string(),
            },
        )?;
        for (field, d) in [
            ("deletion_timeout", self.deletion_timeout),
            ("start_timeout", self.start_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::Config {
                    field,
                    reason: "must be positive".into(),
                });
            }
        }
        Ok(KubeLauncher {
            inner: Arc::new(Inner {
                client: self.client,
                render: self.render,
                workload_name: self.workload_name,
                clock: self.clock,
                expiry_grace: self.expiry_grace,
                deletion_timeout: self.deletion_timeout,
                check_capacity: self.check_capacity,
                finished_retention: self.finished_retention,
                start_timeout: self.start_timeout,
                state_retention: self.state_retention,
                leases: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// Launches each lease's workload in its own namespace of a Kubernetes cluster.
///
/// Per lease: a namespace `<prefix>-lease-<n>` labelled with the lease and PodSecurity levels
/// (enforce `baseline`, warn and audit `restricted`), a ResourceQuota and LimitRange holding the
/// leased GPUs and their CPU, memory and ephemeral storage, a NetworkPolicy (ingress from the
/// lease's own pods and the ingress namespaces only; egress to DNS and the internet only, never
/// link-local or the cluster's ranges), a Secret for secret environment variables, and a Job
/// (batch) or a Deployment and Service (service) whose pod runs as non-root with no privilege
/// escalation, all capabilities dropped, seccomp `RuntimeDefault`, Guaranteed QoS and a
/// memory-backed `/dev/shm`. Status follows watches on the lease's pods, Job and warning events;
/// logs stream from the API server; `stop` and expiry delete the namespace and wait until it is
/// gone.
#[derive(Clone)]
pub struct KubeLauncher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KubeLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLauncher")
            .field("render", &self.inner.render)
            .field("workload_name", &self.inner.workload_name)
            .finish_non_exhaustive()
    }
}

struct Inner {
    client: Client,
    render: RenderOptions,
    workload_name: String,
    clock: Arc<dyn Clock>,
    expiry_grace: Duration,
    deletion_timeout: Duration,
    check_capacity: bool,
    finished_retention: Option<Duration>,
    start_timeout: Duration,
    state_retention: Duration,
    leases: Mutex<HashMap<WorkloadId, Arc<LeaseRun>>>,
}

impl Inner {
    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<WorkloadId, Arc<LeaseRun>>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a lease's watch follows.
#[derive(Clone)]
struct Follow {
    lease: String,
    name: String,
    batch: bool,
}

struct LeaseRun {
    namespace: String,
    status: watch::Sender<WorkloadStatus>,
    logs: LogBuffer,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set once `stop` or expiry started: the pods' disappearance is then not a failure.
    stopping: watch::Sender<bool>,
    /// Set once the pods reached a terminal phase: log streams finish with a last plain read.
    finished: watch::Sender<bool>,
    /// Set once a finished workload's logs are drained (and its namespace deleted when the
    /// retention is zero).
    cleaned: watch::Sender<bool>,
    /// Why the workload is not running yet, as last seen (waiting reason, scheduling failure,
    /// warning event).
    waiting: Mutex<Option<String>>,
}

impl LeaseRun {
    fn new(namespace: String) -> Self {
        LeaseRun {
            namespace,
            status: watch::channel(WorkloadStatus::Pending).0,
            logs: LogBuffer::new(),
            tasks: Mutex::new(Vec::new()),
            stopping: watch::channel(false).0,
            finished: watch::channel(false).0,
            cleaned: watch::channel(false).0,
            waiting: Mutex::new(None),
        }
    }

    fn set_terminal(&self, s: WorkloadStatus) {
        self.status.send_if_modified(|cur| {
            if cur.is_terminal() || *cur == s {
                false
            } else {
                *cur = s;
                true
            }
        });
    }

    /// Records why the workload waits; a new reason goes to the lease's log and tracing.
    fn set_waiting(&self, why: String) {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if w.as_deref() != Some(why.as_str()) {
            tracing::info!(namespace = %self.namespace, reason = %why, "workload waiting");
            self.logs.push(LogSource::System, format!("waiting: {why}"));
            *w = Some(why);
        }
    }

    fn waiting(&self) -> Option<String> {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What [`KubeLauncher::reconcile`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Live leases whose namespaces were found and are followed again (status, logs, expiry).
    pub reattached: Vec<WorkloadId>,
    /// Namespaces deleted: expired leases, and half-created ones (no workload object, or no
    /// readable annotations).
    pub deleted: Vec<String>,
}

/// Deletes a half-made lease's namespace if the launch is abandoned (an error, or its future
/// dropped) before it was handed to the caller.
struct RollbackGuard {
    inner: Arc<Inner>,
    id: WorkloadId,
    armed: bool,
}

impl Drop for RollbackGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let inner = self.inner.clone();
        let id = self.id.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                tracing::warn!(workload = %id, "launch abandoned: removing what it created");
                h.spawn(async move {
                    abandon(&inner, &id, "launch cancelled").await;
                });
            }
            Err(_) => {
                tracing::error!(workload = %id, "launch abandoned outside a runtime: the next reconcile removes it")
            }
        }
    }
}

/// Tears down a lease that was never handed out (or that failed to start) and drops its state.
async fn abandon(inner: &Arc<Inner>, id: &WorkloadId, why: &str) {
    let run = inner.leases().get(id).cloned();
    match run {
        Some(_) => {
            if let Err(e) = teardown(inner, id, why).await {
                tracing::error!(workload = %id, error = %e, "removing an abandoned launch failed");
            }
        }
        None => {
            if let Err(e) = delete_namespace_retrying(inner, &id.0).await {
                tracing::error!(workload = %id, error = %e, "removing an abandoned launch failed");
            }
        }
    }
    inner.leases().remove(id);
}

impl KubeLauncher {
    /// A launcher on `client` with default settings.
    pub fn new(client: Client) -> Self {
        Self::builder(client)
            .build()
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }

    /// A builder on `client`.
    pub fn builder(client: Client) -> KubeLauncherBuilder {
        KubeLauncherBuilder {
            client,
            render: RenderOptions::default(),
            workload_name: "workload".to_string(),
            clock: Arc::new(SystemClock),
            expiry_grace: Duration::from_secs(30),
            deletion_timeout: Duration::from_secs(120),
            check_capacity: true,
            finished_retention: Some(Duration::ZERO),
            start_timeout: Duration::from_secs(600),
            state_retention: Duration::from_secs(600),
        }
    }

    /// The objects `launch` would create, after every check that needs no cluster.
    pub fn render(&self, spec: &LaunchSpec, workload: &Workload) -> Result<LeaseObjects> {
        self.render_lease(
            spec,
            workload,
            &self.inner.workload_name,
            &LeaseOptions::default(),
        )
    }

    fn render_lease(
        &self,
        spec: &LaunchSpec,
        workload: &Workload,
        name: &str,
        opts: &LeaseOptions,
    ) -> Result<LeaseObjects> {
        // The Job's own deadline: the paid time left plus the grace, so pods end even when
        // this launcher is gone.
        let left = spec
            .ends_at
            .0
            .saturating_sub(self.inner.clock.now().0)
            .saturating_add(self.inner.expiry_grace.as_millis() as u64);
        let deadline = i64::try_from(left.div_ceil(1000)).unwrap_or(i64::MAX);
        render_with(
            &self.inner.render,
            opts,
            spec,
            workload,
            name,
            Some(deadline),
        )
    }

    /// The namespace a lease runs in.
    pub fn namespace_of(&self, spec: &LaunchSpec) -> String {
        crate::render::namespace_for(&self.inner.render.namespace_prefix, spec)
    }

    /// Launches `workload` under the Job/Deployment name `name` (a DNS-1035 label) instead of
    /// the configured one. Every input is checked before anything is created.
    pub async fn launch_named(
        &self,
        spec: &LaunchSpec,
        workload: &Workload,
        name: &str,
    ) -> Result<WorkloadId> {
        self.launch_with(spec, workload, name, &LeaseOptions::default())
            .await
    }

    /// Launches `workload` with per-lease options (root allowed, another RuntimeClass) and
    /// resolves once its container runs; see [`WorkloadLauncher::launch`].
    pub async fn launch_with(
        &self,
        spec: &LaunchSpec,
        workload: &Workload,
        name: &str,
        opts: &LeaseOptions,
    ) -> Result<WorkloadId> {
        let objects = self.render_lease(spec, workload, name, opts)?;
        if self.inner.check_capacity {
            self.check_capacity(spec).await?;
        }
        let ns = objects.namespace_name().to_string();
        let id = WorkloadId(ns.clone());
        tracing::info!(lease = %spec.lease, namespace = %ns, gpus = spec.gpus, model = %spec.model.name(), "launching on Kubernetes");
        let c = self.inner.client.clone();
        match Api::<Namespace>::all(c.clone())
            .create(&PostParams::default(), &objects.namespace)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Err(Error::AlreadyLaunched(ns));
            }
            Err(e) => return Err(Error::api(format!("create namespace {ns}"), e)),
        }
        // From here on, an error or a dropped future removes the namespace again.
        let mut guard = RollbackGuard {
            inner: self.inner.clone(),
            id: id.clone(),
            armed: true,
        };
        if let Err(e) = self.create_rest(&objects).await {
            guard.armed = false;
            if let Err(r) = delete_namespace_retrying(&self.inner, &ns).await {
                tracing::error!(namespace = %ns, error = %r, "rollback failed: the next reconcile removes it");
            }
            return Err(e);
        }

        let run = Arc::new(LeaseRun::new(ns.clone()));
        run.logs
            .push(LogSource::System, format!("created namespace {ns}"));
        let follow = Follow {
            lease: spec.lease.to_string(),
            name: name.to_string(),
            batch: matches!(objects.workload, WorkloadObjects::Job(_)),
        };
        self.attach(&id, run.clone(), follow, spec.ends_at);

        let mut rx = run.status.subscribe();
        let started = tokio::time::timeout(
            self.inner.start_timeout,
            rx.wait_for(|s| *s != WorkloadStatus::Pending),
        )
        .await
        .map(|r| r.is_ok());
        match started {
            Ok(true) => {
                guard.armed = false;
                run.logs.push(LogSource::System, "container running");
                Ok(id)
            }
            Ok(false) | Err(_) => {
                guard.armed = false;
                let reason = run
                    .waiting()
                    .unwrap_or_else(|| "no pod was created or scheduled".to_string());
                abandon(&self.inner, &id, "did not start").await;
                Err(Error::NotStarted {
                    namespace: ns,
                    waited: self.inner.start_timeout,
                    reason,
                })
            }
        }
    }

    /// Starts following a lease (status watch, expiry) and records it.
    fn attach(&self, id: &WorkloadId, run: Arc<LeaseRun>, follow: Follow, ends_at: Timestamp) {
        let watch_task = tokio::spawn(watch_lease(self.inner.clone(), run.clone(), follow));
        let expiry_task = tokio::spawn(expire(
            self.inner.clone(),
            id.clone(),
            ends_at.add(self.inner.expiry_grace),
        ));
        run.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([watch_task, expiry_task]);
        self.inner.leases().insert(id.clone(), run);
    }

    async fn check_capacity(&self, spec: &LaunchSpec) -> Result<()> {
        let nodes = Api::<Node>::all(self.inner.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::api("list nodes", e))?;
        let largest = nodes
            .items
            .iter()
            .filter(|n| {
                n.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(GPU_PRODUCT_LABEL))
                    .and_then(|p| model_from_product(p))
                    == Some(spec.model)
            })
            .filter_map(|n| {
                n.status
                    .as_ref()?
                    .allocatable
                    .as_ref()?
                    .get(GPU_RESOURCE)?
                    .0
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        if largest < spec.gpus {
            return Err(Error::NoNodeFits {
                model: spec.model,
                requested: spec.gpus,
                largest,
            });
        }
        Ok(())
    }

    /// Everything of a lease but its namespace, which exists already.
    async fn create_rest(&self, o: &LeaseObjects) -> Result<()> {
        let c = self.inner.client.clone();
        let ns = o.namespace_name();
        let pp = PostParams::default();
        Api::<ResourceQuota>::namespaced(c.clone(), ns)
            .create(&pp, &o.quota)
            .await
            .map_err(|e| Error::api("create resource quota", e))?;
        Api::<LimitRange>::namespaced(c.clone(), ns)
            .create(&pp, &o.limit_range)
            .await
            .map_err(|e| Error::api("create limit range", e))?;
        Api::<NetworkPolicy>::namespaced(c.clone(), ns)
            .create(&pp, &o.network_policy)
            .await
            .map_err(|e| Error::api("create network policy", e))?;
        if let Some(s) = &o.secret {
            Api::<Secret>::namespaced(c.clone(), ns)
                .create(&pp, s)
                .await
                // The error names the object, never its data.
                .map_err(|e| Error::api("create secret", e))?;
        }
        match &o.workload {
            WorkloadObjects::Job(j) => {
                Api::<Job>::namespaced(c.clone(), ns)
                    .create(&pp, j)
                    .await
                    .map_err(|e| Error::api("create job", e))?;
            }
            WorkloadObjects::Service {
                deployment,
                service,
            } => {
                Api::<Deployment>::namespaced(c.clone(), ns)
                    .create(&pp, deployment)
                    .await
                    .map_err(|e| Error::api("create deployment", e))?;
                if let Some(s) = service {
                    Api::<Service>::namespaced(c.clone(), ns)
                        .create(&pp, s)
                        .await
                        .map_err(|e| Error::api("create service", e))?;
                }
            }
        }
        Ok(())
    }

    fn run(&self, id: &WorkloadId) -> Result<Arc<LeaseRun>> {
        self.inner
            .leases()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::UnknownWorkload(id.clone()))
    }

    /// Deletes the lease's namespace and waits until the API server no longer has it.
    pub async fn teardown(&self, id: &WorkloadId) -> Result<()> {
        teardown(&self.inner, id, "stopped").await
    }

    /// Why a workload is not running yet, as last seen: a container's waiting reason and
    /// message (`ImagePullBackOff: ...`), a scheduling failure (`Unschedulable: ...`) or a
    /// warning event (`FailedCreate: ...`). `None` when nothing held it up.
    pub fn waiting_reason(&self, id: &WorkloadId) -> Result<Option<String>> {
        Ok(self.run(id)?.waiting())
    }

    /// The workloads this launcher follows now (stopped ones until their state is pruned).
    pub fn workloads(&self) -> Vec<WorkloadId> {
        let mut v: Vec<WorkloadId> = self.inner.leases().keys().cloned().collect();
        v.sort();
        v
    }

    /// Rebuilds the launcher's state from the cluster, as after a restart: every namespace
    /// labelled as a spheron tenant namespace with this launcher's prefix that it does not
    /// follow yet is either reattached (a live lease: status, logs and expiry are followed
    /// again) or deleted (its lease expired, or it is half-made: no workload object or no
    /// readable annotations). Deletions run concurrently and are awaited.
    pub async fn reconcile(&self) -> Result<Reconciled> {
        let c = self.inner.client.clone();
        let prefix = format!("{}-", self.inner.render.namespace_prefix);
        let list = Api::<Namespace>::all(c.clone())
            .list(&ListParams::default().labels(&format!(
                "{MANAGED_BY_LABEL}={MANAGED_BY},{TENANT_LABEL}=true"
            )))
            .await
            .map_err(|e| Error::api("list lease namespaces", e))?;
        let now = self.inner.clock.now();
        let mut out = Reconciled::default();
        let mut doomed = Vec::new();
        for ns in list.items {
            let Some(name) = ns.metadata.name.clone() else {
                continue;
            };
            let id = WorkloadId(name.clone());
            if !name.starts_with(&prefix) || self.inner.leases().contains_key(&id) {
                continue;
            }
            let ann = ns.metadata.annotations.clone().unwrap_or_default();
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            let ends_at = ann
                .get(ENDS_AT_ANNOTATION)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Timestamp);
            let wname = ann.get(WORKLOAD_NAME_ANNOTATION).cloned();
            let batch = ann.get(WORKLOAD_KIND_ANNOTATION).map(|k| k == "batch");
            let lease = labels.get(LEASE_LABEL).cloned();
            let terminating = ns.metadata.deletion_timestamp.is_some();
            let (Some(ends_at), Some(wname), Some(batch), Some(lease), false) =
                (ends_at, wname, batch, lease, terminating)
            else {
                doomed.push(name);
                continue;
            };
            if ends_at.add(self.inner.expiry_grace) <= now {
                doomed.push(name);
                continue;
            }
            let exists = if batch {
                Api::<Job>::namespaced(c.clone(), &name)
                    .get_opt(&wname)
                    .await
                    .map(|j| j.is_some())
            } else {
                Api::<Deployment>::namespaced(c.clone(), &name)
                    .get_opt(&wname)
                    .await
                    .map(|d| d.is_some())
            }
            .map_err(|e| Error::api(format!("get workload of {name}"), e))?;
            if !exists {
                doomed.push(name);
                continue;
            }
            let run = Arc::new(LeaseRun::new(name.clone()));
            run.logs.push(
                LogSource::System,
                format!("reattached to namespace {name} after a restart"),
            );
            self.attach(
                &id,
                run,
                Follow {
                    lease,
                    name: wname,
                    batch,
                },
                ends_at,
            );
            out.reattached.push(id);
        }
        let inner = self.inner.clone();
        let results: Vec<(String, Result<()>)> = futures::stream::iter(doomed)
            .map(|ns| {
                let inner = inner.clone();
                async move {
                    let r = delete_namespace_retrying(&inner, &ns).await;
                    (ns, r)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (ns, r) in results {
            r?;
            tracing::info!(namespace = %ns, "reconcile deleted an expired or half-made lease namespace");
            out.deleted.push(ns);
        }
        out.reattached.sort();
        out.deleted.sort();
        Ok(out)
    }
}

async fn teardown(inner: &Arc<Inner>, id: &WorkloadId, why: &str) -> Result<()> {
    let run = inner
        .leases()
        .get(id)
        .cloned()
        .ok_or_else(|| Error::UnknownWorkload(id.clone()))?;
    if run.status.borrow().is_terminal() {
        // Finished by itself: let the watch drain the logs (and delete the namespace) first.
        let mut cleaned = run.cleaned.subscribe();
        let limit = inner.deletion_timeout + LOG_DRAIN;
        let _ = tokio::time::timeout(limit, cleaned.wait_for(|c| *c)).await;
    }
    run.stopping.send_replace(true);
    delete_namespace(inner, &run.namespace).await?;
    for t in run
        .tasks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
    {
        t.abort();
    }
    run.set_terminal(WorkloadStatus::Stopped);
    run.logs.push(
        LogSource::System,
        format!("{why}: namespace {} deleted", run.namespace),
    );
    run.logs.close();
    run.cleaned.send_replace(true);
    schedule_prune(inner, id, &run);
    Ok(())
}

/// Drops a finished lease's state after the retention (its status and logs stay readable
/// until then).
fn schedule_prune(inner: &Arc<Inner>, id: &WorkloadId, run: &Arc<LeaseRun>) {
    let inner = inner.clone();
    let id = id.clone();
    let run = Arc::downgrade(run);
    tokio::spawn(async move {
        tokio::time::sleep(inner.state_retention).await;
        let mut leases = inner.leases();
        if let (Some(cur), Some(run)) = (leases.get(&id), run.upgrade())
            && Arc::ptr_eq(cur, &run)
        {
            leases.remove(&id);
        }
    });
}

/// [`delete_namespace`], retried with back-off (rollback and reconcile must not give up on
/// one failed call).
async fn delete_namespace_retrying(inner: &Inner, namespace: &str) -> Result<()> {
    let mut delay = Duration::from_millis(250);
    let mut last = None;
    for _ in 0..4 {
        match delete_namespace(inner, namespace).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(namespace, error = %e, "deleting a namespace failed; retrying");
                last = Some(e);
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Timeout {
        what: format!("namespace {namespace} to be deleted"),
        seconds: inner.deletion_timeout.as_secs(),
    }))
}

/// Deletes a namespace (and so everything in it) and waits until the API server no longer has it.
async fn delete_namespace(inner: &Inner, namespace: &str) -> Result<()> {
    let api = Api::<Namespace>::all(inner.client.clone());
    match api.delete(namespace, &DeleteParams::foreground()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(Error::api(format!("delete namespace {namespace}"), e)),
    }
    let gone = async {
        loop {
            match api.get_opt(namespace).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => return Err(Error::api(format!("get namespace {namespace}"), e)),
            }
        }
    };
    match tokio::time::timeout(inner.deletion_timeout, gone).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            what: format!("namespace {namespace} to be deleted"),
            seconds: inner.deletion_timeout.as_secs(),
        }),
    }
}

async fn expire(inner: Arc<Inner>, id: WorkloadId, at: spheron_core::Timestamp) {
    inner.clock.sleep_until(at).await;
    // Whoever got there first (stop, or this), the lease ends with its namespace gone.
    let already = inner.leases().get(&id).map(|r| *r.stopping.borrow());
    if already == Some(false) {
        // Detached, because teardown aborts the lease's tasks, this one included.
        tokio::spawn(async move {
            if let Err(e) = teardown(&inner, &id, "lease expired").await {
                tracing::error!(workload = %id, error = %e, "expiry teardown failed");
            }
        });
    }
}

/// Status of a set of pods: any Running wins, then Failed, then Succeeded; else Pending.
fn aggregate(pods: &BTreeMap<String, Pod>) -> WorkloadStatus {
    let mut st = WorkloadStatus::Pending;
    let mut rank = 0;
    for p in pods.values() {
        let (s, r) = pod_status(p);
        if r > rank {
            st = s;
            rank = r;
        }
    }
    st
}

fn main_container(p: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER_NAME)
}

/// A pod is Running only once its workload container runs (phase Running alone is not enough:
/// a restarting container waits in CrashLoopBackOff under a Running pod).
fn pod_status(p: &Pod) -> (WorkloadStatus, u8) {
    let status = p.status.as_ref();
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Running")
            if main_container(p)
                .and_then(|c| c.state.as_ref())
                .is_some_and(|s| s.running.is_some()) =>
        {
            (WorkloadStatus::Running, 4)
        }
        Some("Failed") => {
            let exit_code = main_container(p)
                .and_then(|c| c.state.as_ref()?.terminated.as_ref())
                .map(|t| t.exit_code);
            (WorkloadStatus::Failed { exit_code }, 3)
        }
        Some("Succeeded") => (WorkloadStatus::Succeeded, 2),
        _ => (WorkloadStatus::Pending, 1),
    }
}

/// Why a pod is not running: its container's waiting reason, or the scheduler's.
pub fn pod_waiting_reason(p: &Pod) -> Option<String> {
    let st = p.status.as_ref()?;
    let waiting = st
        .container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .find_map(|c| c.state.as_ref()?.waiting.as_ref());
    if let Some(w) = waiting
        && let Some(r) = &w.reason
        && r != "ContainerCreating"
        && r != "PodInitializing"
    {
        return Some(match &w.message {
            Some(m) if !m.is_empty() => format!("{r}: {m}"),
            _ => r.clone(),
        });
    }
    st.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| {
            let r = c.reason.clone().unwrap_or_else(|| "Unschedulable".into());
            match &c.message {
                Some(m) if !m.is_empty() => format!("{r}: {m}"),
                _ => r,
            }
        })
}

/// A change to a [`PodSet`].
#[derive(Debug, Clone, PartialEq)]
pub enum PodChange {
    /// The named pod was added or modified.
    Upsert(String),
    /// The pod is gone (deleted, or missing from a relist), with its last known state.
    Removed(Box<Pod>),
}

/// Reflector-style state of a watched set of pods: [`watcher::Event::Init`] starts a relist
/// buffer, `InitApply` fills it and `InitDone` swaps it in, reporting every pod that was known
/// before but is missing from the relist (deleted while the watch was down, as after a
/// `410 Gone`) as removed.
#[derive(Debug, Default)]
pub struct PodSet {
    pods: BTreeMap<String, Pod>,
    relist: Option<BTreeMap<String, Pod>>,
}

impl PodSet {
    /// The pods known now.
    pub fn pods(&self) -> &BTreeMap<String, Pod> {
        &self.pods
    }

    /// Applies one watcher event and returns what changed.
    pub fn apply(&mut self, ev: watcher::Event<Pod>) -> Vec<PodChange> {
        let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
        match ev {
            watcher::Event::Init => {
                self.relist = Some(BTreeMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(p) => {
                let n = name(&p);
                match &mut self.relist {
                    Some(buf) => {
                        buf.insert(n, p);
                        Vec::new()
                    }
                    // An InitApply without Init: treat as a plain update.
                    None => {
                        self.pods.insert(n.clone(), p);
                        vec![PodChange::Upsert(n)]
                    }
                }
            }
            watcher::Event::InitDone => {
                let Some(new) = self.relist.take() else {
                    return Vec::new();
                };
                let old = std::mem::replace(&mut self.pods, new);
                let mut changes: Vec<PodChange> = old
                    .into_iter()
                    .filter(|(n, _)| !self.pods.contains_key(n))
                    .map(|(_, p)| PodChange::Removed(Box::new(p)))
                    .collect();
                changes.extend(self.pods.keys().cloned().map(PodChange::Upsert));
                changes
            }
            watcher::Event::Apply(p) => {
                let n = name(&p);
                self.pods.insert(n.clone(), p);
                vec![PodChange::Upsert(n)]
            }
            watcher::Event::Delete(p) => {
                let n = name(&p);
                let last = self.pods.remove(&n).unwrap_or(p);
                vec![PodChange::Removed(Box::new(last))]
            }
        }
    }
}

// One short-lived stream item at a time: boxing each event would cost more than the size.
#[allow(clippy::large_enum_variant)]
enum Watched {
    Pod(watcher::Result<watcher::Event<Pod>>),
    Job(watcher::Result<watcher::Event<Job>>),
    Warning(watcher::Result<watcher::Event<K8sEvent>>),
}

/// The terminal status a Job's conditions announce, if any.
fn job_outcome(job: &Job) -> Option<(WorkloadStatus, String)> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    for c in conds.iter().filter(|c| c.status == "True") {
        let why = format!(
            "{}{}",
            c.reason.clone().unwrap_or_default(),
            c.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
        match c.type_.as_str() {
            "Failed" => return Some((WorkloadStatus::Failed { exit_code: None }, why)),
            "Complete" => return Some((WorkloadStatus::Succeeded, why)),
            _ => {}
        }
    }
    None
}

struct PodLog {
    task: JoinHandle<()>,
    gone: watch::Sender<bool>,
}

async fn watch_lease(inner: Arc<Inner>, run: Arc<LeaseRun>, follow: Follow) {
    let c = inner.client.clone();
    let ns = run.namespace.clone();
    let pod_api = Api::<Pod>::namespaced(c.clone(), &ns);
    let selector = format!("{LEASE_LABEL}={}", follow.lease);
    let pods = watcher(
        pod_api.clone(),
        watcher::Config::default().labels(&selector),
    )
    .map(Watched::Pod)
    .boxed();
    let jobs = if follow.batch {
        watcher(
            Api::<Job>::namespaced(c.clone(), &ns),
            watcher::Config::default().fields(&format!("metadata.name={}", follow.name)),
        )
        .map(Watched::Job)
        .boxed()
    } else {
        futures::stream::pending().boxed()
    };
    let warnings = watcher(
        Api::<K8sEvent>::namespaced(c.clone(), &ns),
        watcher::Config::default().fields("type=Warning"),
    )
    .map(Watched::Warning)
    .boxed();
    let mut events = futures::stream::select_all([pods, jobs, warnings]);
    let mut set = PodSet::default();
    let mut logs: BTreeMap<String, PodLog> = BTreeMap::new();
    let mut ever_started = false;
    let mut job_end: Option<WorkloadStatus> = None;
    let mut last_exit: Option<i32> = None;
    while let Some(ev) = events.next().await {
        if *run.stopping.borrow() {
            // stop or expiry owns the ending from here.
            break;
        }
        match ev {
            Watched::Pod(Ok(ev)) => {
                for change in set.apply(ev) {
                    if let PodChange::Removed(p) = change {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        if let Some(l) = logs.get(&name) {
                            // A deleted pod's log stream ends.
                            l.gone.send_replace(true);
                        }
                        let finished = pod_status(&p).0.is_terminal();
                        if !finished && ever_started && set.pods().is_empty() {
                            run.logs.push(
                                LogSource::System,
                                format!("pod {name} was deleted before it finished"),
                            );
                            if follow.batch {
                                job_end.get_or_insert(WorkloadStatus::Failed { exit_code: None });
                            }
                        }
                    }
                }
            }
            Watched::Job(Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j))) => {
                if let Some((st, why)) = job_outcome(&j) {
                    if job_end.is_none() {
                        run.logs
                            .push(LogSource::System, format!("job ended: {why}"));
                    }
                    job_end.get_or_insert(st);
                }
            }
            Watched::Job(Ok(_)) => {}
            Watched::Warning(Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e))) => {
                let reason = e.reason.clone().unwrap_or_default();
                let msg = e.message.clone().unwrap_or_default();
                if !reason.is_empty() {
                    run.set_waiting(format!("{reason}: {msg}"));
                }
            }
            Watched::Warning(Ok(_)) => {}
            Watched::Pod(Err(e)) | Watched::Job(Err(e)) | Watched::Warning(Err(e)) => {
                // The watcher re-lists by itself; wait a little so a dead API server is not hammered.
                tracing::debug!(namespace = %ns, error = %e, "watch error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        // Start a log stream for each pod that has started a container; note why others wait.
        for (name, p) in set.pods() {
            let st = pod_status(p).0;
            if let WorkloadStatus::Failed {
                exit_code: Some(code),
            } = st
            {
                last_exit = Some(code);
            }
            let started = st == WorkloadStatus::Running || st.is_terminal();
            if started {
                if !logs.contains_key(name) {
                    ever_started = true;
                    let (gone, gone_rx) = watch::channel(false);
                    let task = tokio::spawn(stream_logs(
                        pod_api.clone(),
                        name.clone(),
                        run.clone(),
                        gone_rx,
                    ));
                    logs.insert(name.clone(), PodLog { task, gone });
                }
            } else if let Some(why) = pod_waiting_reason(p) {
                run.set_waiting(why);
            }
        }
        let mut st = aggregate(set.pods());
        if !st.is_terminal()
            && let Some(end) = &job_end
            && st != WorkloadStatus::Running
        {
            st = match end {
                WorkloadStatus::Failed { exit_code: None } => WorkloadStatus::Failed {
                    exit_code: last_exit,
                },
                other => other.clone(),
            };
        }
        if st.is_terminal() {
            finish(&inner, &run, st, logs).await;
            return;
        }
        run.status.send_if_modified(|cur| {
            if !cur.is_terminal() && *cur != st {
                *cur = st.clone();
                true
            } else {
                false
            }
        });
    }
}

/// The end of a workload that finished by itself: the status goes out first (the caller stops
/// the clock there), then the log streams drain, then the namespace goes.
async fn finish(
    inner: &Arc<Inner>,
    run: &Arc<LeaseRun>,
    st: WorkloadStatus,
    logs: BTreeMap<String, PodLog>,
) {
    run.finished.send_replace(true);
    run.set_terminal(st.clone());
    for (_, l) in logs {
        let mut t = l.task;
        if tokio::time::timeout(LOG_DRAIN, &mut t).await.is_err() {
            // A kubelet that keeps a finished container's stream open is not waited for.
            t.abort();
        }
    }
    run.logs
        .push(LogSource::System, format!("workload ended: {st:?}"));
    match inner.finished_retention {
        Some(d) if d.is_zero() => {
            run.stopping.send_replace(true);
            match delete_namespace_retrying(inner, &run.namespace).await {
                Ok(()) => run.logs.push(
                    LogSource::System,
                    format!("namespace {} deleted", run.namespace),
                ),
                Err(e) => {
                    tracing::warn!(namespace = %run.namespace, error = %e, "cleanup of a finished lease failed")
                }
            }
        }
        Some(d) => {
            let inner = inner.clone();
            let ns = run.namespace.clone();
            let stopping = run.stopping.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                if !stopping.send_replace(true)
                    && let Err(e) = delete_namespace_retrying(&inner, &ns).await
                {
                    tracing::warn!(namespace = %ns, error = %e, "cleanup of a finished lease failed");
                }
            });
        }
        None => {}
    }
    run.logs.close();
    run.cleaned.send_replace(true);
    let id = WorkloadId(run.namespace.clone());
    schedule_prune(inner, &id, run);
}

/// How long a finished pod's log streams may take to deliver their last lines.
const LOG_DRAIN: Duration = Duration::from_secs(10);

/// Follows a pod's log through the API server. When the stream ends while the pod still runs
/// (the kubelet closed it) it resumes from the last line's timestamp, skipping lines already
/// seen; once the pod has finished, one plain (non-follow) read collects what is left. A pod
/// that is deleted (or whose log is gone) ends the stream.
async fn stream_logs(
    api: Api<Pod>,
    pod: String,
    run: Arc<LeaseRun>,
    mut gone: watch::Receiver<bool>,
) {
    use k8s_openapi::jiff::Timestamp;
    let mut done = run.finished.subscribe();
    let mut last_ts: Option<Timestamp> = None;
    loop {
        if *gone.borrow() {
            break;
        }
        let last_read = *done.borrow();
        let lp = LogParams {
            container: Some(CONTAINER_NAME.to_string()),
            follow: !last_read,
            timestamps: true,
            since_time: last_ts,
            ..Default::default()
        };
        match api.log_stream(&pod, &lp).await {
            Ok(reader) => {
                let mut lines = reader.lines();
                loop {
                    let line = tokio::select! {
                        biased;
                        l = lines.next() => l,
                        _ = done.wait_for(|d| *d), if !last_read => None,
                        _ = gone.wait_for(|g| *g) => None,
                    };
                    let Some(Ok(line)) = line else { break };
                    let parsed = line
                        .split_once(' ')
                        .and_then(|(ts, text)| Some((ts.parse::<Timestamp>().ok()?, text)));
                    let text = match parsed {
                        Some((ts, text)) => {
                            if last_ts.is_some_and(|l| ts <= l) {
                                continue;
                            }
                            last_ts = Some(ts);
                            text
                        }
                        None => line.as_str(),
                    };
                    run.logs.push(LogSource::Stdout, text);
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                tracing::debug!(pod = %pod, "pod is gone: its log stream ends");
                break;
            }
            Err(e) => {
                tracing::debug!(pod = %pod, error = %e, "log stream not available yet");
            }
        }
        if last_read || *run.stopping.borrow() || *gone.borrow() {
            break;
        }
        if !*done.borrow() {
            // The stream closed under a running pod: resume shortly (or at once when it ends).
            let _ = tokio::time::timeout(Duration::from_millis(500), done.wait_for(|d| *d)).await;
        }
    }
}

#[async_trait]
impl WorkloadLauncher for KubeLauncher {
    async fn launch(
        &self,
        spec: &LaunchSpec,
        workload: &Workload,
    ) -> spheron_core::Result<WorkloadId> {
        Ok(self
            .launch_named(spec, workload, &self.inner.workload_name.clone())
            .await?)
    }

    async fn status(&self, id: &WorkloadId) -> spheron_core::Result<WorkloadStatus> {
        Ok(self.run(id)?.status.borrow().clone())
    }

    async fn wait(&self, id: &WorkloadId) -> spheron_core::Result<WorkloadStatus> {
        let mut rx = self.run(id)?.status.subscribe();
        let s = rx
            .wait_for(|s| s.is_terminal())
            .await
            .map_err(|_| spheron_core::Error::Launch(format!("workload {id} was dropped")))?
            .clone();
        Ok(s)
    }

    fn logs(&self, id: &WorkloadId) -> spheron_core::Result<LogStream> {
        Ok(self.run(id)?.logs.stream())
    }

    /// Log output only: the pods' GPU utilisation is not read (no metrics source is assumed).
    async fn activity(
        &self,
        id: &WorkloadId,
    ) -> spheron_core::Result<Option<spheron_core::Activity>> {
        let quiet = self.run(id)?.logs.quiet_for();
        Ok(Some(spheron_core::Activity {
            quiet_ms: u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX),
            gpu_utilization: None,
        }))
    }

    async fn stop(&self, id: &WorkloadId) -> spheron_core::Result<()> {
        match self.teardown(id).await {
            // Already pruned: nothing is left to stop.
            Err(Error::UnknownWorkload(_)) if self.namespace_gone(id).await => Ok(()),
            r => Ok(r?),
        }
    }
}

impl KubeLauncher {
    /// Subscribes to status changes of a workload (every change, from the current value).
    pub fn status_changes(&self, id: &WorkloadId) -> Result<watch::Receiver<WorkloadStatus>> {
        Ok(self.run(id)?.status.subscribe())
    }

    async fn namespace_gone(&self, id: &WorkloadId) -> bool {
        Api::<Namespace>::all(self.inner.client.clone())
            .get_opt(&id.0)
            .await
            .is_ok_and(|n| n.is_none())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_relist_reports_pods_deleted_while_the_watch_was_down() {
        let mut s = PodSet::default();
        s.apply(watcher::Event::Init);
        s.apply(watcher::Event::InitApply(pod("a")));
        s.apply(watcher::Event::InitApply(pod("b")));
        let first = s.apply(watcher::Event::InitDone);
        assert_eq!(
            first,
            vec![PodChange::Upsert("a".into()), PodChange::Upsert("b".into())]
        );
        // The watch fails with 410 Gone; the watcher relists, and `a` was deleted meanwhile.
        assert!(s.apply(watcher::Event::Init).is_empty());
        assert!(s.apply(watcher::Event::InitApply(pod("b"))).is_empty());
        assert_eq!(
            s.pods().len(),
            2,
            "the old set holds until the relist is done"
        );
        let changes = s.apply(watcher::Event::InitDone);
        assert_eq!(
            changes,
            vec![
                PodChange::Removed(Box::new(pod("a"))),
                PodChange::Upsert("b".into())
            ]
        );
        assert_eq!(s.pods().keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(
            s.apply(watcher::Event::Delete(pod("b"))),
            vec![PodChange::Removed(Box::new(pod("b")))]
        );
        assert!(s.pods().is_empty());
    }

    #[test]
    fn waiting_reasons_come_from_containers_then_the_scheduler() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
        };
        let mut p = pod("a");
        p.status = Some(PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/1 nodes are available".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(
            pod_waiting_reason(&p).as_deref(),
            Some("Unschedulable: 0/1 nodes are available")
        );
        p.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            name: CONTAINER_NAME.into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ImagePullBackOff".into()),
                    message: Some("Back-off pulling image".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        assert_eq!(
            pod_waiting_reason(&p).as_deref(),
            Some("ImagePullBackOff: Back-off pulling image")
        );
        // Phase Running with a waiting container is not running.
        p.status.as_mut().unwrap().phase = Some("Running".into());
        assert_eq!(pod_status(&p).0, WorkloadStatus::Pending);
    }
}
