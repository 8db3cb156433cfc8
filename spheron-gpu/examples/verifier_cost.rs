//! Verifier cost on one core, per phase, in this thread's CPU time (what the scheduler
//! charged to the thread: waits on a loaded machine do not count) and in wall time.
//!
//! For n = 4096, 8192 and 16384 it builds one passing exchange with the default real-GPU
//! configuration (64 samples, batch K for a 4 s commit phase on an H100 SXM; the sampled rows
//! computed exactly, the other leaves filler, as `benches/verify.rs` does), then times, over
//! several runs each:
//!
//! * the whole `verify()` call (signature check off, as in the bench);
//! * its phases, re-run one by one through the same public functions `verify()` calls:
//!   structure and range checks of the opened rows, leaf hashing of the opened rows, Merkle
//!   paths, `r`, `B r` (B regenerated row by row, never stored), the sampled rows of `A_k`
//!   against `B r`, the opened rows against `r`;
//! * outside `verify()`: one signature recovery, and decoding the opening from JSON (what the
//!   HTTP client does before calling `verify()`).
//!
//! `cargo run --release -p spheron-gpu --example verifier_cost`

use alloy_signer_local::PrivateKeySigner;
use spheron_core::GpuModel;
use spheron_core::proof::{
    Challenge, ChallengeVerifier, Commitment, OpenedRow, Opening, PROTOCOL_VERSION, ProofTiming,
    Reveal, Verdict,
};
use spheron_gpu::merkle::{self, Tree};
use spheron_gpu::{FreivaldsVerifier, TimingPolicy, VerifierConfig, binding, prf};
use std::hint::black_box;
use std::time::Instant;

/// Nanoseconds of CPU this thread has used: `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`
/// (Linux x86-64; the C library is linked by `std` already, so no crate is needed for it).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[allow(unsafe_code)]
fn thread_cpu_ns() -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `struct timespec` (two 64-bit fields on x86-64 Linux)
    // that outlives the call; the clock id is the kernel's constant for this thread's CPU time.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Not measured elsewhere.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn thread_cpu_ns() -> Option<u64> {
    None
}

/// Thread CPU per run of `f` (median and least over `runs` runs) and best wall time, in ms.
fn time<T>(runs: u32, mut f: impl FnMut() -> T) -> (Option<(f64, f64)>, f64) {
    black_box(f()); // warm-up
    let mut best = f64::INFINITY;
    let mut cpu = Vec::new();
    for _ in 0..runs {
        let c0 = thread_cpu_ns();
        let t = Instant::now();
        black_box(f());
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
        if let Some((a, b)) = c0.zip(thread_cpu_ns()) {
            cpu.push((b - a) as f64 / 1e6);
        }
    }
    cpu.sort_by(f64::total_cmp);
    let stats = (!cpu.is_empty()).then(|| (cpu[cpu.len() / 2], cpu[0]));
    (stats, best)
}

fn fmt(cpu: Option<(f64, f64)>, wall: f64) -> String {
    match cpu {
        Some((median, least)) => {
            format!("CPU {median:7.2} ms median {least:7.2} ms least   wall {wall:7.2} ms best")
        }
        None => format!("CPU n/a   wall {wall:7.2} ms best"),
    }
}

/// Row `i` of `A_k B`, with `B` given as int8 entries.
fn true_row(s: &[u64; 4], n: usize, b: &[i8], k: u32, i: usize) -> Vec<i32> {
    let a = prf::row(s, n, prf::a_id(k), i);
    let mut acc = vec![0i32; n];
    for (l, &av) in a.iter().enumerate() {
        let b = &b[l * n..(l + 1) * n];
        for (c, &bv) in acc.iter_mut().zip(b) {
            *c += av * i32::from(bv);
        }
    }
    acc
}

type Exchange = (FreivaldsVerifier, Challenge, Commitment, Reveal, Opening);

/// A passing exchange at size `n` (the same as the bench's).
fn setup(n: u32) -> Exchange {
    let v = FreivaldsVerifier::new(VerifierConfig {
        n,
        timing: TimingPolicy::Off,
        require_signature: false,
        untimed_batch: FreivaldsVerifier::default().batch_for(GpuModel::H100Sxm),
        ..VerifierConfig::default()
    })
    .expect("config");
    let ch = v.issue(GpuModel::H100Sxm, [42; 32]);
    let nn = n as usize;
    let s = prf::seed_words(&ch.seed);
    let placeholder = Commitment {
        version: PROTOCOL_VERSION,
        session: ch.session,
        root: [0; 32],
        device: None,
        signature: None,
    };
    let reveal = v.reveal(&ch, &placeholder, [43; 32]);
    let b_raw = prf::matrix_i8(&s, nn, prf::B_ID);
    let key = binding::tree_key(&ch);
    let rows: Vec<Vec<i32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = reveal
            .samples
            .chunks(reveal.samples.len().div_ceil(2))
            .map(|chunk| {
                let (b_raw, s) = (&b_raw, &s);
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|x| true_row(s, nn, b_raw, x.k, x.row as usize))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("setup thread"))
            .collect()
    });
    drop(b_raw);
    let leaves = ch.batch as usize * nn;
    let mut hashes: Vec<merkle::Hash> = (0..leaves as u64)
        .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
        .collect();
    for (x, row) in reveal.samples.iter().zip(&rows) {
        hashes[x.k as usize * nn + x.row as usize] = merkle::row_hash(&key, row);
    }
    let tree = Tree::new(&key, hashes);
    let commitment = Commitment {
        root: tree.root(),
        ..placeholder
    };
    let opening = Opening {
        version: PROTOCOL_VERSION,
        session: ch.session,
        rows: reveal
            .samples
            .iter()
            .zip(rows)
            .map(|(x, values)| OpenedRow {
                sample: *x,
                values,
                path: tree
                    .path(x.k as usize * nn + x.row as usize)
                    .expect("in range"),
            })
            .collect(),
    };
    (v, ch, commitment, reveal, opening)
}

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    for n in [4096u32, 8192, 16384] {
        let (v, ch, commitment, reveal, opening) = setup(n);
        let timing = ProofTiming::default();
        assert!(
            matches!(
                v.verify(&ch, &commitment, &reveal, &opening, &timing),
                Verdict::Pass { .. }
            ),
            "the exchange must pass"
        );
        let nn = n as usize;
        let runs = if n >= 16384 { 15 } else { 25 };
        println!(
            "n = {n}: K = {}, {} samples, {runs} runs",
            ch.batch,
            reveal.samples.len()
        );
        let (c, w) = time(runs, || {
            v.verify(&ch, &commitment, &reveal, &opening, &timing)
        });
        println!("  verify() total            {}", fmt(c, w));

        let s = prf::seed_words(&ch.seed);
        let key = binding::tree_key(&ch);
        let bound = (prf::MAX_ENTRY * prf::MAX_ENTRY) as u32 * n;
        let leaf = merkle::LEAF_VALUES;
        let (c, w) = time(runs, || {
            opening
                .rows
                .iter()
                .flat_map(|r| r.values.chunks(leaf))
                .filter(|l| prf::max_abs(l) > bound)
                .count()
        });
        println!("  range checks              {}", fmt(c, w));
        let (c, w) = time(runs, || {
            opening
                .rows
                .iter()
                .map(|r| merkle::row_hash(&key, &r.values))
                .collect::<Vec<_>>()
        });
        println!("  leaf hashing (row_hash)   {}", fmt(c, w));
        let hashes: Vec<_> = opening
            .rows
            .iter()
            .map(|r| merkle::row_hash(&key, &r.values))
            .collect();
        let leaves = ch.batch as usize * nn;
        let (c, w) = time(runs, || {
            opening
                .rows
                .iter()
                .zip(&hashes)
                .filter(|(r, h)| {
                    let idx = r.sample.k as usize * nn + r.sample.row as usize;
                    merkle::root_from_path(&key, **h, idx, leaves, &r.path) == Some(commitment.root)
                })
                .count()
        });
        println!("  Merkle paths              {}", fmt(c, w));
        let (c, w) = time(runs, || prf::r_vector(&reveal.r_seed, nn));
        println!("  r                         {}", fmt(c, w));
        let r = prf::r_vector(&reveal.r_seed, nn);
        let (c, w) = time(runs, || {
            opening
                .rows
                .iter()
                .map(|row| prf::dot_i32(&row.values, &r))
                .collect::<Vec<_>>()
        });
        println!("  opened rows . r           {}", fmt(c, w));
        let (c, w) = time(runs, || prf::matrix_times_vector(&s, nn, prf::B_ID, &r));
        println!("  B r                       {}", fmt(c, w));
        let br = prf::matrix_times_vector(&s, nn, prf::B_ID, &r);
        let (c, w) = time(runs, || {
            opening
                .rows
                .iter()
                .map(|row| {
                    let (id, i) = (prf::a_id(row.sample.k), row.sample.row as usize);
                    prf::row_dot_i64(&s, nn, id, i, &br)
                })
                .collect::<Vec<_>>()
        });
        println!("  A_k rows . B r            {}", fmt(c, w));

        // Outside verify(): one signature recovery and the JSON decoding of the opening.
        let signer = PrivateKeySigner::from_bytes(&[7u8; 32].into()).expect("key");
        let signed_ch = Challenge {
            provider: Some(binding::provider_id(&signer)),
            ..ch.clone()
        };
        let signed = Commitment {
            signature: Some(binding::sign(&signer, &signed_ch, &commitment.root).expect("sign")),
            ..commitment.clone()
        };
        assert_eq!(binding::check(&signed_ch, &signed), None);
        let (c, w) = time(runs, || binding::check(&signed_ch, &signed));
        println!("  (signature recovery)      {}", fmt(c, w));
        let json = serde_json::to_vec(&opening).expect("encode");
        let (c, w) = time(runs.min(5), || {
            serde_json::from_slice::<Opening>(&json).expect("decode")
        });
        println!(
            "  (JSON decode, {:.1} MB)    {}",
            json.len() as f64 / 1e6,
            fmt(c, w)
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", load.trim());
}
