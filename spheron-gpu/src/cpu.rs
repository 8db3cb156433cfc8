//! The CPU reference prover: any `n`, exact integer arithmetic. Tests and the embedded
//! marketplace use it with small `n`; it is also what the CUDA prover is checked against.

use crate::merkle::{self, Hash};
use crate::prf;
use async_trait::async_trait;
use spheron_core::proof::{
    Challenge, ChallengeProver, Commitment, OpenedRow, Opening, PROTOCOL_VERSION, ProductVector,
    Reveal,
};
use spheron_core::{Error, Result};
use std::sync::Mutex;

/// Largest `n` the CPU prover accepts (it is O(n^3) per product).
pub const CPU_MAX_N: u32 = 2048;

/// `C = A B` for row-major `n x n` integer matrices.
pub fn matmul(a: &[i32], b: &[i32], n: usize) -> Vec<i32> {
    let mut c = vec![0i32; n * n];
    for i in 0..n {
        let row = &mut c[i * n..(i + 1) * n];
        for (l, &av) in a[i * n..(i + 1) * n].iter().enumerate() {
            if av == 0 {
                continue;
            }
            for (cj, &bv) in row.iter_mut().zip(&b[l * n..(l + 1) * n]) {
                *cj += av * bv;
            }
        }
    }
    c
}

/// `M v` for a row-major `n x n` matrix.
pub fn matvec(m: &[i32], v: &[i64], n: usize) -> Vec<i64> {
    m.chunks(n)
        .map(|row| row.iter().zip(v).map(|(&a, &b)| i64::from(a) * b).sum())
        .collect()
}

/// The products of a challenge, computed from its seed.
pub fn products(ch: &Challenge) -> Vec<Vec<i32>> {
    let s = prf::seed_words(&ch.seed);
    let n = ch.n as usize;
    (0..ch.batch as usize)
        .map(|k| matmul(&prf::matrix(&s, n, k, 0), &prf::matrix(&s, n, k, 1), n))
        .collect()
}

/// Row hashes of all products in commitment order.
pub fn row_hashes(products: &[Vec<i32>], n: usize) -> Vec<Hash> {
    products
        .iter()
        .flat_map(|c| c.chunks(n).map(merkle::row_hash))
        .collect()
}

/// Checks that a challenge is within what provers accept.
pub fn check_challenge(ch: &Challenge, max_n: u32) -> Result<()> {
    if ch.version != PROTOCOL_VERSION {
        return Err(Error::Prover(format!(
            "unsupported protocol version {}",
            ch.version
        )));
    }
    if ch.n == 0 || ch.n > max_n {
        return Err(Error::Prover(format!("n = {} outside 1..={max_n}", ch.n)));
    }
    if ch.batch == 0 || ch.batch > 64 {
        return Err(Error::Prover(format!(
            "batch = {} outside 1..=64",
            ch.batch
        )));
    }
    Ok(())
}

/// A deliberate misbehaviour, for tests and the failover demonstration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Honest.
    #[default]
    None,
    /// Corrupts one entry of every product (a broken or fake GPU).
    CorruptProducts,
}

struct Session {
    challenge: Challenge,
    products: Vec<Vec<i32>>,
    rows: Vec<Hash>,
}

/// The CPU reference prover.
pub struct CpuProver {
    fault: Fault,
    device: Option<String>,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for CpuProver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuProver")
            .field("fault", &self.fault)
            .finish()
    }
}

impl CpuProver {
    /// An honest prover reporting `device` as its driver's device name (a hint only).
    pub fn new(device: Option<String>) -> Self {
        CpuProver {
            fault: Fault::None,
            device,
            session: Mutex::new(None),
        }
    }

    /// A prover with a fault.
    pub fn with_fault(device: Option<String>, fault: Fault) -> Self {
        CpuProver {
            fault,
            ..CpuProver::new(device)
        }
    }
}

#[async_trait]
impl ChallengeProver for CpuProver {
    async fn commit(&self, ch: &Challenge) -> Result<Commitment> {
        check_challenge(ch, CPU_MAX_N)?;
        let n = ch.n as usize;
        let mut products = products(ch);
        if self.fault == Fault::CorruptProducts {
            for c in &mut products {
                c[n + 1] = c[n + 1].wrapping_add(1);
            }
        }
        let rows = row_hashes(&products, n);
        let root = merkle::root(&rows);
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(Session {
            challenge: ch.clone(),
            products,
            rows,
        });
        Ok(Commitment {
            version: PROTOCOL_VERSION,
            session: ch.session,
            root,
            device: self.device.clone(),
        })
    }

    async fn open(&self, reveal: &Reveal) -> Result<Opening> {
        let guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let s = guard
            .as_ref()
            .filter(|s| s.challenge.session == reveal.session)
            .ok_or_else(|| Error::Prover("reveal for an unknown session".into()))?;
        let n = s.challenge.n as usize;
        let r = prf::r_vector(&reveal.r_seed, n);
        let mut ks: Vec<u32> = reveal.samples.iter().map(|x| x.k).collect();
        ks.sort_unstable();
        ks.dedup();
        let mut products = Vec::new();
        for k in ks {
            let c = s
                .products
                .get(k as usize)
                .ok_or_else(|| Error::Prover(format!("product {k} out of range")))?;
            products.push(ProductVector {
                k,
                values: matvec(c, &r, n),
            });
        }
        let mut rows = Vec::new();
        for sample in &reveal.samples {
            let (k, i) = (sample.k as usize, sample.row as usize);
            if k >= s.products.len() || i >= n {
                return Err(Error::Prover(format!("sample {sample:?} out of range")));
            }
            rows.push(OpenedRow {
                sample: *sample,
                values: s.products[k][i * n..(i + 1) * n].to_vec(),
                path: merkle::path(&s.rows, k * n + i),
            });
        }
        Ok(Opening {
            version: PROTOCOL_VERSION,
            session: reveal.session,
            products,
            rows,
        })
    }
}
