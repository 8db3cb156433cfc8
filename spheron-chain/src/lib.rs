//! # spheron-chain
//!
//! The EVM backend of spheron: Solidity contracts (escrow, order book, leases and provider
//! registry in `SpheronMarket`; the operator quorum and verifiers in `SpheronOperators`; built
//! on OpenZeppelin) driven through alloy.
//!
//! - [`EvmEscrow`] implements `spheron_core::Escrow` on the contract (direct deals), to the
//!   last base unit like the in-memory ledger (the same conformance suite runs on both);
//!   [`EvmStakeVault`] implements `spheron_core::StakeVault`: SPHN stake, slashed on evidence;
//! - [`quorum`]: the operator quorum that decides matches (2/3 of operator stake, EIP-712
//!   signatures, equivocation proofs) and the verifiers' signed verdicts that slashing needs;
//! - [`audit`]: the verifier network on chain (`SpheronAudit`): uptime checks and rewards per
//!   valid verification, failed verdicts re-checked by a randomly assigned second verifier
//!   before any slash, an accuracy ranking, tenants' feedback and quorum-signed epoch tiers;
//! - [`manifest`]: EIP-712 signed workload manifests, checked against the lease's tenant on
//!   chain before anything launches;
//! - [`registry`]: registering providers (endpoint, region, key, TLS certificate hash,
//!   metadata), listing the enumerable registry, publishing orders with their full spec;
//! - [`follow`]: a [`Follower`] that reads the market's events in bounded block ranges from
//!   a persistent cursor, confirmations behind the head;
//! - [`deploy`]: deployment helpers; [`anvil`]: a harness that runs a local node.
//!
//! The compiled artifacts (`artifacts/*.json`) are committed, so building this crate needs no
//! Node.js; `scripts/chain-setup.sh` recompiles them and fails if they differ from the sources.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use spheron_chain::{Chain, EvmEscrow};
//! use spheron_core::{AccountId, Amount, Escrow, Token};
//! use std::sync::Arc;
//!
//! let key: alloy::signers::local::PrivateKeySigner = "0x...".parse()?;
//! let me = key.address();
//! let chain = Arc::new(Chain::connect("http://127.0.0.1:8545", [key])?);
//! let market = "0x5FbDB2315678afecb367f032d93F642f64180aa3".parse()?;
//! let sphn = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512".parse()?;
//! let escrow = EvmEscrow::new(chain, market, sphn, Token::sphn()).await?;
//! escrow.deposit(AccountId(me.into_array()), Amount(10u128.pow(18))).await?;
//! # Ok(()) }
//! ```

pub mod anvil;
pub mod audit;
pub mod bindings;
pub mod client;
pub mod deploy;
pub mod error;
pub mod escrow;
pub mod follow;
pub mod manifest;
pub mod quorum;
pub mod registry;

pub use alloy;
pub use audit::{AuditConfig, CheckTally};
pub use client::Chain;
pub use deploy::{Addresses, MarketConfig};
pub use error::{Error, Result};
pub use escrow::{ChainTime, EvmEscrow, Solvency, account, address, solvency};
pub use follow::{ChainEvent, Follower, Logged};
pub use quorum::EvmStakeVault;
pub use registry::{CreatedOrder, OrderParams, ProviderRecord, Registration};
