//! The tenant's side of the [`gateway`](crate::gateway): a client that signs every lease
//! request with the tenant's key and decodes the gateway's typed errors.

use crate::auth::{self, SignedHeaders};
use crate::tls::PinnedTunnel;
use crate::wire::{ErrorCode, GatewayError, LeaseStatus, NodeStatus, WorkdirReceipt};
use crate::workdir::{self, MAX_WORKDIR_BYTES, WorkdirError};
use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use futures::stream::{self, BoxStream, StreamExt};
use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use spheron_core::{LogLine, Workload};
use spheron_gpu::http::HttpProver;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default limit on a whole request (not applied to log streams).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request signature is valid, in seconds (well within
/// [`auth::MAX_EXPIRY_SECS`]).
pub const REQUEST_TTL_SECS: u64 = 60;
/// Longest log line accepted by [`GatewayClient::logs`], in bytes.
pub const MAX_LOG_LINE: usize = 1 << 20;
/// Largest error or JSON answer read, in bytes.
pub const MAX_ANSWER: usize = 4 << 20;
/// Limit on a working directory upload or a file download.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// How [`GatewayClient::port_request`] authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortAuth<'a> {
    /// The lease's bearer token ([`GatewayClient::lease_token`]).
    Token(&'a str),
    /// Signed by the tenant's key, like every lease route.
    Signed,
    /// No credential at all: the gateway refuses it (`unsigned`); for checks and tests.
    Anonymous,
}

/// Log lines as they arrive; a refusal or transport failure is the last item.
pub type LogLines = BoxStream<'static, Result<LogLine, GatewayError>>;

/// A tenant's client for one provider's gateway.
#[derive(Clone)]
pub struct GatewayClient {
    base: String,
    http: reqwest::Client,
    signer: PrivateKeySigner,
    chain_id: u64,
    market: Address,
    domain: Eip712Domain,
    timeout: Duration,
    prover: HttpProver,
    /// Where requests go: `base`, or the pinned tunnel's loopback origin.
    target: String,
    /// The pinned TLS channel to an `https://` gateway ([`GatewayClient::new_pinned`]).
    tunnel: Option<Arc<PinnedTunnel>>,
    /// The pinned certificate hash of an `https://` gateway.
    cert_hash: Option<B256>,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClient")
            .field("base", &self.base)
            .field("signer", &self.signer.address())
            .field("chain_id", &self.chain_id)
            .field("market", &self.market)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(ErrorCode::Unavailable, format!("{what}: {e}"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn read_capped(mut resp: Response, cap: usize) -> Result<Vec<u8>, GatewayError> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| unavailable("reading the answer", e))?
    {
        if buf.len() + chunk.len() > cap {
            return Err(unavailable(
                "reading the answer",
                format!("over {cap} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// The error a non-2xx answer carries: the gateway's typed JSON, or else `Unavailable` (502,
/// 503, 504) or `Internal` with the status and text.
async fn refusal(resp: Response) -> GatewayError {
    let status = resp.status();
    let body = match read_capped(resp, MAX_ANSWER).await {
        Ok(b) => b,
        Err(e) => return e,
    };
    if let Ok(e) = serde_json::from_slice::<GatewayError>(&body) {
        return e;
    }
    let code = match status {
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            ErrorCode::Unavailable
        }
        _ => ErrorCode::Internal,
    };
    let text = String::from_utf8_lossy(&body);
    let text: String = text.chars().take(512).collect();
    GatewayError::new(code, format!("HTTP {status}: {text}"))
}

impl GatewayClient {
    /// A client for the gateway at `base_url` (an origin such as `http://10.0.0.5:8080`: the
    /// gateway is served at the root, and the signed path is the one sent), signing with the
    /// tenant's `signer` for the market at `market` on chain `chain_id`.
    pub fn new(
        base_url: &str,
        signer: PrivateKeySigner,
        chain_id: u64,
        market: Address,
    ) -> Result<Self, GatewayError> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(GatewayError::new(
                ErrorCode::BadRequest,
                format!("`{base}`: expected an http:// or https:// URL"),
            ));
        }
        let rest = base.split_once("://").map_or("", |(_, r)| r);
        if rest.is_empty() || rest.contains(['/', '?', '#']) {
            return Err(GatewayError::new(
                ErrorCode::BadRequest,
                format!("`{base}`: expected an origin (scheme, host, port) without a path"),
            ));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| GatewayError::new(ErrorCode::Internal, format!("HTTP client: {e}")))?;
        let prover = HttpProver::new(&base)
            .map_err(|e| GatewayError::new(ErrorCode::BadRequest, e.to_string()))?;
        Ok(GatewayClient {
            target: base.clone(),
            base,
            http,
            domain: auth::domain(chain_id, market),
            signer,
            chain_id,
            market,
            timeout: DEFAULT_TIMEOUT,
            prover,
            tunnel: None,
            cert_hash: None,
        })
    }

    /// A client for the gateway at `base_url` whose TLS certificate is pinned by the
    /// provider's registered `cert_hash` (see [`crate::tls`]): for an `https://` URL, only the
    /// certificate of that hash is accepted (a zero hash is refused); a plain `http://` URL is
    /// accepted only for a loopback host (`127.0.0.1`, `::1`, `localhost`: local devnets), and
    /// `cert_hash` is then ignored.
    ///
    /// An `https://` client must be made inside a tokio runtime: it forwards each connection
    /// through a pinned TLS channel run in a task of that runtime, which stops when the last
    /// clone of the client (and of its [`prover`](Self::prover)) is dropped. A certificate other
    /// than the pinned one, or a handshake not signed with its key, fails each request with
    /// [`ErrorCode::UntrustedCertificate`] before anything is sent.
    pub fn new_pinned(
        base_url: &str,
        signer: PrivateKeySigner,
        chain_id: u64,
        market: Address,
        cert_hash: B256,
    ) -> Result<Self, GatewayError> {
        let mut client = Self::new(base_url, signer, chain_id, market)?;
        let url = reqwest::Url::parse(&client.base).map_err(|e| {
            GatewayError::new(ErrorCode::BadRequest, format!("`{}`: {e}", client.base))
        })?;
        let host = url.host_str().unwrap_or_default().to_string();
        if host.is_empty() {
            return Err(GatewayError::new(
                ErrorCode::BadRequest,
                format!("`{}`: no host", client.base),
            ));
        }
        if url.scheme() == "http" {
            if !is_loopback(&host) {
                return Err(GatewayError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "`{}`: plain http is only for a loopback host; a remote gateway must be https with its registered cert_hash",
                        client.base
                    ),
                ));
            }
            return Ok(client);
        }
        if cert_hash == B256::ZERO {
            return Err(GatewayError::new(
                ErrorCode::BadRequest,
                format!(
                    "`{}`: no certificate registered (cert_hash is zero): nothing to pin",
                    client.base
                ),
            ));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let tunnel = Arc::new(PinnedTunnel::open(&host, port, cert_hash)?);
        client.target = tunnel.url();
        client.prover = HttpProver::new(&client.target)
            .map_err(|e| GatewayError::new(ErrorCode::BadRequest, e.to_string()))?
            .with_keepalive(tunnel.clone());
        client.tunnel = Some(tunnel);
        client.cert_hash = Some(cert_hash);
        Ok(client)
    }

    /// The error for a request that got no answer: why the pinned channel failed, if it did
    /// ([`ErrorCode::UntrustedCertificate`] for another certificate), else `Unavailable`.
    fn transport_error(&self, e: reqwest::Error) -> GatewayError {
        match self.tunnel.as_ref().and_then(|t| t.recent_failure()) {
            Some(failure) => failure,
            None => unavailable(&self.base, e),
        }
    }

    /// Limit on each whole request other than log streams (default [`DEFAULT_TIMEOUT`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The gateway's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The tenant's address.
    pub fn tenant(&self) -> Address {
        self.signer.address()
    }

    /// The proof-of-GPU client for the same node.
    pub fn prover(&self) -> HttpProver {
        self.prover.clone()
    }

    async fn signed(
        &self,
        method: Method,
        path_and_query: &str,
        lease: u64,
        body: Vec<u8>,
    ) -> Result<reqwest::RequestBuilder, GatewayError> {
        self.signed_for(
            method,
            path_and_query,
            lease,
            body,
            REQUEST_TTL_SECS,
            "application/json",
        )
        .await
    }

    /// A signed request valid for `ttl_secs` (the gateway checks the expiry once the body
    /// has arrived: transfers get the longest it accepts).
    async fn signed_for(
        &self,
        method: Method,
        path_and_query: &str,
        lease: u64,
        body: Vec<u8>,
        ttl_secs: u64,
        content_type: &'static str,
    ) -> Result<reqwest::RequestBuilder, GatewayError> {
        let h: SignedHeaders = auth::sign_request(
            &self.signer,
            &self.domain,
            method.as_str(),
            path_and_query,
            lease,
            &body,
            now() + ttl_secs,
        )
        .await?;
        let mut rb = self
            .http
            .request(method, format!("{}{path_and_query}", self.target));
        for (k, v) in h.pairs() {
            rb = rb.header(k, v);
        }
        if !body.is_empty() {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body);
        }
        Ok(rb)
    }

    /// Uploads the working directory archive of `lease` (`PUT /lease/{lease}/workdir`),
    /// before its manifest.
    pub async fn upload_workdir(
        &self,
        lease: u64,
        archive: Vec<u8>,
    ) -> Result<WorkdirReceipt, GatewayError> {
        let rb = self
            .signed_for(
                Method::PUT,
                &format!("/lease/{lease}/workdir"),
                lease,
                archive,
                auth::MAX_EXPIRY_SECS - 5,
                "application/x-tar",
            )
            .await?;
        let resp = rb
            .timeout(TRANSFER_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        if !resp.status().is_success() {
            return Err(refusal(resp).await);
        }
        let body = read_capped(resp, MAX_ANSWER).await?;
        serde_json::from_slice(&body)
            .map_err(|e| GatewayError::new(ErrorCode::Internal, format!("answer JSON: {e}")))
    }

    /// Downloads file `path` (relative to the workload's working directory, e.g.
    /// `outputs/model.ckpt`) of `lease` to `dest` (written to `dest.part`, then renamed);
    /// returns the bytes written.
    pub async fn download(
        &self,
        lease: u64,
        path: &str,
        dest: &std::path::Path,
    ) -> Result<u64, GatewayError> {
        Ok(self
            .download_if_changed(lease, path, dest, None)
            .await?
            .map_or(0, |(n, _)| n))
    }

    /// [`download`](Self::download) unless the file's entity tag is still `tag` (the one a
    /// previous download returned): `None` when unchanged (nothing written), else the bytes
    /// written and the new tag (absent from a gateway that sends none).
    pub async fn download_if_changed(
        &self,
        lease: u64,
        path: &str,
        dest: &std::path::Path,
        tag: Option<&str>,
    ) -> Result<Option<(u64, Option<String>)>, GatewayError> {
        use tokio::io::AsyncWriteExt;
        let mut rb = self
            .signed(
                Method::GET,
                &format!("/lease/{lease}/files?path={}", query_escape(path)),
                lease,
                Vec::new(),
            )
            .await?;
        if let Some(t) = tag {
            rb = rb.header(reqwest::header::IF_NONE_MATCH, t);
        }
        let resp = rb
            .timeout(TRANSFER_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(refusal(resp).await);
        }
        let new_tag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let local = |e: std::io::Error| {
            GatewayError::new(ErrorCode::Internal, format!("{}: {e}", dest.display()))
        };
        let part = dest.with_extension(match dest.extension() {
            Some(x) => format!("{}.part", x.to_string_lossy()),
            None => "part".into(),
        });
        let mut f = tokio::fs::File::create(&part).await.map_err(local)?;
        let mut body = resp.bytes_stream();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&part).await;
                    return Err(unavailable("download", e));
                }
            };
            f.write_all(&chunk).await.map_err(local)?;
            n += chunk.len() as u64;
        }
        f.flush().await.map_err(local)?;
        drop(f);
        tokio::fs::rename(&part, dest).await.map_err(local)?;
        Ok(Some((n, new_tag)))
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<T, GatewayError> {
        let resp = rb
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        if !resp.status().is_success() {
            return Err(refusal(resp).await);
        }
        let body = read_capped(resp, MAX_ANSWER).await?;
        serde_json::from_slice(&body)
            .map_err(|e| GatewayError::new(ErrorCode::Internal, format!("answer JSON: {e}")))
    }

    async fn lease_call<T: DeserializeOwned>(
        &self,
        method: Method,
        lease: u64,
        action: &str,
        body: Vec<u8>,
    ) -> Result<T, GatewayError> {
        let rb = self
            .signed(method, &format!("/lease/{lease}/{action}"), lease, body)
            .await?;
        self.answer(rb).await
    }

    /// `GET /status` (unsigned).
    pub async fn node_status(&self) -> Result<NodeStatus, GatewayError> {
        self.answer(self.http.get(format!("{}/status", self.target)))
            .await
    }

    /// `POST /quote` (unsigned): what the provider would bid on `request` now.
    pub async fn quote(
        &self,
        request: &spheron_core::GpuRequest,
    ) -> Result<crate::wire::QuoteReply, GatewayError> {
        let body = serde_json::to_vec(request).map_err(|e| {
            GatewayError::new(ErrorCode::BadRequest, format!("quote request JSON: {e}"))
        })?;
        self.answer(
            self.http
                .post(format!("{}/quote", self.target))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }

    /// Signs and sends the manifest launching `workload` on `lease` at `provider`, valid for
    /// `ttl_secs` (at most [`auth::MAX_EXPIRY_SECS`], else the gateway refuses it).
    pub async fn send_manifest(
        &self,
        lease: u64,
        provider: Address,
        workload: &Workload,
        ttl_secs: u64,
    ) -> Result<LeaseStatus, GatewayError> {
        let mut workload = workload.clone();
        if let Some(w) = &mut workload.workdir
            && w.hash.is_none()
        {
            // Packed and uploaded first; the manifest signs its hash.
            let dir = w.source.clone().ok_or_else(|| {
                GatewayError::new(
                    ErrorCode::BadRequest,
                    "the working directory has neither a source nor a hash",
                )
            })?;
            let packed =
                tokio::task::spawn_blocking(move || workdir::pack(&dir, MAX_WORKDIR_BYTES))
                    .await
                    .map_err(|e| GatewayError::new(ErrorCode::Internal, e.to_string()))?
                    .map_err(|e: WorkdirError| {
                        let code = match e {
                            WorkdirError::TooLarge { .. } => ErrorCode::TooLarge,
                            _ => ErrorCode::BadRequest,
                        };
                        GatewayError::new(code, e.to_string())
                    })?;
            let bytes = packed.archive.len() as u64;
            let receipt = self.upload_workdir(lease, packed.archive).await?;
            let hash = format!("{:#x}", packed.hash);
            if receipt.hash != hash || receipt.bytes != bytes {
                return Err(GatewayError::new(
                    ErrorCode::Internal,
                    format!(
                        "the provider stored {} ({} bytes), not {hash}",
                        receipt.hash, receipt.bytes
                    ),
                ));
            }
            w.hash = Some(hash);
            w.bytes = bytes;
        }
        let m = auth::sign_manifest(
            &self.signer,
            self.chain_id,
            self.market,
            lease,
            provider,
            &workload,
            now() + ttl_secs,
        )
        .await?;
        let body = serde_json::to_vec(&m)
            .map_err(|e| GatewayError::new(ErrorCode::Internal, format!("manifest JSON: {e}")))?;
        if workload.workdir.is_none() {
            return self.lease_call(Method::PUT, lease, "manifest", body).await;
        }
        // The provider checks the archive's hash and unpacks it before answering.
        let rb = self
            .signed(
                Method::PUT,
                &format!("/lease/{lease}/manifest"),
                lease,
                body,
            )
            .await?
            .timeout(TRANSFER_TIMEOUT);
        let resp = rb.send().await.map_err(|e| self.transport_error(e))?;
        if !resp.status().is_success() {
            return Err(refusal(resp).await);
        }
        let answer = read_capped(resp, MAX_ANSWER).await?;
        serde_json::from_slice(&answer)
            .map_err(|e| GatewayError::new(ErrorCode::Internal, format!("answer JSON: {e}")))
    }

    /// `GET /lease/{lease}/status`.
    pub async fn status(&self, lease: u64) -> Result<LeaseStatus, GatewayError> {
        self.lease_call(Method::GET, lease, "status", Vec::new())
            .await
    }

    /// `POST /lease/{lease}/stop`.
    pub async fn stop(&self, lease: u64) -> Result<LeaseStatus, GatewayError> {
        self.lease_call(Method::POST, lease, "stop", Vec::new())
            .await
    }

    /// `GET /lease/{lease}/token`: the bearer token that opens the lease's ports
    /// ([`crate::ports`]).
    pub async fn lease_token(&self, lease: u64) -> Result<crate::ports::LeaseToken, GatewayError> {
        self.lease_call(Method::GET, lease, "token", Vec::new())
            .await
    }

    /// The pinned certificate hash of an `https://` gateway (`None` for plain loopback http).
    pub fn cert_hash(&self) -> Option<B256> {
        self.cert_hash
    }

    /// How to reach `port` of `lease` through this gateway: the proxy URL, the lease's token
    /// and the certificate hash to pin.
    pub async fn endpoint(
        &self,
        lease: u64,
        port: u16,
    ) -> Result<spheron_core::Endpoint, GatewayError> {
        let t = self.lease_token(lease).await?;
        Ok(spheron_core::Endpoint {
            port,
            url: format!("{}{}", self.base, crate::ports::port_path(lease, port)),
            token: Some(spheron_core::Secret::new(t.token)),
            cert_hash: self.cert_hash.map(|h| format!("{h:#x}")),
        })
    }

    /// Sends a request to `port` of `lease` at `path_and_query` (starting with `/`) through
    /// the gateway's proxy and the pinned channel, authenticated as `auth` says (a signed
    /// request sends its body whole). Any answer of the workload is returned as is, its
    /// status included; a refusal of the gateway is the error.
    #[allow(clippy::too_many_arguments)]
    pub async fn port_request(
        &self,
        lease: u64,
        port: u16,
        auth: PortAuth<'_>,
        method: Method,
        path_and_query: &str,
        headers: reqwest::header::HeaderMap,
        body: reqwest::Body,
    ) -> Result<Response, GatewayError> {
        let path = format!(
            "{}{}",
            crate::ports::port_path(lease, port).trim_end_matches('/'),
            path_and_query
        );
        let plain = || {
            self.http
                .request(method.clone(), format!("{}{path}", self.target))
                .headers(headers.clone())
        };
        let rb = match auth {
            PortAuth::Token(t) => plain().header(crate::ports::TOKEN_HEADER, t).body(body),
            PortAuth::Anonymous => plain().body(body),
            PortAuth::Signed => {
                let bytes = body.as_bytes().map(<[u8]>::to_vec).ok_or_else(|| {
                    GatewayError::new(
                        ErrorCode::BadRequest,
                        "a signed port request needs its whole body (not a stream)",
                    )
                })?;
                let mut rb = self.signed(method.clone(), &path, lease, bytes).await?;
                for (k, v) in &headers {
                    rb = rb.header(k, v);
                }
                rb
            }
        };
        let resp = rb
            .timeout(crate::ports::PROXY_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        // The gateway's own refusals carry its JSON error; anything else is the workload's.
        if resp.status().is_client_error() || resp.status().is_server_error() {
            let from_gateway = resp.headers().get(crate::ports::PROXY_HEADER).is_none();
            if from_gateway {
                return Err(refusal(resp).await);
            }
        }
        Ok(resp)
    }

    /// The lease's log from line `from`; with `follow`, new lines as they come until the
    /// workload's log ends. The request is sent when the stream is first polled; a refusal
    /// is its single item.
    pub fn logs(&self, lease: u64, from: u64, follow: bool) -> LogLines {
        let this = self.clone();
        let start = async move {
            let rb = this
                .signed(
                    Method::GET,
                    &format!("/lease/{lease}/logs?from={from}&follow={follow}"),
                    lease,
                    Vec::new(),
                )
                .await?;
            let resp = rb.send().await.map_err(|e| this.transport_error(e))?;
            if !resp.status().is_success() {
                return Err(refusal(resp).await);
            }
            Ok(resp)
        };
        stream::once(start)
            .flat_map(|r| match r {
                Ok(resp) => ndjson(resp).boxed(),
                Err(e) => stream::iter([Err(e)]).boxed(),
            })
            .boxed()
    }
}

/// Percent-encodes `s` for a query value (everything but unreserved characters and `/`).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `host` (as in a URL: IPv6 in brackets) is `localhost` or a loopback address.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

struct Reader {
    body: BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buf: Vec<u8>,
    done: bool,
}

/// Parses an NDJSON body incrementally, one [`LogLine`] per line.
fn ndjson(resp: Response) -> impl futures::Stream<Item = Result<LogLine, GatewayError>> {
    let r = Reader {
        body: resp.bytes_stream().boxed(),
        buf: Vec::new(),
        done: false,
    };
    stream::unfold(r, |mut r| async move {
        loop {
            if r.done {
                return None;
            }
            if let Some(i) = r.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = r.buf.drain(..=i).collect();
                let line = &line[..i];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let item = serde_json::from_slice::<LogLine>(line).map_err(|e| {
                    GatewayError::new(ErrorCode::Internal, format!("log line JSON: {e}"))
                });
                if item.is_err() {
                    r.done = true;
                }
                return Some((item, r));
            }
            if r.buf.len() > MAX_LOG_LINE {
                r.done = true;
                return Some((
                    Err(GatewayError::new(
                        ErrorCode::Internal,
                        format!("log line over {MAX_LOG_LINE} bytes"),
                    )),
                    r,
                ));
            }
            match r.body.next().await {
                Some(Ok(chunk)) => r.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    r.done = true;
                    return Some((Err(unavailable("log stream", e)), r));
                }
                None => {
                    r.done = true;
                    if r.buf.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    let item = serde_json::from_slice::<LogLine>(&r.buf).map_err(|e| {
                        GatewayError::new(ErrorCode::Internal, format!("log line JSON: {e}"))
                    });
                    return Some((item, r));
                }
            }
        }
    })
}
