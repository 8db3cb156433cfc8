//! Signed manifests on anvil: accepted only from the lease's tenant.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use alloy::providers::Provider;
use common::{MIN_STAKE, OP_STAKE, SPHN};
use spheron_chain::manifest;
use spheron_chain::quorum::Kind;
use spheron_chain::{Error, MarketConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_from_the_tenant_is_accepted_and_any_other_rejected() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let (tenant, provider) = (tc.accounts[2], tc.accounts[3]);
    let t0 = common::freeze(&tc).await + 10;
    let ops = common::register_parties(&tc, &[10, 11, 12], Kind::Operator, OP_STAKE).await;
    common::register_providers(&tc, &[provider], MIN_STAKE).await;
    common::fund(&tc, tc.addresses.sphn, &[tenant], 10 * SPHN).await;
    let id = common::order_at(&tc, t0, tenant, tc.addresses.sphn, SPHN, 1, 3600, 60).await;
    assert_eq!(id, 1);
    common::bid(&tc, provider, 1, SPHN).await;
    let chain_id = tc.chain.provider().get_chain_id().await.unwrap();
    let domain = manifest::domain(chain_id, tc.addresses.market);
    let body = br#"{"image":"pytorch:2.5","command":["python","train.py"]}"#.to_vec();
    let signed = manifest::sign(&tc.keys[2], &domain, 1, body.clone(), 1)
        .await
        .unwrap();
    // Not yet a lease: refused.
    let e = manifest::verify(&tc.chain, tc.addresses.market, &signed)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid {
                field: "manifest.lease",
                ..
            }
        ),
        "{e}"
    );
    common::at(&tc, t0 + 61).await;
    common::submit(&tc, &ops, 1, provider, 2, tenant)
        .await
        .unwrap();
    assert_eq!(
        manifest::verify(&tc.chain, tc.addresses.market, &signed)
            .await
            .unwrap(),
        tenant
    );
    // Signed by someone else (even claiming to be the tenant): rejected.
    let mut forged = manifest::sign(&tc.keys[7], &domain, 1, body.clone(), 1)
        .await
        .unwrap();
    let e = manifest::verify(&tc.chain, tc.addresses.market, &forged)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongManifestSigner { .. }), "{e}");
    forged.header.tenant = tenant;
    let e = manifest::verify(&tc.chain, tc.addresses.market, &forged)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongManifestSigner { .. }), "{e}");
    // A tampered body: rejected.
    let mut tampered = signed.clone();
    tampered.body = b"rm -rf /".to_vec();
    let e = manifest::verify(&tc.chain, tc.addresses.market, &tampered)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid {
                field: "manifest.body",
                ..
            }
        ),
        "{e}"
    );
    // A signature for another market (domain): rejected.
    let other = manifest::domain(chain_id, tc.addresses.stable);
    let wrong_domain = manifest::sign(&tc.keys[2], &other, 1, body, 1)
        .await
        .unwrap();
    let e = manifest::verify(&tc.chain, tc.addresses.market, &wrong_domain)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongManifestSigner { .. }), "{e}");
}
