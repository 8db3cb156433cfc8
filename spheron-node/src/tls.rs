//! HTTPS for the gateway: a self-signed certificate whose hash the provider registers on
//! chain, and clients that accept exactly that certificate.
//!
//! - The provider keeps one self-signed certificate ([`load_or_create`]: made on first run,
//!   reused afterwards so the registered hash stays valid across restarts), serves the gateway
//!   with it ([`server_config`], [`crate::gateway::serve_tls`]) and registers its
//!   [`cert_hash`] as the `cert_hash` of its on-chain registration.
//! - A tenant pins that hash ([`pinned_client_config`], used by
//!   [`GatewayClient::new_pinned`](crate::gateway_client::GatewayClient::new_pinned)): the
//!   handshake succeeds only with the end-entity certificate of that hash, and the server must
//!   still prove it holds the certificate's key (the handshake signature is verified). No
//!   certificate authority, host name or expiry is checked: the hash pins the certificate.
//!
//! **The hash is SHA-256 of the DER-encoded certificate**, the value that
//! `openssl x509 -inform der -in gateway-cert.der -noout -fingerprint -sha256` prints.
//!
//! Only the `ring` crypto provider is used, always passed explicitly: nothing here installs or
//! relies on a process-wide default provider.

use crate::Error;
use crate::wire::{ErrorCode, GatewayError};
use alloy::primitives::B256;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme,
};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

/// The certificate's file name in the directory given to [`load_or_create`].
pub const CERT_FILE: &str = "gateway-cert.der";
/// The private key's file name (PKCS#8 DER, mode 0600).
pub const KEY_FILE: &str = "gateway-key.der";
/// Longest a TLS handshake may take, on either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes the server runs at once; further connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 256;
/// The name a certificate is made for when no name is given.
pub const DEFAULT_NAME: &str = "spheron-gateway";

/// The gateway's certificate and key.
#[derive(Clone)]
pub struct GatewayCert {
    /// The self-signed certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// [`cert_hash`] of `cert_der`: the value to register on chain.
    pub hash: B256,
}

impl std::fmt::Debug for GatewayCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCert")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// The pin of a certificate: SHA-256 of its DER encoding.
pub fn cert_hash(der: &[u8]) -> B256 {
    B256::from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::config(path.display().to_string(), reason.to_string())
}

/// Writes `bytes` to `path` through a temporary file in the same directory, created with
/// `mode`, then renamed over `path`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("der.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| file_error(&tmp, e))?;
    f.write_all(bytes).map_err(|e| file_error(&tmp, e))?;
    f.sync_all().map_err(|e| file_error(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))
}

/// The gateway certificate kept in `dir`: [`CERT_FILE`] and [`KEY_FILE`] when both exist,
/// else a new self-signed certificate for `names` (DNS names or IP addresses; the client does
/// not check them; [`DEFAULT_NAME`] when empty), written there first.
///
/// The certificate is written last, so a run interrupted while writing leaves no certificate
/// and the next run makes a new one. A certificate without its key is an error rather than a
/// new certificate: its hash may be registered on chain already.
pub fn load_or_create(dir: &Path, names: &[String]) -> Result<GatewayCert, Error> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if cert_path.exists() {
        let cert_der = std::fs::read(&cert_path).map_err(|e| file_error(&cert_path, e))?;
        let key_der = std::fs::read(&key_path).map_err(|e| {
            file_error(
                &key_path,
                format!("{e} (the certificate exists: restore its key, or remove both files and register the new cert_hash)"),
            )
        })?;
        warn_if_readable(&key_path);
        let cert = GatewayCert {
            hash: cert_hash(&cert_der),
            cert_der,
            key_der,
        };
        server_config(&cert)?;
        return Ok(cert);
    }
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let names = if names.is_empty() {
        vec![DEFAULT_NAME.to_string()]
    } else {
        names.to_vec()
    };
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| file_error(&cert_path, format!("making a certificate: {e}")))?;
    let cert = GatewayCert {
        cert_der: made.cert.der().to_vec(),
        key_der: made.signing_key.serialize_der(),
        hash: cert_hash(made.cert.der()),
    };
    write_file(&key_path, &cert.key_der, 0o600)?;
    write_file(&cert_path, &cert.cert_der, 0o644)?;
    Ok(cert)
}

fn warn_if_readable(key_path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(key_path)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %key_path.display(), "the gateway's TLS key is readable by others");
    }
}

/// The TLS server configuration presenting `cert` (TLS 1.2 and 1.3, ALPN `http/1.1`, no
/// client certificates).
pub fn server_config(cert: &GatewayCert) -> Result<Arc<ServerConfig>, Error> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone()));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.cert_der.clone())], key)
        .map_err(|e| Error::config("tls", format!("gateway certificate or key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server presented another certificate than the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("the certificate presented has hash {presented}, not the registered cert_hash {expected}")]
pub struct PinMismatch {
    /// The registered hash.
    pub expected: B256,
    /// The hash of the certificate the server presented.
    pub presented: B256,
}

#[derive(Debug)]
struct PinnedVerifier {
    hash: B256,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = cert_hash(end_entity.as_ref());
        if self.hash != B256::ZERO && presented == self.hash {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch {
                    expected: self.hash,
                    presented,
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS client configuration that accepts only the end-entity certificate whose
/// [`cert_hash`] is `hash` (and no certificate at all when `hash` is zero), verifying the
/// handshake signature with it; ALPN `http/1.1`.
pub fn pinned_client_config(hash: B256) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("tls", e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier { hash, algorithms }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener whose connections come out TLS-terminated, for `axum::serve`.
///
/// Handshakes run in their own tasks (at most [`MAX_HANDSHAKES`] at once, each at most
/// [`HANDSHAKE_TIMEOUT`]), so a slow or failed handshake neither blocks nor stops accepting.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    task: tokio::task::AbortHandle,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Starts accepting on `listener` with `config` (in a task of the current tokio runtime).
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(accept_loop(listener, acceptor, tx)).abort_handle();
        Ok(TlsListener { local, ready, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ready: mpsc::Sender<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait a little, as axum's own loop does.
                tracing::warn!(error = %e, "gateway accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let shaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            match shaken {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// How long a failed handshake explains the transport errors that follow it.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

type Failure = Arc<Mutex<Option<(Instant, GatewayError)>>>;

/// A loopback forwarder that opens a pinned TLS connection to a gateway for every plain
/// connection made to it, so that plain-HTTP clients (the tenant's reqwest clients, which are
/// built without a TLS backend) reach an HTTPS gateway through a pinned channel.
///
/// It listens on 127.0.0.1 only. It adds no credential: anyone who can connect to it could
/// connect to the gateway directly, and every lease request is signed anyway. It stops when
/// dropped.
pub(crate) struct PinnedTunnel {
    local: SocketAddr,
    failure: Failure,
    task: tokio::task::AbortHandle,
}

impl Drop for PinnedTunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(ErrorCode::Internal, format!("{what}: {e}"))
}

impl PinnedTunnel {
    /// Starts forwarding to `host:port`, accepting only the certificate of `hash`, in a task
    /// of the current tokio runtime (an error outside one).
    pub(crate) fn open(host: &str, port: u16, hash: B256) -> Result<Self, GatewayError> {
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| internal("a pinned gateway client needs a tokio runtime", e))?;
        let config = pinned_client_config(hash).map_err(|e| internal("TLS client", e))?;
        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| internal("pinned tunnel", e))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| internal("pinned tunnel", e))?;
        let local = std_listener
            .local_addr()
            .map_err(|e| internal("pinned tunnel", e))?;
        let listener = {
            let _in_rt = rt.enter();
            TcpListener::from_std(std_listener).map_err(|e| internal("pinned tunnel", e))?
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = ServerName::try_from(host.clone())
            .or_else(|_| ServerName::try_from(DEFAULT_NAME.to_string()))
            .map_err(|e| internal("TLS server name", e))?;
        let failure = Failure::default();
        let target = Target {
            host,
            port,
            name,
            connector: tokio_rustls::TlsConnector::from(config),
            failure: failure.clone(),
        };
        let task = rt
            .spawn(tunnel_loop(listener, Arc::new(target)))
            .abort_handle();
        Ok(PinnedTunnel {
            local,
            failure,
            task,
        })
    }

    /// The plain-HTTP origin that reaches the gateway, `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.local)
    }

    /// Why the last connection to the gateway failed, when that is recent and no connection
    /// succeeded since: [`ErrorCode::UntrustedCertificate`] for a certificate that is not the
    /// pinned one (or a handshake its key did not sign), [`ErrorCode::Unavailable`] for any
    /// other failure.
    pub(crate) fn recent_failure(&self) -> Option<GatewayError> {
        let slot = self.failure.lock().ok()?;
        match &*slot {
            Some((at, e)) if at.elapsed() < FAILURE_WINDOW => Some(e.clone()),
            _ => None,
        }
    }
}

struct Target {
    host: String,
    port: u16,
    name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
    failure: Failure,
}

impl Target {
    fn record(&self, e: Option<GatewayError>) {
        if let Ok(mut slot) = self.failure.lock() {
            *slot = e.map(|e| (Instant::now(), e));
        }
    }

    fn origin(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, GatewayError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            GatewayError::new(ErrorCode::Unavailable, format!("{}: {e}", self.origin()))
        };
        let tcp = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|e| unavailable(&e))?
        .map_err(|e| unavailable(&e))?;
        let _ = tcp.set_nodelay(true);
        let shaken = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.connector.connect(self.name.clone(), tcp),
        )
        .await
        .map_err(|e| unavailable(&format!("TLS handshake: {e}")))?;
        shaken.map_err(|e| {
            let untrusted = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
            if untrusted {
                GatewayError::new(
                    ErrorCode::UntrustedCertificate,
                    format!("{}: {e}", self.origin()),
                )
            } else {
                unavailable(&format!("TLS handshake: {e}"))
            }
        })
    }
}

async fn tunnel_loop(listener: TcpListener, target: Arc<Target>) {
    loop {
        let mut plain = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "pinned tunnel accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let target = target.clone();
        tokio::spawn(async move {
            match target.connect().await {
                Ok(mut tls) => {
                    target.record(None);
                    let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "pinned connection to the gateway failed");
                    target.record(Some(e));
                }
            }
        });
    }
}
