//! The operator quorum as separate operator nodes meeting over HTTP and the chain: with one
//! operator offline and one lying, the honest match lands; with half the stake lying, no match
//! lands and the order refunds itself after its match deadline.
#![allow(clippy::unwrap_used, missing_docs)]

use alloy::primitives::{Address, U256, Uint};
use alloy::signers::local::PrivateKeySigner;
use spheron_chain::anvil::{AnvilOptions, TestChain, find_anvil};
use spheron_chain::bindings::{SpheronMarket, TestToken};
use spheron_chain::quorum::{self, Kind, MatchResult};
use spheron_chain::registry::{self, Registration, model_bytes, order_state};
use spheron_chain::{Chain, MarketConfig};
use spheron_core::{GeoPoint, GpuModel};
use spheron_node::network::{NetworkFile, PaymentToken};
use spheron_node::operator::{OperatorConfig, OperatorNode, Tamper};
use spheron_node::registry::{GpuGroup, ProviderMeta};
use std::sync::Arc;
use std::time::Duration;

const SPHN: u128 = 1_000_000_000_000_000_000;
const USDS: u128 = 1_000_000;

fn config() -> MarketConfig {
    MarketConfig {
        match_window_secs: 20,
        start_window_secs: 60,
        ..MarketConfig::default()
    }
}

async fn chain() -> Option<TestChain> {
    if let Err(e) = find_anvil() {
        if std::env::var_os("SPHERON_REQUIRE_ANVIL").is_some_and(|v| v != "0") {
            panic!("this test needs anvil: {e}");
        }
        eprintln!("*** SKIPPED: this test needs anvil: {e}");
        return None;
    }
    Some(
        TestChain::start_with(
            &config(),
            &AnvilOptions {
                block_time_secs: Some(1),
                accounts: 14,
            },
        )
        .await
        .unwrap(),
    )
}

fn network(tc: &TestChain) -> NetworkFile {
    NetworkFile {
        rpc_url: tc.endpoint(),
        chain_id: 31337,
        market: tc.addresses.market,
        operators: tc.addresses.operators,
        audit: None,
        sphn: tc.addresses.sphn,
        payment: PaymentToken {
            address: tc.addresses.stable,
            symbol: "USDS".into(),
            decimals: 6,
        },
        deploy_block: tc.deploy_block,
        bid_window_secs: 4,
        tenants: Vec::new(),
        parties: Vec::new(),
    }
}

async fn mint(tc: &TestChain, token: Address, to: Address, amount: u128) {
    let t = TestToken::new(token, tc.chain.provider().clone());
    tc.chain
        .send(tc.admin(), t.mint(to, U256::from(amount)))
        .await
        .unwrap();
}

/// Deposits `amount` of `token` into the market for `who`.
async fn deposit(tc: &TestChain, token: Address, who: Address, amount: u128) {
    mint(tc, token, who, amount).await;
    let t = TestToken::new(token, tc.chain.provider().clone());
    tc.chain
        .send(who, t.approve(tc.addresses.market, U256::from(amount)))
        .await
        .unwrap();
    let m = SpheronMarket::new(tc.addresses.market, tc.chain.provider().clone());
    tc.chain
        .send(who, m.deposit(token, U256::from(amount)))
        .await
        .unwrap();
}

/// Registers and stakes a provider at `location` offering H100s.
async fn provider(tc: &TestChain, who: Address, name: &str, region: &str, location: GeoPoint) {
    let meta = ProviderMeta {
        name: name.into(),
        location,
        gpus: vec![GpuGroup {
            model: GpuModel::H100Sxm,
            nodes: 1,
            per_node: 8,
        }],
    };
    registry::register(
        &tc.chain,
        tc.addresses.market,
        who,
        &Registration {
            endpoint: format!("https://{name}.invalid"),
            region: region.into(),
            public_key: vec![2; 33],
            cert_hash: Default::default(),
            meta: meta.to_json(),
        },
    )
    .await
    .unwrap();
    deposit(tc, tc.addresses.sphn, who, 500 * SPHN).await;
    let m = SpheronMarket::new(tc.addresses.market, tc.chain.provider().clone());
    tc.chain.send(who, m.stake(500 * SPHN)).await.unwrap();
}

/// Starts an operator node staking `stake` SPHN; returns its shutdown sender.
async fn operator(
    tc: &TestChain,
    key: &PrivateKeySigner,
    stake: u128,
    tamper: Option<Tamper>,
) -> tokio::sync::oneshot::Sender<()> {
    mint(tc, tc.addresses.sphn, key.address(), stake).await;
    let node = OperatorNode::start_with_key(
        network(tc),
        key.clone(),
        OperatorConfig {
            stake,
            submit_grace: Duration::from_millis(500),
            poll: Duration::from_millis(200),
            tamper,
            ..OperatorConfig::default()
        },
    )
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(node.run(async {
        let _ = rx.await;
    }));
    tx
}

/// Registers (without running) an operator node: offline from the start.
async fn offline_operator(tc: &TestChain, key: &PrivateKeySigner, stake: u128) {
    mint(tc, tc.addresses.sphn, key.address(), stake).await;
    quorum::register_party(
        &tc.chain,
        tc.addresses.operators,
        tc.addresses.sphn,
        key.address(),
        Kind::Operator,
        "http://127.0.0.1:9",
        stake,
    )
    .await
    .unwrap();
}

struct Setup {
    tc: TestChain,
    tenant: Address,
    near: Address,
    far: Address,
}

/// Two providers: `near` (cheap, in the tenant's region) and `far` (dear, far away), and a
/// funded tenant.
async fn setup() -> Option<Setup> {
    let tc = chain().await?;
    let near = tc.accounts[6];
    let far = tc.accounts[7];
    let tenant = tc.accounts[8];
    provider(
        &tc,
        near,
        "near",
        "eu-west",
        GeoPoint {
            lat: 50.1,
            lon: 8.7,
        },
    )
    .await;
    provider(
        &tc,
        far,
        "far",
        "ap-south",
        GeoPoint {
            lat: 1.3,
            lon: 103.8,
        },
    )
    .await;
    deposit(&tc, tc.addresses.stable, tenant, 100 * USDS).await;
    Some(Setup {
        tc,
        tenant,
        near,
        far,
    })
}

/// Publishes an order for one H100 in eu-west and has both providers bid; returns its id.
async fn order_with_bids(s: &Setup) -> u64 {
    let tc = &s.tc;
    let mut request = spheron_node::matching::bare_request(1, 3600, 5 * USDS);
    request.models = vec![GpuModel::H100Sxm];
    request.location = Some(GeoPoint {
        lat: 50.1,
        lon: 8.7,
    });
    let created = registry::create_order(
        &tc.chain,
        tc.addresses.market,
        s.tenant,
        &registry::OrderParams {
            token: tc.addresses.stable,
            max_price_per_gpu_hour: 5 * USDS,
            gpus: 1,
            duration_secs: 3600,
            bid_window_secs: 6,
            spec: serde_json::to_vec(&request).unwrap(),
        },
    )
    .await
    .unwrap();
    let m = SpheronMarket::new(tc.addresses.market, tc.chain.provider().clone());
    for (who, price) in [(s.near, 2 * USDS), (s.far, 4 * USDS)] {
        tc.chain
            .send(
                who,
                m.placeBid(
                    created.id,
                    Uint::<96, 2>::from(price),
                    model_bytes(GpuModel::H100Sxm),
                ),
            )
            .await
            .unwrap();
    }
    created.id
}

/// A lie: sign the far, dear provider as the winner.
fn lie(far: Address) -> Tamper {
    Arc::new(move |m: &mut MatchResult| {
        m.winner = far;
        m.price = 4 * USDS;
    })
}

async fn state(chain: &Chain, market: Address, id: u64) -> SpheronMarket::OrderView {
    SpheronMarket::new(market, chain.provider().clone())
        .getOrder(id)
        .call()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_offline_and_one_lying_operator_cannot_stop_the_honest_match() {
    let Some(s) = setup().await else { return };
    let tc = &s.tc;
    // Stake: two honest operators hold 8,000 of 10,000 SPHN; a liar and an offline one 1,000 each.
    let _a = operator(tc, &tc.keys[2], 4_000 * SPHN, None).await;
    let _b = operator(tc, &tc.keys[3], 4_000 * SPHN, None).await;
    let _liar = operator(tc, &tc.keys[4], 1_000 * SPHN, Some(lie(s.far))).await;
    offline_operator(tc, &tc.keys[5], 1_000 * SPHN).await;
    let id = order_with_bids(&s).await;

    let mut o = state(&tc.chain, tc.addresses.market, id).await;
    for _ in 0..120 {
        if o.state != order_state::OPEN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        o = state(&tc.chain, tc.addresses.market, id).await;
    }
    assert_eq!(o.state, order_state::MATCHED, "the honest quorum matched");
    assert_eq!(o.provider, s.near, "the honest result won, not the lie");
    assert_eq!(o.price, 2 * USDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_the_stake_lying_means_no_match_and_a_refund() {
    let Some(s) = setup().await else { return };
    let tc = &s.tc;
    let _a = operator(tc, &tc.keys[2], 1_000 * SPHN, None).await;
    let _b = operator(tc, &tc.keys[3], 1_000 * SPHN, None).await;
    let _c = operator(tc, &tc.keys[4], 1_000 * SPHN, Some(lie(s.far))).await;
    let _d = operator(tc, &tc.keys[5], 1_000 * SPHN, Some(lie(s.far))).await;
    let before = SpheronMarket::new(tc.addresses.market, tc.chain.provider().clone())
        .accountOf(tc.addresses.stable, s.tenant)
        .call()
        .await
        .unwrap();
    let id = order_with_bids(&s).await;
    let o = state(&tc.chain, tc.addresses.market, id).await;
    let match_deadline = u64::try_from(o.bidDeadline).unwrap() + 20;
    // Wait out the match window: neither result has 2/3 of the stake.
    loop {
        let now = tc.chain.block_time().await.unwrap();
        if now > match_deadline + 1 {
            break;
        }
        let o = state(&tc.chain, tc.addresses.market, id).await;
        assert_eq!(o.state, order_state::OPEN, "no result reached the quorum");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        state(&tc.chain, tc.addresses.market, id).await.state,
        order_state::OPEN
    );
    // Anyone may expire it; the whole lock returns to the tenant.
    let m = SpheronMarket::new(tc.addresses.market, tc.chain.provider().clone());
    tc.chain
        .send(tc.accounts[9], m.expireOrder(id))
        .await
        .unwrap();
    let after = m
        .accountOf(tc.addresses.stable, s.tenant)
        .call()
        .await
        .unwrap();
    assert_eq!(after.available, before.available);
    assert_eq!(after.locked, 0);
}
