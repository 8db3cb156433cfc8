//! The network mode: [`Marketplace::connect`](crate::Marketplace::connect) gives a tenant
//! client that holds only the tenant's key and rents from independent provider nodes through
//! the chain and their gateways, with the same `rent` / [`LeaseHandle`](spheron_core::LeaseHandle)
//! surface as the embedded marketplace.

use spheron_core::{Error, Result};
use spheron_node::network::{NetworkFile, parse_key};
pub use spheron_node::quote::{NetworkQuote, NoQuote, Quotes};
pub use spheron_node::tenant::{LeaseSummary, NetworkMarket, TenantConfig};
use std::path::Path;

impl crate::Marketplace {
    /// Connects to the network described by the `network.json` at `network` as the tenant
    /// whose 0x-hex private key is `key`. Start a local network with `spheron devnet`.
    ///
    /// ```no_run
    /// # async fn demo() -> spheron::Result<()> {
    /// use spheron::prelude::*;
    ///
    /// let market = Marketplace::connect("devnet/network.json", "0x...").await?;
    /// let request = GpuRequest::builder()
    ///     .gpu("h100")
    ///     .hours(1)
    ///     .max_price_per_gpu_hour(Amount(5_000_000))
    ///     .build()?;
    /// let lease = market.rent(request, Workload::command(["python3", "-c", "print('hi')"])).await?;
    /// let report = lease.wait().await;
    /// println!("{} on {}: cost {}", report.state, report.provider_name, report.cost);
    /// # Ok(()) }
    /// ```
    pub async fn connect(network: impl AsRef<Path>, key: &str) -> Result<NetworkMarket> {
        Self::connect_with(network, key, TenantConfig::default()).await
    }

    /// [`connect`](Self::connect) with explicit timeouts and limits.
    pub async fn connect_with(
        network: impl AsRef<Path>,
        key: &str,
        config: TenantConfig,
    ) -> Result<NetworkMarket> {
        let net = NetworkFile::load(network.as_ref()).map_err(spheron_node::tenant::to_core)?;
        let key = parse_key(key).map_err(|_| Error::invalid("key", "not a 0x-hex private key"))?;
        NetworkMarket::connect_with(
            net,
            key,
            config,
            std::sync::Arc::new(spheron_core::SystemClock),
        )
        .await
        .map_err(spheron_node::tenant::to_core)
    }
}
