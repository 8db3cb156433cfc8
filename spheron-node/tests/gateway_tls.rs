//! The gateway over HTTPS with a self-signed certificate pinned by its hash: the pinned
//! client reaches it, a client pinned to another hash (or a man in the middle with its own
//! certificate) is refused before anything is sent, failed handshakes do not stop the server,
//! and plain HTTP is only for loopback hosts.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use async_trait::async_trait;
use spheron_core::{GpuModel, Inventory, LogStream, Workload};
use spheron_gpu::CpuProver;
use spheron_node::gateway::{self, ChainLease, LeaseBackend};
use spheron_node::gateway_client::GatewayClient;
use spheron_node::tls::{self, GatewayCert};
use spheron_node::{ErrorCode, GatewayError, LeaseStatus, NodeStatus, WorkState};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const CHAIN: u64 = 31337;

fn tenant() -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::repeat_byte(0x11)).unwrap()
}
fn market() -> Address {
    Address::repeat_byte(0x4d)
}
fn provider() -> Address {
    Address::repeat_byte(0x50)
}

/// One active lease (1) of this provider for the tenant; counts the requests that reached it.
#[derive(Default)]
struct Memory {
    requests: AtomicUsize,
}

impl Memory {
    fn lease(&self, l: &ChainLease) -> LeaseStatus {
        LeaseStatus {
            lease: l.lease,
            tenant: l.tenant,
            work: WorkState::AwaitingManifest,
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
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }
    async fn chain_lease(&self, lease: u64) -> Result<Option<ChainLease>, GatewayError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        Ok((lease == 1).then(|| ChainLease {
            lease,
            tenant: tenant().address(),
            provider: provider(),
            active: true,
        }))
    }
    async fn use_nonce(&self, _: Address, _: B256, _: u64) -> Result<bool, GatewayError> {
        Ok(true)
    }
    async fn launch(&self, l: &ChainLease, _: Workload) -> Result<LeaseStatus, GatewayError> {
        Ok(self.lease(l))
    }
    async fn status(&self, l: &ChainLease) -> Result<LeaseStatus, GatewayError> {
        Ok(self.lease(l))
    }
    async fn logs(&self, _: &ChainLease, _: u64, _: bool) -> Result<LogStream, GatewayError> {
        Ok(Box::pin(futures::stream::empty()))
    }
    async fn stop(&self, l: &ChainLease) -> Result<LeaseStatus, GatewayError> {
        Ok(self.lease(l))
    }
    async fn node_status(&self) -> NodeStatus {
        self.requests.fetch_add(1, Ordering::SeqCst);
        NodeStatus {
            provider: provider(),
            name: "tls".into(),
            region: "test".into(),
            models: vec![GpuModel::L4],
            inventory: Inventory::default(),
            running_leases: 0,
            last_block: 7,
            version: "test".into(),
        }
    }
}

struct Node {
    url: String,
    cert: GatewayCert,
    backend: Arc<Memory>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// A gateway over TLS with a new certificate, on 127.0.0.1.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cert = tls::load_or_create(dir.path(), &["127.0.0.1".into()]).unwrap();
        let backend = Arc::new(Memory::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let router = gateway::router(backend.clone(), Arc::new(CpuProver::new(None)));
        tokio::spawn(gateway::serve_tls(
            listener,
            router,
            tls::server_config(&cert).unwrap(),
        ));
        Node {
            url,
            cert,
            backend,
            _dir: dir,
        }
    }

    fn client(&self, hash: B256) -> GatewayClient {
        GatewayClient::new_pinned(&self.url, tenant(), CHAIN, market(), hash).unwrap()
    }

    fn requests(&self) -> usize {
        self.backend.requests.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn pinned_client_reaches_the_gateway_over_tls() {
    let node = Node::start().await;
    let client = node.client(node.cert.hash);
    let status = client.node_status().await.unwrap();
    assert_eq!(status.provider, provider());
    assert_eq!(status.last_block, 7);
    // A signed lease request over the same pinned channel.
    let lease = client.status(1).await.unwrap();
    assert_eq!(lease.lease, 1);
    assert_eq!(lease.work, WorkState::AwaitingManifest);
    // And a typed refusal from the gateway comes through as such.
    let e = client.status(9).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::UnknownLease, "{e}");
    assert_eq!(client.url(), node.url);
    // The proof-of-GPU client goes through the same pinned channel, and keeps it open
    // after the gateway client is gone.
    let prover = client.prover();
    drop(client);
    prover.ping().await.unwrap();
}

#[tokio::test]
async fn the_registered_hash_is_sha256_of_the_der_certificate() {
    let node = Node::start().await;
    let digest = ring::digest::digest(&ring::digest::SHA256, &node.cert.cert_der);
    assert_eq!(node.cert.hash.as_slice(), digest.as_ref());
    assert_eq!(tls::cert_hash(&node.cert.cert_der), node.cert.hash);
}

#[tokio::test]
async fn a_client_pinned_to_another_hash_gets_nothing() {
    let node = Node::start().await;
    let client = node.client(B256::repeat_byte(0xab));
    let e = client.node_status().await.unwrap_err();
    assert_eq!(e.error, ErrorCode::UntrustedCertificate, "{e}");
    assert!(e.message.contains(&node.cert.hash.to_string()), "{e}");
    let e = client.status(1).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::UntrustedCertificate, "{e}");
    assert_eq!(node.requests(), 0, "no request reached the gateway");
}

#[tokio::test]
async fn a_man_in_the_middle_with_its_own_certificate_is_refused() {
    let genuine = Node::start().await;
    // Another server, same setup, its own certificate: the client pinned to the genuine
    // provider's hash is pointed at it (as by a hijacked route or DNS).
    let impostor = Node::start().await;
    assert_ne!(genuine.cert.hash, impostor.cert.hash);
    let client =
        GatewayClient::new_pinned(&impostor.url, tenant(), CHAIN, market(), genuine.cert.hash)
            .unwrap();
    let e = client.node_status().await.unwrap_err();
    assert_eq!(e.error, ErrorCode::UntrustedCertificate, "{e}");
    let e = client.status(1).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::UntrustedCertificate, "{e}");
    assert_eq!(impostor.requests(), 0);
    // The proof-of-GPU client goes through the same pinned channel.
    let prover = client.prover();
    assert!(prover.url().starts_with("http://127.0.0.1:"));
    assert!(prover.ping().await.is_err());
    // The impostor presenting the genuine certificate without its key cannot finish the
    // handshake either: the handshake signature is checked.
    let stolen = GatewayCert {
        key_der: impostor.cert.key_der.clone(),
        ..genuine.cert.clone()
    };
    assert!(
        tls::server_config(&stolen).is_err(),
        "rustls refuses a mismatched key"
    );
}

/// Presents a fixed certificate chain and key, matching or not.
#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[tokio::test]
async fn the_genuine_certificate_without_its_key_does_not_pass() {
    let genuine = Node::start().await;
    let dir = tempfile::tempdir().unwrap();
    let own = tls::load_or_create(dir.path(), &[]).unwrap();
    // A server that presents the genuine provider's certificate but signs the handshake with
    // its own key (rustls would refuse to configure this pairing, hence the raw resolver).
    let ring = rustls::crypto::ring::default_provider();
    let key = ring
        .key_provider
        .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
            own.key_der.clone().into(),
        ))
        .unwrap();
    let certified = rustls::sign::CertifiedKey::new(
        vec![rustls::pki_types::CertificateDer::from(
            genuine.cert.cert_der.clone(),
        )],
        key,
    );
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(ring))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(Arc::new(certified))));
    let backend = Arc::new(Memory::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let router = gateway::router(backend.clone(), Arc::new(CpuProver::new(None)));
    tokio::spawn(gateway::serve_tls(listener, router, Arc::new(config)));

    let client =
        GatewayClient::new_pinned(&url, tenant(), CHAIN, market(), genuine.cert.hash).unwrap();
    let e = client.node_status().await.unwrap_err();
    // The certificate matches the pin, the handshake signature does not.
    assert_eq!(e.error, ErrorCode::UntrustedCertificate, "{e}");
    assert!(e.message.contains("BadSignature"), "{e}");
    assert_eq!(backend.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failed_handshake_does_not_stop_the_server() {
    let node = Node::start().await;
    let wrong = node.client(B256::repeat_byte(0x01));
    for _ in 0..3 {
        let e = wrong.node_status().await.unwrap_err();
        assert_eq!(e.error, ErrorCode::UntrustedCertificate, "{e}");
    }
    // Garbage instead of a ClientHello, and a connection closed mid-handshake.
    {
        use tokio::io::AsyncWriteExt;
        let addr = node.url.trim_start_matches("https://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /status HTTP/1.1\r\n\r\n").await.unwrap();
        drop(s);
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        drop(s);
    }
    let right = node.client(node.cert.hash);
    assert_eq!(right.node_status().await.unwrap().provider, provider());
    // The wrong client still fails afterwards, the right one still works.
    assert_eq!(
        wrong.node_status().await.unwrap_err().error,
        ErrorCode::UntrustedCertificate
    );
    assert_eq!(right.status(1).await.unwrap().lease, 1);
}

#[tokio::test]
async fn load_or_create_keeps_the_certificate_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["gw.example".to_string(), "10.0.0.5".to_string()];
    let first = tls::load_or_create(dir.path(), &names).unwrap();
    let again = tls::load_or_create(dir.path(), &names).unwrap();
    assert_eq!(first.hash, again.hash);
    assert_eq!(first.cert_der, again.cert_der);
    assert_eq!(first.key_der, again.key_der);
    assert_ne!(first.hash, B256::ZERO);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(tls::KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key mode {mode:o}");
    }
    // Another directory, another certificate.
    let other = tempfile::tempdir().unwrap();
    assert_ne!(
        tls::load_or_create(other.path(), &names).unwrap().hash,
        first.hash
    );
    // A certificate whose key is gone is an error, not a silently new hash.
    std::fs::remove_file(dir.path().join(tls::KEY_FILE)).unwrap();
    assert!(tls::load_or_create(dir.path(), &names).is_err());
    // Without the certificate, a new one is made.
    std::fs::remove_file(dir.path().join(tls::CERT_FILE)).unwrap();
    let fresh = tls::load_or_create(dir.path(), &names).unwrap();
    assert_ne!(fresh.hash, first.hash);
    // A reopened certificate serves: the key parses and matches.
    tls::server_config(&fresh).unwrap();
}

#[tokio::test]
async fn plain_http_only_to_loopback_and_https_needs_a_pin() {
    let hash = B256::repeat_byte(0x33);
    for url in [
        "http://10.0.0.5:8080",
        "http://gw.example:8080",
        "http://[2001:db8::1]:8080",
        "http://0.0.0.0:8080",
    ] {
        let e = GatewayClient::new_pinned(url, tenant(), CHAIN, market(), hash).unwrap_err();
        assert_eq!(e.error, ErrorCode::BadRequest, "{url}: {e}");
    }
    for url in [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
    ] {
        GatewayClient::new_pinned(url, tenant(), CHAIN, market(), B256::ZERO).unwrap();
    }
    let e = GatewayClient::new_pinned(
        "https://10.0.0.5:8443",
        tenant(),
        CHAIN,
        market(),
        B256::ZERO,
    )
    .unwrap_err();
    assert_eq!(e.error, ErrorCode::BadRequest, "{e}");
    // And against a real TLS gateway, a zero pin is refused before connecting.
    let node = Node::start().await;
    let e =
        GatewayClient::new_pinned(&node.url, tenant(), CHAIN, market(), B256::ZERO).unwrap_err();
    assert_eq!(e.error, ErrorCode::BadRequest, "{e}");
    // The plain client does not speak TLS: an https gateway is unreachable through it.
    let plain = GatewayClient::new(&node.url, tenant(), CHAIN, market()).unwrap();
    assert!(plain.node_status().await.is_err());
    assert_eq!(node.requests(), 0);
}

#[test]
fn a_pinned_https_client_needs_a_runtime() {
    let e = GatewayClient::new_pinned(
        "https://10.0.0.5:8443",
        tenant(),
        CHAIN,
        market(),
        B256::repeat_byte(1),
    )
    .unwrap_err();
    assert_eq!(e.error, ErrorCode::Internal, "{e}");
}
