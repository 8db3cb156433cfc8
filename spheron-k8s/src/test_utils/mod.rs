//! A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok (which plays the kubelets of fake GPU nodes), each on a free loopback
//! port, with certificates and a token generated at run time into a temporary directory, all torn
//! down on drop.
//!
//! Binaries are looked up in `SPHERON_K8S_ASSETS`, then `KUBEBUILDER_ASSETS`, then the cache
//! directory that `scripts/k8s-setup.sh` fills. When they are missing, [`TestCluster::start`]
//! returns [`HarnessError::Missing`]; tests turn that into a loud skip, or a failure when
//! `SPHERON_REQUIRE_K8S=1` (as CI sets).
//!
//! kwok runs pods through the stages in `kwok-stages.yaml`: a bound pod turns Running at once; a
//! pod whose first container has `SPHERON_FAKE_EXIT=<code>` finishes after `SPHERON_FAKE_RUN`
//! (default 1 s) as Succeeded (code 0) or Failed; a pod whose first container has
//! `SPHERON_FAKE_WAITING=<reason>` stays Pending with its container waiting for that reason (as
//! `ImagePullBackOff` does); other pods run until deleted. Container logs
//! are served by kwok's kubelet API from one CRI-format file ([`TestCluster::set_log_lines`]), so
//! they reach clients through the API server's real `pods/log` path.

use k8s_openapi::api::core::v1::{Namespace, Node, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

use crate::labels::{GPU_PRODUCT_LABEL, GPU_RESOURCE, GPU_TAINT};

/// The bundle `scripts/k8s-setup.sh` builds (keep the two in step).
pub const BUNDLE: &str = "k8s-v1.36.3_etcd-v3.6.8_kwok-v0.8.0";
/// The binaries the harness needs.
pub const BINARIES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];
const KWOK_STAGES: &str = include_str!("kwok-stages.yaml");
const TOKEN: &str = "spheron-test-admin-token";
const PROVIDER_TOKEN: &str = "spheron-test-provider-token";
/// The user the provider's client authenticates as: bound to the shipped least-privilege role
/// ([`crate::rbac::cluster_role`]) and nothing else.
pub const PROVIDER_USER: &str = "spheron-provider";

/// Why a test cluster could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A binary is missing.
    #[error(
        "`{binary}` not found (looked in {searched}); run scripts/k8s-setup.sh and export SPHERON_K8S_ASSETS=\"$(scripts/k8s-setup.sh)\""
    )]
    Missing {
        /// Which binary.
        binary: &'static str,
        /// The directories searched.
        searched: String,
    },
    /// A component did not become ready.
    #[error("{component} did not become ready in {seconds}s; its output ends with:\n{log_tail}")]
    NotReady {
        /// Which component.
        component: &'static str,
        /// How long we waited.
        seconds: u64,
        /// The last lines of its output.
        log_tail: String,
    },
    /// Starting a process, writing a file, or a certificate failed.
    #[error("test cluster setup failed: {0}")]
    Setup(String),
    /// An API call during setup failed.
    #[error("API call during setup failed: {0}")]
    Api(#[from] kube::Error),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> HarnessError + '_ {
    move |e| HarnessError::Setup(format!("{what}: {e}"))
}

/// The directories searched for binaries, in order.
pub fn asset_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["SPHERON_K8S_ASSETS", "KUBEBUILDER_ASSETS"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            dirs.push(PathBuf::from(v));
        }
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(c) = cache {
        dirs.push(c.join("spheron").join("k8s").join(BUNDLE));
    }
    dirs
}

/// Where `binary` is, if anywhere.
pub fn find_binary(binary: &'static str) -> Result<PathBuf, HarnessError> {
    let dirs = asset_dirs();
    dirs.iter()
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .ok_or_else(|| HarnessError::Missing {
            binary,
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Whether tests must fail rather than skip when the binaries are missing.
pub fn required() -> bool {
    std::env::var("SPHERON_REQUIRE_K8S").is_ok_and(|v| v == "1")
}

fn free_port() -> Result<u16, HarnessError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(setup("bind a loopback port"))
}

struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// A running control plane; everything stops and the directory is removed on drop.
pub struct TestCluster {
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    client: Client,
    provider_client: Client,
    kubeconfig: PathBuf,
    provider_kubeconfig: PathBuf,
    log_file: PathBuf,
    url: String,
    etcd_port: u16,
}

/// How a [`TestCluster`] is set up.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Serve pod watches from the API server's watch cache (the default, as in production).
    /// Off, pod watches read etcd directly, so a watch resumed from a resource version that
    /// [`TestCluster::compact_etcd`] removed fails with `410 Gone`, as after a long disconnect.
    pub pod_watch_cache: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            pod_watch_cache: true,
        }
    }
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("url", &self.url)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl TestCluster {
    /// Starts a control plane (typically 5 to 15 s).
    pub async fn start() -> Result<TestCluster, HarnessError> {
        Self::start_with(&ClusterOptions::default()).await
    }

    /// Starts a control plane set up as `opts` says.
    pub async fn start_with(opts: &ClusterOptions) -> Result<TestCluster, HarnessError> {
        let bins: Vec<PathBuf> = BINARIES
            .iter()
            .map(|b| find_binary(b))
            .collect::<Result<_, _>>()?;
        let [etcd, apiserver, kcm, scheduler, kwok] = <[PathBuf; 5]>::try_from(bins)
            .map_err(|_| HarnessError::Setup("binary list".into()))?;
        let dir = tempfile::Builder::new()
            .prefix("spheron-k8s-test-")
            .tempdir()
            .map_err(setup("create temp dir"))?;
        let mut dir = dir;
        if std::env::var_os("SPHERON_K8S_KEEP").is_some() {
            // For diagnosis: keep certificates, configuration and component logs.
            dir.disable_cleanup(true);
            eprintln!("test cluster files kept in {}", dir.path().display());
        }
        let d = dir.path().to_path_buf();
        let write = |name: &str, content: &str| -> Result<PathBuf, HarnessError> {
            let p = d.join(name);
            std::fs::write(&p, content).map_err(setup(name))?;
            Ok(p)
        };

        // Certificates: a CA, the API server's serving certificate, a service-account key.
        let ca_key = rcgen::KeyPair::generate().map_err(setup("CA key"))?;
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(setup("CA params"))?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "spheron-test-ca");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(setup("CA cert"))?;
        let ca_issuer = rcgen::Issuer::new(ca_params, ca_key);
        let srv_key = rcgen::KeyPair::generate().map_err(setup("server key"))?;
        let mut srv_params = rcgen::CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "10.0.0.1".to_string(),
            "kubernetes.default.svc".to_string(),
        ])
        .map_err(setup("server params"))?;
        srv_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        let srv_cert = srv_params
            .signed_by(&srv_key, &ca_issuer)
            .map_err(setup("server cert"))?;
        let sa_key = rcgen::KeyPair::generate().map_err(setup("service-account key"))?;

        let ca_pem = write("ca.crt", &ca_cert.pem())?;
        let srv_crt = write("apiserver.crt", &srv_cert.pem())?;
        let srv_key_p = write("apiserver.key", &srv_key.serialize_pem())?;
        let sa_priv = write("sa.key", &sa_key.serialize_pem())?;
        let sa_pub = write("sa.pub", &sa_key.public_key_pem())?;
        let tokens = write(
            "tokens.csv",
            &format!(
                "{TOKEN},admin,admin-uid,system:masters\n{PROVIDER_TOKEN},{PROVIDER_USER},provider-uid\n"
            ),
        )?;

        let etcd_port = free_port()?;
        let etcd_peer = free_port()?;
        let api_port = free_port()?;
        let kwok_port = free_port()?;
        let url = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = write(
            "kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\ncurrent-context: test\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\n",
                ca = ca_pem.display()
            ),
        )?;
        let log_file = d.join("workload.log");
        std::fs::write(&log_file, "").map_err(setup("log file"))?;
        let mut kwok_conf = String::from(KWOK_STAGES);
        let _ = write!(
            kwok_conf,
            "\n---\napiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterLogs\nmetadata:\n  name: spheron-test-logs\nspec:\n  logs:\n  - logsFile: {}\n    follow: true\n",
            log_file.display()
        );
        let kwok_yaml = write("kwok.yaml", &kwok_conf)?;

        let mut cluster = TestCluster {
            procs: Vec::new(),
            client: Client::try_from(Config::new(url.parse().map_err(setup("url"))?))?,
            provider_client: Client::try_from(Config::new(url.parse().map_err(setup("url"))?))?,
            kubeconfig: kubeconfig.clone(),
            provider_kubeconfig: d.join("provider-kubeconfig"),
            log_file,
            url: url.clone(),
            etcd_port,
            dir,
        };
        let p = |x: &Path| x.display().to_string();

        cluster.spawn(
            "etcd",
            &etcd,
            &[
                "--data-dir".into(),
                p(&d.join("etcd")),
                "--listen-client-urls".into(),
                format!("http://127.0.0.1:{etcd_port}"),
                "--advertise-client-urls".into(),
                format!("http://127.0.0.1:{etcd_port}"),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-cluster".into(),
                format!("default=http://127.0.0.1:{etcd_peer}"),
                "--unsafe-no-fsync".into(),
                "--log-level".into(),
                "warn".into(),
            ],
        )?;
        cluster.spawn(
            "kube-apiserver",
            &apiserver,
            &[
                format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
                format!("--secure-port={api_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--cert-dir={}", p(&d.join("certs"))),
                format!("--tls-cert-file={}", p(&srv_crt)),
                format!("--tls-private-key-file={}", p(&srv_key_p)),
                format!("--client-ca-file={}", p(&ca_pem)),
                format!("--token-auth-file={}", p(&tokens)),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p(&sa_pub)),
                format!("--service-account-signing-key-file={}", p(&sa_priv)),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--enable-priority-and-fairness=false".into(),
                // Size 0 turns the pod watch cache off; any other size leaves it on.
                format!(
                    "--watch-cache-sizes=pods#{}",
                    u8::from(opts.pod_watch_cache)
                ),
                "--v=0".into(),
            ],
        )?;
        cluster.wait_api().await?;
        let kc = p(&kubeconfig);
        cluster.spawn(
            "kube-controller-manager",
            &kcm,
            &[
                format!("--kubeconfig={kc}"),
                format!("--authentication-kubeconfig={kc}"),
                format!("--authorization-kubeconfig={kc}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                format!("--cert-dir={}", p(&d.join("kcm-certs"))),
                format!("--service-account-private-key-file={}", p(&sa_priv)),
                format!("--root-ca-file={}", p(&ca_pem)),
                "--use-service-account-credentials=false".into(),
                "--concurrent-namespace-syncs=10".into(),
                "--v=0".into(),
            ],
        )?;
        cluster.spawn(
            "kube-scheduler",
            &scheduler,
            &[
                format!("--kubeconfig={kc}"),
                format!("--authentication-kubeconfig={kc}"),
                format!("--authorization-kubeconfig={kc}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                format!("--cert-dir={}", p(&d.join("scheduler-certs"))),
                "--v=0".into(),
            ],
        )?;
        cluster.spawn(
            "kwok",
            &kwok,
            &[
                format!("--kubeconfig={kc}"),
                format!("--config={}", p(&kwok_yaml)),
                "--manage-all-nodes=false".into(),
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
                "--node-ip=127.0.0.1".into(),
                format!("--node-port={kwok_port}"),
                format!("--server-address=127.0.0.1:{kwok_port}"),
                "--cidr=10.244.0.0/16".into(),
            ],
        )?;
        // Namespaced work needs the controller-manager's service-account controller.
        cluster.wait_default_service_account().await?;
        cluster.bind_provider_role(&ca_pem).await?;
        Ok(cluster)
    }

    fn spawn(
        &mut self,
        name: &'static str,
        bin: &Path,
        args: &[String],
    ) -> Result<(), HarnessError> {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(setup("log file"))?;
        let err = out.try_clone().map_err(setup("log file"))?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(setup(name))?;
        self.procs.push(Proc { name, child, log });
        Ok(())
    }

    fn proc_log(&self, name: &str) -> String {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .map(|p| tail(&p.log))
            .unwrap_or_default()
    }

    async fn wait_api(&mut self) -> Result<(), HarnessError> {
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&self.kubeconfig).map_err(setup("read kubeconfig"))?,
            &KubeConfigOptions::default(),
        )
        .await
        .map_err(setup("kubeconfig"))?;
        self.client = Client::try_from(config)?;
        let start = Instant::now();
        let limit = Duration::from_secs(90);
        loop {
            if let Ok(v) = self.client.apiserver_version().await {
                let _ = v;
                // Ready also means the default namespace exists (bootstrap finished).
                if Api::<Namespace>::all(self.client.clone())
                    .get_opt("default")
                    .await
                    .ok()
                    .flatten()
                    .is_some()
                {
                    return Ok(());
                }
            }
            for p in &mut self.procs {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Err(HarnessError::Setup(format!(
                        "{} exited with {status}:\n{}",
                        p.name,
                        tail(&p.log)
                    )));
                }
            }
            if start.elapsed() > limit {
                return Err(HarnessError::NotReady {
                    component: "kube-apiserver",
                    seconds: limit.as_secs(),
                    log_tail: self.proc_log("kube-apiserver"),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_default_service_account(&mut self) -> Result<(), HarnessError> {
        use k8s_openapi::api::core::v1::ServiceAccount;
        let start = Instant::now();
        let limit = Duration::from_secs(60);
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), "default");
        loop {
            if api.get_opt("default").await.ok().flatten().is_some() {
                return Ok(());
            }
            for p in &mut self.procs {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Err(HarnessError::Setup(format!(
                        "{} exited with {status}:\n{}",
                        p.name,
                        tail(&p.log)
                    )));
                }
            }
            if start.elapsed() > limit {
                return Err(HarnessError::NotReady {
                    component: "kube-controller-manager",
                    seconds: limit.as_secs(),
                    log_tail: self.proc_log("kube-controller-manager"),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn bind_provider_role(&mut self, ca_pem: &Path) -> Result<(), HarnessError> {
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Subject};
        let pp = PostParams::default();
        Api::<ClusterRole>::all(self.client.clone())
            .create(&pp, &crate::rbac::cluster_role())
            .await?;
        Api::<ClusterRoleBinding>::all(self.client.clone())
            .create(
                &pp,
                &crate::rbac::cluster_role_binding(
                    "spheron-provider-test",
                    Subject {
                        kind: "User".to_string(),
                        name: PROVIDER_USER.to_string(),
                        api_group: Some("rbac.authorization.k8s.io".to_string()),
                        namespace: None,
                    },
                ),
            )
            .await?;
        let kc = self.provider_kubeconfig.clone();
        std::fs::write(
            &kc,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: provider\ncurrent-context: test\nusers:\n- name: provider\n  user:\n    token: {PROVIDER_TOKEN}\n",
                url = self.url,
                ca = ca_pem.display()
            ),
        )
        .map_err(setup("provider kubeconfig"))?;
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kc).map_err(setup("read provider kubeconfig"))?,
            &KubeConfigOptions::default(),
        )
        .await
        .map_err(setup("provider kubeconfig"))?;
        self.provider_client = Client::try_from(config)?;
        Ok(())
    }

    /// A client authenticated as [`PROVIDER_USER`], who holds only the shipped least-privilege
    /// role: give this one to the launcher and inventory under test.
    pub fn provider_client(&self) -> Client {
        self.provider_client.clone()
    }

    /// A kubeconfig file for [`PROVIDER_USER`] (what a provider node's config names).
    pub fn provider_kubeconfig(&self) -> &Path {
        &self.provider_kubeconfig
    }

    /// A client authenticated as [`PROVIDER_USER`] that reaches the API server through `url`
    /// (a [`CutProxy`] in front of it), verifying the server's certificate as usual.
    pub async fn provider_client_via(&self, url: &str) -> Result<Client, HarnessError> {
        let mut config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&self.provider_kubeconfig)
                .map_err(setup("read provider kubeconfig"))?,
            &KubeConfigOptions::default(),
        )
        .await
        .map_err(setup("provider kubeconfig"))?;
        config.cluster_url = url.parse().map_err(setup("proxy url"))?;
        Ok(Client::try_from(config)?)
    }

    /// The API server's address as `host:port`.
    pub fn api_addr(&self) -> &str {
        self.url.trim_start_matches("https://")
    }

    /// Compacts etcd up to its current revision (every older revision is gone, so a watch
    /// resumed from one fails with `410 Gone` where no watch cache answers it) and returns
    /// that revision.
    pub async fn compact_etcd(&self) -> Result<i64, HarnessError> {
        // etcd's JSON gateway: a range read tells the current revision.
        let range = self
            .etcd_post("/v3/kv/range", r#"{"key":"AA==","limit":1}"#)
            .await?;
        let rev: i64 = range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| HarnessError::Setup(format!("etcd range answer: {range}")))?;
        self.etcd_post(
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{rev}","physical":true}}"#),
        )
        .await?;
        Ok(rev)
    }

    async fn etcd_post(&self, path: &str, body: &str) -> Result<serde_json::Value, HarnessError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.etcd_port))
            .await
            .map_err(setup("connect to etcd"))?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(setup("write to etcd"))?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .await
            .map_err(setup("read from etcd"))?;
        let text = String::from_utf8_lossy(&out);
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| HarnessError::Setup(format!("etcd answer: {text}")))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(HarnessError::Setup(format!("etcd {path}: {head} {rest}")));
        }
        // The body may be chunked: the JSON object is what lies between the outer braces.
        let json = match (rest.find('{'), rest.rfind('}')) {
            (Some(a), Some(b)) if a < b => &rest[a..=b],
            _ => return Err(HarnessError::Setup(format!("etcd {path}: {rest}"))),
        };
        serde_json::from_str(json).map_err(setup("etcd answer"))
    }

    /// A client authenticated as a cluster admin (for setting up and inspecting).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig file for this cluster (as `KUBECONFIG` would name).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The last lines a component wrote, for diagnosing failures.
    pub fn component_log(&self, name: &str) -> String {
        self.proc_log(name)
    }

    /// Replaces the container log that kwok serves for every pod, one CRI-format entry per
    /// line, on stdout.
    pub fn set_log_lines(&self, lines: &[&str]) -> Result<(), HarnessError> {
        let mut s = String::new();
        // Distinct, increasing timestamps, as a container runtime writes them.
        for (i, l) in lines.iter().enumerate() {
            let _ = writeln!(
                s,
                "2026-01-01T00:00:{:02}.{:09}Z stdout F {l}",
                i / 1000 % 60,
                (i % 1000) * 1000
            );
        }
        std::fs::write(&self.log_file, s).map_err(setup("write log file"))
    }

    /// Registers a GPU node that kwok runs: `gpus` allocatable `nvidia.com/gpu`, the product
    /// label GPU feature discovery would set, the `nvidia.com/gpu` NoSchedule taint, and waits
    /// until it is Ready.
    pub async fn add_gpu_node(
        &self,
        name: &str,
        product: &str,
        gpus: u32,
    ) -> Result<Node, HarnessError> {
        let res = BTreeMap::from([
            ("cpu".to_string(), Quantity("128".into())),
            ("memory".to_string(), Quantity("2Ti".into())),
            ("ephemeral-storage".to_string(), Quantity("8Ti".into())),
            ("pods".to_string(), Quantity("110".into())),
            (GPU_RESOURCE.to_string(), Quantity(gpus.to_string())),
        ]);
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([
                    ("kubernetes.io/hostname".to_string(), name.to_string()),
                    ("kubernetes.io/os".to_string(), "linux".to_string()),
                    ("type".to_string(), "kwok".to_string()),
                    (GPU_PRODUCT_LABEL.to_string(), product.to_string()),
                    ("nvidia.com/gpu.count".to_string(), gpus.to_string()),
                ])),
                annotations: Some(BTreeMap::from([(
                    "kwok.x-k8s.io/node".to_string(),
                    "fake".to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(vec![Taint {
                    key: GPU_TAINT.to_string(),
                    value: Some("present".to_string()),
                    effect: "NoSchedule".to_string(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(res.clone()),
                capacity: Some(res),
                ..Default::default()
            }),
        };
        let api = Api::<Node>::all(self.client.clone());
        api.create(&PostParams::default(), &node).await?;
        let start = Instant::now();
        loop {
            let n = api.get(name).await?;
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            let tainted_not_ready = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.key.starts_with("node.kubernetes.io/")));
            if ready && !tainted_not_ready {
                return Ok(n);
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(HarnessError::NotReady {
                    component: "kwok node",
                    seconds: 60,
                    log_tail: self.proc_log("kwok"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Names of the namespaces that carry `label` (as `key=value` or `key`).
    pub async fn namespaces_with(&self, label: &str) -> Result<Vec<String>, HarnessError> {
        Ok(Api::<Namespace>::all(self.client.clone())
            .list(&ListParams::default().labels(label))
            .await?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect())
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Stop in reverse order of start; kill_on_drop reaps each child.
        for p in self.procs.iter_mut().rev() {
            let _ = p.child.start_kill();
        }
    }
}

/// A loopback TCP forwarder to an upstream address that can sever every connection through it
/// and refuse new ones for a while, as a network partition between a client and the API
/// server does (TLS passes through untouched).
#[derive(Debug)]
pub struct CutProxy {
    url: String,
    state: std::sync::Arc<CutState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct CutState {
    cut: std::sync::atomic::AtomicBool,
    conns: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl CutProxy {
    /// Forwards a new loopback port to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Result<CutProxy, HarnessError> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(setup("bind the proxy"))?;
        let port = listener
            .local_addr()
            .map_err(setup("proxy address"))?
            .port();
        let state = std::sync::Arc::new(CutState::default());
        let upstream = upstream.to_string();
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if st.cut.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                let mut conns = st.conns.lock().unwrap_or_else(|p| p.into_inner());
                conns.retain(|c| !c.is_finished());
                conns.push(conn.abort_handle());
            }
        });
        Ok(CutProxy {
            url: format!("https://127.0.0.1:{port}"),
            state,
            task,
        })
    }

    /// The URL clients use instead of the upstream's.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Severs every open connection and refuses new ones until [`CutProxy::restore`].
    pub fn cut(&self) {
        self.state
            .cut
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self
            .state
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            c.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.state
            .cut
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// Starts a [`TestCluster`], or prints why not and returns `None` (a skip) unless
/// `SPHERON_REQUIRE_K8S=1`, in which case a missing binary is a failure.
pub async fn cluster_or_skip(test: &str) -> Option<TestCluster> {
    cluster_with_or_skip(test, &ClusterOptions::default()).await
}

/// [`cluster_or_skip`] with [`ClusterOptions`].
pub async fn cluster_with_or_skip(test: &str, opts: &ClusterOptions) -> Option<TestCluster> {
    match TestCluster::start_with(opts).await {
        Ok(c) => Some(c),
        Err(e @ HarnessError::Missing { .. }) if !required() => {
            eprintln!("SKIPPED {test}: the Kubernetes test binaries are missing: {e}");
            None
        }
        Err(e) => panic!("{test}: could not start the test cluster: {e}"),
    }
}
