//! The tenant's commands: rent, leases, providers, balances. Everything is read from the
//! chain and the providers' gateways, nothing from a previous process's memory.

use crate::Global;
use crate::anyhow_like::{Result, msg};
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use spheron_core::{CloseReason, GpuRequest, LeaseState, LogSource, Step, Token, Workload};
use spheron_node::tenant::{LeaseSummary, NetworkMarket};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// What to rent: the request options `spheron rent` and `spheron quote` share.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// GPU model, e.g. `h100`, `a100-80g`, `rtx4090`.
    #[arg(long)]
    gpu: String,
    /// GPUs (all on one machine).
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Hours to rent (whole hours; see --duration for other lengths).
    #[arg(long, conflicts_with = "duration")]
    hours: Option<u64>,
    /// Length, e.g. `90m`, `2h`, `45s`.
    #[arg(long)]
    duration: Option<String>,
    /// Highest price per GPU-hour in the payment token, e.g. `3.00`.
    #[arg(long)]
    max_price: String,
    /// Acceptable region (repeatable).
    #[arg(long)]
    region: Vec<String>,
    /// Lowest trust tier.
    #[arg(long)]
    min_tier: Option<u8>,
    /// Spend cap of this lease in the payment token, e.g. `2.5` (or `2.5 USDS`): the lease
    /// never costs more; it ends as `spend cap reached` when the cap is used.
    #[arg(long)]
    max_spend: Option<String>,
    /// Stop the lease after this long with no new output and no GPU activity, e.g. `10m`.
    #[arg(long)]
    idle_timeout: Option<String>,
}

/// `spheron quote` options.
#[derive(Debug, Args)]
pub struct QuoteArgs {
    #[command(flatten)]
    request: RequestArgs,
    /// JSON output (amounts as decimal strings of base units).
    #[arg(long)]
    json: bool,
}

/// `spheron rent` options.
#[derive(Debug, Args)]
pub struct RentArgs {
    #[command(flatten)]
    request: RequestArgs,
    /// Environment variable for the workload, `KEY=VALUE` (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Secret environment variable for the workload, copied by name from this shell's
    /// environment (repeatable): never printed, never in the signed manifest.
    #[arg(long = "secret", value_name = "KEY")]
    secret: Vec<String>,
    /// Expose this port of the workload through the provider's gateway (repeatable): the
    /// workload listens on `127.0.0.1:$PORT` (first port) or `$SPHERON_PORT_<port>`; reach
    /// it with `spheron lease proxy ID PORT` or `spheron lease endpoint ID PORT`.
    #[arg(long = "port", value_name = "PORT")]
    port: Vec<u16>,
    /// Start the command (a training script and its arguments) with `torchrun`, one worker
    /// per rented GPU, with the rendezvous variables set: `--torchrun -- train.py --epochs 3`.
    #[arg(long)]
    torchrun: bool,
    /// Print the final report as JSON on stdout (after the logs).
    #[arg(long)]
    json: bool,
    /// Checkpoint file the workload writes inside `outputs/` (e.g. `outputs/ckpt`, written
    /// to a temporary name and renamed): downloaded while the lease runs, and a lease that
    /// loses its provider resumes on another one from it (`SPHERON_RESUME_FROM` names it).
    #[arg(long, value_name = "PATH")]
    checkpoint: Option<String>,
    /// How often to download the checkpoint, e.g. `30s`, `5m`.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        requires = "checkpoint"
    )]
    checkpoint_every: String,
    /// Most resumes after provider faults.
    #[arg(long, default_value_t = spheron_core::checkpoint::DEFAULT_MAX_RESUMES, requires = "checkpoint")]
    max_resumes: u32,
    /// Where to keep the downloaded checkpoint (default: a fresh temporary directory).
    #[arg(long, value_name = "DIR", requires = "checkpoint")]
    checkpoint_dir: Option<std::path::PathBuf>,
    /// The command to run on the rented GPUs.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// `spheron lease ...`.
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Every lease and order of this tenant.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// One lease, from the chain and its provider's gateway.
    Status {
        /// Lease id.
        id: u64,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// The lease's log from its provider.
    Logs {
        /// Lease id.
        id: u64,
        /// Keep following until the workload ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Download a file of the lease's working directory (e.g. `outputs/model.ckpt`) from
    /// its provider, kept until the lease has ended plus a grace period.
    Download {
        /// Lease id.
        id: u64,
        /// Path inside the working directory.
        path: String,
        /// Where to write it (default: the file's name in the current directory).
        #[arg(long, short)]
        to: Option<std::path::PathBuf>,
    },
    /// The URL and bearer token of a port the lease's workload exposes (`--port`), for HTTP
    /// clients of your own; the URL is the provider's gateway, whose self-signed certificate
    /// is pinned by the hash printed (use `spheron lease proxy` for clients that cannot pin).
    Endpoint {
        /// Lease id.
        id: u64,
        /// The declared port.
        port: u16,
        /// JSON output (`url`, `token`, `cert_hash`, `headers`).
        #[arg(long)]
        json: bool,
    },
    /// Serve a port of the lease's workload on a local plain-HTTP address: every request to
    /// `--listen` goes through the provider's gateway (certificate pinned, token added) to
    /// the workload, e.g. `curl http://127.0.0.1:9000/v1/models`. Runs until interrupted.
    Proxy {
        /// Lease id.
        id: u64,
        /// The declared port.
        port: u16,
        /// Local address to listen on (keep it loopback: it needs no token).
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
    },
    /// Stop a lease: closes it on chain (paid pro rata, the rest refunded) and tells the
    /// provider.
    Stop {
        /// Lease id.
        id: u64,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

async fn connect(g: &Global) -> Result<NetworkMarket> {
    let net = g.network()?;
    let key = g.key(&net)?;
    Ok(NetworkMarket::connect(net, key).await?)
}

fn request(args: &RequestArgs, token: &Token) -> Result<GpuRequest> {
    let mut b = GpuRequest::builder()
        .gpu(&args.gpu)
        .count(args.count)
        .max_price_per_gpu_hour(token.parse("max-price", &args.max_price)?);
    b = match (&args.hours, &args.duration) {
        (Some(h), _) => b.hours(*h),
        (None, Some(d)) => b.duration_secs(spheron_core::request::parse_duration(d)?),
        (None, None) => b.hours(1),
    };
    for r in &args.region {
        b = b.region(r);
    }
    if let Some(t) = args.min_tier {
        b = b.min_tier(t);
    }
    if let Some(cap) = &args.max_spend {
        b = b.max_spend(spheron_core::request::parse_spend(token, cap)?);
    }
    if let Some(t) = &args.idle_timeout {
        let secs = spheron_core::request::parse_duration(t).map_err(|_| {
            spheron_core::Error::invalid(
                "idle-timeout",
                format!("`{t}` is not a duration like 10m, 90s or 1h"),
            )
        })?;
        b = b.idle_timeout(std::time::Duration::from_secs(secs));
    }
    Ok(b.build()?)
}

fn checkpoint_policy(args: &RentArgs) -> Result<Option<spheron_core::Checkpoint>> {
    let Some(path) = &args.checkpoint else {
        return Ok(None);
    };
    let every = spheron_core::request::parse_duration(&args.checkpoint_every)?;
    let mut c = spheron_core::Checkpoint::new(path.clone(), Duration::from_secs(every))?
        .max_resumes(args.max_resumes);
    if let Some(d) = &args.checkpoint_dir {
        c = c.local_dir(d.clone());
    }
    Ok(Some(c))
}

fn describe(step: &Step, token: &Token) -> String {
    match step {
        Step::Published { budget } => format!("order published, {} locked", token.format(*budget)),
        Step::EscrowLocked { .. } => "escrow locked; waiting for bids".into(),
        Step::BidsIn { count } => format!("{count} bid(s) in; waiting for the operator's match"),
        Step::Matched {
            provider, attempt, ..
        } => format!("matched {} (attempt {attempt})", provider.short()),
        Step::Verifying { claimed, .. } => format!("proof of GPU: challenging the {claimed}"),
        // The network tenant judges with `Simulation::network()`: rates are simulated ones.
        Step::Verified { verdict, .. } => {
            format!("proof of GPU passed: {verdict} [simulated rate, 1e-8 scale]")
        }
        Step::ChallengeFailed { reason, .. } => format!("proof of GPU failed: {reason}"),
        Step::Launching { lease } => format!("manifest sent for {lease}; launching"),
        Step::Running { lease } => format!("{lease} running"),
        Step::Resuming {
            from_lease,
            reason,
            checkpoint_bytes,
            resume,
            ..
        } => format!(
            "{from_lease} lost its provider ({reason}); resuming elsewhere from a {checkpoint_bytes}-byte checkpoint (resume {resume})"
        ),
        other => other.to_string(),
    }
}

/// `spheron quote`: what each provider would bid on the request now (nothing is published).
pub async fn quote(g: &Global, args: QuoteArgs) -> Result<ExitCode> {
    let market = connect(g).await?;
    let token = market.token().clone();
    let req = request(&args.request, &token)?;
    let q = market.quote(&req).await?;
    if args.json {
        let quotes: Vec<_> = q
            .quotes
            .iter()
            .map(|q| {
                serde_json::json!({
                    "provider": format!("{:#x}", q.provider),
                    "name": q.name,
                    "region": q.region,
                    "tier": q.tier,
                    "model": q.model.name(),
                    "price_per_gpu_hour": q.price_per_gpu_hour.0.to_string(),
                    "cost": q.cost.0.to_string(),
                    "free_gpus": q.free_gpus,
                })
            })
            .collect();
        let none: Vec<_> = q
            .none
            .iter()
            .map(|n| serde_json::json!({"provider": format!("{:#x}", n.provider), "reason": n.reason}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"token": token.symbol, "quotes": quotes, "no_quote": none})
        );
        return Ok(ExitCode::SUCCESS);
    }
    if q.quotes.is_empty() {
        println!("no provider quotes this request");
    } else {
        println!(
            "{:<16} {:<14} {:<10} {:>4} {:>14} {:>14} {:>5}",
            "PROVIDER", "REGION", "MODEL", "TIER", "PER GPU-HOUR", "AT MOST", "FREE"
        );
        for x in &q.quotes {
            println!(
                "{:<16} {:<14} {:<10} {:>4} {:>14} {:>14} {:>5}",
                x.name,
                x.region,
                x.model.name(),
                x.tier,
                token.format(x.price_per_gpu_hour),
                token.format(x.cost),
                x.free_gpus
            );
        }
    }
    for n in &q.none {
        eprintln!("no quote from {:#x}: {}", n.provider, n.reason);
    }
    Ok(ExitCode::SUCCESS)
}

/// `spheron rent`.
pub async fn rent(g: &Global, args: RentArgs) -> Result<ExitCode> {
    let checkpoint = checkpoint_policy(&args)?;
    let market = connect(g).await?;
    let token = market.token().clone();
    let req = request(&args.request, &token)?;
    let mut workload = if args.torchrun {
        let (script, rest) = args
            .command
            .split_first()
            .ok_or_else(|| msg("--torchrun needs a training script after `--`"))?;
        spheron::Torchrun::new(script.clone(), args.request.count)
            .args(rest.iter().cloned())
            .workload()
            .map_err(|e| msg(format!("--torchrun: {e}")))?
    } else {
        Workload::command(args.command.clone())
    };
    for name in &args.secret {
        let value = std::env::var(name).map_err(|_| {
            msg(format!(
                "--secret {name}: no such variable in this environment"
            ))
        })?;
        workload
            .secrets
            .insert(name.clone(), spheron_core::Secret::new(value));
    }
    for &p in &args.port {
        workload = workload.port(p);
    }
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| msg(format!("--env {kv:?}: expected KEY=VALUE")))?;
        workload = workload.env(k, v);
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message("publishing the order");
    let mut events = market.events();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = {
        let bar = bar.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let t0 = std::time::Instant::now();
            while let Some(e) = events.next().await {
                let line = format!(
                    "  [{:>6.2}s] {}",
                    t0.elapsed().as_secs_f64(),
                    describe(&e.step, &token)
                );
                if tty {
                    bar.println(line);
                } else {
                    eprintln!("{line}");
                }
                bar.set_message(describe(&e.step, &token));
            }
        })
    };
    let rented = tokio::select! {
        r = async {
            match checkpoint {
                Some(c) => market.rent_with_checkpoint(req, workload, c).await,
                None => market.rent(req, workload).await,
            }
        } => r,
        _ = tokio::signal::ctrl_c() => {
            bar.finish_and_clear();
            eprintln!("interrupted: the order is cancelled and its lock refunded");
            // Dropping the rent future unwinds it; give the unwind a moment to send.
            tokio::time::sleep(Duration::from_secs(3)).await;
            return Ok(ExitCode::from(130));
        }
    };
    let lease = match rented {
        Ok(l) => l,
        Err(e) => {
            bar.finish_and_clear();
            progress.abort();
            if let spheron_core::Error::NoMatch { rejected, .. } = &e {
                eprintln!("no provider could serve the order:");
                for r in rejected {
                    eprintln!("  {} {}", r.provider.short(), r.reason);
                }
            }
            return Err(e.into());
        }
    };
    bar.finish_and_clear();
    let r = lease.snapshot();
    eprintln!(
        "{} on {} ({}, {} x {}) at {}/GPU-hour",
        r.lease,
        r.provider_name,
        r.region,
        r.gpus,
        r.model,
        token.format(r.price_per_gpu_hour)
    );
    for &p in &args.port {
        match lease.endpoint(p).await {
            Ok(e) => eprintln!(
                "port {p}: {} (token: `spheron lease endpoint {} {p}`; local: `spheron lease proxy {} {p}`)",
                e.url, r.lease.0, r.lease.0
            ),
            Err(e) => eprintln!("port {p}: {e}"),
        }
    }
    let mut logs = lease.logs()?;
    let mut interrupted = false;
    loop {
        tokio::select! {
            line = logs.next() => match line {
                Some(l) => match l.source {
                    LogSource::Stdout => println!("{}", l.line),
                    LogSource::Stderr => eprintln!("{}", l.line),
                    LogSource::System => eprintln!("  [provider] {}", l.line),
                },
                None => break,
            },
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                eprintln!("interrupted: stopping the lease");
                let _ = lease.stop().await;
                break;
            }
        }
    }
    let _ = std::io::stdout().flush();
    let report = lease.wait().await;
    progress.abort();
    eprintln!("lease:    {}", report.lease);
    eprintln!("provider: {} ({})", report.provider_name, report.provider);
    eprintln!("state:    {}", report.state);
    eprintln!(
        "price:    {}/GPU-hour x {} GPU(s)",
        token.format(report.price_per_gpu_hour),
        report.gpus
    );
    for r in &report.resumed {
        eprintln!(
            "resumed:  {} on {} ended ({}), billed {} s, cost {}; {} took over from a {}-byte checkpoint{}",
            r.from_lease,
            r.from_provider,
            r.reason,
            r.seconds,
            token.format(r.paid),
            r.to_lease,
            r.checkpoint_bytes,
            r.checkpoint_hash
                .as_deref()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default()
        );
    }
    if !report.resumed.is_empty() {
        eprintln!(
            "total:    {} over {} leases",
            token.format(report.total_cost()),
            report.resumed.len() + 1
        );
    }
    match report.settlement {
        Some(s) => {
            eprintln!("billed:   {} s", s.seconds);
            eprintln!("cost:     {}", token.format(s.paid));
            eprintln!("refund:   {}", token.format(s.refunded));
        }
        None => eprintln!(
            "cost:     settlement not read yet; see `spheron lease status {}`",
            report.lease.0
        ),
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| msg(e.to_string()))?
        );
    }
    Ok(match report.state {
        LeaseState::Closed(CloseReason::Completed) => ExitCode::SUCCESS,
        LeaseState::Closed(CloseReason::WorkloadFailed { exit_code: Some(c) }) => {
            ExitCode::from(u8::try_from(c).unwrap_or(1))
        }
        LeaseState::Closed(CloseReason::TenantStopped) if interrupted => ExitCode::from(130),
        _ => ExitCode::FAILURE,
    })
}

fn print_summary(s: &LeaseSummary, token: &Token) {
    let provider = s
        .provider
        .map(|p| p.to_string())
        .unwrap_or_else(|| "-".into());
    let cost = s
        .settlement
        .map(|x| {
            format!(
                "cost {} refund {}",
                token.format(x.paid),
                token.format(x.refunded)
            )
        })
        .unwrap_or_else(|| format!("locked {}", token.format(spheron_core::Amount(s.locked))));
    println!(
        "{:<20} {:<9} {:<42} {:>2} GPU  {}/h  {}",
        s.id,
        s.state,
        provider,
        s.gpus,
        token.format(spheron_core::Amount(s.price_per_gpu_hour)),
        cost
    );
}

fn json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| msg(e.to_string()))?
    );
    Ok(())
}

/// `spheron lease ...`.
pub async fn lease(g: &Global, cmd: LeaseCommand) -> Result<ExitCode> {
    let market = connect(g).await?;
    let token = market.token().clone();
    match cmd {
        LeaseCommand::List { json: as_json } => {
            let leases = market.leases().await?;
            if as_json {
                json(&leases)?;
            } else if leases.is_empty() {
                println!("no leases");
            } else {
                for s in &leases {
                    print_summary(s, &token);
                }
            }
        }
        LeaseCommand::Status { id, json: as_json } => {
            let s = market.lease(id).await?;
            let gateway = if s.state == "leased" {
                market.lease_gateway_status(id).await.ok()
            } else {
                None
            };
            if as_json {
                json(&serde_json::json!({ "chain": s, "gateway": gateway }))?;
            } else {
                print_summary(&s, &token);
                if let Some(gs) = gateway {
                    println!("  provider reports: {:?}", gs.work);
                }
            }
        }
        LeaseCommand::Logs { id, follow } => {
            let mut logs = market.lease_logs(id, follow).await?;
            while let Some(l) = logs.next().await {
                match l.source {
                    LogSource::Stderr | LogSource::System => eprintln!("{}", l.line),
                    LogSource::Stdout => println!("{}", l.line),
                }
            }
        }
        LeaseCommand::Download { id, path, to } => {
            let dest = match to {
                Some(d) => d,
                None => std::path::Path::new(&path)
                    .file_name()
                    .map(std::path::PathBuf::from)
                    .ok_or_else(|| msg(format!("{path:?} names no file; pass --to")))?,
            };
            let n = market.download(id, &path, &dest).await?;
            eprintln!("lease {id}: {path} -> {} ({n} bytes)", dest.display());
        }
        LeaseCommand::Endpoint {
            id,
            port,
            json: as_json,
        } => {
            let e = market.endpoint(id, port).await?;
            let token = e.token.as_ref().map(|t| t.expose().to_string());
            if as_json {
                json(&serde_json::json!({
                    "lease": id,
                    "port": port,
                    "url": e.url,
                    "token": token,
                    "cert_hash": e.cert_hash,
                    "headers": e.headers().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                }))?;
            } else {
                println!("url:       {}", e.url);
                if let Some(t) = &token {
                    println!("token:     {t}");
                    println!("header:    Authorization: Bearer {t}");
                }
                if let Some(h) = &e.cert_hash {
                    println!("cert hash: {h} (SHA-256 of the gateway's DER certificate)");
                }
            }
        }
        LeaseCommand::Proxy { id, port, listen } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| msg(format!("--listen {listen}: {e}")))?;
            let local = listener
                .local_addr()
                .map_err(|e| msg(format!("--listen {listen}: {e}")))?;
            // Printed on stdout once serving starts, so scripts can wait for it.
            println!("forwarding http://{local}/ to port {port} of lease {id}");
            let _ = std::io::stdout().flush();
            tokio::select! {
                r = market.forward_port(id, port, listener) => r?,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        LeaseCommand::Stop { id, json: as_json } => {
            let s = market.stop_lease(id).await?;
            if as_json {
                json(&s)?;
            } else {
                println!(
                    "lease {id} stopped: billed {} s, cost {}, refund {}",
                    s.seconds,
                    token.format(s.paid),
                    token.format(s.refunded)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `spheron providers`.
pub async fn providers(g: &Global, as_json: bool) -> Result<ExitCode> {
    let net = g.network()?;
    let chain = spheron_chain::Chain::connect(
        &net.rpc_url,
        [alloy::signers::local::PrivateKeySigner::random()],
    )?;
    let records = spheron_chain::registry::providers(&chain, net.market).await?;
    if as_json {
        json(&records)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12} {:<42} {:<13} {:<5} {:>10} {:<28} GPUS",
        "NAME", "ADDRESS", "REGION", "TIER", "STAKE", "ENDPOINT"
    );
    for r in &records {
        let p = spheron_node::registry::provider_from_record(r);
        let (name, gpus) = match &p {
            Ok(p) => (
                p.name.clone(),
                p.inventory
                    .models()
                    .iter()
                    .map(|m| format!("{} x {m}", p.inventory.free(*m)))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Err(e) => ("?".into(), e.clone()),
        };
        println!(
            "{:<12} {:<42} {:<13} {:<5} {:>10} {:<28} {}",
            name,
            r.address,
            r.region,
            r.tier,
            Token::sphn().format(spheron_core::Amount(r.staked)),
            r.endpoint,
            gpus
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `spheron balance`.
pub async fn balance(g: &Global, as_json: bool) -> Result<ExitCode> {
    let market = connect(g).await?;
    let token = market.token().clone();
    let (available, locked) = market.balance().await?;
    let wallet = market.wallet().await?;
    if as_json {
        json(&serde_json::json!({
            "account": market.tenant(),
            "token": token.symbol,
            "available": available.0.to_string(),
            "locked": locked.0.to_string(),
            "wallet": wallet.0.to_string(),
        }))?;
    } else {
        println!("account:   {}", market.tenant());
        println!("available: {}", token.format(available));
        println!("locked:    {}", token.format(locked));
        println!("wallet:    {}", token.format(wallet));
    }
    Ok(ExitCode::SUCCESS)
}

/// `spheron deposit` / `spheron withdraw`.
pub async fn deposit(g: &Global, amount: &str, into: bool) -> Result<ExitCode> {
    let market = connect(g).await?;
    let token = market.token().clone();
    let a = token.parse("amount", amount)?;
    if into {
        market.deposit(a).await?;
        println!("deposited {}", token.format(a));
    } else {
        market.withdraw(a).await?;
        println!("withdrew {}", token.format(a));
    }
    Ok(ExitCode::SUCCESS)
}
