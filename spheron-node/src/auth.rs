//! EIP-712 authentication of gateway traffic.
//!
//! Two things are signed by the tenant's chain key, both under the domain
//! `{name: "Spheron Gateway", version: "1", chainId, verifyingContract: market}` ([`domain`]):
//!
//! - every `/lease/...` request ([`GatewayRequest`]): method, path-and-query, lease id, the
//!   BLAKE3-256 of the raw body ([`body_hash`]), an expiry and a random nonce. The signature travels in the
//!   [`SIGNER_HEADER`], [`EXPIRY_HEADER`], [`NONCE_HEADER`] and [`SIGNATURE_HEADER`] headers
//!   ([`sign_request`], [`recover_request`]);
//! - the lease manifest ([`LeaseManifest`]): chain, market, lease, provider, the keccak-256 of
//!   the workload's JSON, a nonce and an expiry. It travels as the JSON body of
//!   `PUT /lease/{id}/manifest` ([`SignedManifest`], [`sign_manifest`], [`recover_manifest`]).
//!   The workload's secrets are never part of the signed manifest: the signed workload has
//!   none, and their values travel beside it ([`SignedManifest::secrets`]) in the body of that
//!   TLS request, whose tenant signature covers the body's hash.
//!
//! Expiries are unix seconds; the server refuses one in the past and one more than
//! [`MAX_EXPIRY_SECS`] ahead ([`check_expiry`]), so a signature never lives long and the
//! provider's nonce store stays bounded.

use crate::wire::{ErrorCode, GatewayError};
use alloy::primitives::{Address, B256, Signature, U256, keccak256};
use alloy::signers::Signer;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use spheron_core::{Secret, Workload};
use std::collections::BTreeMap;
use std::str::FromStr;

/// Header carrying the signer's address (`0x` + 40 hex digits).
pub const SIGNER_HEADER: &str = "x-spheron-signer";
/// Header carrying the request's expiry (unix seconds, decimal).
pub const EXPIRY_HEADER: &str = "x-spheron-expiry";
/// Header carrying the request's nonce (`0x` + 64 hex digits).
pub const NONCE_HEADER: &str = "x-spheron-nonce";
/// Header carrying the 65-byte signature (`0x` + 130 hex digits).
pub const SIGNATURE_HEADER: &str = "x-spheron-signature";

/// The content hash of a request body or an uploaded archive: BLAKE3-256.
///
/// BLAKE3 rather than keccak-256 because these bytes can be large (a working directory of
/// hundreds of MB) and never reach the chain: BLAKE3's SIMD code hashes several GB/s, keccak
/// well under one, and hundreds of times less in a debug build.
pub fn body_hash(bytes: &[u8]) -> B256 {
    B256::from(*blake3::hash(bytes).as_bytes())
}

/// How far ahead of the server's clock an expiry may lie, in seconds.
pub const MAX_EXPIRY_SECS: u64 = 300;

sol! {
    /// What the tenant signs for each gateway request.
    #[derive(Debug, PartialEq, Eq)]
    struct GatewayRequest {
        string method;
        string path;
        uint64 lease;
        bytes32 bodyHash;
        uint64 expiry;
        bytes32 nonce;
    }

    /// What the tenant signs to have a lease's workload launched.
    #[derive(Debug, PartialEq, Eq)]
    struct LeaseManifest {
        uint256 chainId;
        address market;
        uint64 lease;
        address provider;
        bytes32 workloadHash;
        bytes32 nonce;
        uint64 expiry;
    }
}

/// The EIP-712 domain of gateway signatures for the market at `market` on chain `chain_id`.
pub fn domain(chain_id: u64, market: Address) -> Eip712Domain {
    eip712_domain! {
        name: "Spheron Gateway",
        version: "1",
        chain_id: chain_id,
        verifying_contract: market,
    }
}

/// The four signature headers of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    /// The signer's address.
    pub signer: Address,
    /// Unix seconds after which the request is refused.
    pub expiry: u64,
    /// Fresh random nonce.
    pub nonce: B256,
    /// `0x`-prefixed hex of the 65-byte signature.
    pub signature: String,
}

impl SignedHeaders {
    /// The headers as `(name, value)` pairs, ready to be set on a request.
    pub fn pairs(&self) -> [(&'static str, String); 4] {
        [
            (SIGNER_HEADER, format!("{:#x}", self.signer)),
            (EXPIRY_HEADER, self.expiry.to_string()),
            (NONCE_HEADER, format!("{:#x}", self.nonce)),
            (SIGNATURE_HEADER, self.signature.clone()),
        ]
    }
}

/// keccak-256 of the canonical JSON (`serde_json::to_vec`) of `workload`.
pub fn workload_hash(workload: &Workload) -> Result<B256, GatewayError> {
    let json = serde_json::to_vec(workload)
        .map_err(|e| GatewayError::new(ErrorCode::Internal, format!("workload JSON: {e}")))?;
    Ok(keccak256(json))
}

/// Checks an expiry against the server's clock `now`: refused as [`ErrorCode::Expired`] when
/// `expiry < now` or `expiry > now + MAX_EXPIRY_SECS`.
pub fn check_expiry(expiry: u64, now: u64) -> Result<(), GatewayError> {
    if expiry < now {
        return Err(GatewayError::new(
            ErrorCode::Expired,
            format!("expired at {expiry}, now {now}"),
        ));
    }
    if expiry > now.saturating_add(MAX_EXPIRY_SECS) {
        return Err(GatewayError::new(
            ErrorCode::Expired,
            format!("expiry {expiry} is more than {MAX_EXPIRY_SECS} s after now ({now})"),
        ));
    }
    Ok(())
}

fn request_struct(
    method: &str,
    path_and_query: &str,
    lease: u64,
    body: &[u8],
    expiry: u64,
    nonce: B256,
) -> GatewayRequest {
    GatewayRequest {
        method: method.to_ascii_uppercase(),
        path: path_and_query.to_string(),
        lease,
        bodyHash: body_hash(body),
        expiry,
        nonce,
    }
}

fn sig_hex(sig: &Signature) -> String {
    format!("0x{}", hex::encode(sig.as_bytes()))
}

fn parse_signature(s: &str) -> Result<Signature, GatewayError> {
    let bad = |why: String| GatewayError::new(ErrorCode::BadSignature, why);
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| bad("signature: expected 0x-prefixed hex".into()))?;
    let bytes = hex::decode(digits).map_err(|e| bad(format!("signature: {e}")))?;
    if bytes.len() != 65 {
        return Err(bad(format!(
            "signature: expected 65 bytes, got {}",
            bytes.len()
        )));
    }
    Signature::try_from(bytes.as_slice()).map_err(|e| bad(format!("signature: {e}")))
}

/// Signs a request with `signer`: `method` and `path_and_query` exactly as sent (e.g.
/// `GET`, `/lease/7/logs?from=0&follow=true`), the lease id of the path, the raw `body`
/// (empty when there is none), valid until `expiry` (unix seconds), with a fresh random nonce.
pub async fn sign_request(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    method: &str,
    path_and_query: &str,
    lease: u64,
    body: &[u8],
    expiry: u64,
) -> Result<SignedHeaders, GatewayError> {
    let nonce = B256::random();
    let msg = request_struct(method, path_and_query, lease, body, expiry, nonce);
    let sig = signer
        .sign_typed_data(&msg, domain)
        .await
        .map_err(|e| GatewayError::new(ErrorCode::Internal, format!("signing: {e}")))?;
    Ok(SignedHeaders {
        signer: signer.address(),
        expiry,
        nonce,
        signature: sig_hex(&sig),
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, GatewayError> {
    let v = headers
        .get(name)
        .ok_or_else(|| GatewayError::new(ErrorCode::Unsigned, format!("missing {name} header")))?;
    v.to_str().map_err(|_| {
        GatewayError::new(
            ErrorCode::BadSignature,
            format!("{name} header is not ASCII"),
        )
    })
}

/// Recovers who signed a request from its headers, returning the signer, the nonce and the
/// expiry (not checked here: see [`check_expiry`]).
///
/// [`ErrorCode::Unsigned`] when a signature header is absent; [`ErrorCode::BadSignature`]
/// when one is malformed or the signature does not recover to the `x-spheron-signer` address
/// over exactly this method, path-and-query, lease and body.
pub fn recover_request(
    domain: &Eip712Domain,
    method: &str,
    path_and_query: &str,
    lease: u64,
    body: &[u8],
    headers: &HeaderMap,
) -> Result<(Address, B256, u64), GatewayError> {
    let signer = header(headers, SIGNER_HEADER)?;
    let expiry = header(headers, EXPIRY_HEADER)?;
    let nonce = header(headers, NONCE_HEADER)?;
    let signature = header(headers, SIGNATURE_HEADER)?;
    let bad = |what: &str, e: String| {
        GatewayError::new(ErrorCode::BadSignature, format!("{what} header: {e}"))
    };
    let signer = Address::from_str(signer).map_err(|e| bad(SIGNER_HEADER, e.to_string()))?;
    let expiry: u64 = expiry
        .parse()
        .map_err(|e: std::num::ParseIntError| bad(EXPIRY_HEADER, e.to_string()))?;
    if !nonce.starts_with("0x") {
        return Err(bad(NONCE_HEADER, "expected 0x-prefixed hex".into()));
    }
    let nonce = B256::from_str(nonce).map_err(|e| bad(NONCE_HEADER, e.to_string()))?;
    let sig = parse_signature(signature)?;
    let msg = request_struct(method, path_and_query, lease, body, expiry, nonce);
    let recovered = sig
        .recover_address_from_prehash(&msg.eip712_signing_hash(domain))
        .map_err(|e| GatewayError::new(ErrorCode::BadSignature, format!("recovery: {e}")))?;
    if recovered != signer {
        return Err(GatewayError::new(
            ErrorCode::BadSignature,
            "the signature does not cover this request by the named signer",
        ));
    }
    Ok((signer, nonce, expiry))
}

/// The body of `PUT /lease/{id}/manifest`: the [`LeaseManifest`] fields, the workload itself
/// and the tenant's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    /// Chain id of the EIP-712 domain and of the market.
    pub chain_id: u64,
    /// The market contract.
    pub market: Address,
    /// The lease (its order id on chain).
    pub lease: u64,
    /// The provider that is to run it.
    pub provider: Address,
    /// keccak-256 of the canonical JSON of `workload` ([`workload_hash`]).
    pub workload_hash: B256,
    /// Fresh random nonce.
    pub nonce: B256,
    /// Unix seconds after which the manifest is refused.
    pub expiry: u64,
    /// What to run, without its secrets (signed through `workload_hash`).
    pub workload: Workload,
    /// `0x`-prefixed hex of the 65-byte signature over the [`LeaseManifest`].
    pub signature: String,
    /// The workload's secret environment variables, outside the signed manifest (neither in
    /// `workload` nor in `workload_hash`): covered by the request signature over the body
    /// and by TLS. Never logged (`Secret` does not print).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, Secret>,
}

impl SignedManifest {
    /// The workload to launch: the signed one with the secrets put back. A secret named like
    /// an environment variable of the workload is refused ([`ErrorCode::BadRequest`]).
    pub fn into_workload(self) -> Result<Workload, GatewayError> {
        let mut w = self.workload;
        if let Some(k) = self
            .secrets
            .keys()
            .find(|k| w.env.contains_key(*k) || w.secrets.contains_key(*k))
        {
            return Err(GatewayError::new(
                ErrorCode::BadRequest,
                format!("secret `{k}` is also an environment variable of the workload"),
            ));
        }
        w.secrets.extend(self.secrets);
        Ok(w)
    }

    /// The signed EIP-712 struct.
    pub fn typed(&self) -> LeaseManifest {
        LeaseManifest {
            chainId: U256::from(self.chain_id),
            market: self.market,
            lease: self.lease,
            provider: self.provider,
            workloadHash: self.workload_hash,
            nonce: self.nonce,
            expiry: self.expiry,
        }
    }
}

/// Signs the manifest launching `workload` on `lease` at `provider`, valid until `expiry`
/// (unix seconds), with a fresh random nonce. The workload's secrets are moved out of the
/// signed workload into [`SignedManifest::secrets`].
pub async fn sign_manifest(
    signer: &PrivateKeySigner,
    chain_id: u64,
    market: Address,
    lease: u64,
    provider: Address,
    workload: &Workload,
    expiry: u64,
) -> Result<SignedManifest, GatewayError> {
    let mut signed = workload.clone();
    let secrets = std::mem::take(&mut signed.secrets);
    let mut m = SignedManifest {
        chain_id,
        market,
        lease,
        provider,
        workload_hash: workload_hash(&signed)?,
        nonce: B256::random(),
        expiry,
        workload: signed,
        signature: String::new(),
        secrets,
    };
    let sig = signer
        .sign_typed_data(&m.typed(), &domain(chain_id, market))
        .await
        .map_err(|e| GatewayError::new(ErrorCode::Internal, format!("signing: {e}")))?;
    m.signature = sig_hex(&sig);
    Ok(m)
}

/// Recovers who signed `m` (under the domain of `m.chain_id` and `m.market`: the caller checks
/// those are its own). [`ErrorCode::WorkloadMismatch`] when the workload does not hash to
/// `workload_hash`; [`ErrorCode::BadSignature`] when the signature is malformed.
pub fn recover_manifest(m: &SignedManifest) -> Result<Address, GatewayError> {
    if workload_hash(&m.workload)? != m.workload_hash {
        return Err(GatewayError::new(
            ErrorCode::WorkloadMismatch,
            "the workload does not match the signed workloadHash",
        ));
    }
    let sig = parse_signature(&m.signature)?;
    sig.recover_address_from_prehash(&m.typed().eip712_signing_hash(&domain(m.chain_id, m.market)))
        .map_err(|e| GatewayError::new(ErrorCode::BadSignature, format!("recovery: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(b: u8) -> PrivateKeySigner {
        PrivateKeySigner::from_bytes(&B256::repeat_byte(b)).unwrap()
    }

    fn to_map(h: &SignedHeaders) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in h.pairs() {
            m.insert(k, v.parse().unwrap());
        }
        m
    }

    #[tokio::test]
    async fn request_round_trip_and_tamper() {
        let d = domain(31337, Address::repeat_byte(9));
        let k = key(1);
        let h = sign_request(&k, &d, "put", "/lease/1/manifest?x=1", 1, b"{}", 100)
            .await
            .unwrap();
        let m = to_map(&h);
        let (who, nonce, exp) =
            recover_request(&d, "PUT", "/lease/1/manifest?x=1", 1, b"{}", &m).unwrap();
        assert_eq!((who, nonce, exp), (k.address(), h.nonce, 100));
        for (method, path, lease, body) in [
            ("GET", "/lease/1/manifest?x=1", 1, &b"{}"[..]),
            ("PUT", "/lease/1/manifest", 1, b"{}"),
            ("PUT", "/lease/1/manifest?x=1", 2, b"{}"),
            ("PUT", "/lease/1/manifest?x=1", 1, b"{ }"),
        ] {
            let e = recover_request(&d, method, path, lease, body, &m).unwrap_err();
            assert_eq!(e.error, ErrorCode::BadSignature, "{method} {path}");
        }
        let other = domain(1, Address::repeat_byte(9));
        let e = recover_request(&other, "PUT", "/lease/1/manifest?x=1", 1, b"{}", &m).unwrap_err();
        assert_eq!(e.error, ErrorCode::BadSignature);
        let e = recover_request(&d, "GET", "/", 1, b"", &HeaderMap::new()).unwrap_err();
        assert_eq!(e.error, ErrorCode::Unsigned);
        let mut bad = m.clone();
        bad.insert(SIGNATURE_HEADER, "0x1234".parse().unwrap());
        let e = recover_request(&d, "PUT", "/lease/1/manifest?x=1", 1, b"{}", &bad).unwrap_err();
        assert_eq!(e.error, ErrorCode::BadSignature);
    }

    #[test]
    fn expiry_window() {
        assert!(check_expiry(100, 100).is_ok());
        assert!(check_expiry(400, 100).is_ok());
        assert_eq!(check_expiry(99, 100).unwrap_err().error, ErrorCode::Expired);
        assert_eq!(
            check_expiry(401, 100).unwrap_err().error,
            ErrorCode::Expired
        );
        assert!(check_expiry(u64::MAX, u64::MAX).is_ok());
    }

    #[tokio::test]
    async fn manifest_round_trip() {
        let k = key(2);
        let w = Workload::command(["echo", "hi"]);
        let m = sign_manifest(
            &k,
            5,
            Address::repeat_byte(3),
            7,
            Address::repeat_byte(4),
            &w,
            50,
        )
        .await
        .unwrap();
        let json = serde_json::to_string(&m).unwrap();
        let back: SignedManifest = serde_json::from_str(&json).unwrap();
        assert_eq!(recover_manifest(&back).unwrap(), k.address());
        let mut moved = back.clone();
        moved.lease = 8;
        assert_ne!(recover_manifest(&moved).unwrap(), k.address());
        let mut swapped = back;
        swapped.workload = Workload::command(["rm", "-rf", "/"]);
        assert_eq!(
            recover_manifest(&swapped).unwrap_err().error,
            ErrorCode::WorkloadMismatch
        );
    }

    #[tokio::test]
    async fn secrets_travel_beside_the_signed_manifest() {
        let k = key(2);
        let mut w = Workload::command(["train"]).env("MODE", "fast");
        w.secrets
            .insert("HF_TOKEN".into(), Secret::new("hunter2-value"));
        let m = sign_manifest(
            &k,
            5,
            Address::repeat_byte(3),
            7,
            Address::repeat_byte(4),
            &w,
            50,
        )
        .await
        .unwrap();
        // Neither the signed workload nor its hash holds the secret.
        let signed = serde_json::to_string(&m.workload).unwrap();
        assert!(!signed.contains("hunter2") && !signed.contains("HF_TOKEN"));
        assert!(m.workload.secrets.is_empty());
        let mut bare = w.clone();
        bare.secrets.clear();
        assert_eq!(m.workload_hash, workload_hash(&bare).unwrap());
        assert!(!format!("{m:?}").contains("hunter2"));
        // The body carries it; the provider gets the whole workload back.
        let back: SignedManifest =
            serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(recover_manifest(&back).unwrap(), k.address());
        assert_eq!(back.into_workload().unwrap(), w);
        // A secret shadowing an environment variable is refused.
        let mut clash = m.clone();
        clash.secrets.insert("MODE".into(), Secret::new("x"));
        assert_eq!(
            clash.into_workload().unwrap_err().error,
            ErrorCode::BadRequest
        );
        // Without secrets the body has no `secrets` field (older gateways accept it).
        let plain = sign_manifest(&k, 5, Address::ZERO, 7, Address::ZERO, &bare, 50)
            .await
            .unwrap();
        let body = serde_json::to_value(&plain).unwrap();
        assert!(body.get("secrets").is_none(), "{body}");
    }
}
