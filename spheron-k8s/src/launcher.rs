//! [`KubeLauncher`]: each lease in its own namespace, status from a pod watch, logs streamed
//! from the API server, teardown by deleting the namespace.

use crate::error::{Error, Result};
use crate::labels::{GPU_PRODUCT_LABEL, GPU_RESOURCE, LEASE_LABEL, model_from_product};
use crate::names::validate_dns_label;
use crate::render::{CONTAINER_NAME, LeaseObjects, RenderOptions, WorkloadObjects, render};
use async_trait::async_trait;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use spheron_core::{
    Clock, LaunchSpec, LogBuffer, LogSource, LogStream, SystemClock, Workload, WorkloadId,
    WorkloadLauncher, WorkloadStatus,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
}

impl std::fmt::Debug for KubeLauncherBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLauncherBuilder")
            .field("render", &self.render)
            .field("workload_name", &self.workload_name)
            .field("expiry_grace", &self.expiry_grace)
            .field("deletion_timeout", &self.deletion_timeout)
            .field("check_capacity", &self.check_capacity)
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

    /// How long a finished workload's namespace is kept before it is deleted: `Some(ZERO)`
    /// (the default) deletes it before the end is reported, so a closed lease leaves nothing in
    /// the cluster; `None` keeps it until `stop`. Logs stay readable from the launcher either way.
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
        crate::names::validate_dns1035_label("workload_name", &self.workload_name).map_err(
            |e| Error::Config {
                field: "workload_name",
                reason: e.to_string(),
            },
        )?;
        if self.deletion_timeout.is_zero() {
            return Err(Error::Config {
                field: "deletion_timeout",
                reason: "must be positive".into(),
            });
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
                leases: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// Launches each lease's workload in its own namespace of a Kubernetes cluster.
///
/// Per lease: a namespace `<prefix>-lease-<n>` labelled with the lease, a ResourceQuota holding
/// the leased GPUs, a NetworkPolicy admitting only the lease's own pods and non-tenant
/// namespaces, a Secret for secret environment variables, and a Job (batch) or a Deployment and
/// Service (service) with `nvidia.com/gpu` limits, node affinity on `nvidia.com/gpu.product` and
/// a toleration for the `nvidia.com/gpu` taint. Status follows a watch on the lease's pods; logs
/// stream from the API server; `stop` and expiry delete the namespace and wait until it is gone.
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
    leases: Mutex<HashMap<WorkloadId, Arc<LeaseRun>>>,
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
}

impl LeaseRun {
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
        }
    }

    /// The objects `launch` would create, after every check that needs no cluster.
    pub fn render(&self, spec: &LaunchSpec, workload: &Workload) -> Result<LeaseObjects> {
        render(
            &self.inner.render,
            spec,
            workload,
            &self.inner.workload_name,
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
        let objects = render(&self.inner.render, spec, workload, name)?;
        if self.inner.check_capacity {
            self.check_capacity(spec).await?;
        }
        let ns = objects.namespace_name().to_string();
        let id = WorkloadId(ns.clone());
        tracing::info!(lease = %spec.lease, namespace = %ns, gpus = spec.gpus, model = %spec.model.name(), "launching on Kubernetes");
        self.create_all(&objects).await?;

        let (status, _) = watch::channel(WorkloadStatus::Pending);
        let (stopping, _) = watch::channel(false);
        let (finished, _) = watch::channel(false);
        let run = Arc::new(LeaseRun {
            namespace: ns.clone(),
            status,
            logs: LogBuffer::new(),
            tasks: Mutex::new(Vec::new()),
            stopping,
            finished,
        });
        run.logs
            .push(LogSource::System, format!("launched in namespace {ns}"));
        let watch_task = tokio::spawn(watch_pods(
            self.inner.clone(),
            run.clone(),
            spec.lease.to_string(),
        ));
        let expiry_task = tokio::spawn(expire(
            self.inner.clone(),
            id.clone(),
            spec.ends_at.add(self.inner.expiry_grace),
        ));
        run.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([watch_task, expiry_task]);
        self.inner
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), run);
        Ok(id)
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

    async fn create_all(&self, o: &LeaseObjects) -> Result<()> {
        let c = self.inner.client.clone();
        let ns = o.namespace_name();
        let pp = PostParams::default();
        match Api::<Namespace>::all(c.clone())
            .create(&pp, &o.namespace)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Err(Error::AlreadyLaunched(ns.to_string()));
            }
            Err(e) => return Err(Error::api(format!("create namespace {ns}"), e)),
        }
        let rest = async {
            Api::<ResourceQuota>::namespaced(c.clone(), ns)
                .create(&pp, &o.quota)
                .await
                .map_err(|e| Error::api("create resource quota", e))?;
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
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = rest {
            // Leave nothing half-made behind.
            let _ = Api::<Namespace>::all(c)
                .delete(ns, &DeleteParams::default())
                .await;
            return Err(e);
        }
        Ok(())
    }

    fn run(&self, id: &WorkloadId) -> Result<Arc<LeaseRun>> {
        self.inner
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::UnknownWorkload(id.clone()))
    }

    /// Deletes the lease's namespace and waits until the API server no longer has it.
    pub async fn teardown(&self, id: &WorkloadId) -> Result<()> {
        teardown(&self.inner, id, "stopped").await
    }
}

async fn teardown(inner: &Arc<Inner>, id: &WorkloadId, why: &str) -> Result<()> {
    let run = inner
        .leases
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .cloned()
        .ok_or_else(|| Error::UnknownWorkload(id.clone()))?;
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
    Ok(())
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
    let already = inner
        .leases
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .map(|r| *r.stopping.borrow());
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

fn pod_status(p: &Pod) -> (WorkloadStatus, u8) {
    let status = p.status.as_ref();
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => (WorkloadStatus::Running, 4),
        Some("Failed") => {
            let exit_code = status
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER_NAME))
                .and_then(|c| c.state.as_ref()?.terminated.as_ref())
                .map(|t| t.exit_code);
            (WorkloadStatus::Failed { exit_code }, 3)
        }
        Some("Succeeded") => (WorkloadStatus::Succeeded, 2),
        _ => (WorkloadStatus::Pending, 1),
    }
}

async fn watch_pods(inner: Arc<Inner>, run: Arc<LeaseRun>, lease: String) {
    let api = Api::<Pod>::namespaced(inner.client.clone(), &run.namespace);
    let cfg = watcher::Config::default().labels(&format!("{LEASE_LABEL}={lease}"));
    let mut events = watcher(api.clone(), cfg).boxed();
    let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
    let mut streaming: BTreeSet<String> = BTreeSet::new();
    let mut log_tasks: Vec<JoinHandle<()>> = Vec::new();
    let mut ever_started = false;
    loop {
        let ev = match events.try_next().await {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => {
                if *run.stopping.borrow() {
                    break;
                }
                // The watcher re-lists by itself; wait a little so a dead API server is not hammered.
                tracing::debug!(namespace = %run.namespace, error = %e, "pod watch error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                pods.insert(name, p);
            }
            watcher::Event::Delete(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                pods.remove(&name);
                let finished = pod_status(&p).0.is_terminal();
                if !finished && !*run.stopping.borrow() && ever_started && pods.is_empty() {
                    run.logs.push(
                        LogSource::System,
                        format!("pod {name} was deleted before it finished"),
                    );
                    run.set_terminal(WorkloadStatus::Failed { exit_code: None });
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
        // Start a log stream for each pod that has started a container.
        for (name, p) in &pods {
            let started =
                matches!(pod_status(p).0, WorkloadStatus::Running) || pod_status(p).0.is_terminal();
            if started && streaming.insert(name.clone()) {
                ever_started = true;
                log_tasks.push(tokio::spawn(stream_logs(
                    api.clone(),
                    name.clone(),
                    run.clone(),
                )));
            }
        }
        let st = aggregate(&pods);
        if st.is_terminal() {
            // Let the log streams drain before announcing the end, so `wait` then `logs` sees
            // all; a kubelet that keeps a finished container's stream open is not waited for.
            run.finished.send_replace(true);
            for mut t in log_tasks.drain(..) {
                if tokio::time::timeout(LOG_DRAIN, &mut t).await.is_err() {
                    t.abort();
                }
            }
            run.logs
                .push(LogSource::System, format!("workload ended: {st:?}"));
            match inner.finished_retention {
                // Clean up before announcing the end, so a closed lease leaves nothing behind.
                Some(d) if d.is_zero() => {
                    run.stopping.send_replace(true);
                    match delete_namespace(&inner, &run.namespace).await {
                        Ok(()) => run.logs.push(
                            LogSource::System,
                            format!("namespace {} deleted", run.namespace),
                        ),
                        Err(e) => {
                            tracing::warn!(namespace = %run.namespace, error = %e, "cleanup of a finished lease failed")
                        }
                    }
                    run.set_terminal(st);
                    run.logs.close();
                }
                Some(d) => {
                    run.set_terminal(st);
                    run.logs.close();
                    let inner = inner.clone();
                    let ns = run.namespace.clone();
                    let stopping = run.stopping.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        if !stopping.send_replace(true)
                            && let Err(e) = delete_namespace(&inner, &ns).await
                        {
                            tracing::warn!(namespace = %ns, error = %e, "cleanup of a finished lease failed");
                        }
                    });
                }
                None => {
                    run.set_terminal(st);
                    run.logs.close();
                }
            }
            break;
        }
        if !run.status.borrow().is_terminal() {
            run.status.send_if_modified(|cur| {
                if *cur != st {
                    *cur = st.clone();
                    true
                } else {
                    false
                }
            });
        }
    }
}

/// How long a finished pod's log streams may take to deliver their last lines.
const LOG_DRAIN: Duration = Duration::from_secs(10);

/// Follows a pod's log through the API server. When the stream ends while the pod still runs
/// (the kubelet closed it) it resumes from the last line's timestamp, skipping lines already
/// seen; once the pod has finished, one plain (non-follow) read collects what is left.
async fn stream_logs(api: Api<Pod>, pod: String, run: Arc<LeaseRun>) {
    use k8s_openapi::jiff::Timestamp;
    let mut done = run.finished.subscribe();
    let mut last_ts: Option<Timestamp> = None;
    loop {
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
            Err(e) => {
                tracing::debug!(pod = %pod, error = %e, "log stream not available yet");
            }
        }
        if last_read || *run.stopping.borrow() {
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

    async fn stop(&self, id: &WorkloadId) -> spheron_core::Result<()> {
        Ok(self.teardown(id).await?)
    }
}

impl KubeLauncher {
    /// Subscribes to status changes of a workload (every change, from the current value).
    pub fn status_changes(&self, id: &WorkloadId) -> Result<watch::Receiver<WorkloadStatus>> {
        Ok(self.run(id)?.status.subscribe())
    }
}
