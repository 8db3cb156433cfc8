//! The counter-based PRF that generates challenge matrices, identical on CPU and GPU.
//!
//! Entry `(k, m, i, j)` of product `k`'s matrix `m` (0 = A, 1 = B), row `i`, column `j`
//! is derived from the 256-bit seed `s = (s0, s1, s2, s3)` (little-endian u64 words) and
//! the counter `c = ((k * 2 + m) * n + i) * n + j`:
//!
//! ```text
//! x = mix(c ^ s0) ; x = mix(x ^ s1) ; x = mix(x ^ s2) ; x = mix(x ^ s3)
//! entry = (x % 9) - 4                       // in [-4, 4]
//! mix(z) = splitmix64 finaliser: z += 0x9E3779B97F4A7C15;
//!          z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
//!          z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
//!          z ^ (z >> 31)                     // all arithmetic wrapping mod 2^64
//! ```
//!
//! Entries in `[-4, 4]` are exact in FP16 and BF16, and every dot product of length `n` is
//! bounded by `16 n`, exact in FP32 while `16 n < 2^24` (n < 1 048 576).

/// Largest entry magnitude.
pub const MAX_ENTRY: i32 = 4;

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

#[inline]
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One matrix entry.
#[inline]
pub fn entry(s: &[u64; 4], n: u64, k: u64, m: u64, i: u64, j: u64) -> i32 {
    let c = ((k * 2 + m) * n + i) * n + j;
    let x = mix(mix(mix(mix(c ^ s[0]) ^ s[1]) ^ s[2]) ^ s[3]);
    (x % 9) as i32 - MAX_ENTRY
}

/// Matrix `m` (0 = A, 1 = B) of product `k`, row-major, `n * n` entries.
pub fn matrix(s: &[u64; 4], n: usize, k: usize, m: usize) -> Vec<i32> {
    let mut out = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            out.push(entry(s, n as u64, k as u64, m as u64, i as u64, j as u64));
        }
    }
    out
}

/// The random vector `r` of the reveal: entries in `[0, 2^20)` from the reveal seed
/// (same PRF, product index `u32::MAX`, matrix 0, row 0).
pub fn r_vector(r_seed: &[u8; 32], n: usize) -> Vec<i64> {
    let s = seed_words(r_seed);
    (0..n as u64)
        .map(|j| {
            let c = j;
            let x = mix(mix(mix(mix(c ^ s[0]) ^ s[1]) ^ s[2]) ^ s[3]);
            (x >> 44) as i64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_small_and_spread() {
        let s = seed_words(&[7u8; 32]);
        let a = matrix(&s, 32, 0, 0);
        assert!(a.iter().all(|v| (-4..=4).contains(v)));
        for v in -4..=4 {
            assert!(a.contains(&v), "value {v} never drawn");
        }
        assert_ne!(a, matrix(&s, 32, 0, 1));
        assert_ne!(a, matrix(&seed_words(&[8u8; 32]), 32, 0, 0));
    }

    #[test]
    fn known_answer() {
        // Pinned so that a GPU implementation can be checked against these numbers.
        let s = seed_words(&[0u8; 32]);
        let first: Vec<i32> = (0..8).map(|j| entry(&s, 4, 0, 0, 0, j)).collect();
        assert_eq!(first, KNOWN_FIRST_ROW);
    }

    const KNOWN_FIRST_ROW: [i32; 8] = [0, -3, -1, 4, 0, -1, -3, 1];
}
