//! The gateway's port proxy over real HTTP, against an in-memory backend whose "workload" is
//! an echo server on loopback: the token and signed authentication, what is forwarded
//! (method, path, query, headers minus hop-by-hop and credentials, bodies both ways), what is
//! refused (no credential, another lease's token, another tenant, an undeclared port, a
//! stopped lease, an oversized body, a workload that does not answer).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::HeaderMap;
use spheron_core::{GpuModel, Inventory, LogStream, Workload};
use spheron_gpu::CpuProver;
use spheron_node::gateway::{self, ChainLease, LeaseBackend};
use spheron_node::gateway_client::{GatewayClient, PortAuth};
use spheron_node::ports::{MAX_PROXY_BODY_BYTES, PROXY_HEADER, TOKEN_HEADER};
use spheron_node::{ErrorCode, GatewayError, LeaseStatus, NodeStatus, WorkState};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const CHAIN: u64 = 31337;

fn key(b: u8) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::repeat_byte(b)).unwrap()
}
fn market() -> Address {
    Address::repeat_byte(0x4d)
}
fn provider() -> Address {
    Address::repeat_byte(0x50)
}

/// Leases 1 and 2 of tenant 0x11, 3 of tenant 0x22; each serves port 8000 at `upstream`
/// (lease 2's at a closed port) while `running`.
struct Memory {
    upstream: SocketAddr,
    dead: SocketAddr,
    running: AtomicBool,
    nonces: Mutex<HashSet<(Address, B256)>>,
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
        let tenant = match lease {
            1 | 2 => key(0x11).address(),
            3 => key(0x22).address(),
            _ => return Ok(None),
        };
        Ok(Some(ChainLease {
            lease,
            tenant,
            provider: provider(),
            active: true,
        }))
    }
    async fn use_nonce(&self, s: Address, n: B256, _: u64) -> Result<bool, GatewayError> {
        Ok(self.nonces.lock().unwrap().insert((s, n)))
    }
    async fn launch(&self, _: &ChainLease, _: Workload) -> Result<LeaseStatus, GatewayError> {
        Err(GatewayError::new(ErrorCode::Internal, "not in this test"))
    }
    async fn status(&self, l: &ChainLease) -> Result<LeaseStatus, GatewayError> {
        Ok(LeaseStatus {
            lease: l.lease,
            tenant: l.tenant,
            work: WorkState::Running,
            open_on_chain: true,
            started_at: None,
            ended_at: None,
            activity: None,
        })
    }
    async fn logs(&self, _: &ChainLease, _: u64, _: bool) -> Result<LogStream, GatewayError> {
        Err(GatewayError::new(ErrorCode::Internal, "not in this test"))
    }
    async fn stop(&self, l: &ChainLease) -> Result<LeaseStatus, GatewayError> {
        self.status(l).await
    }
    async fn node_status(&self) -> NodeStatus {
        NodeStatus {
            provider: provider(),
            name: "memory".into(),
            region: "test".into(),
            models: vec![GpuModel::L4],
            inventory: Inventory::default(),
            running_leases: 0,
            last_block: 0,
            version: "test".into(),
        }
    }
    async fn service_addr(&self, lease: u64, port: u16) -> Result<SocketAddr, GatewayError> {
        if !self.running.load(Ordering::SeqCst) {
            return Err(GatewayError::new(ErrorCode::NotRunning, "stopped"));
        }
        match (lease, port) {
            (1 | 3, 8000) => Ok(self.upstream),
            (2, 8000) => Ok(self.dead),
            _ => Err(GatewayError::new(ErrorCode::NoSuchPort, "undeclared")),
        }
    }
}

/// The workload: echoes the request as JSON headers and the body back; `/redirect`
/// answers 302.
async fn echo(req: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    if parts.uri.path() == "/redirect" {
        return (
            axum::http::StatusCode::FOUND,
            [("location", "/elsewhere")],
            "",
        )
            .into_response();
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").into()))
        .collect();
    let seen = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
    });
    let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (
        axum::http::StatusCode::CREATED,
        [
            ("x-seen", seen.to_string()),
            ("connection", "x-secret-hop".to_string()),
            ("x-secret-hop", "1".to_string()),
        ],
        body,
    )
        .into_response()
}

struct Node {
    url: String,
    backend: Arc<Memory>,
    http: reqwest::Client,
}

async fn start() -> Node {
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = up.local_addr().unwrap();
    tokio::spawn(axum::serve(up, axum::Router::new().fallback(echo)).into_future());
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let backend = Arc::new(Memory {
        upstream,
        dead,
        running: AtomicBool::new(true),
        nonces: Mutex::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = gateway::router(backend.clone(), Arc::new(CpuProver::new(None)));
    tokio::spawn(gateway::serve(listener, router));
    Node {
        url,
        backend,
        // Redirects are not followed: the test sees what the gateway sent.
        http: reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

impl Node {
    fn client(&self, k: u8) -> GatewayClient {
        GatewayClient::new(&self.url, key(k), CHAIN, market()).unwrap()
    }
}

fn seen(h: &HeaderMap) -> serde_json::Value {
    serde_json::from_str(h.get("x-seen").unwrap().to_str().unwrap()).unwrap()
}

async fn code(r: reqwest::Response) -> (u16, ErrorCode) {
    let s = r.status().as_u16();
    assert!(r.headers().get(PROXY_HEADER).is_none(), "a gateway refusal");
    let e: GatewayError = r.json().await.unwrap();
    (s, e.error)
}

#[tokio::test]
async fn a_token_opens_the_port_and_only_the_workloads_headers_pass() {
    let n = start().await;
    let owner = n.client(0x11);
    let t1 = owner.lease_token(1).await.unwrap().token;
    let t2 = owner.lease_token(2).await.unwrap().token;
    assert_eq!(t1.len(), 64);
    assert_ne!(t1, t2, "one token per lease");
    assert_eq!(owner.lease_token(1).await.unwrap().token, t1, "stable");
    // Another tenant gets no token for lease 1.
    let e = n.client(0x22).lease_token(1).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::WrongTenant);

    // A streamed body both ways, with the workload's answer status and headers.
    let body: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let r = n
        .http
        .post(format!("{}/lease/1/ports/8000/v1/chat?stream=true", n.url))
        .header("authorization", format!("Bearer {t1}"))
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("x-keep", "kept")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers().get(PROXY_HEADER).unwrap(), "1");
    assert!(r.headers().get("x-secret-hop").is_none(), "hop-by-hop");
    let s = seen(r.headers());
    assert_eq!(s["method"], "POST");
    assert_eq!(s["uri"], "/v1/chat?stream=true");
    let h = &s["headers"];
    assert_eq!(h["x-keep"], "kept");
    assert_eq!(h["x-forwarded-prefix"], "/lease/1/ports/8000");
    assert_eq!(h["content-length"], body.len().to_string());
    for gone in ["authorization", "x-hop", "connection", TOKEN_HEADER] {
        assert!(h.get(gone).is_none(), "{gone} reached the workload: {h}");
    }
    assert_eq!(r.bytes().await.unwrap(), body);

    // The token in its own header leaves the workload's Authorization alone.
    let r = n
        .http
        .get(format!("{}/lease/1/ports/8000", n.url))
        .header(TOKEN_HEADER, &t1)
        .header("authorization", "Bearer sk-the-workloads-own")
        .send()
        .await
        .unwrap();
    let s = seen(r.headers());
    assert_eq!(s["uri"], "/");
    assert_eq!(s["headers"]["authorization"], "Bearer sk-the-workloads-own");

    // Redirects are the client's business.
    let r = n
        .http
        .get(format!("{}/lease/1/ports/8000/redirect", n.url))
        .header(TOKEN_HEADER, &t1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(r.headers().get("location").unwrap(), "/elsewhere");
}

#[tokio::test]
async fn signed_requests_work_and_everything_else_is_refused() {
    let n = start().await;
    let owner = n.client(0x11);
    let t1 = owner.lease_token(1).await.unwrap().token;
    let t2 = owner.lease_token(2).await.unwrap().token;
    let get = |lease: u64, port: u16, auth: PortAuth<'static>, c: GatewayClient| async move {
        c.port_request(
            lease,
            port,
            auth,
            reqwest::Method::PUT,
            "/x?y=1",
            HeaderMap::new(),
            reqwest::Body::from(b"signed body".to_vec()),
        )
        .await
    };
    let r = get(1, 8000, PortAuth::Signed, owner.clone()).await.unwrap();
    let s = seen(r.headers());
    assert_eq!(
        (s["method"].as_str(), s["uri"].as_str()),
        (Some("PUT"), Some("/x?y=1"))
    );
    assert!(
        s["headers"].get("x-spheron-signature").is_none(),
        "the signature stays at the gateway"
    );
    assert_eq!(r.bytes().await.unwrap(), &b"signed body"[..]);

    let t1: &'static str = Box::leak(t1.into_boxed_str());
    let t2: &'static str = Box::leak(t2.into_boxed_str());
    for (lease, port, auth, who, expect) in [
        (1, 8000, PortAuth::Anonymous, 0x11, ErrorCode::Unsigned),
        (1, 8000, PortAuth::Token(t2), 0x11, ErrorCode::BadToken),
        (1, 8000, PortAuth::Token(""), 0x11, ErrorCode::BadToken),
        (1, 8000, PortAuth::Signed, 0x22, ErrorCode::WrongTenant),
        (3, 8000, PortAuth::Token(t1), 0x11, ErrorCode::BadToken),
        (1, 8001, PortAuth::Token(t1), 0x11, ErrorCode::NoSuchPort),
        (
            2,
            8000,
            PortAuth::Token(t2),
            0x11,
            ErrorCode::UpstreamFailed,
        ),
        (9, 8000, PortAuth::Signed, 0x11, ErrorCode::UnknownLease),
    ] {
        let e = get(lease, port, auth, n.client(who)).await.unwrap_err();
        assert_eq!(e.error, expect, "lease {lease} port {port} {auth:?}: {e}");
    }
    // The statuses an ordinary HTTP client sees.
    let r = n
        .http
        .get(format!("{}/lease/1/ports/8000/", n.url))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (401, ErrorCode::Unsigned));
    let r = n
        .http
        .get(format!("{}/lease/1/ports/8000/", n.url))
        .bearer_auth(t2)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (401, ErrorCode::BadToken));
    let r = n
        .http
        .post(format!("{}/lease/1/ports/8000/", n.url))
        .bearer_auth(t1)
        .body(vec![0u8; MAX_PROXY_BODY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (413, ErrorCode::TooLarge));
    let r = n
        .http
        .get(format!("{}/lease/1/ports/0/", n.url))
        .bearer_auth(t1)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (404, ErrorCode::NoSuchPort));

    // Stopped: closed to the token and to signed requests alike.
    n.backend.running.store(false, Ordering::SeqCst);
    let r = n
        .http
        .get(format!("{}/lease/1/ports/8000/", n.url))
        .bearer_auth(t1)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (409, ErrorCode::NotRunning));
    let e = get(1, 8000, PortAuth::Signed, owner).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::NotRunning);
}

#[tokio::test]
async fn the_forwarder_adds_the_token_for_plain_clients() {
    let n = start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let fwd = tokio::spawn(spheron_node::ports::forward(
        n.client(0x11),
        1,
        8000,
        listener,
    ));
    let r = n
        .http
        .post(format!("http://{local}/v1/models?a=b"))
        .header("authorization", "Bearer sk-own")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let s = seen(r.headers());
    assert_eq!(s["uri"], "/v1/models?a=b");
    assert_eq!(s["headers"]["authorization"], "Bearer sk-own");
    assert_eq!(r.bytes().await.unwrap(), &b"hi"[..]);
    fwd.abort();
    // A tenant that is not the lease's gets no forwarder.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = spheron_node::ports::forward(n.client(0x22), 1, 8000, listener)
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::WrongTenant);
}
