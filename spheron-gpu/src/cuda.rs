//! The CUDA prover (feature `cuda`): NVRTC kernels for the matrix PRF and BLAKE3 hashing
//! (`cuda_kernels.cu`), cuBLAS `GemmEx` with FP16 or BF16 inputs and FP32 accumulation.
//!
//! CUDA is loaded dynamically (cudarc `dynamic-loading`): this module builds on machines with
//! no GPU and no CUDA toolkit, and [`CudaProver::new`] returns
//! [`Error::CudaUnavailable`] where the driver, NVRTC or cuBLAS libraries or a device are
//! missing. Nothing here panics on a missing library: presence is checked before first use.
//!
//! Per challenge the device holds `B` (FP16, shared by every product), one `A_k` and one `C_k`
//! (FP32) at a time, the leaf hashes of one product and every level of the row-hash tree.
//! `C_k` is not kept: an opening recomputes each sampled row as `A_k[i, :] B` with a one-column
//! GEMM. Device-to-host traffic is the root, the sampled rows and their path nodes only.
//!
//! **Not measured.** This SDK was built without GPU access: the kernels' logic is checked on the
//! CPU (`tests/cuda_kernels_on_cpu.rs` compiles the same source as C++ and reproduces the CPU
//! prover's commitments bit for bit), and `tests/cuda_prover.rs` compares this prover with the
//! CPU prover and times it when a GPU is present; neither its correctness on a device nor its
//! throughput has been observed yet.
#![allow(unsafe_code)] // kernel launches and cuBLAS calls are `unsafe` in cudarc.

use crate::cpu::check_challenge;
use crate::error::{Error, Result};
use crate::merkle::Hash;
use crate::prf;
use async_trait::async_trait;
use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys as blas_sys;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig,
    PushKernelArg,
};
use spheron_core::proof::{
    Challenge, ChallengeProver, Commitment, Dtype, OpenedRow, Opening, PROTOCOL_VERSION, Reveal,
};
use std::sync::{Arc, Mutex};

/// The kernel source, compiled with NVRTC at [`CudaProver::new`].
pub const KERNELS: &str = include_str!("cuda_kernels.cu");

/// Largest `n` the CUDA prover accepts.
pub const CUDA_MAX_N: u32 = 32_768;

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
    hash_leaves: CudaFunction,
    fold_rows: CudaFunction,
    tree_level: CudaFunction,
}

struct Session {
    challenge: Challenge,
    /// `B` as FP16/BF16 bit patterns, kept for openings.
    b: CudaSlice<u16>,
    /// Every level of the tree over row hashes (8 words per node), leaves first.
    levels: Vec<CudaSlice<u32>>,
    widths: Vec<u64>,
}

/// The CUDA prover. One challenge at a time per prover (a mutex serialises them).
pub struct CudaProver {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Kernels,
    device: String,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for CudaProver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaProver")
            .field("device", &self.device)
            .finish()
    }
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
            session: Mutex::new(None),
        })
    }

    /// The driver's device name (reported in commitments as a hint).
    pub fn device_name(&self) -> &str {
        &self.device
    }

    #[allow(clippy::too_many_arguments)] // mirrors the kernel's signature
    fn generate(
        &self,
        out: &mut CudaSlice<u16>,
        s: &[u64; 4],
        n: u32,
        id: u64,
        row0: u32,
        rows: u32,
        bf16: u32,
    ) -> Result<()> {
        let words = prf::words_per_row(n as usize) as u64 * u64::from(rows);
        let mut b = self.stream.launch_builder(&self.kernels.gen_matrix);
        b.arg(out)
            .arg(&s[0])
            .arg(&s[1])
            .arg(&s[2])
            .arg(&s[3])
            .arg(&n)
            .arg(&id)
            .arg(&row0)
            .arg(&rows)
            .arg(&bf16);
        // SAFETY: the kernel writes rows * n u16 values; `out` holds at least that many
        // (checked by the callers' allocations) and every argument matches the signature.
        unsafe { b.launch(grid(words)?) }.map_err(|e| cuda_err("gen_matrix")(&e))?;
        Ok(())
    }

    /// Column-major `out (m x 1 or m x m) = lhs (m x m) * rhs (m x cols)`, FP16/BF16 in,
    /// FP32 out and accumulation. With row-major buffers this computes `rhs_rows * lhs`.
    fn gemm(
        &self,
        lhs: &CudaSlice<u16>,
        rhs: &CudaSlice<u16>,
        out: &mut CudaSlice<f32>,
        n: u32,
        cols: u32,
        dtype: Dtype,
    ) -> Result<()> {
        let in_type = match dtype {
            Dtype::Bf16 => blas_sys::cudaDataType::CUDA_R_16BF,
            _ => blas_sys::cudaDataType::CUDA_R_16F,
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        let ni = n as i32;
        let (a, _ga) = lhs.device_ptr(&self.stream);
        let (b, _gb) = rhs.device_ptr(&self.stream);
        let (c, _gc) = out.device_ptr_mut(&self.stream);
        // SAFETY: `lhs` is n x n, `rhs` n x cols and `out` n x cols elements of the stated
        // types (allocated by the callers); pointers stay valid while the guards live.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                ni,
                cols as i32,
                ni,
                (&alpha) as *const f32 as *const _,
                a as *const _,
                in_type,
                ni,
                b as *const _,
                in_type,
                ni,
                (&beta) as *const f32 as *const _,
                c as *mut _,
                blas_sys::cudaDataType::CUDA_R_32F,
                ni,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
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
        let nn = u64::from(n) * u64::from(n);
        let bf16 = u32::from(ch.dtype == Dtype::Bf16);
        let s = prf::seed_words(&ch.seed);
        let st = &self.stream;
        let alloc = |what: &'static str| move |e: cudarc::driver::DriverError| cuda_err(what)(&e);
        let mut b = st
            .alloc_zeros::<u16>(nn as usize)
            .map_err(alloc("alloc B"))?;
        let mut a = st
            .alloc_zeros::<u16>(nn as usize)
            .map_err(alloc("alloc A"))?;
        let mut c = st
            .alloc_zeros::<f32>(nn as usize)
            .map_err(alloc("alloc C"))?;
        let lpr = u64::from(n).div_ceil(256);
        let mut leaves = st
            .alloc_zeros::<u32>((lpr * u64::from(n) * 8) as usize)
            .map_err(alloc("alloc leaves"))?;
        let total_rows = u64::from(ch.batch) * u64::from(n);
        let mut rows = st
            .alloc_zeros::<u32>((total_rows * 8) as usize)
            .map_err(alloc("alloc rows"))?;
        self.generate(&mut b, &s, n, prf::B_ID, 0, n, bf16)?;
        for k in 0..ch.batch {
            self.generate(&mut a, &s, n, prf::a_id(k), 0, n, bf16)?;
            // Row-major C = A B is column-major C^T = B^T A^T: lhs = B's buffer, rhs = A's.
            self.gemm(&b, &a, &mut c, n, n, ch.dtype)?;
            let mut l = st.launch_builder(&self.kernels.hash_leaves);
            l.arg(&c).arg(&mut leaves).arg(&n).arg(&n);
            // SAFETY: c holds n * n floats, leaves lpr * n * 8 words.
            unsafe { l.launch(grid(lpr * u64::from(n))?) }
                .map_err(|e| cuda_err("hash_leaves")(&e))?;
            let first_row = u64::from(k) * u64::from(n);
            let mut f = st.launch_builder(&self.kernels.fold_rows);
            f.arg(&mut leaves)
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
            t.arg(prev).arg(&mut next).arg(&w);
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
        let n = ch.n;
        let bf16 = u32::from(ch.dtype == Dtype::Bf16);
        let seed = prf::seed_words(&ch.seed);
        let st = &self.stream;
        let mut a_row = st
            .alloc_zeros::<u16>(n as usize)
            .map_err(|e| cuda_err("alloc row")(&e))?;
        let mut c_row = st
            .alloc_zeros::<f32>(n as usize)
            .map_err(|e| cuda_err("alloc row")(&e))?;
        let mut rows = Vec::with_capacity(reveal.samples.len());
        for sample in &reveal.samples {
            if sample.k >= ch.batch || sample.row >= n {
                return Err(Error::Cuda {
                    op: "open",
                    reason: format!("sample {sample:?} outside batch {} x n {n}", ch.batch),
                });
            }
            self.generate(
                &mut a_row,
                &seed,
                n,
                prf::a_id(sample.k),
                sample.row,
                1,
                bf16,
            )?;
            // Row-major a_row (1 x n) * B is column-major B^T a: lhs = B's buffer, one column.
            self.gemm(&s.b, &a_row, &mut c_row, n, 1, ch.dtype)?;
            let values: Vec<i32> = st
                .clone_dtoh(&c_row)
                .map_err(|e| cuda_err("copy row")(&e))?
                .into_iter()
                .map(|v| v as i32)
                .collect();
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
        // The device work blocks this thread; challenges are rare and a proof holds the GPU
        // anyway, so `block_in_place` keeps the code simple on multi-thread runtimes.
        let run = || -> Result<Commitment> {
            let session = self.commit_blocking(ch)?;
            let top = session
                .levels
                .last()
                .ok_or_else(|| cuda_err("root")(&"empty tree"))?;
            let root = self.node(top, 0)?;
            *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(session);
            Ok(Commitment {
                version: PROTOCOL_VERSION,
                session: ch.session,
                root,
                device: Some(self.device.clone()),
            })
        };
        Ok(block(run)?)
    }

    async fn open(&self, reveal: &Reveal) -> spheron_core::Result<Opening> {
        let run = || -> Result<Opening> {
            let guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
            let s = guard
                .as_ref()
                .filter(|s| s.challenge.session == reveal.session)
                .ok_or_else(|| Error::Cuda {
                    op: "open",
                    reason: "reveal for an unknown session".into(),
                })?;
            self.open_blocking(s, reveal)
        };
        Ok(block(run)?)
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
