//! # spheron-chain
//!
//! The EVM backend of spheron: Solidity escrow and market contracts driven through alloy,
//! implementing `spheron_core::Escrow` and `spheron_core::Market` on any EVM chain.
//!
//! Status: the contracts and bindings arrive with the on-chain escrow issue; until then this
//! crate only fixes its place in the workspace and re-exports the traits it will implement.

pub use spheron_core::{Escrow, Market};
