//! What the multi-process tests share: a `spheron devnet` child process (stopped with SIGTERM
//! when dropped), the anvil check, and running the CLI against it.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `spheron` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_spheron");

/// A running devnet; `extra` are further children (restarted nodes) stopped with it.
pub struct Devnet {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub extra: Vec<Child>,
}

impl Devnet {
    /// Its `network.json`.
    pub fn network(&self) -> PathBuf {
        self.dir.path().join("network.json")
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        for c in self
            .extra
            .iter_mut()
            .chain(std::iter::once(&mut self.child))
        {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for c in self
            .extra
            .iter_mut()
            .chain(std::iter::once(&mut self.child))
        {
            let _ = c.wait();
        }
    }
}

/// Whether anvil is installed; fails instead when `SPHERON_REQUIRE_ANVIL` is set.
pub fn anvil_available() -> bool {
    if spheron::chain::anvil::find_anvil().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("SPHERON_REQUIRE_ANVIL").is_none(),
        "anvil is required (SPHERON_REQUIRE_ANVIL is set): run scripts/chain-setup.sh"
    );
    eprintln!("skipped: anvil not found; run scripts/chain-setup.sh");
    false
}

/// Starts `spheron devnet --providers N` with `args` and waits until it is ready
/// (`SPHERON_KEEP_DEVNET` keeps its files).
pub fn start_devnet(providers: usize, args: &[&str]) -> Devnet {
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("SPHERON_KEEP_DEVNET").is_some() {
        dir.disable_cleanup(true);
        eprintln!("devnet files kept in {}", dir.path().display());
    }
    let mut child = Command::new(BIN)
        .args(["devnet", "--dir"])
        .arg(dir.path())
        .args(["--providers", &providers.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            eprintln!("devnet: {line}");
            let _ = tx.send(line);
        }
    });
    let devnet = Devnet {
        child,
        dir,
        extra: Vec::new(),
    };
    let until = Instant::now() + Duration::from_secs(240);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "devnet did not become ready");
        if let Ok(line) = rx.recv_timeout(left)
            && line.starts_with("devnet ready: ")
        {
            return devnet;
        }
    }
}

/// Runs the CLI with `args` against the network at `net` as the tenant with `key`.
pub fn cli(net: &Path, key: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--network")
        .arg(net)
        .env("SPHERON_KEY", key)
        .env_remove("SPHERON_KEY_FILE")
        .args(args)
        .output()
        .unwrap()
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
