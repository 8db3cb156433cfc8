//! `spheron.torchrun`: the command and rendezvous environment of a `torchrun` launch, built
//! by [`spheron::Torchrun`] so Rust and Python start training the same way.

use crate::errors::to_py;
use pyo3::prelude::*;
use std::collections::BTreeMap;

/// The command and environment of `torchrun` starting `script` with `args` on `gpus` GPUs.
#[pyfunction]
#[pyo3(signature = (script, gpus, args, *, master_addr=None, master_port=None, program=None))]
pub fn torchrun_workload(
    py: Python<'_>,
    script: String,
    gpus: u32,
    args: Vec<String>,
    master_addr: Option<String>,
    master_port: Option<u16>,
    program: Option<Vec<String>>,
) -> PyResult<(Vec<String>, BTreeMap<String, String>)> {
    let mut t = spheron::Torchrun::new(script, gpus).args(args);
    if let Some(a) = master_addr {
        t = t.master_addr(a);
    }
    if let Some(p) = master_port {
        t = t.master_port(p);
    }
    if let Some(p) = program {
        t = t.program(p);
    }
    let w = t.workload().map_err(|e| to_py(py, None, e))?;
    Ok((w.command, w.env))
}
