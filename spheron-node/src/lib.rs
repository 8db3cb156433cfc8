//! # spheron-node
//!
//! The parties of a spheron network, each its own process with its own key, meeting only
//! through the chain and authenticated HTTP:
//!
//! - [`provider::ProviderNode`]: registers and stakes, follows orders, bids with its own
//!   agent, serves the [`gateway`], launches on a valid signed manifest, stops when the lease
//!   closes on chain, closes the lease when the workload ends, withdraws its earnings, and keeps
//!   its state in an embedded database ([`store`]);
//! - [`operator::OperatorNode`]: runs the deterministic matcher over the on-chain bids once an
//!   order's bid window closes and records the match;
//! - [`verifier::VerifierNode`]: a Slark verifier: challenges providers at times they
//!   cannot predict, posts uptime tallies and failed verdicts on chain, re-checks others'
//!   failures;
//! - [`tenant::NetworkMarket`]: the tenant's client, holding only the tenant's key;
//! - [`auth`]: EIP-712 request signatures and lease manifests;
//! - [`network::NetworkFile`]: the `network.json` every client reads.

pub mod auth;
pub mod backend;
pub mod challenge_gate;
pub mod error;
pub mod gateway;
pub mod gateway_client;
pub mod local_launcher;
pub mod matching;
pub mod network;
pub mod operator;
pub mod ports;
pub mod provider;
pub mod quote;
pub mod registry;
pub mod store;
pub mod tenant;
pub mod tiers;
pub mod tls;
pub mod verifier;
pub mod wire;
pub mod workdir;

pub use error::{Error, Result};
pub use local_launcher::LocalLauncher;
pub use wire::{ErrorCode, GatewayError, LeaseStatus, NodeStatus, WorkState};
