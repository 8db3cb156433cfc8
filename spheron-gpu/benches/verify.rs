//! Verifier cost of one challenge at n = 4096, 8192 and 16384 on one core, including the
//! regeneration of `B` row by row into `B r` (never stored) and of the sampled rows of `A_k`
//! from the seed, with the default real-GPU configuration (64 samples, batch sized for a 4 s
//! commit phase on an H100 SXM at its calibrated INT8 rate). Signature checking is off (it
//! costs one secp256k1 recovery, about 0.2 ms).
//!
//! The exchange verified is a passing one: the sampled rows are computed exactly (as
//! `A_k[i, :] B`, setup only) and committed in a Merkle tree whose other leaves are filler, so
//! the verifier does all of its work (paths, Freivalds probe, every row) and returns `Pass`.
//! Prints the prover's operation count `2 n^3 K` next to each size; the ratio is reported from
//! the measured time.
//!
//! `cargo bench -p spheron-gpu --bench verify`

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use spheron_core::GpuModel;
use spheron_core::proof::{
    Challenge, ChallengeVerifier, Commitment, OpenedRow, Opening, PROTOCOL_VERSION, ProofTiming,
    Reveal, Verdict,
};
use spheron_gpu::binding;
use spheron_gpu::merkle::{self, Tree};
use spheron_gpu::{FreivaldsVerifier, TimingPolicy, VerifierConfig, prf};
use std::hint::black_box;
use std::time::{Duration, Instant};

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
    // Placeholder commitment to draw the samples (they do not depend on the root).
    let placeholder = Commitment {
        version: PROTOCOL_VERSION,
        session: ch.session,
        root: [0; 32],
        device: None,
        signature: None,
    };
    let reveal = v.reveal(&ch, &placeholder, [43; 32]);
    let t = Instant::now();
    let b_raw = prf::matrix_i8(&s, nn, prf::B_ID);
    let key = binding::tree_key(&ch);
    let rows: Vec<Vec<i32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = reveal
            .samples
            .chunks(reveal.samples.len().div_ceil(2))
            .map(|chunk| {
                let b_raw = &b_raw;
                let s = &s;
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
    eprintln!(
        "n = {n}: K = {}, samples = {}, prover work 2n^3K = {:.3e} int8 OP (setup {:.1} s)",
        ch.batch,
        reveal.samples.len(),
        2.0 * f64::from(n).powi(3) * f64::from(ch.batch),
        t.elapsed().as_secs_f64()
    );
    (v, ch, commitment, reveal, opening)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify_one_challenge");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_millis(500));
    for n in [4096u32, 8192, 16384] {
        let (v, ch, commitment, reveal, opening) = setup(n);
        let timing = ProofTiming::default();
        assert!(
            matches!(
                v.verify(&ch, &commitment, &reveal, &opening, &timing),
                Verdict::Pass { .. }
            ),
            "bench exchange must pass"
        );
        g.measurement_time(Duration::from_secs(if n >= 16384 { 8 } else { 4 }));
        g.bench_function(format!("n={n}"), |b| {
            b.iter(|| black_box(v.verify(black_box(&ch), &commitment, &reveal, &opening, &timing)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
