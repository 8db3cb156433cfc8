//! `spheron`: the command line of a spheron network.
//!
//! - `spheron devnet`: the whole network on this machine (anvil, contracts, provider nodes,
//!   the operator), each party its own process with its own key;
//! - `spheron provider run --config provider.toml`, `spheron operator run`: the parties;
//! - `spheron rent ... -- CMD ARGS...`, `spheron lease list|status|logs|stop`,
//!   `spheron providers`, `spheron balance|deposit|withdraw`: the tenant.
//!
//! With no `--network`, commands use the devnet's default directory and, with no `--key`,
//! its first tenant account.

mod devnet;
mod tenant;
mod verifiers;

use clap::{Args, Parser, Subcommand};
use spheron_node::network::{NetworkFile, default_devnet_dir, parse_key};
use std::path::PathBuf;
use std::process::ExitCode;

/// Rent and offer GPUs on a spheron network.
#[derive(Debug, Parser)]
#[command(name = "spheron", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every tenant command shares.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// The network file (default: the devnet's `network.json`).
    #[arg(long, global = true, env = "SPHERON_NETWORK")]
    network: Option<PathBuf>,
    /// The tenant's 0x-hex private key (default: the devnet's first tenant).
    #[arg(long, global = true, env = "SPHERON_KEY", hide_env_values = true)]
    key: Option<String>,
    /// A file holding the tenant's key.
    #[arg(long, global = true, env = "SPHERON_KEY_FILE")]
    key_file: Option<PathBuf>,
}

impl Global {
    /// The network file to use.
    pub fn network_path(&self) -> PathBuf {
        self.network
            .clone()
            .unwrap_or_else(|| default_devnet_dir().join("network.json"))
    }

    /// Loads the network file.
    pub fn network(&self) -> anyhow_like::Result<NetworkFile> {
        let path = self.network_path();
        NetworkFile::load(&path).map_err(|e| {
            anyhow_like::msg(format!(
                "{e}\n  (start a local network with `spheron devnet`, or pass --network FILE)"
            ))
        })
    }

    /// The tenant's key: --key, --key-file, else the network file's first tenant.
    pub fn key(
        &self,
        net: &NetworkFile,
    ) -> anyhow_like::Result<alloy::signers::local::PrivateKeySigner> {
        if let Some(k) = &self.key {
            return Ok(parse_key(k)?);
        }
        if let Some(f) = &self.key_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow_like::msg(format!("{}: {e}", f.display())))?;
            return Ok(parse_key(&text)?);
        }
        let first = net.tenants.first().ok_or_else(|| {
            anyhow_like::msg("no --key given and the network file lists no tenant accounts")
        })?;
        Ok(parse_key(&first.key)?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local network: anvil, the contracts, provider nodes and the operator.
    Devnet(devnet::DevnetArgs),
    /// Run a provider node.
    Provider {
        #[command(subcommand)]
        command: ProviderCommand,
    },
    /// Run an operator node (the matcher).
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Run a verifier (Slark) node.
    Verifier {
        #[command(subcommand)]
        command: VerifierCommand,
    },
    /// Rent GPUs and run a command on them; exits with the workload's exit status.
    Rent(tenant::RentArgs),
    /// What each provider would bid on a request now, cheapest first; nothing is published
    /// or locked.
    Quote(tenant::QuoteArgs),
    /// Your leases, read from the chain.
    Lease {
        #[command(subcommand)]
        command: tenant::LeaseCommand,
    },
    /// The provider registry.
    Providers {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// The verifiers (Slark), ranked by accuracy, with their records on chain.
    Verifiers {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Escrow and wallet balance in the payment token.
    Balance {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Move funds from the wallet into the escrow.
    Deposit {
        /// Amount in whole tokens, e.g. `25.50`.
        amount: String,
    },
    /// Move available escrow funds back to the wallet.
    Withdraw {
        /// Amount in whole tokens.
        amount: String,
    },
}

#[derive(Debug, Subcommand)]
enum ProviderCommand {
    /// Run the node described by a config file until SIGINT or SIGTERM.
    Run {
        /// The provider's TOML config.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Run the operator until SIGINT or SIGTERM.
    Run {
        /// A file holding the operator's key (alternatively --key / SPHERON_KEY).
        #[arg(long = "operator-key-file")]
        operator_key_file: Option<PathBuf>,
        /// Where the operators' signature exchange listens; its URL is registered on chain.
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: std::net::SocketAddr,
        /// The URL registered on chain (default: http://LISTEN).
        #[arg(long)]
        endpoint: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum VerifierCommand {
    /// Run the verifier until SIGINT or SIGTERM: challenge providers at random times, post
    /// tallies and verdicts on chain, re-check others' failures.
    Run {
        /// A file holding the verifier's key (alternatively --key-file).
        #[arg(long = "verifier-key-file")]
        verifier_key_file: Option<PathBuf>,
        /// Challenges per provider per epoch (at most the audit contract's limit).
        #[arg(long, default_value_t = 2)]
        challenges: u16,
        /// Also run the VRAM-residency round in every challenge (simulated provers only;
        /// `spheron devnet --vram` sets it). A provider that does not serve the round fails.
        #[arg(long)]
        vram: bool,
    },
}

/// A small error type for the binary: a message for the user.
mod anyhow_like {
    /// An error shown to the user as is.
    #[derive(Debug)]
    pub struct Msg(pub String);

    impl std::fmt::Display for Msg {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl<E: std::error::Error> From<E> for Msg {
        fn from(e: E) -> Self {
            Msg(e.to_string())
        }
    }

    /// A message error.
    pub fn msg(s: impl Into<String>) -> Msg {
        Msg(s.into())
    }

    /// The binary's result.
    pub type Result<T> = std::result::Result<T, Msg>;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run(cli: Cli) -> anyhow_like::Result<ExitCode> {
    match cli.command {
        Command::Devnet(args) => devnet::run(args).await,
        Command::Provider {
            command: ProviderCommand::Run { config },
        } => {
            let cfg = spheron_node::provider::ProviderConfig::load(&config)?;
            let prover = devnet::prover_for(&cfg)?;
            let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
            let node = spheron_node::provider::ProviderNode::start(cfg, prover).await?;
            tracing::info!(provider = %node.address(), endpoint = node.endpoint(), "provider node running");
            node.run(listener, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Operator {
            command:
                OperatorCommand::Run {
                    operator_key_file,
                    listen,
                    endpoint,
                },
        } => {
            let network = cli.global.network_path();
            let key_file = match (operator_key_file, &cli.global.key_file) {
                (Some(f), _) => f,
                (None, Some(f)) => f.clone(),
                (None, None) => {
                    return Err(anyhow_like::msg(
                        "the operator needs its key: --operator-key-file FILE",
                    ));
                }
            };
            let node = spheron_node::operator::OperatorNode::start(
                &network,
                &key_file,
                spheron_node::operator::OperatorConfig {
                    listen,
                    endpoint,
                    ..Default::default()
                },
            )
            .await?;
            tracing::info!(operator = %node.address(), "operator node running");
            node.run(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verifier {
            command:
                VerifierCommand::Run {
                    verifier_key_file,
                    challenges,
                    vram,
                },
        } => {
            let network = cli.global.network_path();
            let key_file = match (verifier_key_file, &cli.global.key_file) {
                (Some(f), _) => f,
                (None, Some(f)) => f.clone(),
                (None, None) => {
                    return Err(anyhow_like::msg(
                        "the verifier needs its key: --verifier-key-file FILE",
                    ));
                }
            };
            let node = spheron_node::verifier::VerifierNode::start(
                &network,
                &key_file,
                spheron_node::verifier::VerifierConfig {
                    challenges_per_epoch: challenges,
                    vram,
                    ..Default::default()
                },
            )
            .await?;
            tracing::info!(verifier = %node.address(), "verifier node running");
            node.run(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rent(args) => tenant::rent(&cli.global, args).await,
        Command::Quote(args) => tenant::quote(&cli.global, args).await,
        Command::Lease { command } => tenant::lease(&cli.global, command).await,
        Command::Providers { json } => tenant::providers(&cli.global, json).await,
        Command::Verifiers { json } => verifiers::verifiers(&cli.global, json).await,
        Command::Balance { json } => tenant::balance(&cli.global, json).await,
        Command::Deposit { amount } => tenant::deposit(&cli.global, &amount, true).await,
        Command::Withdraw { amount } => tenant::deposit(&cli.global, &amount, false).await,
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPHERON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
