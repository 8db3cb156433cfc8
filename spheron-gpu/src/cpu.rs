//! The CPU reference prover: any `n` up to [`CPU_MAX_N`], exact integer arithmetic. Tests and
//! the embedded marketplace use it with small `n`; the CUDA prover is checked against it.
//!
//! A [`CpuProver`] can be *paced* ([`CpuProver::paced`]) so that its commitment never arrives
//! sooner than a given rate allows: that is how a simulated fleet makes a CPU behave like an
//! H100 or a T4 at a scaled-down rate (see [`crate::Simulation`]). It can also be given a
//! [`Fault`] to play a cheating or broken provider in tests.

use crate::binding;
use crate::merkle::{self, Hash, TreeKey};
use crate::prf;
use async_trait::async_trait;
use spheron_core::proof::{
    Challenge, ChallengeProver, Commitment, Dtype, OpenedRow, Opening, PROTOCOL_VERSION, Reveal,
};
use spheron_core::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest `n` the CPU prover accepts (it is O(K n^3)).
pub const CPU_MAX_N: u32 = 2048;

/// Largest `K n^2` (product entries held) the CPU prover accepts: 64 Mi values, 256 MiB.
pub const CPU_MAX_VALUES: u64 = 1 << 26;

/// Largest batch `K` any prover accepts.
pub const MAX_BATCH: u32 = 1024;

/// Most rows a prover opens for one reveal.
pub const MAX_SAMPLES: u32 = 256;

/// `C = A B` for row-major `n x n` int8-valued matrices, int32 accumulation.
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

/// The products `C_k = A_k B` of a challenge, computed from its seed.
pub fn products(ch: &Challenge) -> Vec<Vec<i32>> {
    let s = prf::seed_words(&ch.seed);
    let n = ch.n as usize;
    let b = prf::matrix(&s, n, prf::B_ID);
    (0..ch.batch)
        .map(|k| matmul(&prf::matrix(&s, n, prf::a_id(k)), &b, n))
        .collect()
}

/// Row hashes of all products in commitment order (product 0's rows, then product 1's, ...).
pub fn row_hashes(key: &TreeKey, products: &[Vec<i32>], n: usize) -> Vec<Hash> {
    products
        .iter()
        .flat_map(|c| c.chunks(n).map(|r| merkle::row_hash(key, r)))
        .collect()
}

/// Useful work of a challenge in integer operations: `2 n^3 K`.
pub fn challenge_flops(ch: &Challenge) -> f64 {
    2.0 * f64::from(ch.n).powi(3) * f64::from(ch.batch)
}

/// Checks that a challenge is within what a prover accepts.
pub fn check_challenge(ch: &Challenge, max_n: u32) -> Result<()> {
    if ch.version != PROTOCOL_VERSION {
        return Err(Error::Prover(format!(
            "unsupported protocol version {} (this prover speaks {PROTOCOL_VERSION})",
            ch.version
        )));
    }
    if ch.dtype != Dtype::Int8 {
        return Err(Error::Prover(format!(
            "unsupported dtype {:?} (this prover computes Int8 challenges)",
            ch.dtype
        )));
    }
    if ch.n == 0 || ch.n > max_n.min(prf::MAX_EXACT_N) {
        return Err(Error::Prover(format!(
            "challenge n = {} outside 1..={}",
            ch.n,
            max_n.min(prf::MAX_EXACT_N)
        )));
    }
    if ch.batch == 0 || ch.batch > MAX_BATCH {
        return Err(Error::Prover(format!(
            "challenge batch = {} outside 1..={MAX_BATCH}",
            ch.batch
        )));
    }
    Ok(())
}

/// Checks a reveal against the session it opens.
pub fn check_reveal(ch: &Challenge, reveal: &Reveal) -> Result<()> {
    if reveal.version != PROTOCOL_VERSION {
        return Err(Error::Prover(format!(
            "unsupported protocol version {} in the reveal",
            reveal.version
        )));
    }
    if reveal.samples.len() > MAX_SAMPLES as usize {
        return Err(Error::Prover(format!(
            "{} samples asked, at most {MAX_SAMPLES} are opened",
            reveal.samples.len()
        )));
    }
    if let Some(s) = reveal
        .samples
        .iter()
        .find(|s| s.k >= ch.batch || s.row >= ch.n)
    {
        return Err(Error::Prover(format!(
            "sample (k = {}, row = {}) outside batch {} x n {}",
            s.k, s.row, ch.batch, ch.n
        )));
    }
    Ok(())
}

/// How many challenges a prover holds at once and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Sessions held at once (commits in progress plus commitments awaiting their reveal);
    /// beyond that a commit is answered with [`Error::ProverBusy`].
    pub sessions: usize,
    /// Commits computed at once (at most `sessions`); a further commit is answered
    /// [`Error::ProverBusy`]. A GPU computes one at a time.
    pub commits: usize,
    /// How long a committed session waits for its reveal before it is dropped.
    pub ttl: Duration,
    /// The wait a busy answer asks for.
    pub retry_after: Duration,
}

impl Default for Capacity {
    /// 4 sessions, 4 concurrent commits (CPU threads), 120 s to reveal, retry after 500 ms.
    fn default() -> Self {
        Capacity {
            sessions: 4,
            commits: 4,
            ttl: Duration::from_secs(120),
            retry_after: Duration::from_millis(500),
        }
    }
}

/// A session reserved by [`Sessions::begin`].
#[derive(Debug)]
pub struct Reservation<'a, S> {
    table: &'a Sessions<S>,
    session: [u8; 16],
    done: bool,
}

impl<S> Reservation<'_, S> {
    /// Stores the committed state, for the reveal.
    pub fn finish(mut self, state: S) {
        self.done = true;
        self.table.store(self.session, Some(state));
    }
}

impl<S> Drop for Reservation<'_, S> {
    fn drop(&mut self) {
        if !self.done {
            self.table.store(self.session, None);
        }
    }
}

/// A session table with a TTL and a capacity: the prover side of concurrent challenges.
/// `S` is what a prover keeps per committed session.
#[derive(Debug)]
pub struct Sessions<S> {
    capacity: Capacity,
    inner: Mutex<SessionTable<S>>,
}

#[derive(Debug)]
struct SessionTable<S> {
    pending: HashMap<[u8; 16], Instant>,
    ready: HashMap<[u8; 16], (Instant, Arc<S>)>,
}

impl<S> Sessions<S> {
    /// An empty table.
    pub fn new(capacity: Capacity) -> Self {
        Sessions {
            capacity,
            inner: Mutex::new(SessionTable {
                pending: HashMap::new(),
                ready: HashMap::new(),
            }),
        }
    }

    /// The capacity.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Reserves `session` for a commit: [`Error::ProverBusy`] at capacity, an error for a
    /// session id seen before (a replayed challenge). The reservation is released when the
    /// guard drops (a failed or abandoned commit) unless [`Reservation::finish`] stores the
    /// session's state.
    pub fn begin(&self, session: [u8; 16]) -> Result<Reservation<'_, S>> {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let ttl = self.capacity.ttl;
        t.ready.retain(|_, (at, _)| now.duration_since(*at) < ttl);
        t.pending
            .retain(|_, at| now.duration_since(*at) < ttl.saturating_mul(4));
        if t.pending.contains_key(&session) || t.ready.contains_key(&session) {
            return Err(Error::Prover("session already in use".into()));
        }
        if t.pending.len() + t.ready.len() >= self.capacity.sessions
            || t.pending.len() >= self.capacity.commits.max(1)
        {
            return Err(Error::ProverBusy {
                retry_after_ms: self.capacity.retry_after.as_millis() as u64,
            });
        }
        t.pending.insert(session, now);
        Ok(Reservation {
            table: self,
            session,
            done: false,
        })
    }

    fn store(&self, session: [u8; 16], state: Option<S>) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if t.pending.remove(&session).is_some()
            && let Some(s) = state
        {
            t.ready.insert(session, (Instant::now(), Arc::new(s)));
        }
    }

    /// Takes the committed state of `session` (each session opens once).
    pub fn take(&self, session: &[u8; 16]) -> Result<Arc<S>> {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match t.ready.remove(session) {
            Some((at, s)) if at.elapsed() < self.capacity.ttl => Ok(s),
            Some(_) => Err(Error::Prover("reveal after the session expired".into())),
            None => Err(Error::Prover("reveal for an unknown session".into())),
        }
    }

    /// Sessions held now (in progress and awaiting reveal).
    pub fn len(&self) -> usize {
        let t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.pending.len() + t.ready.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A deliberate misbehaviour, for tests, attack measurements and the failover demonstration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Honest.
    #[default]
    None,
    /// Every row of every product has one wrong entry (a broken or fake GPU).
    CorruptProducts,
    /// Skips this many rows per thousand (spread over all products): they are committed as
    /// zeros without being computed.
    SkipRows {
        /// Skipped rows per 1000.
        per_mille: u16,
    },
    /// Skips this many whole products per thousand: committed as zeros.
    SkipProducts {
        /// Skipped products per 1000.
        per_mille: u16,
    },
    /// Answers every challenge with the products of the first challenge it ever saw
    /// (re-labelled with the new session): a replay of an earlier answer.
    Replay,
    /// Holds the commitment back for this many extra milliseconds.
    Stall {
        /// Extra delay in milliseconds.
        ms: u32,
    },
}

struct Session {
    challenge: Challenge,
    products: Arc<Vec<Vec<i32>>>,
    tree: merkle::Tree,
}

/// The CPU reference prover.
pub struct CpuProver {
    fault: Fault,
    device: Option<String>,
    pace_flops: Option<f64>,
    sessions: Sessions<Session>,
    replay: Mutex<Option<Arc<Vec<Vec<i32>>>>>,
}

impl std::fmt::Debug for CpuProver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuProver")
            .field("fault", &self.fault)
            .field("device", &self.device)
            .field("pace_flops", &self.pace_flops)
            .field("capacity", &self.sessions.capacity())
            .finish()
    }
}

impl CpuProver {
    /// An honest prover reporting `device` as its driver's device name (a hint only),
    /// answering as fast as this CPU can, with the default [`Capacity`].
    pub fn new(device: Option<String>) -> Self {
        CpuProver {
            fault: Fault::None,
            device,
            pace_flops: None,
            sessions: Sessions::new(Capacity::default()),
            replay: Mutex::new(None),
        }
    }

    /// A prover with a fault.
    pub fn with_fault(device: Option<String>, fault: Fault) -> Self {
        CpuProver {
            fault,
            ..CpuProver::new(device)
        }
    }

    /// Paces the commitment: it is held back until `flops_per_s` would have done the
    /// challenge's work (`2 n^3 K`), so the prover looks like a device of that rate. A CPU too
    /// slow for the pace answers late, as a real slow device would. Non-positive or non-finite
    /// rates leave the prover unpaced.
    #[must_use]
    pub fn paced(mut self, flops_per_s: f64) -> Self {
        self.pace_flops = (flops_per_s.is_finite() && flops_per_s > 0.0).then_some(flops_per_s);
        self
    }

    /// How many sessions it holds at once and for how long (a capacity of 0 counts as 1).
    #[must_use]
    pub fn with_capacity(mut self, mut capacity: Capacity) -> Self {
        capacity.sessions = capacity.sessions.max(1);
        capacity.commits = capacity.commits.clamp(1, capacity.sessions);
        self.sessions = Sessions::new(capacity);
        self
    }

    /// The fault this prover plays.
    pub fn fault(&self) -> Fault {
        self.fault
    }

    /// Sessions held now.
    pub fn sessions_held(&self) -> usize {
        self.sessions.len()
    }

    async fn commit_reserved(&self, ch: &Challenge) -> Result<Session> {
        let started = Instant::now();
        let fault = self.fault;
        let replay = self
            .replay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let pace = self.pace_flops;
        let owned = ch.clone();
        let key = binding::tree_key(ch);
        // Real threads and real sleeps: the verifier times with a monotonic wall clock, so
        // pacing must too (a paused tokio test clock would otherwise make it instant).
        let work = tokio::task::spawn_blocking(move || {
            let n = owned.n as usize;
            let products = compute(&owned, fault, replay);
            let rows = row_hashes(&key, &products, n);
            let mut hold = Duration::ZERO;
            if let Some(rate) = pace {
                hold += Duration::from_secs_f64(challenge_flops(&owned) / rate);
            }
            if let Fault::Stall { ms } = fault {
                hold += Duration::from_millis(u64::from(ms));
            }
            if let Some(left) = hold.checked_sub(started.elapsed()) {
                std::thread::sleep(left);
            }
            (products, merkle::Tree::new(&key, rows))
        });
        let (products, tree) = work
            .await
            .map_err(|e| Error::Prover(format!("prover task failed: {e}")))?;
        let products = Arc::new(products);
        if fault == Fault::Replay {
            let mut r = self.replay.lock().unwrap_or_else(|p| p.into_inner());
            if r.is_none() {
                *r = Some(products.clone());
            }
        }
        Ok(Session {
            challenge: ch.clone(),
            products,
            tree,
        })
    }
}

fn skipped(index: u64, per_mille: u16, salt: u64) -> bool {
    // A fixed pseudo-random choice of which units to skip (the prover decides before the
    // challenge, so it cannot depend on the reveal).
    prf::word(&[salt, 0x5eed, 0, 0], index) % 1000 < u64::from(per_mille)
}

impl Fault {
    /// Whether this fault leaves row `i` of product `k` uncomputed in a challenge of size `n`
    /// (lets attack tests know the exact fraction skipped).
    pub fn skips(&self, k: u32, i: u32, n: u32) -> bool {
        match *self {
            Fault::SkipRows { per_mille } => {
                skipped(u64::from(k) * u64::from(n) + u64::from(i), per_mille, 2)
            }
            Fault::SkipProducts { per_mille } => skipped(u64::from(k), per_mille, 1),
            _ => false,
        }
    }
}

fn compute(ch: &Challenge, fault: Fault, replay: Option<Arc<Vec<Vec<i32>>>>) -> Vec<Vec<i32>> {
    let n = ch.n as usize;
    if let (Fault::Replay, Some(old)) = (fault, replay)
        && old.len() == ch.batch as usize
        && old.first().is_some_and(|c| c.len() == n * n)
    {
        return (*old).clone();
    }
    let s = prf::seed_words(&ch.seed);
    let b = prf::matrix(&s, n, prf::B_ID);
    let mut out = Vec::with_capacity(ch.batch as usize);
    for k in 0..ch.batch {
        let c = match fault {
            Fault::SkipProducts { .. } if fault.skips(k, 0, ch.n) => vec![0; n * n],
            Fault::SkipRows { .. } => {
                let a = prf::matrix(&s, n, prf::a_id(k));
                let mut c = vec![0i32; n * n];
                for i in 0..n {
                    if fault.skips(k, i as u32, ch.n) {
                        continue;
                    }
                    let row = matmul_row(&a[i * n..(i + 1) * n], &b, n);
                    c[i * n..(i + 1) * n].copy_from_slice(&row);
                }
                c
            }
            _ => matmul(&prf::matrix(&s, n, prf::a_id(k)), &b, n),
        };
        out.push(c);
    }
    if fault == Fault::CorruptProducts {
        for c in &mut out {
            for (i, row) in c.chunks_mut(n).enumerate() {
                let j = (i * 7 + 3) % n;
                row[j] = row[j].wrapping_add(1);
            }
        }
    }
    out
}

fn matmul_row(a_row: &[i32], b: &[i32], n: usize) -> Vec<i32> {
    let mut row = vec![0i32; n];
    for (l, &av) in a_row.iter().enumerate() {
        for (cj, &bv) in row.iter_mut().zip(&b[l * n..(l + 1) * n]) {
            *cj += av * bv;
        }
    }
    row
}

#[async_trait]
impl ChallengeProver for CpuProver {
    async fn commit(&self, ch: &Challenge) -> Result<Commitment> {
        check_challenge(ch, CPU_MAX_N)?;
        let values = u64::from(ch.batch) * u64::from(ch.n) * u64::from(ch.n);
        if values > CPU_MAX_VALUES {
            return Err(Error::Prover(format!(
                "challenge of {values} product entries; the CPU prover holds at most {CPU_MAX_VALUES}"
            )));
        }
        let reserved = self.sessions.begin(ch.session)?;
        // An error or an abandoned future drops the reservation, which frees the slot.
        let session = self.commit_reserved(ch).await?;
        let root = session.tree.root();
        reserved.finish(session);
        Ok(Commitment {
            version: PROTOCOL_VERSION,
            session: ch.session,
            root,
            device: self.device.clone(),
            signature: None,
        })
    }

    async fn open(&self, reveal: &Reveal) -> Result<Opening> {
        let s = self.sessions.take(&reveal.session)?;
        check_reveal(&s.challenge, reveal)?;
        let n = s.challenge.n as usize;
        let mut rows = Vec::with_capacity(reveal.samples.len());
        for sample in &reveal.samples {
            let (k, i) = (sample.k as usize, sample.row as usize);
            let values = s
                .products
                .get(k)
                .and_then(|c| c.get(i * n..(i + 1) * n))
                .ok_or_else(|| Error::Prover("row outside the committed products".into()))?;
            rows.push(OpenedRow {
                sample: *sample,
                values: values.to_vec(),
                path: s
                    .tree
                    .path(k * n + i)
                    .ok_or_else(|| Error::Prover("row outside the committed tree".into()))?,
            });
        }
        Ok(Opening {
            version: PROTOCOL_VERSION,
            session: reveal.session,
            rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(sessions: usize, commits: usize, ttl: Duration) -> Capacity {
        Capacity {
            sessions,
            commits,
            ttl,
            retry_after: Duration::from_millis(7),
        }
    }

    #[test]
    fn sessions_are_bounded_unique_and_released_when_abandoned() {
        let t: Sessions<u8> = Sessions::new(cap(2, 1, Duration::from_secs(60)));
        let a = t.begin([1; 16]).expect("first");
        // One commit at a time: the second is busy, typed, with the asked wait.
        assert!(matches!(
            t.begin([2; 16]),
            Err(Error::ProverBusy { retry_after_ms: 7 })
        ));
        a.finish(10);
        // The same session id again is refused (a replayed challenge), not busy.
        assert!(matches!(t.begin([1; 16]), Err(Error::Prover(_))));
        // An abandoned commit frees its slot.
        drop(t.begin([2; 16]).expect("second"));
        assert_eq!(t.len(), 1);
        let b = t.begin([3; 16]).expect("third");
        b.finish(30);
        // Two sessions held: full.
        assert!(matches!(t.begin([4; 16]), Err(Error::ProverBusy { .. })));
        // Each session opens once.
        assert_eq!(*t.take(&[1; 16]).expect("open"), 10);
        assert!(t.take(&[1; 16]).is_err());
        assert_eq!(*t.take(&[3; 16]).expect("open"), 30);
        assert!(t.is_empty());
    }

    #[test]
    fn sessions_expire_after_their_ttl() {
        let t: Sessions<u8> = Sessions::new(cap(1, 1, Duration::ZERO));
        t.begin([1; 16]).expect("begin").finish(1);
        assert!(matches!(t.take(&[1; 16]), Err(Error::Prover(m)) if m.contains("expired")));
        // An expired session no longer takes capacity.
        t.begin([2; 16]).expect("begin").finish(2);
        t.begin([3; 16])
            .expect("the expired one was dropped")
            .finish(3);
    }

    #[test]
    fn bad_challenges_and_reveals_are_typed_errors() {
        let ch = Challenge {
            version: PROTOCOL_VERSION,
            session: [0; 16],
            seed: [0; 32],
            claimed: spheron_core::GpuModel::T4,
            n: 8,
            batch: 2,
            dtype: Dtype::Int8,
            deadline_us: 1,
            provider: None,
        };
        assert!(check_challenge(&ch, CPU_MAX_N).is_ok());
        for bad in [
            Challenge { n: 0, ..ch.clone() },
            Challenge {
                n: CPU_MAX_N + 1,
                ..ch.clone()
            },
            Challenge {
                batch: 0,
                ..ch.clone()
            },
            Challenge {
                batch: MAX_BATCH + 1,
                ..ch.clone()
            },
            Challenge {
                dtype: Dtype::F16,
                ..ch.clone()
            },
            Challenge {
                version: 2,
                ..ch.clone()
            },
        ] {
            assert!(check_challenge(&bad, CPU_MAX_N).is_err(), "{bad:?}");
        }
        let sample = |k, row| spheron_core::proof::Sample { k, row };
        let reveal = |samples: Vec<_>| Reveal {
            version: PROTOCOL_VERSION,
            session: [0; 16],
            r_seed: [0; 32],
            samples,
        };
        assert!(check_reveal(&ch, &reveal(vec![sample(1, 7)])).is_ok());
        assert!(check_reveal(&ch, &reveal(vec![sample(2, 0)])).is_err());
        assert!(check_reveal(&ch, &reveal(vec![sample(0, 8)])).is_err());
        assert!(check_reveal(&ch, &reveal(vec![sample(0, 0); MAX_SAMPLES as usize + 1])).is_err());
    }
}
