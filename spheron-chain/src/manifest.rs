//! Signed manifest delivery: the tenant signs the workload manifest (EIP-712, typed data bound
//! to the market contract and chain) with its chain key; the provider recovers the signer and
//! checks, on chain, that it is the lease's tenant before launching anything.

use crate::bindings::SpheronMarket;
use crate::client::{Chain, decode};
use crate::error::{Error, Result};
use alloy::primitives::{Address, B256, Signature, keccak256};
use alloy::signers::Signer;
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};
use serde::{Deserialize, Serialize};

sol! {
    /// What the tenant signs: the lease, itself, the manifest's keccak-256 and when.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct WorkloadManifest {
        uint64 lease;
        address tenant;
        bytes32 manifestHash;
        uint64 issuedAt;
    }
}

/// The EIP-712 domain of manifests for the market at `market` on chain `chain_id`.
pub fn domain(chain_id: u64, market: Address) -> Eip712Domain {
    eip712_domain! {
        name: "Spheron",
        version: "1",
        chain_id: chain_id,
        verifying_contract: market,
    }
}

/// A manifest (opaque bytes, e.g. the workload's JSON) with the tenant's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The signed fields.
    pub header: WorkloadManifest,
    /// The manifest itself.
    pub body: Vec<u8>,
    /// 65-byte signature over the EIP-712 hash of `header`.
    pub signature: Vec<u8>,
}

/// Signs `body` for `lease` with the tenant's key.
pub async fn sign<S: Signer + Sync>(
    signer: &S,
    domain: &Eip712Domain,
    lease: u64,
    body: Vec<u8>,
    issued_at: u64,
) -> Result<SignedManifest> {
    let header = WorkloadManifest {
        lease,
        tenant: signer.address(),
        manifestHash: keccak256(&body),
        issuedAt: issued_at,
    };
    let sig = signer
        .sign_typed_data(&header, domain)
        .await
        .map_err(|e| Error::Signature(e.to_string()))?;
    Ok(SignedManifest {
        header,
        body,
        signature: sig.as_bytes().to_vec(),
    })
}

/// Recovers who signed `m`, after checking the body matches the signed hash.
pub fn recover(m: &SignedManifest, domain: &Eip712Domain) -> Result<Address> {
    if keccak256(&m.body) != m.header.manifestHash {
        return Err(Error::Invalid {
            field: "manifest.body",
            reason: "does not match the signed manifestHash".into(),
        });
    }
    let sig = Signature::try_from(m.signature.as_slice()).map_err(|e| Error::Invalid {
        field: "manifest.signature",
        reason: e.to_string(),
    })?;
    let hash: B256 = m.header.eip712_signing_hash(domain);
    sig.recover_address_from_prehash(&hash)
        .map_err(|e| Error::Signature(e.to_string()))
}

/// The provider's check before launching: the signature recovers to the lease's tenant as
/// recorded on chain, the header names that tenant, and the lease is active. Returns the tenant.
pub async fn verify(chain: &Chain, market: Address, m: &SignedManifest) -> Result<Address> {
    let chain_id = chain
        .provider()
        .get_chain_id()
        .await
        .map_err(|e| Error::Rpc(e.to_string()))?;
    let signer = recover(m, &domain(chain_id, market))?;
    let o = SpheronMarket::new(market, chain.provider().clone())
        .getOrder(m.header.lease)
        .call()
        .await
        .map_err(decode)?;
    if !crate::registry::order_state::is_live(o.state) {
        return Err(Error::Invalid {
            field: "manifest.lease",
            reason: format!("lease {} is not active on chain", m.header.lease),
        });
    }
    if signer != o.tenant || m.header.tenant != o.tenant {
        return Err(Error::WrongManifestSigner {
            lease: m.header.lease,
            signer,
            tenant: o.tenant,
        });
    }
    Ok(o.tenant)
}

use alloy::providers::Provider as _;
