//! Launching workloads: the [`WorkloadLauncher`] plug point, the [`Workload`] description and
//! a [`LogBuffer`] that launchers use to keep and stream a workload's output.

use crate::Result;
use crate::clock::Timestamp;
use crate::gpu::GpuModel;
use crate::ids::{LeaseId, ProviderId};
use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A secret value: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(v: impl Into<String>) -> Self {
        Secret(v.into())
    }
    /// The value, for the launcher that hands it to the workload.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Batch work runs to completion; a service runs until stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadKind {
    /// A job that finishes (training, batch inference).
    #[default]
    Batch,
    /// A long-running server (inference endpoint) exposing ports.
    Service,
}

/// What the tenant wants run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Container image (Kubernetes); ignored by the local launcher.
    pub image: Option<String>,
    /// Command and arguments.
    pub command: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Secret environment variables (never logged).
    pub secrets: BTreeMap<String, Secret>,
    /// Ports to expose.
    pub ports: Vec<u16>,
    /// Batch or service.
    pub kind: WorkloadKind,
    /// A working directory sent with the workload (network mode), unpacked as its working
    /// directory; absent from the JSON when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<Workdir>,
}

/// A working directory that travels with a workload: packed by the tenant (a tar archive),
/// uploaded to the provider, unpacked as the workload's working directory. Its hash is part
/// of the workload, so of the signed manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workdir {
    /// Where it is on the machine at hand: the tenant's directory before the upload, the
    /// provider's archive after it. Never serialized.
    #[serde(skip)]
    pub source: Option<std::path::PathBuf>,
    /// BLAKE3-256 of the tar archive (`0x` hex), once packed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Size of the archive in bytes, once packed.
    #[serde(default)]
    pub bytes: u64,
}

impl Workload {
    /// A batch workload running `command`.
    pub fn command<I, S>(command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Workload {
            command: command.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Sets the container image.
    #[must_use]
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// Sends the directory `dir` with the workload as its working directory (network mode).
    #[must_use]
    pub fn workdir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.workdir = Some(Workdir {
            source: Some(dir.into()),
            ..Workdir::default()
        });
        self
    }

    /// Exposes `port` (the workload listens on it as a service): the provider gives the
    /// workload a free port of its own for it (`PORT` for the first declared port,
    /// `SPHERON_PORT_<port>` for each) and serves it through its gateway; marks the workload a
    /// [`WorkloadKind::Service`]. Checked by [`Workload::validate`]: 1-65535, no duplicates,
    /// at most [`MAX_PORTS`].
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.ports.push(port);
        self.kind = WorkloadKind::Service;
        self
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    /// Checks that the workload can be launched at all.
    pub fn validate(&self) -> Result<()> {
        if self.command.is_empty() && self.image.is_none() {
            return Err(crate::Error::invalid(
                "command",
                "a command or an image is required",
            ));
        }
        if self.command.first().is_some_and(|c| c.is_empty()) {
            return Err(crate::Error::invalid(
                "command",
                "the program name is empty",
            ));
        }
        validate_ports(&self.ports)?;
        for k in self.env.keys().chain(self.secrets.keys()) {
            let ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(crate::Error::invalid(
                    "env",
                    format!("`{k}` is not a valid environment variable name"),
                ));
            }
        }
        Ok(())
    }
}

/// Most ports one workload may expose.
pub const MAX_PORTS: usize = 16;

/// Checks declared ports: each in 1-65535, none twice, at most [`MAX_PORTS`]
/// ([`crate::Error::InvalidField`] naming `ports`).
pub fn validate_ports(ports: &[u16]) -> Result<()> {
    if ports.len() > MAX_PORTS {
        return Err(crate::Error::invalid(
            "ports",
            format!(
                "{} ports declared, at most {MAX_PORTS} are accepted",
                ports.len()
            ),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for &p in ports {
        if p == 0 {
            return Err(crate::Error::invalid(
                "ports",
                "port 0 is not a port: use 1-65535",
            ));
        }
        if !seen.insert(p) {
            return Err(crate::Error::invalid(
                "ports",
                format!("port {p} is declared twice"),
            ));
        }
    }
    Ok(())
}

/// How a tenant reaches a port its workload exposes ([`crate::LeaseHandle::endpoint`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The declared port.
    pub port: u16,
    /// The URL that reaches the workload's port: append the request path (it ends in `/`).
    /// Network mode: the provider gateway's proxy route, `https://` with the provider's own
    /// certificate (pinned by hash, see [`Endpoint::cert_hash`]); embedded mode: the
    /// workload's loopback address, `http://127.0.0.1:<port>/`.
    pub url: String,
    /// The bearer token to send as `Authorization: Bearer <token>` (network mode); `None`
    /// when the URL needs none (embedded mode, loopback).
    pub token: Option<Secret>,
    /// SHA-256 of the gateway's DER certificate (`0x` hex) that clients must pin, when the
    /// URL is `https://`.
    pub cert_hash: Option<String>,
}

impl Endpoint {
    /// The headers a client sends with every request: the bearer token, if any.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.token
            .iter()
            .map(|t| {
                (
                    "authorization".to_string(),
                    format!("Bearer {}", t.expose()),
                )
            })
            .collect()
    }
}

/// Where and for how long a workload runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// The lease.
    pub lease: LeaseId,
    /// The provider running it.
    pub provider: ProviderId,
    /// GPU model.
    pub model: GpuModel,
    /// GPUs.
    pub gpus: u32,
    /// The node reserved for it, when the provider reported one.
    pub node: Option<String>,
    /// When the paid time runs out.
    pub ends_at: Timestamp,
}

/// A launcher's handle on a running workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadId(pub String);

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a workload stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadStatus {
    /// Accepted, not yet running.
    Pending,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with a failure.
    Failed {
        /// Exit code, when the process exited.
        exit_code: Option<i32>,
    },
    /// Stopped on request.
    Stopped,
}

impl WorkloadStatus {
    /// Whether the workload has finished.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, WorkloadStatus::Pending | WorkloadStatus::Running)
    }
}

/// Which output stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogSource {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// The launcher itself (launch, stop, exit notices).
    System,
}

/// One line of a workload's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Position in the lease's log, from 0.
    pub seq: u64,
    /// Which stream.
    pub source: LogSource,
    /// The text, without the trailing newline.
    pub line: String,
}

/// What a launcher can tell about a workload's recent activity, for the idle detector
/// ([`crate::cost::IdleDetector`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Milliseconds since the workload last wrote a line to stdout or stderr (since it
    /// started, when it wrote nothing). The launcher's own notices do not count.
    pub quiet_ms: u64,
    /// Utilisation of the workload's busiest GPU now, percent, when the launcher can measure
    /// it (real GPUs); `None` for simulated GPUs, where only log output counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_utilization: Option<u8>,
}

/// A stream of log lines that ends when the workload's output ends.
pub type LogStream = BoxStream<'static, LogLine>;

/// The workload-launching plug point: local processes, Kubernetes, ...
#[cfg_attr(any(test, feature = "test-utils"), mockall::automock)]
#[async_trait]
pub trait WorkloadLauncher: Send + Sync {
    /// Starts `workload` for a lease and resolves once it **runs** (its process or container
    /// has started; a workload that already finished also counts), because the caller starts
    /// billing when this returns. A workload that cannot start within the launcher's own start
    /// timeout fails with [`crate::Error::NotStarted`] naming the last reason seen, after the
    /// launcher removed everything it created; so does a launch whose future is dropped.
    async fn launch(&self, spec: &LaunchSpec, workload: &Workload) -> Result<WorkloadId>;
    /// The current status.
    async fn status(&self, id: &WorkloadId) -> Result<WorkloadStatus>;
    /// Resolves with the terminal status as soon as the workload has finished, before any
    /// clean-up (log drain, object deletion), so that the caller stops the clock there.
    async fn wait(&self, id: &WorkloadId) -> Result<WorkloadStatus>;
    /// All output from the beginning, then new lines as they come, ending when the workload ends.
    fn logs(&self, id: &WorkloadId) -> Result<LogStream>;
    /// Stops the workload and releases what it used; resolves once it is gone. Also called
    /// after the workload finished by itself, to finish its clean-up; then it must succeed.
    async fn stop(&self, id: &WorkloadId) -> Result<()>;
    /// The workload's recent activity, for idle detection; `None` when this launcher cannot
    /// tell (the default), and then no lease it runs is ever stopped as idle.
    async fn activity(&self, id: &WorkloadId) -> Result<Option<Activity>> {
        let _ = id;
        Ok(None)
    }
    /// Where the workload's declared `port` can be reached from this machine while it runs;
    /// `None` (the default) when the launcher exposes no such port.
    fn port_addr(&self, _id: &WorkloadId, _port: u16) -> Option<std::net::SocketAddr> {
        None
    }
}

/// Lines a [`LogBuffer`] keeps by default; older ones are dropped (readers are told).
pub const LOG_BUFFER_LINES: usize = 10_000;

struct LogState {
    lines: std::collections::VecDeque<LogLine>,
    /// Sequence number of the next line pushed.
    next_seq: u64,
    capacity: usize,
    closed: bool,
    /// When the last stdout or stderr line arrived (the buffer's creation before any).
    last_output: std::time::Instant,
}

impl Default for LogState {
    fn default() -> Self {
        LogState {
            lines: std::collections::VecDeque::new(),
            next_seq: 0,
            capacity: LOG_BUFFER_LINES,
            closed: false,
            last_output: std::time::Instant::now(),
        }
    }
}

impl LogState {
    fn first_seq(&self) -> u64 {
        self.next_seq - self.lines.len() as u64
    }
}

/// A replayable log that keeps the last [`LOG_BUFFER_LINES`] lines (or a chosen number):
/// every reader sees the lines in order from the oldest kept; a reader that falls behind the
/// kept window gets a [`LogSource::System`] line saying how many lines it missed, never a
/// silent gap.
#[derive(Clone, Default)]
pub struct LogBuffer {
    state: Arc<Mutex<LogState>>,
    notify: Arc<Notify>,
}

impl fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogBuffer")
            .field("lines", &self.len())
            .finish()
    }
}

impl LogBuffer {
    /// An empty, open buffer keeping the last [`LOG_BUFFER_LINES`] lines.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty, open buffer keeping the last `lines` lines (at least 1).
    pub fn with_capacity(lines: usize) -> Self {
        let b = Self::default();
        b.lock().capacity = lines.max(1);
        b
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a line (ignored once closed); drops the oldest beyond the capacity.
    pub fn push(&self, source: LogSource, line: impl Into<String>) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        if source != LogSource::System {
            s.last_output = std::time::Instant::now();
        }
        s.lines.push_back(LogLine {
            seq,
            source,
            line: line.into(),
        });
        while s.lines.len() > s.capacity {
            s.lines.pop_front();
        }
        drop(s);
        self.notify.notify_waiters();
    }

    /// Marks the end of output: streams finish after the last line.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// Lines kept now.
    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    /// Whether no line is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long since the last stdout or stderr line (since the buffer was created, when
    /// there was none); [`LogSource::System`] lines do not count.
    pub fn quiet_for(&self) -> std::time::Duration {
        self.lock().last_output.elapsed()
    }

    /// Lines written so far, kept or dropped.
    pub fn written(&self) -> u64 {
        self.lock().next_seq
    }

    /// A copy of every line kept.
    pub fn snapshot(&self) -> Vec<LogLine> {
        self.lock().lines.iter().cloned().collect()
    }

    /// A stream of every kept line from the oldest, ending after the buffer closes.
    pub fn stream(&self) -> LogStream {
        let buf = self.clone();
        let start = buf.lock().first_seq();
        Box::pin(futures::stream::unfold(start, move |next| {
            let buf = buf.clone();
            async move {
                loop {
                    let notified = buf.notify.notified();
                    {
                        let s = buf.lock();
                        let first = s.first_seq();
                        if next < first {
                            let notice = LogLine {
                                seq: next,
                                source: LogSource::System,
                                line: format!(
                                    "{} log lines were dropped before this reader caught up \
                                     (the buffer keeps the last {})",
                                    first - next,
                                    s.capacity
                                ),
                            };
                            return Some((notice, first));
                        }
                        if let Some(l) = s.lines.get((next - first) as usize) {
                            return Some((l.clone(), next + 1));
                        }
                        if s.closed {
                            return None;
                        }
                    }
                    notified.await;
                }
            }
        }))
    }
}

/// The longest log line kept, in bytes: output without line ends (a binary blob, a runaway
/// progress bar) is cut into lines of at most this size, so one line never grows without bound.
pub const MAX_LOG_LINE_BYTES: usize = 16 * 1024;

/// Cuts a workload's raw output into log lines: `\n`, `\r` and `\r\n` each end a line (so
/// `\r` progress bars reach the log one update at a time), bytes that are not UTF-8 become
/// U+FFFD instead of ending the stream, and a line longer than [`MAX_LOG_LINE_BYTES`] is
/// cut there.
#[derive(Debug, Default)]
pub struct LineSplitter {
    line: Vec<u8>,
    after_cr: bool,
}

impl LineSplitter {
    /// A splitter with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `bytes`; calls `emit` with each complete line.
    pub fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(String)) {
        for &b in bytes {
            match b {
                // The `\n` of a `\r\n` ends nothing new.
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    emit(self.take());
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                    if self.line.len() >= MAX_LOG_LINE_BYTES {
                        emit(self.take());
                    }
                }
            }
        }
    }

    /// The last line when the output ended without a line end.
    pub fn finish(mut self) -> Option<String> {
        (!self.line.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn late_readers_see_everything_in_order() {
        let b = LogBuffer::new();
        b.push(LogSource::Stdout, "one");
        let reader = tokio::spawn({
            let b = b.clone();
            async move { b.stream().map(|l| l.line).collect::<Vec<_>>().await }
        });
        tokio::task::yield_now().await;
        b.push(LogSource::Stderr, "two");
        b.close();
        b.push(LogSource::Stdout, "ignored");
        assert_eq!(reader.await.unwrap(), vec!["one", "two"]);
        assert_eq!(b.stream().count().await, 2);
    }

    #[tokio::test]
    async fn a_lagging_reader_is_told_what_it_missed() {
        let b = LogBuffer::with_capacity(3);
        let mut slow = b.stream();
        for i in 0..10 {
            b.push(LogSource::Stdout, format!("l{i}"));
        }
        b.close();
        let first = slow.next().await.unwrap();
        assert_eq!(first.source, LogSource::System);
        assert!(
            first.line.starts_with("7 log lines were dropped"),
            "{}",
            first.line
        );
        let rest: Vec<_> = slow.map(|l| (l.seq, l.line)).collect().await;
        assert_eq!(
            rest,
            vec![(7, "l7".into()), (8, "l8".into()), (9, "l9".into())]
        );
        assert_eq!((b.len(), b.written()), (3, 10));
    }

    #[test]
    fn secrets_do_not_print_and_env_names_are_checked() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
        assert!(
            Workload::command(["x"])
                .env("1BAD", "v")
                .validate()
                .is_err()
        );
        assert!(Workload::default().validate().is_err());
        Workload::command(["python", "-c", "print(1)"])
            .env("OK_1", "v")
            .validate()
            .unwrap();
    }

    #[test]
    fn ports_are_checked() {
        let field = |w: Workload| match w.validate() {
            Err(crate::Error::InvalidField { field, reason }) => (field, reason),
            other => panic!("expected an invalid field, got {other:?}"),
        };
        let w = Workload::command(["srv"]).port(8000);
        assert_eq!(w.kind, WorkloadKind::Service);
        w.validate().unwrap();
        let (f, r) = field(Workload::command(["srv"]).port(0));
        assert_eq!(f, "ports");
        assert!(r.contains("port 0"), "{r}");
        let (f, r) = field(Workload::command(["srv"]).port(8000).port(8000));
        assert_eq!(f, "ports");
        assert!(r.contains("8000") && r.contains("twice"), "{r}");
        let mut many = Workload::command(["srv"]);
        for p in 1..=(MAX_PORTS as u16 + 1) {
            many = many.port(p);
        }
        let (f, r) = field(many);
        assert_eq!(f, "ports");
        assert!(r.contains("at most"), "{r}");
    }

    #[test]
    fn lines_end_at_cr_lf_and_crlf_and_survive_bad_utf8() {
        let mut sp = LineSplitter::new();
        let mut out = Vec::new();
        sp.feed(b"a\xffb\rprogress 5", |l| out.push(l));
        sp.feed(b"0%\rprogress 100%\r\nend\n\ntail", |l| out.push(l));
        assert_eq!(
            out,
            ["a\u{fffd}b", "progress 50%", "progress 100%", "end", ""]
        );
        assert_eq!(sp.finish().as_deref(), Some("tail"));
    }

    #[test]
    fn a_line_without_end_is_cut_at_the_cap() {
        let mut sp = LineSplitter::new();
        let mut out = Vec::new();
        sp.feed(&vec![b'x'; MAX_LOG_LINE_BYTES * 2 + 3], |l| {
            out.push(l.len())
        });
        assert_eq!(out, [MAX_LOG_LINE_BYTES, MAX_LOG_LINE_BYTES]);
        assert_eq!(sp.finish().map(|l| l.len()), Some(3));
    }
}
