//! `spheron devnet`: a whole network on this machine. Anvil with the contracts, funded dev
//! accounts, N provider nodes (different regions and GPU models, each its own OS process with
//! its own key, local launcher and simulated prover) and the operator node, as child
//! processes. Writes `DIR/network.json` and stops every child on Ctrl-C or SIGTERM.

use crate::anyhow_like::{Result, msg};
use alloy::primitives::{Address, U256};
use alloy::providers::Provider as _;
use alloy::signers::local::PrivateKeySigner;
use clap::Args;
use spheron_chain::anvil::{AnvilOptions, TestChain};
use spheron_chain::bindings::{SpheronMarket, TestToken};
use spheron_chain::{MarketConfig, registry};
use spheron_core::{ChallengeProver, Token};
use spheron_node::network::{DevAccount, NetworkFile, Party, PaymentToken, default_devnet_dir};
use spheron_node::provider::ProviderConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};

/// `spheron devnet` options.
#[derive(Debug, Args)]
pub struct DevnetArgs {
    /// Where to keep the network file, keys, configs, databases and logs.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// How many provider nodes to start.
    #[arg(long, default_value_t = 4)]
    providers: usize,
    /// How many operator nodes (the matching quorum) to start.
    #[arg(long, default_value_t = 4)]
    operators: usize,
    /// Seconds per block once the network runs.
    #[arg(long, default_value_t = 1)]
    block_time: u64,
    /// Bid window of orders published on this network, seconds.
    #[arg(long, default_value_t = 2)]
    bid_window: u32,
    /// Funded tenant accounts.
    #[arg(long, default_value_t = 3)]
    tenants: usize,
    /// Serve the providers' gateways over plain HTTP instead of HTTPS with pinned
    /// certificates.
    #[arg(long)]
    plain_http: bool,
    /// Multiplies every provider's machine count (capacity for load tests).
    #[arg(long, default_value_t = 1)]
    scale: u32,
    /// How many verifier (Slark) nodes to start.
    #[arg(long, default_value_t = 2)]
    verifiers: usize,
    /// Length of a verification epoch, seconds.
    #[arg(long, default_value_t = 60)]
    epoch_secs: u32,
    /// Challenges per provider per epoch by each verifier.
    #[arg(long, default_value_t = 2)]
    challenges: u16,
    /// Verifiers also run the (simulated) VRAM-residency round in every challenge. Off by
    /// default: its 40-50 ms round bounds are tight for a debug build of a whole devnet on a
    /// loaded machine, and an honest provider that misses them is slashed like a cheater.
    #[arg(long)]
    vram: bool,
}

/// One provider of the devnet's standard fleet.
struct Profile {
    name: &'static str,
    region: &'static str,
    lat: f64,
    lon: f64,
    model: &'static str,
    nodes: u32,
    per_node: u32,
    price: &'static str,
}

const FLEET: [Profile; 8] = [
    Profile {
        name: "fra-h100",
        region: "eu-central",
        lat: 50.11,
        lon: 8.68,
        model: "h100-sxm",
        nodes: 1,
        per_node: 8,
        price: "2.40",
    },
    Profile {
        name: "ams-h100",
        region: "eu-west",
        lat: 52.37,
        lon: 4.90,
        model: "h100-sxm",
        nodes: 2,
        per_node: 8,
        price: "2.20",
    },
    Profile {
        name: "iad-h100",
        region: "us-east",
        lat: 38.95,
        lon: -77.45,
        model: "h100-sxm",
        nodes: 1,
        per_node: 4,
        price: "2.80",
    },
    Profile {
        name: "sfo-4090",
        region: "us-west",
        lat: 37.62,
        lon: -122.38,
        model: "rtx4090",
        nodes: 4,
        per_node: 1,
        price: "0.45",
    },
    Profile {
        name: "nrt-h200",
        region: "ap-northeast",
        lat: 35.77,
        lon: 140.39,
        model: "h200",
        nodes: 1,
        per_node: 8,
        price: "3.60",
    },
    Profile {
        name: "sin-a100",
        region: "ap-southeast",
        lat: 1.36,
        lon: 103.99,
        model: "a100-80g",
        nodes: 2,
        per_node: 4,
        price: "1.50",
    },
    Profile {
        name: "lhr-l40s",
        region: "eu-west",
        lat: 51.47,
        lon: -0.45,
        model: "l40s",
        nodes: 2,
        per_node: 2,
        price: "0.95",
    },
    Profile {
        name: "ord-t4",
        region: "us-central",
        lat: 41.98,
        lon: -87.90,
        model: "t4",
        nodes: 4,
        per_node: 1,
        price: "0.20",
    },
];

/// The prover a provider config asks for.
pub fn prover_for(cfg: &ProviderConfig) -> Result<Arc<dyn ChallengeProver>> {
    match cfg.prover.as_str() {
        "simulated" => {
            let model = cfg.first_model()?;
            let sim = spheron_gpu::Simulation::standard();
            Ok(Arc::new(sim.prover(
                model,
                Some(format!("NVIDIA {model} (simulated)")),
                spheron_gpu::Fault::None,
            )))
        }
        "cuda" => Err(msg(
            "prover = \"cuda\" needs a spheron binary built with the `cuda` feature",
        )),
        other => Err(msg(format!(
            "provider config: prover: {other:?} is not one of \"simulated\", \"cuda\""
        ))),
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn key_hex(k: &PrivateKeySigner) -> String {
    format!("0x{}", alloy::hex::encode(k.to_bytes()))
}

async fn mint(tc: &TestChain, token: Address, to: Address, amount: u128) -> Result<()> {
    let t = TestToken::new(token, tc.chain.provider().clone());
    tc.chain
        .send(tc.admin(), t.mint(to, U256::from(amount)))
        .await?;
    Ok(())
}

fn spawn(bin: &Path, args: &[&str], log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let child = Command::new(bin)
        .args(args)
        .env(
            "SPHERON_LOG",
            std::env::var("SPHERON_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env_remove("SPHERON_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| msg(format!("cannot start {}: {e}", bin.display())))?;
    Ok(child)
}

/// Runs the devnet until SIGINT or SIGTERM.
pub async fn run(args: DevnetArgs) -> Result<ExitCode> {
    if args.providers == 0 || args.providers > FLEET.len() * 2 {
        return Err(msg(format!(
            "--providers must be between 1 and {}",
            FLEET.len() * 2
        )));
    }
    let dir = args.dir.clone().unwrap_or_else(default_devnet_dir);
    std::fs::create_dir_all(dir.join("keys"))?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let network_path = dir.join("network.json");
    let _ = std::fs::remove_file(&network_path);

    // Deploy with instant mining, then switch to the block time.
    if args.operators == 0 || args.operators > 16 {
        return Err(msg("--operators must be between 1 and 16"));
    }
    let ops = args.operators;
    if args.verifiers > 16 {
        return Err(msg("--verifiers must be at most 16"));
    }
    let vers = args.verifiers;
    let accounts =
        u32::try_from(2 + ops + args.providers + args.tenants.max(1) + vers).unwrap_or(20);
    let config = MarketConfig {
        min_stake: 100 * 10u128.pow(18),
        ..MarketConfig::default()
    };
    let tc = TestChain::start_with(
        &config,
        &AnvilOptions {
            block_time_secs: None,
            accounts,
        },
    )
    .await?;
    let rpc_url = tc.endpoint();
    let chain_id = tc
        .chain
        .provider()
        .get_chain_id()
        .await
        .map_err(|e| msg(format!("chain id: {e}")))?;
    let usd = Token::usd();
    let operator_keys: Vec<PrivateKeySigner> = tc.keys[2..2 + ops].to_vec();
    let provider_keys: Vec<PrivateKeySigner> = tc.keys[2 + ops..2 + ops + args.providers].to_vec();
    let tenants_end = 2 + ops + args.providers + args.tenants.max(1);
    let tenant_keys: Vec<PrivateKeySigner> =
        tc.keys[2 + ops + args.providers..tenants_end].to_vec();
    let verifier_keys: Vec<PrivateKeySigner> = tc.keys[tenants_end..tenants_end + vers].to_vec();
    let market = SpheronMarket::new(tc.addresses.market, tc.chain.provider().clone());
    for k in provider_keys
        .iter()
        .chain(&operator_keys)
        .chain(&verifier_keys)
    {
        mint(&tc, tc.addresses.sphn, k.address(), 2_000 * 10u128.pow(18)).await?;
    }
    // The verifiers' contract: epochs, checks, cases, rewards (a pool funded by the admin), tiers.
    let audit_config = spheron_chain::audit::AuditConfig {
        epoch_secs: args.epoch_secs.max(10),
        max_checks_per_epoch: args.challenges.max(1),
        ..Default::default()
    };
    let admin = tc.accounts[0];
    let audit =
        spheron_chain::audit::deploy_audit(&tc.chain, admin, &tc.addresses, &audit_config).await?;
    let pool = 100_000 * 10u128.pow(18);
    mint(&tc, tc.addresses.sphn, admin, pool).await?;
    spheron_chain::audit::fund_rewards(&tc.chain, audit, admin, pool).await?;
    let escrowed = usd.parse("deposit", "1000")?;
    for k in &tenant_keys {
        let who = k.address();
        mint(&tc, tc.addresses.stable, who, usd.parse("mint", "10000")?.0).await?;
        mint(&tc, tc.addresses.sphn, who, 1_000 * 10u128.pow(18)).await?;
        let t = TestToken::new(tc.addresses.stable, tc.chain.provider().clone());
        tc.chain
            .send(who, t.approve(tc.addresses.market, U256::from(escrowed.0)))
            .await?;
        tc.chain
            .send(
                who,
                market.deposit(tc.addresses.stable, U256::from(escrowed.0)),
            )
            .await?;
    }
    if args.block_time > 0 {
        tc.chain
            .provider()
            .raw_request::<_, ()>("evm_setIntervalMining".into(), (args.block_time,))
            .await
            .map_err(|e| msg(format!("cannot set the block time: {e}")))?;
    }

    let mut net = NetworkFile {
        rpc_url: rpc_url.clone(),
        chain_id,
        market: tc.addresses.market,
        operators: tc.addresses.operators,
        audit: Some(audit),
        sphn: tc.addresses.sphn,
        payment: PaymentToken {
            address: tc.addresses.stable,
            symbol: usd.symbol.clone(),
            decimals: usd.decimals,
        },
        deploy_block: tc.deploy_block,
        bid_window_secs: args.bid_window,
        tenants: tenant_keys
            .iter()
            .map(|k| DevAccount {
                address: k.address(),
                key: key_hex(k),
            })
            .collect(),
        parties: Vec::new(),
    };
    // The parties read the network file at start; parties are filled in once they run.
    let parties_path = dir.join("chain.json");
    net.save(&parties_path)?;

    let bin = std::env::current_exe()?;
    let mut children: Vec<(String, Child)> = Vec::new();
    let mut parties = Vec::new();
    for (n, key) in operator_keys.iter().enumerate() {
        let name = format!("operator-{}", n + 1);
        let key_file = dir.join(format!("keys/{name}.key"));
        write_private(&key_file, &key_hex(key))?;
        let listen = format!("127.0.0.1:{}", free_port()?);
        let args = vec![
            "--network".to_string(),
            parties_path.display().to_string(),
            "operator".into(),
            "run".into(),
            "--operator-key-file".into(),
            key_file.display().to_string(),
            "--listen".into(),
            listen.clone(),
        ];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let op = spawn(&bin, &refs, &dir.join(format!("logs/{name}.log")))?;
        parties.push(Party {
            role: "operator".into(),
            address: key.address(),
            pid: op.id().unwrap_or(0),
            endpoint: format!("http://{listen}"),
            restart: std::iter::once(bin.display().to_string())
                .chain(args)
                .collect(),
        });
        children.push((name, op));
    }

    for (n, key) in verifier_keys.iter().enumerate() {
        let name = format!("verifier-{}", n + 1);
        let key_file = dir.join(format!("keys/{name}.key"));
        write_private(&key_file, &key_hex(key))?;
        let challenges = args.challenges.max(1).to_string();
        let vram = args.vram;
        let mut args = vec![
            "--network".to_string(),
            parties_path.display().to_string(),
            "verifier".into(),
            "run".into(),
            "--verifier-key-file".into(),
            key_file.display().to_string(),
            "--challenges".into(),
            challenges,
        ];
        if vram {
            // Every devnet provider is simulated, so every one serves the VRAM round.
            args.push("--vram".into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = spawn(&bin, &refs, &dir.join(format!("logs/{name}.log")))?;
        parties.push(Party {
            role: "verifier".into(),
            address: key.address(),
            pid: v.id().unwrap_or(0),
            endpoint: String::new(),
            restart: std::iter::once(bin.display().to_string())
                .chain(args)
                .collect(),
        });
        children.push((name, v));
    }

    for (i, key) in provider_keys.iter().enumerate() {
        let p = &FLEET[i % FLEET.len()];
        let name = if i < FLEET.len() {
            p.name.to_string()
        } else {
            format!("{}-{}", p.name, i / FLEET.len() + 1)
        };
        let port = free_port()?;
        let scheme = if args.plain_http { "http" } else { "https" };
        let endpoint = format!("{scheme}://127.0.0.1:{port}");
        let key_path = dir.join(format!("keys/{name}.key"));
        write_private(&key_path, &key_hex(key))?;
        let cfg_path = dir.join(format!("{name}.toml"));
        let toml = format!(
            "name = \"{name}\"\nnetwork = \"chain.json\"\nkey_file = \"keys/{name}.key\"\n\
             listen = \"127.0.0.1:{port}\"\nendpoint = \"{endpoint}\"\nregion = \"{region}\"\nlat = {lat}\nlon = {lon}\n\
             stake = \"100\"\ndata_dir = \"{name}\"\n\n[[gpus]]\nmodel = \"{model}\"\n\
             nodes = {nodes}\nper_node = {per_node}\nprice = \"{price}\"\n",
            region = p.region,
            lat = p.lat,
            lon = p.lon,
            model = p.model,
            nodes = p.nodes.saturating_mul(args.scale.max(1)),
            per_node = p.per_node,
            price = p.price,
        );
        std::fs::write(&cfg_path, toml)?;
        let child = spawn(
            &bin,
            &[
                "provider",
                "run",
                "--config",
                &cfg_path.display().to_string(),
            ],
            &dir.join(format!("logs/{name}.log")),
        )?;
        parties.push(Party {
            role: "provider".into(),
            address: key.address(),
            pid: child.id().unwrap_or(0),
            endpoint,
            restart: vec![
                bin.display().to_string(),
                "provider".into(),
                "run".into(),
                "--config".into(),
                cfg_path.display().to_string(),
            ],
        });
        children.push((name, child));
    }

    // Ready when every provider is registered, staked and answers on its gateway.
    let ready_by = tokio::time::Instant::now() + Duration::from_secs(120);
    for party in parties.iter().filter(|p| p.role == "provider") {
        loop {
            exited_during_start(&mut children, &dir)?;
            let record = registry::provider(&tc.chain, tc.addresses.market, party.address)
                .await
                .ok()
                .flatten()
                .filter(|r| r.can_bid && r.endpoint == party.endpoint);
            if let Some(r) = record {
                // Reached the way tenants reach it: TLS pinned to the registered hash.
                let up = match spheron_node::gateway_client::GatewayClient::new_pinned(
                    &party.endpoint,
                    PrivateKeySigner::random(),
                    chain_id,
                    tc.addresses.market,
                    r.cert_hash,
                ) {
                    Ok(g) => g.node_status().await.is_ok(),
                    Err(_) => false,
                };
                if up {
                    break;
                }
            }
            if tokio::time::Instant::now() > ready_by {
                return Err(msg(format!(
                    "provider {} did not come up within 120 s",
                    party.address
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // And when every operator (with its endpoint) and every verifier is registered and staked.
    for party in parties
        .iter()
        .filter(|p| p.role == "operator" || p.role == "verifier")
    {
        let kind = if party.role == "operator" {
            spheron_chain::quorum::Kind::Operator
        } else {
            spheron_chain::quorum::Kind::Verifier
        };
        loop {
            let registered =
                spheron_chain::quorum::parties(&tc.chain, tc.addresses.operators, kind)
                    .await
                    .map(|ps| {
                        ps.iter().any(|p| {
                            p.address == party.address
                                && p.staked > 0
                                && (party.endpoint.is_empty() || p.endpoint == party.endpoint)
                        })
                    })
                    .unwrap_or(false);
            if registered {
                break;
            }
            exited_during_start(&mut children, &dir)?;
            if tokio::time::Instant::now() > ready_by {
                return Err(msg(format!(
                    "{} {} did not register within 120 s",
                    party.role, party.address
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    net.parties = parties;
    net.save(&network_path)?;
    println!("devnet ready: {}", network_path.display());
    for p in &net.parties {
        println!("  {:<9} {} pid {} {}", p.role, p.address, p.pid, p.endpoint);
    }
    println!(
        "  tenants: {} funded with {} in escrow each; rpc {}",
        net.tenants.len(),
        usd.format(escrowed),
        rpc_url
    );

    // Run until a signal. A party that dies is reported and left dead: the network keeps
    // running without it (as a real one would), and it can be restarted by hand with the
    // command line in its log's folder.
    tokio::select! {
        _ = crate::shutdown_signal() => {},
        _ = watch_children(&mut children) => {},
    };
    stop_children(&mut children).await;
    let _ = std::fs::remove_file(&network_path);
    drop(tc);
    println!("devnet stopped");
    Ok(ExitCode::SUCCESS)
}

/// An error naming the first child that has exited, with its log.
fn exited_during_start(children: &mut [(String, Child)], dir: &Path) -> Result<()> {
    for (name, c) in children.iter_mut() {
        if let Ok(Some(status)) = c.try_wait() {
            return Err(msg(format!(
                "{name} exited during start-up ({status}); see {}",
                dir.join(format!("logs/{name}.log")).display()
            )));
        }
    }
    Ok(())
}

async fn watch_children(children: &mut [(String, Child)]) {
    let mut reported = vec![false; children.len()];
    loop {
        for (i, (name, c)) in children.iter_mut().enumerate() {
            if !reported[i]
                && let Ok(Some(status)) = c.try_wait()
            {
                reported[i] = true;
                eprintln!("devnet: {name} exited ({status}); the network runs on without it");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn stop_children(children: &mut [(String, Child)]) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for (_, c) in children.iter() {
        if let Some(pid) = c.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    for (name, c) in children.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(10), c.wait()).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(%name, "did not stop in 10 s: killing");
                let _ = c.kill().await;
            }
        }
    }
}
