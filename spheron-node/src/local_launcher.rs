//! [`LocalLauncher`]: runs a lease's workload as a real subprocess on this machine.
//!
//! The embedded default for development and tests: the command runs in a fresh temporary
//! directory, in its own process group; stdout and stderr become the lease's log; `stop`
//! kills the whole group; the exit status decides the close reason.
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
use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::watch;

/// How long `stop` waits after SIGTERM before sending SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

struct Proc {
    pid: Option<u32>,
    status: watch::Receiver<WorkloadStatus>,
    logs: LogBuffer,
    stop_requested: Arc<AtomicBool>,
}

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
        let (program, args) = workload
            .command
            .split_first()
            .ok_or_else(|| Error::invalid("command", "the local launcher needs a command"))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("spheron-{}-", spec.lease))
            .tempdir()
            .map_err(|e| Error::Launch(format!("cannot create a work directory: {e}")))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(dir.path())
            .env("SPHERON_LEASE_ID", spec.lease.0.to_string())
            .env("SPHERON_PROVIDER", spec.provider.to_string())
            .env("SPHERON_GPU_MODEL", spec.model.name())
            .env("SPHERON_GPUS", spec.gpus.to_string())
            .envs(&workload.env)
            .envs(workload.secrets.iter().map(|(k, v)| (k, v.expose())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Launch(format!("cannot start `{program}`: {e}")))?;
        let pid = child.id();
        let logs = LogBuffer::new();
        logs.push(
            LogSource::System,
            format!(
                "started `{program}` (pid {}) for {}",
                pid.unwrap_or(0),
                spec.lease
            ),
        );
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
                drop(dir);
                tx.send_replace(status);
                procs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .finished(finished_id);
            });
        }
        self.procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .all
            .insert(
                id.clone(),
                Arc::new(Proc {
                    pid,
                    status: rx,
                    logs,
                    stop_requested,
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
}
