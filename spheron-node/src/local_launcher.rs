//! [`LocalLauncher`]: runs a lease's workload as a real subprocess on this machine.
//!
//! The embedded default for development and tests: it refuses a container image (it has no
//! container runtime: [`Error::InvalidField`] naming `image`); the command runs in a fresh
//! temporary directory, in its own process group; stdout and stderr become the lease's log; `stop`
//! kills the whole group; the exit status decides the close reason.
//!
//! Files: a workload with a [`Workdir`](spheron_core::Workdir) starts in a copy of it (a
//! directory is packed like a tenant's upload, with the same exclusions; an archive, the
//! provider's stored upload, is unpacked), and `outputs/` is created in it
//! (`SPHERON_OUTPUTS`). The working directory is kept after the workload ends, for
//! downloads, and removed [`OUTPUTS_GRACE`] later (see [`LocalLauncher::with_retention`]).
//!
//! GPUs: each workload gets the lowest device indices not held by another running workload
//! on its node, `spec.gpus` of them, as `CUDA_VISIBLE_DEVICES` (set after the tenant's
//! environment, so a workload sees only its lease's GPUs); they are freed when it ends.
//!
//! Activity (for the tenant's idle detector): the time since the workload's last stdout or
//! stderr line and, with [`LocalLauncher::with_gpu_monitor`] (real GPUs), the utilisation of
//! its GPUs read with `nvidia-smi`; without it (simulated GPUs) only log output is reported.
//!
//! Ports: each port the workload declares ([`Workload::port`]) gets a free port of this
//! machine's loopback, chosen by the launcher (two leases may both declare 8000), given to the
//! workload as `SPHERON_PORT_<declared>=<port>` for each and `PORT=<port>` for the first (set
//! after the tenant's environment); the workload listens on `127.0.0.1:<port>`.
//! [`WorkloadLauncher::port_addr`] answers that address while the workload runs (the provider's
//! gateway proxies to it); the port is freed when it ends.
//!
//! Memory is bounded: each log keeps the last [`LOG_BUFFER_LINES`](spheron_core::launcher::LOG_BUFFER_LINES)
//! lines of at most [`MAX_LOG_LINE_BYTES`](spheron_core::launcher::MAX_LOG_LINE_BYTES) (output is
//! decoded lossily, `\r` ends a line), and only the last [`FINISHED_KEPT`] finished workloads
//! are remembered.

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use spheron_core::{
    Error, LaunchSpec, LineSplitter, LogBuffer, LogSource, LogStream, Result, Workload, WorkloadId,
    WorkloadLauncher, WorkloadStatus,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::watch;

/// How long `stop` waits after SIGTERM before sending SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// How long a workload's working directory (its `outputs`) is kept after it ends.
pub const OUTPUTS_GRACE: Duration = Duration::from_secs(600);

struct Proc {
    lease: spheron_core::LeaseId,
    dir: std::path::PathBuf,
    pid: Option<u32>,
    status: watch::Receiver<WorkloadStatus>,
    logs: LogBuffer,
    stop_requested: Arc<AtomicBool>,
    /// The device indices it was given.
    gpus: Vec<u32>,
    /// Declared port -> the loopback port it was given.
    ports: BTreeMap<u16, u16>,
}

/// Device indices in use, per node name (`""` when the spec names none).
type Devices = Arc<Mutex<BTreeMap<String, BTreeSet<u32>>>>;

/// Finished workloads whose status and log stay readable; older ones are forgotten.
pub const FINISHED_KEPT: usize = 256;

#[derive(Default)]
struct Procs {
    all: BTreeMap<WorkloadId, Arc<Proc>>,
    /// Finished workloads, oldest first.
    finished: VecDeque<WorkloadId>,
}

impl Procs {
    fn finished(&mut self, id: WorkloadId) {
        self.finished.push_back(id);
        while self.finished.len() > FINISHED_KEPT {
            if let Some(old) = self.finished.pop_front() {
                self.all.remove(&old);
            }
        }
    }
}

/// Runs workloads as local subprocesses.
#[derive(Default)]
pub struct LocalLauncher {
    procs: Arc<Mutex<Procs>>,
    devices: Devices,
    /// Loopback ports handed to running workloads.
    ports: Arc<Mutex<BTreeSet<u16>>>,
    /// Overrides [`OUTPUTS_GRACE`].
    retention: Option<Duration>,
    /// Whether activity reports include GPU utilisation from `nvidia-smi`.
    gpu_monitor: bool,
}

/// How long one `nvidia-smi` query may take.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(5);

/// The utilisation (percent) of the busiest of `devices`, from `nvidia-smi`; `None` when it
/// cannot be read (no driver, no such device).
async fn gpu_utilization(devices: &[u32]) -> Option<u8> {
    let out = tokio::time::timeout(
        NVIDIA_SMI_TIMEOUT,
        Command::new("nvidia-smi")
            .args([
                "--query-gpu=index,utilization.gpu",
                "--format=csv,noheader,nounits",
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_utilization(&String::from_utf8_lossy(&out.stdout), devices)
}

/// The busiest of `devices` in `nvidia-smi --query-gpu=index,utilization.gpu` CSV output.
fn parse_utilization(csv: &str, devices: &[u32]) -> Option<u8> {
    csv.lines()
        .filter_map(|l| {
            let (i, u) = l.split_once(',')?;
            let i: u32 = i.trim().parse().ok()?;
            let u: u8 = u.trim().parse().ok()?;
            devices.contains(&i).then_some(u.min(100))
        })
        .max()
}

/// Fills the fresh working directory `dir` from `workdir`'s source, off the async threads.
async fn fill(dir: &std::path::Path, workdir: &spheron_core::Workdir) -> Result<()> {
    use crate::workdir::{MAX_WORKDIR_BYTES, WorkdirError, pack, unpack};
    let Some(source) = workdir.source.clone() else {
        return Err(Error::invalid(
            "workdir",
            "the working directory has no source on this machine (was it uploaded?)",
        ));
    };
    let dest = dir.to_path_buf();
    let r = tokio::task::spawn_blocking(move || -> std::result::Result<u64, WorkdirError> {
        if source.is_dir() {
            let p = pack(&source, MAX_WORKDIR_BYTES)?;
            unpack(&p.archive[..], &dest)
        } else {
            let f = std::fs::File::open(&source).map_err(|e| WorkdirError::Io {
                path: source.clone(),
                source: e,
            })?;
            unpack(std::io::BufReader::new(f), &dest)
        }
    })
    .await
    .map_err(|e| Error::Launch(format!("unpacking the working directory: {e}")))?;
    match r {
        Ok(_) => Ok(()),
        Err(e @ (WorkdirError::TooLarge { .. } | WorkdirError::NotADirectory(_))) => {
            Err(Error::invalid("workdir", e.to_string()))
        }
        Err(e) => Err(Error::Launch(format!("working directory: {e}"))),
    }
}

/// Takes the `count` lowest device indices of `node` not in use.
fn take_devices(devices: &Devices, node: &str, count: u32) -> Vec<u32> {
    let mut all = devices.lock().unwrap_or_else(|p| p.into_inner());
    let used = all.entry(node.to_string()).or_default();
    let picked: Vec<u32> = (0u32..)
        .filter(|i| !used.contains(i))
        .take(count as usize)
        .collect();
    used.extend(picked.iter().copied());
    picked
}

/// Frees device indices taken by [`take_devices`].
fn free_devices(devices: &Devices, node: &str, picked: &[u32]) {
    let mut all = devices.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(used) = all.get_mut(node) {
        for i in picked {
            used.remove(i);
        }
    }
}

/// Picks a free loopback port for each of `declared` (the OS chooses, skipping those already
/// handed to another workload), recorded in `used` until [`free_ports`].
fn take_ports(used: &Mutex<BTreeSet<u16>>, declared: &[u16]) -> Result<BTreeMap<u16, u16>> {
    let mut used = used.lock().unwrap_or_else(|p| p.into_inner());
    // Every probe stays bound until all are picked, so the OS never hands out one twice.
    let mut probes = Vec::new();
    let mut picked = BTreeMap::new();
    for &d in declared {
        let port = loop {
            let l = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
                .map_err(|e| Error::Launch(format!("no free loopback port for port {d}: {e}")))?;
            let p = l
                .local_addr()
                .map_err(|e| Error::Launch(format!("no free loopback port for port {d}: {e}")))?
                .port();
            probes.push(l);
            if !used.contains(&p) {
                break p;
            }
            if probes.len() > 64 * declared.len().max(1) {
                return Err(Error::Launch(format!("no free loopback port for port {d}")));
            }
        };
        picked.insert(d, port);
    }
    used.extend(picked.values().copied());
    Ok(picked)
}

/// Frees ports taken by [`take_ports`].
fn free_ports(used: &Mutex<BTreeSet<u16>>, picked: &BTreeMap<u16, u16>) {
    let mut used = used.lock().unwrap_or_else(|p| p.into_inner());
    for p in picked.values() {
        used.remove(p);
    }
}

impl std::fmt::Debug for LocalLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLauncher").finish_non_exhaustive()
    }
}

impl LocalLauncher {
    /// A launcher with no workloads.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps each workload's working directory `grace` after it ends (default
    /// [`OUTPUTS_GRACE`]).
    #[must_use]
    pub fn with_retention(mut self, grace: Duration) -> Self {
        self.retention = Some(grace);
        self
    }

    /// Reports the utilisation of each workload's GPUs (read with `nvidia-smi`, by the device
    /// indices given in `CUDA_VISIBLE_DEVICES`) in its [`Activity`](spheron_core::Activity),
    /// for idle detection on real GPUs. Off by default: with simulated GPUs the indices name
    /// no real device, and only log output counts.
    #[must_use]
    pub fn with_gpu_monitor(mut self) -> Self {
        self.gpu_monitor = true;
        self
    }

    /// A workload's working directory while it is kept.
    pub fn workdir(&self, id: &WorkloadId) -> Option<std::path::PathBuf> {
        self.get(id)
            .ok()
            .map(|p| p.dir.clone())
            .filter(|d| d.is_dir())
    }

    /// The working directory of the last workload launched for `lease`, while it is kept.
    pub fn workdir_of_lease(&self, lease: spheron_core::LeaseId) -> Option<std::path::PathBuf> {
        self.procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .all
            .values()
            .filter(|p| p.lease == lease)
            .map(|p| p.dir.clone())
            .next_back()
            .filter(|d| d.is_dir())
    }

    /// The process id of a workload's leader (also its process group id), so a node that
    /// restarts can find and kill a workload it can no longer reattach to.
    pub fn pid(&self, id: &WorkloadId) -> Option<u32> {
        self.get(id).ok().and_then(|p| p.pid)
    }

    fn get(&self, id: &WorkloadId) -> Result<Arc<Proc>> {
        self.procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .all
            .get(id)
            .cloned()
            .ok_or_else(|| Error::Launch(format!("unknown workload {id}")))
    }
}

fn pump<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    source: LogSource,
    logs: LogBuffer,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = reader;
        let mut split = LineSplitter::new();
        let mut buf = [0u8; 8192];
        // Bytes, not lines: a non-UTF-8 byte or a `\r` must not end the pump.
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            split.feed(&buf[..n], |line| logs.push(source, line));
        }
        if let Some(line) = split.finish() {
            logs.push(source, line);
        }
    })
}

#[async_trait]
impl WorkloadLauncher for LocalLauncher {
    async fn launch(&self, spec: &LaunchSpec, workload: &Workload) -> Result<WorkloadId> {
        workload.validate()?;
        if let Some(image) = &workload.image {
            return Err(Error::invalid(
                "image",
                format!(
                    "the local launcher runs the command as a process on this machine and \
                     cannot run the container image `{image}`: leave `image` out, or rent \
                     from a provider with the Kubernetes launcher"
                ),
            ));
        }
        let (program, args) = workload
            .command
            .split_first()
            .ok_or_else(|| Error::invalid("command", "the local launcher needs a command"))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("spheron-{}-", spec.lease))
            .tempdir()
            .map_err(|e| Error::Launch(format!("cannot create a work directory: {e}")))?
            .keep();
        let outputs = dir.join(crate::workdir::OUTPUTS);
        let prepared = match &workload.workdir {
            Some(w) => fill(&dir, w).await,
            None => Ok(()),
        }
        .and_then(|()| {
            std::fs::create_dir_all(&outputs)
                .map_err(|e| Error::Launch(format!("cannot create {}: {e}", outputs.display())))
        });
        if let Err(e) = prepared {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let ports = match take_ports(&self.ports, &workload.ports) {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let node = spec.node.clone().unwrap_or_default();
        let gpus = take_devices(&self.devices, &node, spec.gpus);
        let visible = gpus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&dir)
            .env("SPHERON_WORKDIR", &dir)
            .env("SPHERON_OUTPUTS", &outputs)
            .env("SPHERON_LEASE_ID", spec.lease.0.to_string())
            .env("SPHERON_PROVIDER", spec.provider.to_string())
            .env("SPHERON_GPU_MODEL", spec.model.name())
            .env("SPHERON_GPUS", spec.gpus.to_string())
            .envs(&workload.env)
            .envs(workload.secrets.iter().map(|(k, v)| (k, v.expose())))
            .env("CUDA_VISIBLE_DEVICES", &visible)
            .envs(
                ports
                    .iter()
                    .map(|(d, p)| (format!("SPHERON_PORT_{d}"), p.to_string())),
            )
            .envs(
                workload
                    .ports
                    .first()
                    .and_then(|d| ports.get(d))
                    .map(|p| ("PORT", p.to_string())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                free_devices(&self.devices, &node, &gpus);
                free_ports(&self.ports, &ports);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Error::Launch(format!("cannot start `{program}`: {e}")));
            }
        };
        let pid = child.id();
        let gpus_held = gpus.clone();
        let logs = LogBuffer::new();
        logs.push(
            LogSource::System,
            format!(
                "started `{program}` (pid {}) for {} on GPUs {visible}",
                pid.unwrap_or(0),
                spec.lease
            ),
        );
        for (d, p) in &ports {
            logs.push(
                LogSource::System,
                format!("port {d}: listen on 127.0.0.1:{p} (SPHERON_PORT_{d})"),
            );
        }
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(out, LogSource::Stdout, logs.clone()));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(err, LogSource::Stderr, logs.clone()));
        }
        let (tx, rx) = watch::channel(WorkloadStatus::Running);
        let stop_requested = Arc::new(AtomicBool::new(false));
        let id = WorkloadId(format!("local-{}-{}", spec.lease.0, pid.unwrap_or(0)));
        {
            let logs = logs.clone();
            let stop_requested = stop_requested.clone();
            let devices = self.devices.clone();
            let used_ports = self.ports.clone();
            let held_ports = ports.clone();
            let kept = dir.clone();
            let grace = self.retention.unwrap_or(OUTPUTS_GRACE);
            let procs = self.procs.clone();
            let finished_id = id.clone();
            tokio::spawn(async move {
                let exit = child.wait().await;
                // The group may hold the pipes open after the leader exits: kill the rest.
                if let Some(pid) = pid {
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
                for p in pumps {
                    let _ = p.await;
                }
                let status = match exit {
                    _ if stop_requested.load(Ordering::SeqCst) => WorkloadStatus::Stopped,
                    Ok(s) if s.success() => WorkloadStatus::Succeeded,
                    Ok(s) => WorkloadStatus::Failed {
                        exit_code: s.code(),
                    },
                    Err(_) => WorkloadStatus::Failed { exit_code: None },
                };
                logs.push(LogSource::System, format!("workload ended: {status:?}"));
                logs.close();
                free_devices(&devices, &node, &gpus);
                free_ports(&used_ports, &held_ports);
                tx.send_replace(status);
                procs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .finished(finished_id);
                // Outputs stay for downloads until the grace period is over.
                tokio::time::sleep(grace).await;
                let _ = tokio::fs::remove_dir_all(&kept).await;
            });
        }
        self.procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .all
            .insert(
                id.clone(),
                Arc::new(Proc {
                    lease: spec.lease,
                    dir,
                    pid,
                    status: rx,
                    logs,
                    stop_requested,
                    gpus: gpus_held,
                    ports,
                }),
            );
        Ok(id)
    }

    async fn status(&self, id: &WorkloadId) -> Result<WorkloadStatus> {
        Ok(self.get(id)?.status.borrow().clone())
    }

    async fn wait(&self, id: &WorkloadId) -> Result<WorkloadStatus> {
        let mut rx = self.get(id)?.status.clone();
        let s = rx
            .wait_for(|s| s.is_terminal())
            .await
            .map_err(|_| Error::Launch(format!("workload {id} vanished")))?;
        Ok(s.clone())
    }

    fn logs(&self, id: &WorkloadId) -> Result<LogStream> {
        Ok(self.get(id)?.logs.stream())
    }

    async fn activity(&self, id: &WorkloadId) -> Result<Option<spheron_core::Activity>> {
        let proc = self.get(id)?;
        let quiet = proc.logs.quiet_for();
        let gpu_utilization = if self.gpu_monitor && !proc.gpus.is_empty() {
            gpu_utilization(&proc.gpus).await
        } else {
            None
        };
        Ok(Some(spheron_core::Activity {
            quiet_ms: u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX),
            gpu_utilization,
        }))
    }

    async fn stop(&self, id: &WorkloadId) -> Result<()> {
        let proc = self.get(id)?;
        if proc.status.borrow().is_terminal() {
            return Ok(());
        }
        proc.stop_requested.store(true, Ordering::SeqCst);
        if let Some(pid) = proc.pid {
            let pgid = Pid::from_raw(pid as i32);
            let _ = killpg(pgid, Signal::SIGTERM);
            let mut rx = proc.status.clone();
            let ended = tokio::time::timeout(TERM_GRACE, rx.wait_for(|s| s.is_terminal())).await;
            if ended.is_err() {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        }
        let mut rx = proc.status.clone();
        rx.wait_for(|s| s.is_terminal())
            .await
            .map_err(|_| Error::Launch(format!("workload {id} vanished")))?;
        Ok(())
    }

    fn port_addr(&self, id: &WorkloadId, port: u16) -> Option<std::net::SocketAddr> {
        let proc = self.get(id).ok()?;
        if proc.status.borrow().is_terminal() {
            return None;
        }
        let p = *proc.ports.get(&port)?;
        Some((std::net::Ipv4Addr::LOCALHOST, p).into())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_utilization;

    #[test]
    fn utilisation_is_the_busiest_of_the_workloads_gpus() {
        let csv = "0, 3\n1, 97\n2, 40\nnot a line\n";
        assert_eq!(parse_utilization(csv, &[0, 2]), Some(40));
        assert_eq!(parse_utilization(csv, &[1]), Some(97));
        assert_eq!(parse_utilization(csv, &[5]), None);
        assert_eq!(parse_utilization("", &[0]), None);
    }
}
