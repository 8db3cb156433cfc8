//! The two marketplaces behind `spheron.Marketplace`: the embedded one
//! ([`spheron::Marketplace`]) and a tenant client of a network
//! ([`spheron::NetworkMarket`], from `Marketplace.connect`). Both rent through the same
//! [`LeaseHandle`], so `Lease`, reports and events are shared; what differs is here.

use futures::stream::BoxStream;
use spheron::{Marketplace, NetworkMarket};
use spheron_core::{
    AccountId, Amount, Balance, GpuRequest, LeaseHandle, ProgressEvent, Provider, Result, Token,
    Workload,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// A tenant client of a network, with the provider names it has learnt.
pub(crate) struct Network {
    /// The client.
    pub market: NetworkMarket,
    /// The network file it was connected with.
    pub path: PathBuf,
    /// Provider account → name, from the on-chain registry and the leases seen.
    names: RwLock<HashMap<AccountId, String>>,
}

impl Network {
    /// Wraps `market`, reading the registry once for provider names (best effort).
    pub async fn new(market: NetworkMarket, path: PathBuf) -> Self {
        let net = Network {
            market,
            path,
            names: RwLock::new(HashMap::new()),
        };
        let _ = net.registry().await;
        net
    }

    /// Every provider of the on-chain registry whose record is readable; remembers names.
    pub async fn registry(&self) -> Result<Vec<Provider>> {
        let records = self.market.providers().await?;
        let providers: Vec<Provider> = records
            .iter()
            .filter_map(|r| spheron::node::registry::provider_from_record(r).ok())
            .collect();
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        for p in &providers {
            names.insert(p.id, p.name.clone());
        }
        Ok(providers)
    }

    fn learn(&self, id: AccountId, name: &str) {
        if name.is_empty() {
            return;
        }
        self.names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_insert_with(|| name.to_string());
    }
}

/// The embedded marketplace with its launcher (for the files of its leases).
pub(crate) struct Local {
    /// The marketplace.
    pub market: Marketplace,
    /// The launcher it runs workloads with.
    pub launcher: Arc<spheron::LocalLauncher>,
}

impl std::ops::Deref for Local {
    type Target = Marketplace;
    fn deref(&self) -> &Marketplace {
        &self.market
    }
}

/// The marketplace a `spheron.Marketplace` talks to.
#[derive(Clone)]
pub(crate) enum Backend {
    /// The embedded marketplace (`Marketplace.local`).
    Local(Arc<Local>),
    /// A network (`Marketplace.connect`).
    Network(Arc<Network>),
}

impl Backend {
    /// `local` or `network`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Local(_) => "local",
            Backend::Network(_) => "network",
        }
    }

    /// The payment token.
    pub fn token(&self) -> Token {
        match self {
            Backend::Local(m) => m.token(),
            Backend::Network(n) => n.market.token().clone(),
        }
    }

    /// The tenant's address (hex).
    pub fn tenant(&self) -> String {
        match self {
            Backend::Local(m) => m.tenant().to_string(),
            Backend::Network(n) => n.market.tenant().to_string(),
        }
    }

    /// A provider's name, when known.
    pub fn provider_name(&self, id: AccountId) -> Option<String> {
        match self {
            Backend::Local(m) => m.provider(id).ok().map(|p| p.name),
            Backend::Network(n) => n
                .names
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned(),
        }
    }

    /// Progress events of every rent from now on.
    pub fn events(&self) -> BoxStream<'static, ProgressEvent> {
        match self {
            Backend::Local(m) => m.events(),
            Backend::Network(n) => n.market.events(),
        }
    }

    /// Rents GPUs and starts `workload` on them.
    pub async fn rent(self, request: GpuRequest, workload: Workload) -> Result<LeaseHandle> {
        match self {
            Backend::Local(m) => m.rent(request, workload).await,
            Backend::Network(n) => {
                let handle = n.market.rent(request, workload).await?;
                let r = handle.snapshot();
                n.learn(r.provider, &r.provider_name);
                Ok(handle)
            }
        }
    }

    /// [`rent`](Self::rent) with an optional checkpoint policy (network mode only: the
    /// embedded marketplace refuses one with an invalid-field error).
    pub async fn rent_checkpointed(
        self,
        request: GpuRequest,
        workload: Workload,
        checkpoint: Option<spheron_core::Checkpoint>,
    ) -> Result<LeaseHandle> {
        let Some(c) = checkpoint else {
            return self.rent(request, workload).await;
        };
        match self {
            Backend::Local(_) => Err(spheron_core::Error::invalid(
                "checkpoint",
                "checkpoints and failover are for network leases (Marketplace.connect)",
            )),
            Backend::Network(n) => {
                let handle = n.market.rent_with_checkpoint(request, workload, c).await?;
                let r = handle.snapshot();
                n.learn(r.provider, &r.provider_name);
                Ok(handle)
            }
        }
    }

    /// The tenant's escrow balance (nothing is staked by a network tenant).
    pub async fn balance(self) -> Result<Balance> {
        match self {
            Backend::Local(m) => m.balance(m.tenant()).await,
            Backend::Network(n) => {
                let (available, locked) = n.market.balance().await?;
                Ok(Balance {
                    available,
                    locked,
                    staked: Amount::ZERO,
                })
            }
        }
    }

    /// Deposits `amount` into the tenant's escrow account (on a network: from its wallet).
    pub async fn deposit(self, amount: Amount) -> Result<()> {
        match self {
            Backend::Local(m) => m.deposit(amount).await,
            Backend::Network(n) => n.market.deposit(amount).await,
        }
    }

    /// Withdraws `amount` of available escrow funds (on a network: back to the wallet).
    pub async fn withdraw(self, amount: Amount) -> Result<()> {
        match self {
            Backend::Local(m) => m.escrow().withdraw(m.tenant(), amount).await,
            Backend::Network(n) => n.market.withdraw(amount).await,
        }
    }

    /// Copies file `path` of lease `lease`'s working directory to `dest`; returns its size.
    pub async fn download(self, lease: u64, path: String, dest: PathBuf) -> Result<u64> {
        match self {
            Backend::Local(m) => {
                let missing = || {
                    spheron_core::Error::invalid(
                        "path",
                        format!("no file `{path}` in the working directory of lease {lease}"),
                    )
                };
                let root = m
                    .launcher
                    .workdir_of_lease(spheron_core::LeaseId(lease))
                    .ok_or_else(missing)?;
                let src = spheron::node::workdir::resolve_inside(&root, &path)
                    .filter(|p| p.is_file())
                    .ok_or_else(missing)?;
                tokio::fs::copy(&src, &dest)
                    .await
                    .map_err(|e| spheron_core::Error::Launch(format!("{}: {e}", dest.display())))
            }
            Backend::Network(n) => n.market.download(lease, &path, &dest).await,
        }
    }

    /// Every provider: the embedded fleet, or the network's on-chain registry.
    pub async fn providers(self) -> Result<Vec<Provider>> {
        match self {
            Backend::Local(m) => Ok(m.providers()),
            Backend::Network(n) => n.registry().await,
        }
    }
}
