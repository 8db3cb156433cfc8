//! Binding answers to the challenged provider.
//!
//! Two things stop a cheater from passing off another provider's work as its own:
//!
//! 1. **The challenge names the provider** ([`Challenge::provider`], set by the verifier) and
//!    the Merkle tree is keyed by the session *and* that address ([`tree_key`]). An honest
//!    provider asked (by a relaying cheater) to answer a challenge addressed to someone else
//!    refuses ([`SignedProver`]); if the cheater rewrites the address, the tree is keyed for
//!    the wrong provider and no opened row verifies.
//! 2. **The provider signs the commitment** with its registered secp256k1 key (EIP-191
//!    `personal_sign` over [`commitment_message`]: provider, session, a hash of the seed, root),
//!    and a verifier that requires binding accepts only a signature that recovers to the
//!    challenged provider's address ([`check`]).
//!
//! A provider that colludes with the machine that really computes can still answer for it
//! (only a hardware attestation proves locality); what this stops is relaying to an honest
//! provider and replaying someone else's signed answer.

use crate::merkle::TreeKey;
use alloy_primitives::{Address, Signature};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use async_trait::async_trait;
use spheron_core::proof::{Challenge, ChallengeProver, Commitment, Opening, Reveal};
use spheron_core::{Error, ProviderId, Result};
use std::sync::Arc;

/// Domain string at the start of every signed commitment message.
pub const DOMAIN: &[u8] = b"spheron proof-of-gpu commitment v3";

/// The tree key of a challenge: the session's keys, further keyed by the challenged provider
/// when the challenge names one.
pub fn tree_key(ch: &Challenge) -> TreeKey {
    match ch.provider {
        None => TreeKey::for_session(&ch.session),
        Some(p) => {
            let mut ctx = [0u8; 36];
            ctx[..16].copy_from_slice(&ch.session);
            ctx[16..].copy_from_slice(&p.0);
            TreeKey {
                leaf: blake3::derive_key(crate::merkle::LEAF_CONTEXT, &ctx),
                node: blake3::derive_key(crate::merkle::NODE_CONTEXT, &ctx),
            }
        }
    }
}

/// The message a provider signs for `root` in answer to `ch`:
/// `DOMAIN || provider (20 bytes, zero if none) || session || blake3(seed) || root`.
pub fn commitment_message(ch: &Challenge, root: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 20 + 16 + 64);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&ch.provider.map(|p| p.0).unwrap_or([0; 20]));
    m.extend_from_slice(&ch.session);
    m.extend_from_slice(blake3::hash(&ch.seed).as_bytes());
    m.extend_from_slice(root);
    m
}

/// Signs `root` for `ch` with `key` (EIP-191); the 65 bytes `r || s || v`.
pub fn sign(key: &PrivateKeySigner, ch: &Challenge, root: &[u8; 32]) -> Result<[u8; 65]> {
    let sig = key
        .sign_message_sync(&commitment_message(ch, root))
        .map_err(|e| Error::Prover(format!("signing the commitment: {e}")))?;
    Ok(sig.as_bytes())
}

/// The address whose key signed `commitment` for `ch`; `Err` with the reason when the
/// signature is missing or does not recover.
pub fn signer(ch: &Challenge, commitment: &Commitment) -> std::result::Result<Address, String> {
    let raw = commitment
        .signature
        .ok_or_else(|| "the commitment is not signed".to_string())?;
    let sig = Signature::from_raw(&raw).map_err(|e| format!("bad signature encoding: {e}"))?;
    sig.recover_address_from_msg(commitment_message(ch, &commitment.root))
        .map_err(|e| format!("signature does not recover: {e}"))
}

/// `None` when `commitment` is signed by the provider `ch` names, else why not.
pub fn check(ch: &Challenge, commitment: &Commitment) -> Option<String> {
    let Some(expected) = ch.provider else {
        return Some("the challenge names no provider to check the signature against".into());
    };
    match signer(ch, commitment) {
        Err(e) => Some(e),
        Ok(a) if a.0.0 == expected.0 => None,
        Ok(a) => Some(format!(
            "signed by {a:#x}, not by the challenged provider {expected}"
        )),
    }
}

/// The provider id of a signing key's address.
pub fn provider_id(key: &PrivateKeySigner) -> ProviderId {
    spheron_core::AccountId(key.address().0.0)
}

/// A prover that answers only challenges addressed to its own key and signs every
/// commitment with it. The provider node wraps its CPU or CUDA prover in one.
pub struct SignedProver {
    inner: Arc<dyn ChallengeProver>,
    key: PrivateKeySigner,
}

impl std::fmt::Debug for SignedProver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedProver")
            .field("address", &self.key.address())
            .finish_non_exhaustive()
    }
}

impl SignedProver {
    /// `inner`, signing with `key`.
    pub fn new(inner: Arc<dyn ChallengeProver>, key: PrivateKeySigner) -> Self {
        SignedProver { inner, key }
    }

    /// The provider this prover answers for.
    pub fn provider(&self) -> ProviderId {
        provider_id(&self.key)
    }
}

#[async_trait]
impl ChallengeProver for SignedProver {
    async fn commit(&self, ch: &Challenge) -> Result<Commitment> {
        let me = self.provider();
        if ch.provider != Some(me) {
            return Err(Error::Prover(format!(
                "challenge addressed to {}, this prover answers for {me}",
                ch.provider
                    .map_or_else(|| "no provider".to_string(), |p| p.to_string())
            )));
        }
        let mut c = self.inner.commit(ch).await?;
        c.signature = Some(sign(&self.key, ch, &c.root)?);
        Ok(c)
    }

    async fn open(&self, reveal: &Reveal) -> Result<Opening> {
        self.inner.open(reveal).await
    }

    async fn round_trip(&self) -> Result<Option<std::time::Duration>> {
        self.inner.round_trip().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spheron_core::GpuModel;
    use spheron_core::proof::{Dtype, PROTOCOL_VERSION};

    fn challenge(provider: Option<ProviderId>) -> Challenge {
        Challenge {
            version: PROTOCOL_VERSION,
            session: [4; 16],
            seed: [5; 32],
            claimed: GpuModel::T4,
            n: 8,
            batch: 1,
            dtype: Dtype::Int8,
            deadline_us: 1,
            provider,
        }
    }

    #[test]
    fn signatures_recover_to_the_signer_only() {
        let a = PrivateKeySigner::random();
        let b = PrivateKeySigner::random();
        let ch = challenge(Some(provider_id(&a)));
        let root = [9u8; 32];
        let mut c = Commitment {
            version: PROTOCOL_VERSION,
            session: ch.session,
            root,
            device: None,
            signature: Some(sign(&a, &ch, &root).expect("sign")),
        };
        assert_eq!(check(&ch, &c), None);
        c.signature = Some(sign(&b, &ch, &root).expect("sign"));
        assert!(check(&ch, &c).is_some_and(|m| m.contains("not by the challenged")));
        c.signature = None;
        assert!(check(&ch, &c).is_some());
        // A signature over another root or session does not carry over.
        c.signature = Some(sign(&a, &ch, &[1; 32]).expect("sign"));
        assert!(check(&ch, &c).is_some());
        let mut other = ch.clone();
        other.session = [6; 16];
        c.signature = Some(sign(&a, &other, &root).expect("sign"));
        assert!(check(&ch, &c).is_some());
        // Garbage does not panic.
        c.signature = Some([0xff; 65]);
        assert!(check(&ch, &c).is_some());
        assert!(check(&challenge(None), &c).is_some());
    }

    #[test]
    fn tree_keys_depend_on_the_provider() {
        let a = challenge(Some(ProviderId::from_label("a")));
        let b = challenge(Some(ProviderId::from_label("b")));
        assert_ne!(tree_key(&a), tree_key(&b));
        assert_ne!(tree_key(&a), tree_key(&challenge(None)));
    }
}
