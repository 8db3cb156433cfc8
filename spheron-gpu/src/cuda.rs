//! The CUDA prover (feature `cuda`): NVRTC kernels for the matrix PRF and keyed BLAKE3 hashing
//! (`cuda_kernels.cu`), cuBLAS `cublasGemmEx` with `CUDA_R_8I` inputs, `CUDA_R_32I` outputs
//! and `CUBLAS_COMPUTE_32I` (INT8 tensor cores, exact int32 accumulation).
//!
//! CUDA is loaded dynamically (cudarc `dynamic-loading`): this module builds on machines with
//! no GPU and no CUDA toolkit, and [`CudaProver::new`] returns
//! [`Error::CudaUnavailable`] where the driver, NVRTC or cuBLAS libraries or a device are
//! missing. Nothing here panics on a missing library: presence is checked before first use.
//!
//! Per challenge the device holds `B` (int8, shared by every product), one `A_k` (int8) and one
//! `C_k` (int32) at a time, the leaf hashes of one product and every level of the row-hash
//! tree. `C_k` is not kept: an opening recomputes each sampled row as `A_k[i, :] B` with a
//! small exact kernel. Device-to-host traffic is the root, the sampled rows and their path
//! nodes only. `n` must be a multiple of 4 (cuBLAS int8 leading dimensions).
//!
//! Sessions: a table with a TTL ([`crate::cpu::Sessions`]); one commit runs at a time (the
//! device does one GEMM stream), a second concurrent challenge is answered
//! [`spheron_core::Error::ProverBusy`] and retried by the verifier, and up to
//! [`CUDA_SESSIONS`] commitments wait for their reveal. The provider node signs commitments
//! ([`crate::binding::SignedProver`]).
//!
//! **Not measured.** This SDK was built without GPU access: the kernels' logic is checked on the
//! CPU (`tests/cuda_kernels_on_cpu.rs` compiles the same source as C++ and reproduces the CPU
//! prover's commitments bit for bit), and `tests/cuda_prover.rs` compares this prover with the
//! CPU prover and times it when a GPU is present; neither its correctness on a device nor its
//! throughput has been observed yet.
#![allow(unsafe_code)] // kernel launches and cuBLAS calls are `unsafe` in cudarc.

use crate::binding;
use crate::cpu::{Capacity, Sessions, check_challenge, check_reveal};
use crate::error::{Error, Result};
use crate::merkle::{Hash, TreeKey};
use crate::prf;
use async_trait::async_trait;
use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys as blas_sys;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig,
    PushKernelArg,
};
use spheron_core::proof::{
    Challenge, ChallengeProver, Commitment, OpenedRow, Opening, PROTOCOL_VERSION, Reveal,
};
use std::sync::{Arc, Mutex};

/// The kernel source, compiled with NVRTC at [`CudaProver::new`].
pub const KERNELS: &str = include_str!("cuda_kernels.cu");

/// Largest `n` the CUDA prover accepts.
pub const CUDA_MAX_N: u32 = 32_768;

/// Sessions a CUDA prover holds at once (one computing, the others awaiting their reveal).
pub const CUDA_SESSIONS: usize = 3;

const THREADS: u32 = 256;

fn cuda_err(op: &'static str) -> impl Fn(&dyn std::fmt::Display) -> Error {
    move |e| Error::Cuda {
        op,
        reason: e.to_string(),
    }
}

fn grid(threads: u64) -> Result<LaunchConfig> {
    let blocks = threads.div_ceil(u64::from(THREADS)).max(1);
    let blocks = u32::try_from(blocks).map_err(|_| Error::Cuda {
        op: "launch",
        reason: format!("{threads} threads exceed the grid limit"),
    })?;
    Ok(LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Whether the CUDA driver, NVRTC and cuBLAS libraries can be loaded on this machine.
pub fn libraries_present() -> bool {
    // SAFETY: these only try to open the shared libraries by name.
    unsafe {
        cudarc::driver::sys::is_culib_present()
            && cudarc::nvrtc::sys::is_culib_present()
            && cudarc::cublas::sys::is_culib_present()
    }
}

struct Kernels {
    gen_matrix: CudaFunction,
    row_times_b: CudaFunction,
    hash_leaves: CudaFunction,
    fold_rows: CudaFunction,
    tree_level: CudaFunction,
}

struct Session {
    challenge: Challenge,
    /// `B` as int8 entries, four per u32 word, kept for openings.
    b: CudaSlice<u32>,
    /// Every level of the tree over row hashes (8 words per node), leaves first.
    levels: Vec<CudaSlice<u32>>,
    widths: Vec<u64>,
}

/// The CUDA prover.
pub struct CudaProver {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Kernels,
    device: String,
    /// Serialises device work (the handle and stream are shared).
    device_lock: Mutex<()>,
    sessions: Sessions<Session>,
}

impl std::fmt::Debug for CudaProver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaProver")
            .field("device", &self.device)
            .finish()
    }
}

fn key_words(key: &TreeKey) -> Vec<u32> {
    key.leaf
        .chunks(4)
        .chain(key.node.chunks(4))
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl CudaProver {
    /// Opens device `ordinal`, compiles the kernels and creates a cuBLAS handle.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !libraries_present() {
            return Err(Error::CudaUnavailable(
                "the CUDA driver (libcuda), NVRTC or cuBLAS library could not be loaded".into(),
            ));
        }
        // A library of an unexpected version can lack a symbol cudarc resolves lazily (and
        // panics on); turn that into the typed error too.
        std::panic::catch_unwind(|| Self::open(ordinal)).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "CUDA initialisation panicked".into());
            Err(Error::CudaUnavailable(msg))
        })
    }

    fn open(ordinal: usize) -> Result<Self> {
        let count = CudaContext::device_count()
            .map_err(|e| Error::CudaUnavailable(format!("no CUDA device: {e}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::CudaUnavailable(format!(
                "device {ordinal} requested, {count} present"
            )));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| Error::CudaUnavailable(format!("device {ordinal}: {e}")))?;
        let device = ctx.name().map_err(|e| cuda_err("device name")(&e))?;
        let ptx = cudarc::nvrtc::compile_ptx(KERNELS).map_err(|e| cuda_err("nvrtc")(&e))?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| cuda_err("load module")(&e))?;
        let f = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| cuda_err("load function")(&e))
        };
        let kernels = Kernels {
            gen_matrix: f("gen_matrix")?,
            row_times_b: f("row_times_b")?,
            hash_leaves: f("hash_leaves")?,
            fold_rows: f("fold_rows")?,
            tree_level: f("tree_level")?,
        };
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| cuda_err("cublas init")(&e))?;
        Ok(CudaProver {
            stream,
            blas,
            kernels,
            device,
            device_lock: Mutex::new(()),
            sessions: Sessions::new(Capacity {
                sessions: CUDA_SESSIONS,
                commits: 1,
                ..Capacity::default()
            }),
        })
    }

    /// The driver's device name (reported in commitments as a hint).
    pub fn device_name(&self) -> &str {
        &self.device
    }

    #[allow(clippy::too_many_arguments)] // mirrors the kernel's signature
    fn generate(
        &self,
        out: &mut CudaSlice<u32>,
        s: &[u64; 4],
        n: u32,
        id: u64,
        row0: u32,
        rows: u32,
    ) -> Result<()> {
        let words = u64::from(n / 4) * u64::from(rows);
        let mut b = self.stream.launch_builder(&self.kernels.gen_matrix);
        b.arg(out)
            .arg(&s[0])
            .arg(&s[1])
            .arg(&s[2])
            .arg(&s[3])
            .arg(&n)
            .arg(&id)
            .arg(&row0)
            .arg(&rows);
        // SAFETY: the kernel writes rows * n / 4 u32 words; `out` holds at least that many
        // (checked by the callers' allocations) and every argument matches the signature.
        unsafe { b.launch(grid(words)?) }.map_err(|e| cuda_err("gen_matrix")(&e))?;
        Ok(())
    }

    /// Column-major `out (n x n) = lhs (n x n) * rhs (n x n)`, int8 in, int32 out and
    /// accumulation (`CUBLAS_COMPUTE_32I`). With row-major buffers this computes `rhs * lhs`.
    fn gemm(
        &self,
        lhs: &CudaSlice<u32>,
        rhs: &CudaSlice<u32>,
        out: &mut CudaSlice<i32>,
        n: u32,
    ) -> Result<()> {
        let (alpha, beta) = (1i32, 0i32);
        let ni = n as i32;
        let (a, _ga) = lhs.device_ptr(&self.stream);
        let (b, _gb) = rhs.device_ptr(&self.stream);
        let (c, _gc) = out.device_ptr_mut(&self.stream);
        // SAFETY: `lhs` and `rhs` hold n x n int8 entries (n * n / 4 words), `out` n x n
        // int32 values (allocated by the callers); n is a multiple of 4 as cuBLAS requires for
        // int8 leading dimensions; alpha and beta are int32 as CUBLAS_COMPUTE_32I requires;
        // pointers stay valid while the guards live.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                ni,
                ni,
                ni,
                (&alpha) as *const i32 as *const _,
                a as *const _,
                blas_sys::cudaDataType::CUDA_R_8I,
                ni,
                b as *const _,
                blas_sys::cudaDataType::CUDA_R_8I,
                ni,
                (&beta) as *const i32 as *const _,
                c as *mut _,
                blas_sys::cudaDataType::CUDA_R_32I,
                ni,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32I,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
            )
        }
        .map_err(|e| cuda_err("cublasGemmEx")(&e))
    }

    fn commit_blocking(&self, ch: &Challenge) -> Result<Session> {
        check_challenge(ch, CUDA_MAX_N).map_err(|e| Error::Cuda {
            op: "challenge",
            reason: e.to_string(),
        })?;
        let n = ch.n;
        if !n.is_multiple_of(4) {
            return Err(Error::Cuda {
                op: "challenge",
                reason: format!("n = {n} is not a multiple of 4 (cuBLAS int8 GEMM)"),
            });
        }
        let _device = self.device_lock.lock().unwrap_or_else(|p| p.into_inner());
        let nn = u64::from(n) * u64::from(n);
        let s = prf::seed_words(&ch.seed);
        let st = &self.stream;
        let alloc = |what: &'static str| move |e: cudarc::driver::DriverError| cuda_err(what)(&e);
        let keys = st
            .clone_htod(&key_words(&binding::tree_key(ch)))
            .map_err(alloc("copy keys"))?;
        let mut b = st
            .alloc_zeros::<u32>((nn / 4) as usize)
            .map_err(alloc("alloc B"))?;
        let mut a = st
            .alloc_zeros::<u32>((nn / 4) as usize)
            .map_err(alloc("alloc A"))?;
        let mut c = st
            .alloc_zeros::<i32>(nn as usize)
            .map_err(alloc("alloc C"))?;
        let lpr = u64::from(n).div_ceil(256);
        let mut leaves = st
            .alloc_zeros::<u32>((lpr * u64::from(n) * 8) as usize)
            .map_err(alloc("alloc leaves"))?;
        let total_rows = u64::from(ch.batch) * u64::from(n);
        let mut rows = st
            .alloc_zeros::<u32>((total_rows * 8) as usize)
            .map_err(alloc("alloc rows"))?;
        self.generate(&mut b, &s, n, prf::B_ID, 0, n)?;
        for k in 0..ch.batch {
            self.generate(&mut a, &s, n, prf::a_id(k), 0, n)?;
            // Row-major C = A B is column-major C^T = B^T A^T: lhs = B's buffer, rhs = A's.
            self.gemm(&b, &a, &mut c, n)?;
            let mut l = st.launch_builder(&self.kernels.hash_leaves);
            l.arg(&keys).arg(&c).arg(&mut leaves).arg(&n).arg(&n);
            // SAFETY: keys holds 16 words, c n * n int32 values, leaves lpr * n * 8 words.
            unsafe { l.launch(grid(lpr * u64::from(n))?) }
                .map_err(|e| cuda_err("hash_leaves")(&e))?;
            let first_row = u64::from(k) * u64::from(n);
            let mut f = st.launch_builder(&self.kernels.fold_rows);
            f.arg(&keys)
                .arg(&mut leaves)
                .arg(&mut rows)
                .arg(&n)
                .arg(&n)
                .arg(&first_row);
            // SAFETY: rows holds batch * n * 8 words; this writes rows first_row..first_row+n.
            unsafe { f.launch(grid(u64::from(n))?) }.map_err(|e| cuda_err("fold_rows")(&e))?;
        }
        let mut levels = vec![rows];
        let mut widths = vec![total_rows];
        while let Some(&w) = widths.last().filter(|&&w| w > 1) {
            let parents = w.div_ceil(2);
            let mut next = st
                .alloc_zeros::<u32>((parents * 8) as usize)
                .map_err(alloc("alloc tree"))?;
            let prev = levels.last().ok_or_else(|| cuda_err("tree")(&"empty"))?;
            let mut t = st.launch_builder(&self.kernels.tree_level);
            t.arg(&keys).arg(prev).arg(&mut next).arg(&w);
            // SAFETY: prev holds w nodes, next (w + 1) / 2 nodes of 8 words.
            unsafe { t.launch(grid(parents)?) }.map_err(|e| cuda_err("tree_level")(&e))?;
            levels.push(next);
            widths.push(parents);
        }
        st.synchronize().map_err(|e| cuda_err("synchronize")(&e))?;
        Ok(Session {
            challenge: ch.clone(),
            b,
            levels,
            widths,
        })
    }

    fn node(&self, level: &CudaSlice<u32>, index: u64) -> Result<Hash> {
        let start = (index * 8) as usize;
        let words = self
            .stream
            .clone_dtoh(&level.slice(start..start + 8))
            .map_err(|e| cuda_err("copy node")(&e))?;
        let mut h = [0u8; 32];
        for (chunk, w) in h.chunks_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        Ok(h)
    }

    fn open_blocking(&self, s: &Session, reveal: &Reveal) -> Result<Opening> {
        let ch = &s.challenge;
        check_reveal(ch, reveal).map_err(|e| Error::Cuda {
            op: "open",
            reason: e.to_string(),
        })?;
        let _device = self.device_lock.lock().unwrap_or_else(|p| p.into_inner());
        let n = ch.n;
        let seed = prf::seed_words(&ch.seed);
        let st = &self.stream;
        let mut a_row = st
            .alloc_zeros::<u32>((n / 4) as usize)
            .map_err(|e| cuda_err("alloc row")(&e))?;
        let mut c_row = st
            .alloc_zeros::<i32>(n as usize)
            .map_err(|e| cuda_err("alloc row")(&e))?;
        let mut rows = Vec::with_capacity(reveal.samples.len());
        for sample in &reveal.samples {
            self.generate(&mut a_row, &seed, n, prf::a_id(sample.k), sample.row, 1)?;
            let mut l = st.launch_builder(&self.kernels.row_times_b);
            l.arg(&a_row).arg(&s.b).arg(&mut c_row).arg(&n);
            // SAFETY: a_row holds n int8 entries, B n * n, c_row n int32 values.
            unsafe { l.launch(grid(u64::from(n))?) }.map_err(|e| cuda_err("row_times_b")(&e))?;
            let values: Vec<i32> = st
                .clone_dtoh(&c_row)
                .map_err(|e| cuda_err("copy row")(&e))?;
            let mut index = u64::from(sample.k) * u64::from(n) + u64::from(sample.row);
            let mut path = Vec::new();
            for (level, &width) in s.levels.iter().zip(&s.widths) {
                if width <= 1 {
                    break;
                }
                let sib = index ^ 1;
                if sib < width {
                    path.push(self.node(level, sib)?);
                }
                index /= 2;
            }
            rows.push(OpenedRow {
                sample: *sample,
                values,
                path,
            });
        }
        Ok(Opening {
            version: PROTOCOL_VERSION,
            session: reveal.session,
            rows,
        })
    }
}

#[async_trait]
impl ChallengeProver for CudaProver {
    async fn commit(&self, ch: &Challenge) -> spheron_core::Result<Commitment> {
        // Released on every error path when it drops.
        let reserved = self.sessions.begin(ch.session)?;
        // The device work blocks this thread; a proof holds the GPU anyway, so
        // `block_in_place` keeps the code simple on multi-thread runtimes.
        let session = block(|| self.commit_blocking(ch))?;
        let top = session
            .levels
            .last()
            .ok_or_else(|| cuda_err("root")(&"empty tree"))?;
        let root = self.node(top, 0)?;
        reserved.finish(session);
        Ok(Commitment {
            version: PROTOCOL_VERSION,
            session: ch.session,
            root,
            device: Some(self.device.clone()),
            signature: None,
        })
    }

    async fn open(&self, reveal: &Reveal) -> spheron_core::Result<Opening> {
        let s = self.sessions.take(&reveal.session)?;
        Ok(block(|| self.open_blocking(&s, reveal))?)
    }
}

fn block<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
