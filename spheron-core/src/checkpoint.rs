//! Checkpoints and failover: a [`Checkpoint`] policy on a rent, and the [`Resume`] record a
//! report carries for each time a lease was restarted on another provider.
//!
//! While the lease runs, the tenant downloads the checkpoint file from the provider every
//! [`Checkpoint::every`] (kept only when its bytes changed) into a local directory, keeping
//! the last complete copy. When the lease ends with a provider fault
//! ([`CloseReason::is_provider_fault`]), the tenant rents again without that provider, for
//! the time that is left, with the same workload, and the last checkpoint travels in its
//! working directory at the same path; [`RESUME_ENV`] tells the workload where it is.
//!
//! The workload's side of the convention: write the checkpoint to a temporary name in the
//! same directory (`outputs/ckpt.tmp`) and rename it over `outputs/ckpt`, so the file at the
//! checkpoint path is always complete; on start, continue from the file named by
//! [`RESUME_ENV`] when it is set. A checkpoint is one file: pack a directory into one
//! archive first (a rename is what makes it whole).

use crate::ids::{LeaseId, ProviderId};
use crate::lease::CloseReason;
use crate::money::Amount;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The environment variable set on a resumed workload: the checkpoint's path relative to
/// its working directory (the [`Checkpoint::path`]).
pub const RESUME_ENV: &str = "SPHERON_RESUME_FROM";

/// Resumes allowed by default.
pub const DEFAULT_MAX_RESUMES: u32 = 2;

/// Shortest interval between checkpoint downloads.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// A checkpoint policy: which file of the workload's outputs to keep, how often, and how
/// many times a lease that loses its provider may resume on another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The checkpoint file, relative to the working directory and inside `outputs/`
    /// (e.g. `outputs/ckpt`).
    pub path: String,
    /// How often the tenant downloads it while the lease runs.
    pub every: Duration,
    /// Most resumes after a provider fault (default [`DEFAULT_MAX_RESUMES`]).
    pub max_resumes: u32,
    /// Where the tenant keeps the last complete copy (`<dir>/<file name>`, left there after
    /// the rent); a fresh temporary directory when not set.
    pub local_dir: Option<PathBuf>,
}

impl Checkpoint {
    /// A policy for the file `path` (inside `outputs/`), downloaded every `every`.
    ///
    /// Errors: [`Error::InvalidField`](crate::Error::InvalidField) for a path that is
    /// absolute, climbs with `..`, or is not inside `outputs/`, and for an interval under
    /// [`MIN_EVERY`].
    pub fn new(path: impl Into<String>, every: Duration) -> crate::Result<Self> {
        let c = Checkpoint {
            path: path.into(),
            every,
            max_resumes: DEFAULT_MAX_RESUMES,
            local_dir: None,
        };
        c.validate()?;
        Ok(c)
    }

    /// Sets the most resumes.
    #[must_use]
    pub fn max_resumes(mut self, n: u32) -> Self {
        self.max_resumes = n;
        self
    }

    /// Sets the local directory of the kept copy.
    #[must_use]
    pub fn local_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.local_dir = Some(dir.into());
        self
    }

    /// Checks the path and the interval (see [`Checkpoint::new`]).
    pub fn validate(&self) -> crate::Result<()> {
        let p = Path::new(&self.path);
        let parts: Vec<_> = p.components().collect();
        let plain = !parts.is_empty() && parts.iter().all(|c| matches!(c, Component::Normal(_)));
        if !plain || parts.len() < 2 || parts[0] != Component::Normal("outputs".as_ref()) {
            return Err(crate::Error::invalid(
                "checkpoint",
                format!(
                    "`{}`: expected a relative path inside outputs/, e.g. outputs/ckpt",
                    self.path
                ),
            ));
        }
        if self.every < MIN_EVERY {
            return Err(crate::Error::invalid(
                "checkpoint_every",
                format!(
                    "{} ms: at least {} s",
                    self.every.as_millis(),
                    MIN_EVERY.as_secs()
                ),
            ));
        }
        Ok(())
    }
}

/// One failover: the lease that lost its provider, and the checkpoint the next lease started
/// from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The lease that ended with a provider fault.
    pub from_lease: LeaseId,
    /// Its provider (excluded from the next order).
    pub from_provider: ProviderId,
    /// Why it ended.
    pub reason: CloseReason,
    /// What that lease cost (settled before the next order was published).
    pub paid: Amount,
    /// Seconds of the ordered time it used (the next order asks only for the rest).
    pub seconds: u64,
    /// The lease that took over.
    pub to_lease: LeaseId,
    /// Size of the checkpoint it started from, bytes; `0` with no checkpoint yet (the
    /// workload then starts over).
    pub checkpoint_bytes: u64,
    /// keccak-256 of that checkpoint (`0x` hex), when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_hash: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_inside_outputs() {
        let s = Duration::from_secs(5);
        assert!(Checkpoint::new("outputs/ckpt", s).is_ok());
        assert!(Checkpoint::new("outputs/run/model.pt", s).is_ok());
        for bad in [
            "",
            "outputs",
            "ckpt",
            "/outputs/ckpt",
            "outputs/../x",
            "../outputs/c",
        ] {
            assert!(
                matches!(
                    Checkpoint::new(bad, s),
                    Err(crate::Error::InvalidField { .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            Checkpoint::new("outputs/ckpt", Duration::from_millis(10)),
            Err(crate::Error::InvalidField { .. })
        ));
        let c = Checkpoint::new("outputs/ckpt", s).unwrap().max_resumes(0);
        assert_eq!(c.max_resumes, 0);
    }
}
