//! Checkpoints and failover of network leases ([`NetworkMarket::rent_with_checkpoint`]).
//!
//! A rent with a [`Checkpoint`] policy wraps the ordinary lease from outside. While the
//! lease runs, a driver task downloads the checkpoint file from the provider's gateway every
//! [`Checkpoint::every`] into a local directory. The request is conditional (the gateway's
//! entity tag: size and modification time), so an unchanged file is not sent again. The
//! file goes to `<name>.download` first (itself written to `.part` and renamed once whole)
//! and is kept as `<name>` only when its keccak-256 differs from the copy already kept, so
//! a failed transfer never replaces a good copy. The workload writes the checkpoint
//! atomically (`outputs/ckpt.tmp`, then a rename over `outputs/ckpt`).
//!
//! When the lease ends with a provider fault
//! ([`CloseReason::is_provider_fault`](spheron_core::CloseReason::is_provider_fault): its
//! gateway stopped answering, the workload failed on the provider's side), the existing
//! flow has already closed and settled it on chain (paid for its billed seconds, the rest
//! refunded). The driver then publishes the order again without that provider, for the
//! ordered time less the seconds billed (so no second is paid twice, and the leases
//! together never lock more than the first budget), with the same workload; its working
//! directory is a copy of the original one with the last checkpoint at the same path, and
//! [`RESUME_ENV`] names that path (the copy and the checkpoint together must fit the working
//! directory limit, [`MAX_WORKDIR_BYTES`](crate::workdir::MAX_WORKDIR_BYTES)). With no
//! checkpoint downloaded yet the workload starts over, without [`RESUME_ENV`].
//!
//! The [`LeaseHandle`] follows the new lease: its id, state, logs and cost are the new
//! lease's (the log stream goes on with the next lease's log after a system line); while
//! the next lease is being rented it shows the lost one, closed, and
//! [`LeaseHandle::wait`] returns only once the whole rent is over. The report lists every
//! failover in [`LeaseReport::resumed`]; [`Step::Resuming`] announces each.
//!
//! At most [`Checkpoint::max_resumes`] resumes; a lease that completes, fails on its own (a
//! non-zero exit) or is stopped by the tenant is not resumed, nor one with under
//! [`MIN_RESUME_SECS`] left. A resume whose rent finds no provider is tried
//! [`RESUME_RENTS`] times; then the rent ends with the lost lease's report, its progress
//! ending in [`Step::NoMatch`] (every provider and why).

use super::NetworkMarket;
use crate::gateway_client::GatewayClient;
use crate::workdir::EXCLUDED;
use alloy::primitives::{Address, Keccak256};
use futures::StreamExt;
use spheron_core::{
    Checkpoint, GpuRequest, LeaseControl, LeaseHandle, LeaseReport, LeaseState, LogLine, LogSource,
    LogStream, ProgressEvent, RESUME_ENV, Resume, Step, Workload,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Least ordered time left for a resume to be worth an order, seconds.
pub const MIN_RESUME_SECS: u64 = 60;

/// Rents tried for one resume before giving up.
pub const RESUME_RENTS: u32 = 3;

/// Pause between them.
const RESUME_PAUSE: Duration = Duration::from_secs(2);

/// Longest wait for the last checkpoint download after a lease has ended.
const LAST_FETCH: Duration = Duration::from_secs(10);

/// The checkpoint copy the tenant keeps.
#[derive(Clone, Debug)]
struct Kept {
    bytes: u64,
    hash: String,
}

/// What the handle and the driver share.
struct State {
    current: Mutex<LeaseHandle>,
    resumed: Mutex<Vec<Resume>>,
    /// Progress of the leases before the current one, and the failovers.
    history: Mutex<Vec<ProgressEvent>>,
    /// (leases so far, whole rent over).
    phase: watch::Sender<(u32, bool)>,
    stopping: watch::Sender<bool>,
}

impl State {
    fn current(&self) -> LeaseHandle {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `r` (the current lease's) with the failovers and the earlier progress.
    fn merge(&self, mut r: LeaseReport) -> LeaseReport {
        r.resumed = self
            .resumed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut progress = self
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        progress.append(&mut r.progress);
        r.progress = progress;
        r
    }
}

/// The lease handle of a rent with a checkpoint policy: follows the current lease.
struct ResumingLease(Arc<State>);

#[async_trait::async_trait]
impl LeaseControl for ResumingLease {
    fn snapshot(&self) -> LeaseReport {
        self.0.merge(self.0.current().snapshot())
    }

    fn logs(&self) -> spheron_core::Result<LogStream> {
        let first = self.0.current().logs()?;
        let st = self.0.clone();
        let gen_now = st.phase.borrow().0;
        Ok(futures::stream::unfold(
            (st, Some(first), gen_now),
            |(st, mut cur, mut generation)| async move {
                loop {
                    if cur.is_none() {
                        generation = st.phase.borrow().0;
                        cur = Some(st.current().logs().ok()?);
                    }
                    let line = cur.as_mut()?.next().await;
                    if let Some(line) = line {
                        return Some((line, (st, cur, generation)));
                    }
                    // This lease's log ended: go on with the next lease's, if there is one.
                    let mut rx = st.phase.subscribe();
                    let _ = rx.wait_for(|(g, over)| *g != generation || *over).await;
                    if st.phase.borrow().0 == generation {
                        return None;
                    }
                    let note = st
                        .resumed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .last()
                        .map(|r| {
                            format!(
                                "{} lost its provider ({}): resumed as {} from a {}-byte checkpoint",
                                r.from_lease, r.reason, r.to_lease, r.checkpoint_bytes
                            )
                        });
                    cur = None;
                    if let Some(line) = note {
                        let l = LogLine {
                            seq: u64::MAX,
                            source: LogSource::System,
                            line,
                        };
                        return Some((l, (st, cur, generation)));
                    }
                }
            },
        )
        .boxed())
    }

    async fn report(&self) -> spheron_core::Result<LeaseReport> {
        let r = self.0.current().report().await?;
        Ok(self.0.merge(r))
    }

    async fn wait(&self) -> LeaseReport {
        let mut rx = self.0.phase.subscribe();
        let _ = rx.wait_for(|(_, over)| *over).await;
        self.snapshot()
    }

    async fn stop(&self) -> spheron_core::Result<LeaseReport> {
        if self.0.phase.borrow().1 || *self.0.stopping.borrow() {
            return Err(spheron_core::Error::LeaseClosed(self.0.current().id()));
        }
        self.0.stopping.send_replace(true);
        // Between two leases the current one is closed already; the driver stops the next
        // one as soon as it runs.
        match self.0.current().stop().await {
            Ok(_) | Err(spheron_core::Error::LeaseClosed(_)) => {}
            Err(e) => {
                self.0.stopping.send_replace(false);
                return Err(e);
            }
        }
        Ok(self.wait().await)
    }
}

impl NetworkMarket {
    /// Rents like [`rent`](Self::rent), with a checkpoint policy: the checkpoint is
    /// downloaded while the lease runs, and a lease that loses its provider resumes on
    /// another one from the last checkpoint (see the [module docs](self)). The handle
    /// follows the new lease; [`LeaseReport::resumed`] lists the failovers and
    /// [`LeaseReport::total_cost`] sums what every lease cost.
    ///
    /// Errors: those of [`rent`](Self::rent); an invalid policy
    /// ([`Checkpoint::validate`]), a working directory with no local source, or a local
    /// directory that cannot be created, before anything is published.
    pub async fn rent_with_checkpoint(
        &self,
        request: GpuRequest,
        workload: Workload,
        checkpoint: Checkpoint,
    ) -> spheron_core::Result<LeaseHandle> {
        checkpoint.validate()?;
        workload.validate()?;
        if workload
            .workdir
            .as_ref()
            .is_some_and(|w| w.source.is_none())
        {
            return Err(spheron_core::Error::invalid(
                "workdir",
                "a checkpointed workload's working directory needs its local source",
            ));
        }
        let dir = match &checkpoint.local_dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!(
                "spheron-checkpoint-{}-{}",
                std::process::id(),
                self.inner.clock.now().0
            )),
        };
        std::fs::create_dir_all(&dir).map_err(|e| {
            spheron_core::Error::invalid(
                "checkpoint_dir",
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
        let first = self.rent(request.clone(), workload.clone()).await?;
        tracing::info!(lease = first.id().0, dir = %dir.display(), "checkpoints kept locally");
        let state = Arc::new(State {
            current: Mutex::new(first),
            resumed: Mutex::new(Vec::new()),
            history: Mutex::new(Vec::new()),
            phase: watch::channel((0, false)).0,
            stopping: watch::channel(false).0,
        });
        let driver = Driver {
            market: self.clone(),
            state: state.clone(),
            request,
            workload,
            checkpoint,
            dir,
            kept: None,
            tag: None,
        };
        tokio::spawn(driver.run());
        Ok(LeaseHandle::new(Arc::new(ResumingLease(state))))
    }
}

struct Driver {
    market: NetworkMarket,
    state: Arc<State>,
    request: GpuRequest,
    workload: Workload,
    checkpoint: Checkpoint,
    dir: PathBuf,
    kept: Option<Kept>,
    /// The entity tag of the last download, with its lease.
    tag: Option<(u64, String)>,
}

impl Driver {
    fn name(&self) -> String {
        Path::new(&self.checkpoint.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "ckpt".into())
    }

    fn finish(&self) {
        self.state.phase.send_modify(|p| p.1 = true);
    }

    async fn run(mut self) {
        let mut resumes = 0u32;
        loop {
            let handle = self.state.current();
            let snap = handle.snapshot();
            let gateway = self
                .market
                .gateway(Address::from(snap.provider.0))
                .await
                .ok();
            if *self.state.stopping.borrow() {
                // Stopped while this lease was being rented.
                let _ = handle.stop().await;
            }
            let report = loop {
                tokio::select! {
                    biased;
                    r = handle.wait() => break r,
                    _ = tokio::time::sleep(self.checkpoint.every) => {}
                }
                if let Some(g) = &gateway {
                    // A provider that stalls mid-transfer does not hold up noticing the end:
                    // the transfer is dropped (its `.part` file never replaces the copy).
                    tokio::select! {
                        biased;
                        r = handle.wait() => break r,
                        _ = self.fetch(g, snap.lease.0) => {}
                    }
                }
            };
            // The provider keeps the files for a while after the end; a dead one fails fast.
            if let Some(g) = &gateway {
                let _ = tokio::time::timeout(LAST_FETCH, self.fetch(g, snap.lease.0)).await;
            }
            let LeaseState::Closed(reason) = report.state.clone() else {
                self.finish();
                return;
            };
            if !reason.is_provider_fault()
                || *self.state.stopping.borrow()
                || resumes >= self.checkpoint.max_resumes
            {
                self.finish();
                return;
            }
            let Some(settled) = report.settlement else {
                tracing::error!(
                    lease = report.lease.0,
                    "not resuming: no settlement was read"
                );
                self.finish();
                return;
            };
            let left = self.request.duration_secs.saturating_sub(settled.seconds);
            if left < MIN_RESUME_SECS {
                tracing::warn!(
                    lease = report.lease.0,
                    left,
                    "not resuming: too little time left"
                );
                self.finish();
                return;
            }
            resumes += 1;
            let workload = match self.stage(resumes).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "not resuming: staging the working directory");
                    self.finish();
                    return;
                }
            };
            let mut request = self.request.clone();
            request.duration_secs = left;
            if !request.deny_providers.contains(&report.provider) {
                request.deny_providers.push(report.provider);
            }
            self.state
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(report.progress.iter().cloned());
            self.market.emit(
                report.order.0,
                &self.state.history,
                Step::Resuming {
                    from_lease: report.lease,
                    from_provider: report.provider,
                    reason: reason.clone(),
                    checkpoint_bytes: self.kept.as_ref().map_or(0, |k| k.bytes),
                    resume: resumes,
                },
            );
            let Some(next) = self.rent_again(&request, workload, report.order.0).await else {
                self.finish();
                return;
            };
            self.state
                .resumed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Resume {
                    from_lease: report.lease,
                    from_provider: report.provider,
                    reason,
                    paid: settled.paid,
                    seconds: settled.seconds,
                    to_lease: next.id(),
                    checkpoint_bytes: self.kept.as_ref().map_or(0, |k| k.bytes),
                    checkpoint_hash: self.kept.as_ref().map(|k| k.hash.clone()),
                });
            self.request = request;
            *self.state.current.lock().unwrap_or_else(|p| p.into_inner()) = next;
            self.state.phase.send_modify(|p| p.0 += 1);
        }
    }

    /// Rents for a resume, trying [`RESUME_RENTS`] times while no provider can serve it
    /// (every provider busy, or failing its challenge) or the failure is transient: waiting
    /// costs nothing, the remaining time is counted in billed seconds. A final failure is
    /// recorded in the report's progress (as [`Step::NoMatch`] with every provider and why).
    async fn rent_again(
        &self,
        request: &GpuRequest,
        workload: Workload,
        order: u64,
    ) -> Option<LeaseHandle> {
        for attempt in 1..=RESUME_RENTS {
            if *self.state.stopping.borrow() {
                return None;
            }
            match self.market.rent(request.clone(), workload.clone()).await {
                Ok(h) => return Some(h),
                Err(e) => {
                    let again = attempt < RESUME_RENTS
                        && (e.is_retryable() || matches!(e, spheron_core::Error::NoMatch { .. }));
                    tracing::warn!(attempt, error = %e, again, "renting for the resume");
                    if again {
                        tokio::time::sleep(RESUME_PAUSE).await;
                        continue;
                    }
                    if let spheron_core::Error::NoMatch { rejected, .. } = e {
                        self.market
                            .emit(order, &self.state.history, Step::NoMatch { rejected });
                    }
                    return None;
                }
            }
        }
        None
    }

    /// Downloads the checkpoint of `lease`; keeps it when whole and changed.
    async fn fetch(&mut self, g: &GatewayClient, lease: u64) {
        let name = self.name();
        let tmp = self.dir.join(format!("{name}.download"));
        let tag = self
            .tag
            .as_ref()
            .filter(|(l, _)| *l == lease)
            .map(|(_, t)| t.as_str());
        let bytes = match g
            .download_if_changed(lease, &self.checkpoint.path, &tmp, tag)
            .await
        {
            // Unchanged since the last download: nothing sent.
            Ok(None) => return,
            Ok(Some((n, tag))) => {
                self.tag = tag.map(|t| (lease, t));
                n
            }
            Err(e) => {
                // No checkpoint written yet is the usual case early on.
                tracing::debug!(lease, error = %e, "checkpoint download");
                return;
            }
        };
        let path = tmp.clone();
        let hash = match tokio::task::spawn_blocking(move || hash_file(&path)).await {
            Ok(Ok(h)) => h,
            other => {
                tracing::warn!(lease, ?other, "hashing the downloaded checkpoint");
                let _ = tokio::fs::remove_file(&tmp).await;
                return;
            }
        };
        if self.kept.as_ref().is_some_and(|k| k.hash == hash) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return;
        }
        match tokio::fs::rename(&tmp, self.dir.join(&name)).await {
            Ok(()) => {
                tracing::debug!(lease, bytes, %hash, "checkpoint kept");
                self.kept = Some(Kept { bytes, hash });
            }
            Err(e) => tracing::warn!(lease, error = %e, "keeping the checkpoint"),
        }
    }

    /// The workload for resume `n`: a copy of the original working directory with the kept
    /// checkpoint at its path, and [`RESUME_ENV`] set (a workload without a working
    /// directory gets one holding just the checkpoint).
    async fn stage(&self, n: u32) -> std::io::Result<Workload> {
        if self.kept.is_none() {
            // Nothing to resume from: the workload starts over on the next provider.
            return Ok(self.workload.clone());
        }
        let staged = self.dir.join(format!("workdir-{n}"));
        let previous = self.dir.join(format!("workdir-{}", n - 1));
        let source = self
            .workload
            .workdir
            .as_ref()
            .and_then(|w| w.source.clone());
        let ckpt = self.dir.join(self.name());
        let rel = PathBuf::from(&self.checkpoint.path);
        let dst = staged.clone();
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&previous);
            let _ = std::fs::remove_dir_all(&dst);
            std::fs::create_dir_all(&dst)?;
            if let Some(src) = source {
                copy_tree(&src, &dst)?;
            }
            let target = dst.join(&rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&ckpt, &target)?;
            Ok::<_, std::io::Error>(())
        })
        .await
        .map_err(std::io::Error::other)??;
        let mut w = self.workload.clone().workdir(staged);
        w.env
            .insert(RESUME_ENV.to_string(), self.checkpoint.path.clone());
        Ok(w)
    }
}

/// keccak-256 of the file at `path`, `0x` hex.
fn hash_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Keccak256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:#x}", h.finalize()))
}

/// Copies the files and directories under `src` into `dst` (which exists), leaving out what
/// a working directory archive leaves out ([`EXCLUDED`], links, special files).
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let name = e.file_name();
        if EXCLUDED.iter().any(|x| name == *x) {
            continue;
        }
        let t = e.file_type()?;
        let to = dst.join(&name);
        if t.is_dir() {
            std::fs::create_dir_all(&to)?;
            copy_tree(&e.path(), &to)?;
        } else if t.is_file() {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_copies_the_tree_without_excluded_names() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("pkg/__pycache__")).unwrap();
        std::fs::create_dir_all(src.path().join(".git")).unwrap();
        std::fs::write(src.path().join("train.py"), "print(1)").unwrap();
        std::fs::write(src.path().join("pkg/m.py"), "x").unwrap();
        std::fs::write(src.path().join("pkg/__pycache__/m.pyc"), "junk").unwrap();
        let dst = tempfile::tempdir().unwrap();
        copy_tree(src.path(), dst.path()).unwrap();
        assert!(dst.path().join("train.py").is_file());
        assert!(dst.path().join("pkg/m.py").is_file());
        assert!(!dst.path().join("pkg/__pycache__").exists());
        assert!(!dst.path().join(".git").exists());
        let h = hash_file(&dst.path().join("pkg/m.py")).unwrap();
        assert_eq!(
            h,
            format!("{:#x}", alloy::primitives::keccak256(b"x")),
            "streamed hash equals the one-shot hash"
        );
    }
}
