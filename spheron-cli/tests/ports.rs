//! Services through the gateway, on real processes: one `spheron devnet` with one provider
//! (HTTPS, pinned certificate); the workload is `python3 -m http.server` on the port the
//! provider gave it; the tenant fetches a file through the gateway's port proxy with the
//! lease's token, with a signed request, through the local forwarder and through
//! `spheron lease endpoint`; requests without a credential, with another lease's token or
//! from another tenant are refused, and so is everything once the lease is stopped.

#![allow(clippy::unwrap_used, missing_docs)]

use spheron::prelude::*;
use spheron::{NetworkMarket, TenantConfig};
use spheron_node::ErrorCode;
use spheron_node::gateway_client::{GatewayClient, PortAuth};
use spheron_node::network::{NetworkFile, parse_key};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{BIN, anvil_available};

fn start_devnet() -> common::Devnet {
    common::start_devnet(1, &[])
}

fn request() -> GpuRequest {
    GpuRequest::builder()
        .gpu("h100")
        .count(1)
        .hours(1)
        .max_price_per_gpu_hour(Amount(5_000_000))
        .build()
        .unwrap()
}

async fn connect(net: &Path, key: &str) -> NetworkMarket {
    Marketplace::connect_with(net, key, TenantConfig::default())
        .await
        .unwrap()
}

/// A file server on the port the provider gave: `PORT` for the first declared port.
fn file_server(content: &str) -> Workload {
    Workload::command([
        "sh",
        "-c",
        &format!(
            "printf '{content}' > hello.txt; exec python3 -m http.server \"$PORT\" --bind 127.0.0.1"
        ),
    ])
    .port(8000)
}

/// GET `path` of port 8000 of `lease` as `auth`: (status, body), or the gateway's refusal.
async fn get(
    g: &GatewayClient,
    lease: u64,
    auth: PortAuth<'_>,
    path: &str,
) -> Result<(u16, String), spheron_node::GatewayError> {
    let resp = g
        .port_request(
            lease,
            8000,
            auth,
            reqwest::Method::GET,
            path,
            reqwest::header::HeaderMap::new(),
            reqwest::Body::from(Vec::new()),
        )
        .await?;
    let status = resp.status().as_u16();
    assert_eq!(
        resp.headers()
            .get(spheron_node::ports::PROXY_HEADER)
            .map(|v| v.as_bytes()),
        Some(&b"1"[..]),
        "the workload's answer is marked as such"
    );
    Ok((status, resp.text().await.unwrap()))
}

/// Waits until the workload's server answers through the proxy.
async fn wait_serving(g: &GatewayClient, lease: u64, token: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match get(g, lease, PortAuth::Token(token), "/hello.txt").await {
            Ok(_) => return,
            Err(e) => {
                assert_eq!(e.error, ErrorCode::UpstreamFailed, "{e}");
                assert!(Instant::now() < until, "the server never answered: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One plain HTTP/1.1 GET to `addr` (the local forwarder): the whole answer.
fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_port_through_the_gateway() {
    if !anvil_available() {
        return;
    }
    let devnet = start_devnet();
    let net_path = devnet.network();
    let net = NetworkFile::load(&net_path).unwrap();
    let tenant = net.tenants[0].key.clone();
    let other = net.tenants[1].key.clone();
    let market = connect(&net_path, &tenant).await;

    // Two leases on the one provider both declare port 8000: each gets its own.
    let a = market.rent(request(), file_server("from-a")).await.unwrap();
    let b = market.rent(request(), file_server("from-b")).await.unwrap();
    let (ida, idb) = (a.id().0, b.id().0);
    let ea = a.endpoint(8000).await.unwrap();
    let eb = b.endpoint(8000).await.unwrap();
    assert!(ea.url.starts_with("https://"), "{}", ea.url);
    assert!(
        ea.url.ends_with(&format!("/lease/{ida}/ports/8000/")),
        "{}",
        ea.url
    );
    assert!(
        ea.cert_hash.is_some(),
        "the gateway's certificate is pinned"
    );
    let ta = ea.token.as_ref().unwrap().expose().to_string();
    let tb = eb.token.as_ref().unwrap().expose().to_string();
    assert_ne!(ta, tb, "tokens differ per lease");
    assert_eq!(
        ea.headers(),
        vec![("authorization".to_string(), format!("Bearer {ta}"))]
    );

    let provider = market.lease(ida).await.unwrap().provider.unwrap();
    let rec = market
        .providers()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.address == provider)
        .unwrap();
    let gateway = |key: &str| {
        GatewayClient::new_pinned(
            &rec.endpoint,
            parse_key(key).unwrap(),
            net.chain_id,
            net.market,
            rec.cert_hash,
        )
        .unwrap()
    };
    let g = gateway(&tenant);
    wait_serving(&g, ida, &ta).await;
    wait_serving(&g, idb, &tb).await;

    // The token, and a signed request, both reach the workload's file.
    assert_eq!(
        get(&g, ida, PortAuth::Token(&ta), "/hello.txt")
            .await
            .unwrap(),
        (200, "from-a".to_string())
    );
    assert_eq!(
        get(&g, idb, PortAuth::Token(&tb), "/hello.txt")
            .await
            .unwrap(),
        (200, "from-b".to_string())
    );
    assert_eq!(
        get(&g, ida, PortAuth::Signed, "/hello.txt?x=1")
            .await
            .unwrap(),
        (200, "from-a".to_string())
    );
    // The workload's own 404 comes back as an answer, not a refusal.
    assert_eq!(
        get(&g, ida, PortAuth::Token(&ta), "/missing.txt")
            .await
            .unwrap()
            .0,
        404
    );

    // No credential, another lease's token, another tenant's signature: refused.
    let e = get(&g, ida, PortAuth::Anonymous, "/hello.txt")
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::Unsigned, "{e}");
    let e = get(&g, ida, PortAuth::Token(&tb), "/hello.txt")
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::BadToken, "{e}");
    let e = get(&g, ida, PortAuth::Token("not-a-token"), "/hello.txt")
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::BadToken, "{e}");
    let e = get(&gateway(&other), ida, PortAuth::Signed, "/hello.txt")
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::WrongTenant, "{e}");
    let e = gateway(&other).lease_token(ida).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::WrongTenant, "{e}");
    // An undeclared port.
    let resp = g
        .port_request(
            ida,
            8001,
            PortAuth::Token(&ta),
            reqwest::Method::GET,
            "/",
            reqwest::header::HeaderMap::new(),
            reqwest::Body::from(Vec::new()),
        )
        .await;
    assert_eq!(resp.unwrap_err().error, ErrorCode::NoSuchPort);

    // The local forwarder: plain HTTP on loopback, no token, no certificate.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let fwd = tokio::spawn({
        let m = market.clone();
        async move { m.forward_port(ida, 8000, listener).await }
    });
    let answer = tokio::task::spawn_blocking(move || raw_get(local, "/hello.txt"))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("from-a"), "{answer}");
    fwd.abort();

    // The CLI prints the same URL and token.
    let out = Command::new(BIN)
        .arg("--network")
        .arg(&net_path)
        .env("SPHERON_KEY", &tenant)
        .env_remove("SPHERON_KEY_FILE")
        .args(["lease", "endpoint", &ida.to_string(), "8000", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["url"], ea.url.as_str());
    assert_eq!(v["token"], ta.as_str());

    // Stopped: the endpoint is gone and the token opens nothing.
    a.stop().await.unwrap();
    let e = a.endpoint(8000).await.unwrap_err();
    assert!(matches!(e, spheron_core::Error::LeaseClosed(_)), "{e}");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match get(&g, ida, PortAuth::Token(&ta), "/hello.txt").await {
            Err(e) if e.error == ErrorCode::NotRunning => break,
            other => assert!(
                Instant::now() < until,
                "a stopped lease still answers: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The other lease still serves.
    assert_eq!(
        get(&g, idb, PortAuth::Token(&tb), "/hello.txt")
            .await
            .unwrap(),
        (200, "from-b".to_string())
    );
    b.stop().await.unwrap();
}
