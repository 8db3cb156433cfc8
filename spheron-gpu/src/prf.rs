//! The counter-based PRF that generates challenge matrices, identical on CPU and GPU.
//!
//! A challenge of size `n` and batch `K` has one shared right factor `B` and `K` left factors
//! `A_0 .. A_{K-1}`; product `k` is `C_k = A_k B`. Matrix id `0` is `B`, id `k + 1` is `A_k`.
//!
//! Each row is cut into words of 16 entries (`wpr = ceil(n / 16)` words per row). Word `w` of
//! row `i` of matrix `id` is
//!
//! ```text
//! c = (id * n + i) * wpr + w                          // u64, wrapping
//! x = mix(mix(mix(mix(c ^ s0) ^ s1) ^ s2) ^ s3)       // s = seed as 4 little-endian u64
//! entry(i, 16 w + t) = ((x >> 4 t) & 7) - 4           // t = 0..16, value in [-4, 3]
//! mix(z) = splitmix64 finaliser: z += 0x9E3779B97F4A7C15;
//!          z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
//!          z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
//!          z ^ (z >> 31)                              // all arithmetic wrapping mod 2^64
//! ```
//!
//! Entries in `[-4, 3]` are exact in FP16 and BF16; every product term is at most 16 in
//! magnitude, so a dot product of length `n` stays below `16 n`, exact in FP32 accumulation
//! while `16 n < 2^24` ([`MAX_EXACT_N`]). Sixteen entries per PRF call keep regeneration cheap
//! for the verifier (one call per 16 entries instead of one per entry).
//!
//! Why one shared `B`: the verifier then checks any opened row `(k, i)` against
//! `A_k[i, :] (B r)` in `O(n)` after computing `B r` once in `O(n^2)`, so it can sample rows
//! from *every* product at the cost of one Freivalds probe; the prover's work is unchanged
//! (`K` dense `n x n x n` GEMMs, equivalently one `Kn x n x n` GEMM).

/// Largest entry magnitude.
pub const MAX_ENTRY: i32 = 4;

/// Entries per PRF word.
pub const ENTRIES_PER_WORD: usize = 16;

/// Largest `n` for which FP32 accumulation of a row stays exact: `16 n < 2^24`.
pub const MAX_EXACT_N: u32 = (1 << 20) - 1;

/// Matrix id of the shared right factor `B`.
pub const B_ID: u64 = 0;

/// Matrix id of the left factor `A_k`.
pub const fn a_id(k: u32) -> u64 {
    k as u64 + 1
}

/// The seed as four little-endian u64 words.
pub fn seed_words(seed: &[u8; 32]) -> [u64; 4] {
    let mut w = [0u64; 4];
    for (i, word) in w.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&seed[i * 8..i * 8 + 8]);
        *word = u64::from_le_bytes(b);
    }
    w
}

#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The keyed PRF on one 64-bit counter.
#[inline(always)]
pub fn word(s: &[u64; 4], c: u64) -> u64 {
    mix(mix(mix(mix(c ^ s[0]) ^ s[1]) ^ s[2]) ^ s[3])
}

/// Words per row for size `n`.
#[inline]
pub const fn words_per_row(n: usize) -> usize {
    n.div_ceil(ENTRIES_PER_WORD)
}

/// Counter of the first word of row `i` of matrix `id`.
#[inline]
pub fn row_counter(n: usize, id: u64, i: usize) -> u64 {
    (id.wrapping_mul(n as u64).wrapping_add(i as u64)).wrapping_mul(words_per_row(n) as u64)
}

/// Raw 3-bit values (entry + 4, in `0..8`) of row `i` of matrix `id`, written to `out[..n]`.
pub fn fill_row_raw(s: &[u64; 4], n: usize, id: u64, i: usize, out: &mut [u8]) {
    let c0 = row_counter(n, id, i);
    for (w, chunk) in out[..n].chunks_mut(ENTRIES_PER_WORD).enumerate() {
        let x = word(s, c0.wrapping_add(w as u64));
        for (t, v) in chunk.iter_mut().enumerate() {
            *v = ((x >> (4 * t)) & 7) as u8;
        }
    }
}

/// Row `i` of matrix `id` as entries in `[-4, 3]`.
pub fn row(s: &[u64; 4], n: usize, id: u64, i: usize) -> Vec<i32> {
    let mut raw = vec![0u8; n];
    fill_row_raw(s, n, id, i, &mut raw);
    raw.into_iter().map(|v| i32::from(v) - MAX_ENTRY).collect()
}

/// One entry.
pub fn entry(s: &[u64; 4], n: usize, id: u64, i: usize, j: usize) -> i32 {
    let x = word(
        s,
        row_counter(n, id, i).wrapping_add((j / ENTRIES_PER_WORD) as u64),
    );
    ((x >> (4 * (j % ENTRIES_PER_WORD))) & 7) as i32 - MAX_ENTRY
}

/// Matrix `id`, row-major, `n * n` entries.
pub fn matrix(s: &[u64; 4], n: usize, id: u64) -> Vec<i32> {
    let mut out = Vec::with_capacity(n * n);
    for i in 0..n {
        out.extend(row(s, n, id, i));
    }
    out
}

/// The random vector `r` of the reveal: entries in `[0, 2^20)`, `r_j = word(s', j) >> 44`
/// with `s'` the reveal seed.
pub fn r_vector(r_seed: &[u8; 32], n: usize) -> Vec<i64> {
    let s = seed_words(r_seed);
    (0..n as u64).map(|j| (word(&s, j) >> 44) as i64).collect()
}

/// `M r` for matrix `id` regenerated row by row from the seed, without storing it: the
/// verifier's `O(n^2)` half of a Freivalds probe. `r` must have length `n` with entries below
/// `2^20`; results are exact for `n <= 2^20`.
pub fn matrix_times_vector(s: &[u64; 4], n: usize, id: u64, r: &[i64]) -> Vec<i64> {
    debug_assert_eq!(r.len(), n);
    // entry = raw - 4, so M r = raw · r - 4 Σ r.
    let sum_r: i64 = r.iter().sum();
    let wpr = words_per_row(n);
    let full = n / ENTRIES_PER_WORD;
    (0..n)
        .map(|i| {
            let c0 = row_counter(n, id, i);
            let mut acc: i64 = 0;
            for w in 0..full {
                let x = word(s, c0.wrapping_add(w as u64));
                let rr = &r[w * ENTRIES_PER_WORD..(w + 1) * ENTRIES_PER_WORD];
                // 16 terms below 2^23 each: the partial sum fits comfortably.
                let mut part: i64 = 0;
                for (t, &rv) in rr.iter().enumerate() {
                    part += ((x >> (4 * t)) & 7) as i64 * rv;
                }
                acc += part;
            }
            if full < wpr {
                let x = word(s, c0.wrapping_add(full as u64));
                for (t, &rv) in r[full * ENTRIES_PER_WORD..].iter().enumerate() {
                    acc += ((x >> (4 * t)) & 7) as i64 * rv;
                }
            }
            acc - 4 * sum_r
        })
        .collect()
}

/// The dot product of row `i` of matrix `id` with `v` (any i64 vector of length `n`), in
/// i128 so no `n` or `v` can overflow it.
pub fn row_dot(s: &[u64; 4], n: usize, id: u64, i: usize, v: &[i64]) -> i128 {
    let mut raw = vec![0u8; n];
    fill_row_raw(s, n, id, i, &mut raw);
    raw.iter()
        .zip(v)
        .map(|(&a, &b)| i128::from(i64::from(a) - 4) * i128::from(b))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_small_and_spread() {
        let s = seed_words(&[7u8; 32]);
        let a = matrix(&s, 32, a_id(0));
        assert!(a.iter().all(|v| (-4..=3).contains(v)));
        for v in -4..=3 {
            assert!(a.contains(&v), "value {v} never drawn");
        }
        assert_ne!(a, matrix(&s, 32, B_ID));
        assert_ne!(a, matrix(&s, 32, a_id(1)));
        assert_ne!(a, matrix(&seed_words(&[8u8; 32]), 32, a_id(0)));
    }

    #[test]
    fn entry_row_and_matrix_agree_for_ragged_n() {
        let s = seed_words(&[3u8; 32]);
        for n in [1usize, 5, 16, 17, 40] {
            let m = matrix(&s, n, a_id(2));
            for i in 0..n {
                for j in 0..n {
                    assert_eq!(m[i * n + j], entry(&s, n, a_id(2), i, j));
                }
            }
        }
    }

    #[test]
    fn streamed_matvec_equals_dense() {
        let s = seed_words(&[9u8; 32]);
        for n in [1usize, 15, 16, 33, 64] {
            let r = r_vector(&[4u8; 32], n);
            let m = matrix(&s, n, B_ID);
            let dense: Vec<i64> = m
                .chunks(n)
                .map(|row| row.iter().zip(&r).map(|(&a, &b)| i64::from(a) * b).sum())
                .collect();
            assert_eq!(matrix_times_vector(&s, n, B_ID, &r), dense, "n={n}");
            for (i, d) in dense.iter().enumerate() {
                assert_eq!(row_dot(&s, n, B_ID, i, &r), i128::from(*d));
            }
        }
    }

    #[test]
    fn r_is_20_bits() {
        let r = r_vector(&[1u8; 32], 1000);
        assert!(r.iter().all(|&v| (0..1 << 20).contains(&v)));
        assert!(r.iter().any(|&v| v > 1 << 19));
    }

    #[test]
    fn known_answer() {
        // Pinned so that the CUDA generation kernel can be checked against these numbers.
        let s = seed_words(&[0u8; 32]);
        assert_eq!(row(&s, 20, B_ID, 0), KNOWN_B_ROW0.to_vec());
        assert_eq!(word(&s, 0), KNOWN_WORD0);
    }

    // Computed independently (a Python transcription of the module docs).
    const KNOWN_WORD0: u64 = 0x2130_748a_aac8_0268;
    const KNOWN_B_ROW0: [i32; 20] = [
        -4, 2, -2, -4, -4, 0, -2, -2, -2, -4, 0, 3, -4, -1, -3, -2, 2, 1, -3, 0,
    ];
}
