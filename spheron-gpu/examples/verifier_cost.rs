//! Verifier cost on one core: the `O(n^2)` half of a Freivalds probe (`B r` with `B`
//! regenerated row by row, never stored) at n = 4096, 8192, 16384, best of 5 runs each.
//! (`benches/verify.rs` measures the whole `verify` call with criterion.)
//!
//! `cargo run --release -p spheron-gpu --example verifier_cost`

use spheron_gpu::prf;
use std::time::Instant;

/// CPU seconds this thread has used (Linux: /proc/thread-self/stat, 10 ms ticks), so that a
/// loaded machine's waits do not count.
fn thread_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() {
    for n in [4096usize, 8192, 16384] {
        let s = prf::seed_words(&[7; 32]);
        let r = prf::r_vector(&[8; 32], n);
        let mut best = f64::INFINITY;
        let mut check = 0i64;
        let runs = 5;
        let cpu0 = thread_cpu_s();
        for _ in 0..runs {
            let t = Instant::now();
            let br = prf::matrix_times_vector(&s, n, prf::B_ID, &r);
            best = best.min(t.elapsed().as_secs_f64());
            check = check.wrapping_add(br.iter().fold(0i64, |a, &b| a.wrapping_add(b)));
        }
        let cpu = match (cpu0, thread_cpu_s()) {
            (Some(a), Some(b)) => format!("{:.1} ms", (b - a) / f64::from(runs) * 1e3),
            _ => "n/a".into(),
        };
        println!(
            "n = {n}: B r in {:.1} ms wall (best of {runs}; {:.2} ns per entry), {cpu} CPU on average \
             [checksum {check:x}]",
            best * 1e3,
            best * 1e9 / (n * n) as f64
        );
    }
}
