//! [`Torchrun`]: the workload that starts a PyTorch distributed training script on every GPU of
//! a lease with `torchrun`.
//!
//! ```
//! let w = spheron::Torchrun::new("train.py", 8).arg("--epochs=3").master_port(29511).workload()?;
//! assert_eq!(w.command[..3], ["torchrun", "--nnodes=1", "--node_rank=0"]);
//! assert_eq!(w.env["WORLD_SIZE"], "8");
//! # Ok::<(), spheron::Error>(())
//! ```
//!
//! The command is `torchrun --nnodes=1 --node_rank=0 --nproc_per_node=N --master_addr=A
//! --master_port=P SCRIPT ARGS...`, and the launcher's environment carries the same
//! rendezvous variables (`MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `NNODES`, `NODE_RANK`,
//! `NPROC_PER_NODE`) for scripts that read them before torchrun's workers set their own
//! `RANK` / `LOCAL_RANK`. Which GPUs the lease has is the launcher's business: it sets
//! `CUDA_VISIBLE_DEVICES` (the local launcher does), so worker `LOCAL_RANK = i` uses the
//! lease's i-th GPU.

use spheron_core::{Error, Result, Workload};
use std::hash::BuildHasher;

/// The lowest port [`Torchrun::new`] picks for the rendezvous.
pub const PORT_BASE: u16 = 29_500;
/// How many ports above [`PORT_BASE`] it picks from (two leases on one machine rarely meet).
pub const PORT_SPAN: u16 = 10_000;

/// A `torchrun` launch of a training script on one node's GPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Torchrun {
    program: Vec<String>,
    script: String,
    args: Vec<String>,
    gpus: u32,
    master_addr: String,
    master_port: u16,
}

impl Torchrun {
    /// `script` on `gpus` GPUs (one worker per GPU), with the rendezvous on `127.0.0.1` at a
    /// port picked at random in `PORT_BASE..PORT_BASE + PORT_SPAN`.
    pub fn new(script: impl Into<String>, gpus: u32) -> Self {
        let pick = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        let port = PORT_BASE + u16::try_from(pick % u64::from(PORT_SPAN)).unwrap_or(0);
        Torchrun {
            program: vec!["torchrun".into()],
            script: script.into(),
            args: Vec::new(),
            gpus,
            master_addr: "127.0.0.1".into(),
            master_port: port,
        }
    }

    /// Appends an argument of the script.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments of the script.
    #[must_use]
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The rendezvous port.
    #[must_use]
    pub fn master_port(mut self, port: u16) -> Self {
        self.master_port = port;
        self
    }

    /// The rendezvous address (default `127.0.0.1`: one node).
    #[must_use]
    pub fn master_addr(mut self, addr: impl Into<String>) -> Self {
        self.master_addr = addr.into();
        self
    }

    /// The program and its leading arguments instead of `torchrun` (e.g. `["python3", "-m",
    /// "torch.distributed.run"]`).
    #[must_use]
    pub fn program<I: IntoIterator<Item = S>, S: Into<String>>(mut self, program: I) -> Self {
        self.program = program.into_iter().map(Into::into).collect();
        self
    }

    /// GPUs (workers) it starts.
    pub fn gpus(&self) -> u32 {
        self.gpus
    }

    /// The workload: the command and the rendezvous environment. Refuses zero GPUs, an empty
    /// program or script, and a port of 0 ([`Error::InvalidField`]).
    pub fn workload(&self) -> Result<Workload> {
        if self.gpus == 0 {
            return Err(Error::invalid("gpus", "torchrun needs at least one GPU"));
        }
        if self.program.first().is_none_or(|p| p.is_empty()) {
            return Err(Error::invalid("program", "the torchrun program is empty"));
        }
        if self.script.is_empty() {
            return Err(Error::invalid("script", "the training script is empty"));
        }
        if self.master_port == 0 {
            return Err(Error::invalid(
                "master_port",
                "port 0 cannot be rendezvoused at",
            ));
        }
        if self.master_addr.is_empty() {
            return Err(Error::invalid(
                "master_addr",
                "the rendezvous address is empty",
            ));
        }
        let n = self.gpus.to_string();
        let mut command = self.program.clone();
        command.extend([
            "--nnodes=1".to_string(),
            "--node_rank=0".to_string(),
            format!("--nproc_per_node={n}"),
            format!("--master_addr={}", self.master_addr),
            format!("--master_port={}", self.master_port),
            self.script.clone(),
        ]);
        command.extend(self.args.iter().cloned());
        let w = Workload::command(command)
            .env("MASTER_ADDR", self.master_addr.clone())
            .env("MASTER_PORT", self.master_port.to_string())
            .env("WORLD_SIZE", n.clone())
            .env("NPROC_PER_NODE", n)
            .env("NNODES", "1")
            .env("NODE_RANK", "0");
        w.validate()?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_command_and_the_rendezvous() {
        let w = Torchrun::new("train.py", 2)
            .args(["--lr", "0.1"])
            .master_port(29_999)
            .program(["python3", "-m", "torch.distributed.run"])
            .workload()
            .unwrap();
        assert_eq!(
            w.command,
            [
                "python3",
                "-m",
                "torch.distributed.run",
                "--nnodes=1",
                "--node_rank=0",
                "--nproc_per_node=2",
                "--master_addr=127.0.0.1",
                "--master_port=29999",
                "train.py",
                "--lr",
                "0.1"
            ]
        );
        let env: Vec<(&str, &str)> = w.env.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(
            env,
            [
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", "29999"),
                ("NNODES", "1"),
                ("NODE_RANK", "0"),
                ("NPROC_PER_NODE", "2"),
                ("WORLD_SIZE", "2")
            ]
        );
    }

    #[test]
    fn picks_a_port_in_range_and_refuses_nonsense() {
        let t = Torchrun::new("t.py", 1);
        assert!((PORT_BASE..PORT_BASE + PORT_SPAN).contains(&t.master_port));
        for (bad, field) in [
            (Torchrun::new("t.py", 0), "gpus"),
            (Torchrun::new("", 1), "script"),
            (Torchrun::new("t.py", 1).master_port(0), "master_port"),
            (
                Torchrun::new("t.py", 1).program(Vec::<String>::new()),
                "program",
            ),
        ] {
            match bad.workload() {
                Err(Error::InvalidField { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
