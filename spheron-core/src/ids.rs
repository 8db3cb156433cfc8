//! Identifiers: 20-byte accounts (EVM addresses) and numeric order / lease ids.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A 20-byte account address: tenants, providers, verifiers and the treasury all have one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct AccountId(pub [u8; 20]);

/// A provider is identified by its account.
pub type ProviderId = AccountId;

impl AccountId {
    /// A deterministic account derived from a label (BLAKE3 of the label, first 20 bytes).
    ///
    /// Used for simulated fleets and tests, so the same name always gives the same address.
    pub fn from_label(label: &str) -> Self {
        let hash = blake3::hash(label.as_bytes());
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash.as_bytes()[..20]);
        AccountId(out)
    }

    /// Parses `0x`-prefixed (or bare) 40 hex digits.
    pub fn parse(s: &str) -> crate::Result<Self> {
        let hex_part = s.strip_prefix("0x").unwrap_or(s);
        let bytes = hex::decode(hex_part)
            .map_err(|e| crate::Error::invalid("account", format!("`{s}` is not hex: {e}")))?;
        let arr: [u8; 20] = bytes
            .try_into()
            .map_err(|_| crate::Error::invalid("account", format!("`{s}` is not 20 bytes")))?;
        Ok(AccountId(arr))
    }

    /// A short form for logs and reports: `0x1234…abcd`.
    pub fn short(&self) -> String {
        let h = hex::encode(self.0);
        format!("0x{}…{}", &h[..4], &h[36..])
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({})", self.short())
    }
}

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "-{}"), self.0)
            }
        }
    };
}

numeric_id!(
    /// An order published by a tenant.
    OrderId,
    "order"
);
numeric_id!(
    /// A lease: one matched order running on one provider.
    LeaseId,
    "lease"
);
