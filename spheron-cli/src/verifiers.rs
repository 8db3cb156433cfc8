//! `spheron verifiers`: the Slark verifiers' ranking and records, read from the chain.

use crate::Global;
use crate::anyhow_like::{self, Result};
use std::process::ExitCode;

/// One verifier's line.
#[derive(serde::Serialize)]
struct Row {
    address: alloy::primitives::Address,
    accuracy_bps: u16,
    staked: u128,
    passes: u64,
    fails: u64,
    confirmed: u64,
    overturned: u64,
    rechecks: u64,
    rewarded: u128,
    rewards_owed: u128,
}

/// Prints the verifiers by accuracy (as the audit contract ranks them) with their records.
pub async fn verifiers(g: &Global, as_json: bool) -> Result<ExitCode> {
    let net = g.network()?;
    let audit = net
        .audit
        .ok_or_else(|| anyhow_like::msg("this network has no audit contract (no verifiers)"))?;
    let chain = spheron_chain::Chain::connect(
        &net.rpc_url,
        [alloy::signers::local::PrivateKeySigner::random()],
    )?;
    let parties = spheron_chain::quorum::parties(
        &chain,
        net.operators,
        spheron_chain::quorum::Kind::Verifier,
    )
    .await?;
    let mut rows = Vec::new();
    for (address, accuracy_bps) in spheron_chain::audit::ranking(&chain, audit).await? {
        let st = spheron_chain::audit::stats(&chain, audit, address).await?;
        rows.push(Row {
            passes: st.passes,
            fails: st.fails,
            confirmed: st.confirmed,
            overturned: st.overturned,
            rechecks: st.rechecks,
            rewarded: st.rewarded,
            address,
            accuracy_bps,
            staked: parties
                .iter()
                .find(|p| p.address == address)
                .map_or(0, |p| p.staked),
            rewards_owed: spheron_chain::audit::rewards_of(&chain, audit, address).await?,
        });
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| anyhow_like::msg(e.to_string()))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let epoch = spheron_chain::audit::current_epoch(&chain, audit).await?;
    println!("epoch {epoch}");
    println!(
        "{:<4} {:<42} {:>9} {:>8} {:>6} {:>9} {:>10} {:>8} {:>14} {:>12}",
        "RANK",
        "VERIFIER",
        "ACCURACY",
        "PASSES",
        "FAILS",
        "CONFIRMED",
        "OVERTURNED",
        "RECHECKS",
        "REWARDED SPHN",
        "STAKE SPHN"
    );
    let sphn = |v: u128| {
        format!(
            "{}.{:02}",
            v / 10u128.pow(18),
            (v % 10u128.pow(18)) / 10u128.pow(16)
        )
    };
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{:<4} {:<42} {:>8.2}% {:>8} {:>6} {:>9} {:>10} {:>8} {:>14} {:>12}",
            i + 1,
            format!("{:#x}", r.address),
            f64::from(r.accuracy_bps) / 100.0,
            r.passes,
            r.fails,
            r.confirmed,
            r.overturned,
            r.rechecks,
            sphn(r.rewarded),
            sphn(r.staked),
        );
    }
    Ok(ExitCode::SUCCESS)
}
