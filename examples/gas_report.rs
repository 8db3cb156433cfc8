//! Gas used by each market operation, by the quorum match with 4, 10 and 32 operators, and by
//! one full order -> bid -> quorum match -> start -> close lifecycle, measured on a local anvil
//! node.
//!
//! ```sh
//! bash scripts/chain-setup.sh            # installs anvil (npm) once
//! cargo run --example gas_report --features chain
//! ```
#![allow(clippy::unwrap_used)]

use spheron::chain::alloy::primitives::{Address, B256, Bytes, U256, Uint};
use spheron::chain::alloy::providers::Provider;
use spheron::chain::alloy::providers::ext::AnvilApi;
use spheron::chain::alloy::signers::local::PrivateKeySigner;
use spheron::chain::anvil::{AnvilOptions, TestChain};
use spheron::chain::bindings::{SpheronMarket, TestToken};
use spheron::chain::quorum::{self, Kind, MatchResult, VerdictClaim};
use spheron::chain::{Chain, MarketConfig};

type Receipt = spheron::chain::alloy::rpc::types::TransactionReceipt;
type Market = SpheronMarket::SpheronMarketInstance<spheron::chain::alloy::providers::DynProvider>;

/// A typical registration metadata document (the SDK writes name, coordinates, inventory).
const META: &str = r#"{"name":"gpu-eu-1","lat":52.37,"lon":4.90,"gpus":[{"model":"h100-sxm","count":8,"memory_gib":80}]}"#;

/// A typical order spec (the tenant's full request).
const SPEC: &str = r#"{"gpu":["h100-sxm","h100-pcie"],"count":8,"duration_secs":3600,"max_price_per_gpu_hour":"3000000","regions":["eu-west","eu-central"],"min_tier":3}"#;

const SPHN: u128 = 1_000_000_000_000_000_000;
const USDS: u128 = 1_000_000;

/// Dev accounts: 0 admin, 1 tier operator, 2 tenant, 3 provider, 4 and 5 verifiers, 6.. the
/// matching operators.
const FIRST_OPERATOR: usize = 6;

fn gas(r: &Receipt) -> u64 {
    r.gas_used
}

/// A chain with `n` equal-stake operators, two verifiers, a staked provider and a funded tenant.
struct Setup {
    tc: TestChain,
    /// Operator keys by ascending address.
    ops: Vec<PrivateKeySigner>,
    domain: spheron::chain::alloy::sol_types::Eip712Domain,
    now: u64,
    rows: Vec<(String, u64)>,
}

impl Setup {
    async fn new(n: usize) -> Result<Setup, Box<dyn std::error::Error>> {
        let opts = AnvilOptions {
            accounts: (FIRST_OPERATOR + n) as u32,
            ..AnvilOptions::default()
        };
        let config = MarketConfig::default();
        let tc = TestChain::start_with(&config, &opts).await?;
        let c: &Chain = &tc.chain;
        let a = tc.addresses;
        let m = SpheronMarket::new(a.market, c.provider().clone());
        let mut rows = Vec::new();
        c.provider().anvil_set_block_timestamp_interval(0).await?;
        let now = c.block_time().await? + 10;
        let sphn = TestToken::new(a.sphn, c.provider().clone());
        let usds = TestToken::new(a.stable, c.provider().clone());
        let (tenant, provider) = (tc.accounts[2], tc.accounts[3]);
        for (t, who, amount) in [
            (&usds, tenant, 1_000_000 * USDS),
            (&sphn, tenant, 1_000 * SPHN),
            (&sphn, provider, 1_000 * SPHN),
        ] {
            c.send(tc.admin(), t.mint(who, U256::from(amount))).await?;
            c.send(who, t.approve(a.market, U256::MAX)).await?;
        }
        let r = c
            .send(tenant, m.deposit(a.stable, U256::from(500_000 * USDS)))
            .await?;
        rows.push(("deposit (first, ERC-20 pull)".into(), gas(&r)));
        let r = c
            .send(tenant, m.deposit(a.stable, U256::from(500_000 * USDS)))
            .await?;
        rows.push(("deposit (again)".into(), gas(&r)));
        c.send(tenant, m.deposit(a.sphn, U256::from(1_000 * SPHN)))
            .await?;
        c.send(provider, m.deposit(a.sphn, U256::from(1_000 * SPHN)))
            .await?;
        let r = c
            .send(
                provider,
                m.register(
                    "https://gpu.example:8443".into(),
                    "eu-west".into(),
                    Bytes::from(vec![2u8; 33]),
                    B256::repeat_byte(0xc7),
                    META.into(),
                ),
            )
            .await?;
        rows.push((
            "register provider (with cert hash and meta)".into(),
            gas(&r),
        ));
        let r = c.send(provider, m.stake(1_000 * SPHN)).await?;
        rows.push(("stake (all available SPHN)".into(), gas(&r)));
        // Operators and verifiers stake in the operators contract.
        let stake = config.operator_min_stake;
        let parties: Vec<(usize, Kind)> = (FIRST_OPERATOR..FIRST_OPERATOR + n)
            .map(|i| (i, Kind::Operator))
            .chain([(4, Kind::Verifier), (5, Kind::Verifier)])
            .collect();
        for (i, kind) in parties {
            let who = tc.accounts[i];
            c.send(tc.admin(), sphn.mint(who, U256::from(stake)))
                .await?;
            quorum::register_party(
                c,
                a.operators,
                a.sphn,
                who,
                kind,
                "http://127.0.0.1:9000",
                stake,
            )
            .await?;
        }
        let mut ops: Vec<PrivateKeySigner> = tc.keys[FIRST_OPERATOR..FIRST_OPERATOR + n].to_vec();
        ops.sort_by_key(|k| k.address());
        let chain_id = c.provider().get_chain_id().await?;
        let domain = quorum::domain(chain_id, a.operators);
        Ok(Setup {
            tc,
            ops,
            domain,
            now,
            rows,
        })
    }

    fn m(&self) -> Market {
        SpheronMarket::new(self.tc.addresses.market, self.tc.chain.provider().clone())
    }

    async fn at(&self, t: u64) -> Result<(), Box<dyn std::error::Error>> {
        self.tc
            .chain
            .provider()
            .anvil_set_next_block_timestamp(t)
            .await?;
        Ok(())
    }

    /// The match of order `id` to `winner`, signed by ceil(2n/3) operators.
    async fn submit(
        &self,
        id: u64,
        winner: Address,
    ) -> Result<Receipt, Box<dyn std::error::Error>> {
        let m = self.m();
        let o = m.getOrder(id).call().await?;
        let bid = m.getBid(id, winner).call().await?;
        let seed = m.seedOf(id, o.bidsDigest).call().await?;
        let r = MatchResult {
            order_id: id,
            bids_digest: o.bidsDigest,
            winner,
            price: bid.price.to::<u128>(),
            seed,
            matcher_version: 1,
        };
        let k = (2 * self.ops.len()).div_ceil(3);
        let mut sigs = Vec::with_capacity(k);
        for key in &self.ops[..k] {
            sigs.push((
                key.address(),
                quorum::sign_match(key, &self.domain, &r).await?,
            ));
        }
        Ok(quorum::submit_match(
            &self.tc.chain,
            self.tc.addresses.market,
            self.tc.accounts[2],
            &r,
            &sigs,
        )
        .await?)
    }

    /// One lifecycle: createOrder, placeBid, submitMatch, confirmStart, closeLease half-way.
    async fn lifecycle(
        &mut self,
        label: &str,
        token: Address,
        price: u128,
    ) -> Result<u64, Box<dyn std::error::Error>> {
        let (m, c) = (self.m(), &self.tc.chain);
        let (tenant, provider) = (self.tc.accounts[2], self.tc.accounts[3]);
        let mut steps = Vec::new();
        self.at(self.now).await?;
        let r = c
            .send(tenant, m.createOrder(token, 3 * price / 2, 8, 3600, 60))
            .await?;
        let id = r
            .inner
            .logs()
            .iter()
            .find_map(|l| {
                <SpheronMarket::OrderCreated as spheron::chain::alloy::sol_types::SolEvent>::decode_log_data(l.data()).ok()
            })
            .unwrap()
            .id;
        steps.push((format!("createOrder ({label})"), gas(&r)));
        let r = c
            .send(
                provider,
                m.placeBid(id, Uint::from(price), Default::default()),
            )
            .await?;
        steps.push(("placeBid".into(), gas(&r)));
        self.now += 61;
        self.at(self.now).await?;
        let r = self.submit(id, provider).await?;
        steps.push((
            format!("submitMatch ({} operators)", self.ops.len()),
            gas(&r),
        ));
        let r = c.send(provider, m.confirmStart(id)).await?;
        steps.push(("confirmStart".into(), gas(&r)));
        self.now += 1800;
        self.at(self.now).await?;
        let r = c.send(tenant, m.closeLease(id)).await?;
        steps.push(("closeLease (mid-way)".into(), gas(&r)));
        let total: u64 = steps.iter().map(|(_, g)| g).sum();
        for (name, g) in steps {
            self.rows.push((format!("lifecycle: {name}"), g));
        }
        self.rows
            .push((format!("LIFECYCLE TOTAL ({label})"), total));
        self.now += 10;
        Ok(total)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The quorum match alone, with 4, 10 and 32 equal-stake operators.
    let mut quorum_rows = Vec::new();
    let mut s4 = None;
    for n in [4usize, 10, 32] {
        let mut s = Setup::new(n).await?;
        let sphn = s.tc.addresses.sphn;
        s.lifecycle("SPHN, warm-up", sphn, 2 * SPHN).await?;
        let before = s.rows.len();
        s.lifecycle("SPHN, steady state", sphn, 2 * SPHN).await?;
        let g = s.rows[before + 2].1;
        let k = (2 * n).div_ceil(3) as u64;
        quorum_rows.push((
            format!("submitMatch, {n} operators, {k} signatures"),
            g,
            format!("{} per signer above 60k", g.saturating_sub(60_000) / k),
        ));
        if n == 4 {
            s4 = Some(s);
        }
    }
    let mut s = s4.unwrap();
    let (usds, sphn) = (s.tc.addresses.stable, s.tc.addresses.sphn);
    s.lifecycle("USDS, 1% fee, first payout and first fee", usds, 2 * USDS)
        .await?;
    s.lifecycle("USDS, 1% fee, steady state", usds, 2 * USDS)
        .await?;
    let _ = sphn;
    let (m, c) = (s.m(), &s.tc.chain);
    let (tenant, provider, verifier) = (s.tc.accounts[2], s.tc.accounts[3], s.tc.accounts[4]);
    let r = c.send(provider, m.withdraw(usds, U256::from(USDS))).await?;
    s.rows.push(("withdraw earnings".into(), gas(&r)));

    // Batch settlement of 10 started leases in one call, after their end.
    let n = 10u64;
    let mut ids = Vec::new();
    s.at(s.now).await?;
    for _ in 0..n {
        let r = c
            .send(tenant, m.createOrder(usds, USDS, 1, 3600, 60))
            .await?;
        let id = r
            .inner
            .logs()
            .iter()
            .find_map(|l| {
                <SpheronMarket::OrderCreated as spheron::chain::alloy::sol_types::SolEvent>::decode_log_data(l.data()).ok()
            })
            .unwrap()
            .id;
        c.send(
            provider,
            m.placeBid(id, Uint::from(USDS), Default::default()),
        )
        .await?;
        ids.push(id);
    }
    s.now += 61;
    s.at(s.now).await?;
    for id in &ids {
        s.submit(*id, provider).await?;
        c.send(provider, m.confirmStart(*id)).await?;
    }
    s.now += 3600;
    s.at(s.now).await?;
    let r = c.send(tc_operator(&s), m.settleBatch(ids)).await?;
    s.rows
        .push((format!("settleBatch {n} ended leases: total"), gas(&r)));
    s.rows.push((
        format!("settleBatch {n} ended leases: per lease"),
        gas(&r) / n,
    ));

    let r = c
        .send(tenant, m.createOrder(usds, USDS, 1, 3600, 60))
        .await?;
    s.rows.push(("createOrder (another)".into(), gas(&r)));
    let id = s.m().nextOrderId().call().await? - 1;
    let r = c.send(tenant, m.cancelOrder(id)).await?;
    s.rows.push(("cancelOrder".into(), gas(&r)));
    let r = c
        .send(
            tenant,
            m.createOrderWithSpec(
                usds,
                USDS,
                1,
                3600,
                60,
                Bytes::from(SPEC.as_bytes().to_vec()),
            ),
        )
        .await?;
    s.rows.push((
        format!("createOrderWithSpec ({}-byte spec)", SPEC.len()),
        gas(&r),
    ));
    s.now += 200;
    s.at(s.now).await?;
    let r = c.send(verifier, m.expireOrder(id + 1)).await?;
    s.rows.push(("expireOrder (by anyone)".into(), gas(&r)));
    let r = c.send(tenant, m.lockFunds(usds, 5 * USDS)).await?;
    s.rows.push(("lockFunds (escrow lock)".into(), gas(&r)));
    let id = s.m().nextOrderId().call().await? - 1;
    let r = c.send(tenant, m.openLease(id, provider, USDS, 1)).await?;
    s.rows.push(("openLease (direct)".into(), gas(&r)));
    let r = c
        .send(tenant, m.transferBalance(usds, verifier, U256::from(USDS)))
        .await?;
    s.rows.push(("transferBalance".into(), gas(&r)));
    // A verdict of the two verifiers slashes the provider.
    let v = VerdictClaim {
        market: s.tc.addresses.market,
        provider,
        session: B256::repeat_byte(1),
        model: B256::ZERO,
        amount: SPHN,
        issued_at: s.now,
    };
    let mut vs: Vec<PrivateKeySigner> = s.tc.keys[4..6].to_vec();
    vs.sort_by_key(|k| k.address());
    let mut sigs = Vec::new();
    for k in &vs {
        sigs.push((k.address(), quorum::sign_verdict(k, &s.domain, &v).await?));
    }
    let r = quorum::slash_with_verdict(c, s.tc.addresses.market, tenant, &v, &sigs).await?;
    s.rows
        .push(("slashWithVerdict (2 verifiers)".into(), gas(&r)));
    let r = c.send(tc_operator(&s), m.setTier(provider, 5)).await?;
    s.rows.push(("setTier".into(), gas(&r)));
    let r = c.send(provider, m.requestUnstake(SPHN)).await?;
    s.rows.push(("requestUnstake".into(), gas(&r)));
    let r = c
        .send(s.tc.admin(), m.withdrawFees(usds, s.tc.admin()))
        .await?;
    s.rows.push(("withdrawFees".into(), gas(&r)));

    println!("| quorum match | gas | |\n|---|---:|---|");
    for (name, g, note) in &quorum_rows {
        println!("| {name} | {g} | {note} |");
    }
    println!("\n| operation (4 operators) | gas |\n|---|---:|");
    for (name, g) in &s.rows {
        println!("| {name} | {g} |");
    }
    Ok(())
}

fn tc_operator(s: &Setup) -> Address {
    s.tc.operator()
}
