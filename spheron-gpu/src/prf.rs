//! The counter-based PRF that generates challenge matrices, identical on CPU and GPU.
//!
//! A challenge of size `n` and batch `K` has one shared right factor `B` and `K` left factors
//! `A_0 .. A_{K-1}`; product `k` is `C_k = A_k B`. Matrix id `0` is `B`, id `k + 1` is `A_k`.
//!
//! Entries are signed 8-bit integers over the **full** range `[-128, 127]`, four per 32-bit
//! word (`wpr = ceil(n / 4)` words per row). Row `i` of matrix `id` has a 64-bit row key from a
//! strong keyed mix of the seed; word `w` of that row is two rounds of the MurmurHash3
//! finaliser keyed by the row key:
//!
//! ```text
//! key  = word(s, (id << 32) | i)                       // u64; s = seed as 4 LE u64
//! k0, k1 = low and high 32 bits of key
//! x    = fmix32(fmix32(w ^ k0) ^ k1)                   // u32, w = word index in the row
//! entry(i, 4 w + t) = (x >> 8 t) as u8 as i8           // t = 0..4, value in [-128, 127]
//! word(s, c) = mix(mix(mix(mix(c ^ s0) ^ s1) ^ s2) ^ s3)
//! mix(z) = splitmix64 finaliser: z += 0x9E3779B97F4A7C15;
//!          z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
//!          z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
//!          z ^ (z >> 31)                              // wrapping mod 2^64
//! fmix32(h) = h ^= h >> 16; h *= 0x85EBCA6B; h ^= h >> 13; h *= 0xC2B2AE35; h ^ (h >> 16)
//! ```
//!
//! ## Why full-range int8
//! The exact product needs INT8 inputs with INT32 accumulation, so INT8 tensor cores are the
//! honest path on every catalogued model and the verifier prices the work at each model's
//! datasheet dense INT8 peak ([`crate::catalog`]). No faster exact path exists on a lower model:
//! * INT4 (2x the INT8 rate on Ampere/Ada/Turing) cannot hold an entry; splitting each entry
//!   into two 4-bit halves costs 4 INT4 products (3 with Karatsuba, whose middle sums no longer
//!   fit 4 bits), i.e. at least 2x the INT8 time;
//! * FP8 (E4M3/E5M2) holds integers exactly only up to 16 / 8 in magnitude;
//! * FP16/BF16 with FP32 accumulation is no longer exact: `|C_ij| <= 2^14 n = 2^28` at
//!   n = 16384, above FP32's 24-bit mantissa; block-wise FP32 partial sums restored to int32
//!   would be exact but FP16 tensor rates are half the INT8 rates on every catalogued model;
//! * Strassen-like schemes add entries first: sums leave `[-128, 127]` (9 bits), so the
//!   sub-products no longer run on INT8 tensor cores.
//!
//! ## Why this PRF
//! The verifier regenerates all `n^2` entries of `B` per challenge, so generation must be cheap
//! on one CPU core: one 32-bit word per four entries, two 32-bit multiplies per round, which
//! vectorises (8 lanes with AVX2). It is not a cryptographic PRF and need not be: the prover
//! knows the seed anyway. What matters is that the matrices carry no structure that helps
//! multiplying them (low rank, shifts, repeated rows): row keys come from the strong 64-bit
//! mix, and within a row the map `w -> x` is a keyed bijection with full avalanche.
//!
//! Why one shared `B`: the verifier then checks any opened row `(k, i)` against
//! `A_k[i, :] (B r)` in `O(n)` after computing `B r` once in `O(n^2)`, so it can sample rows
//! from *every* product at the cost of one Freivalds probe.

/// Largest entry magnitude (`-128` is the most negative entry).
pub const MAX_ENTRY: i32 = 128;

/// Entries per PRF word.
pub const ENTRIES_PER_WORD: usize = 4;

/// Largest `n` for which int32 accumulation of a row stays exact: `2^14 n < 2^31`.
pub const MAX_EXACT_N: u32 = (1 << 17) - 1;

/// Bits of each entry of the random vector `r` of the reveal.
pub const R_BITS: u32 = 16;

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

/// The keyed 64-bit PRF on one counter (row keys, the vector `r`).
#[inline(always)]
pub fn word(s: &[u64; 4], c: u64) -> u64 {
    mix(mix(mix(mix(c ^ s[0]) ^ s[1]) ^ s[2]) ^ s[3])
}

#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// The key `(k0, k1)` of row `i` of matrix `id`.
#[inline]
pub fn row_key(s: &[u64; 4], id: u64, i: usize) -> (u32, u32) {
    let k = word(s, (id << 32) | (i as u64 & 0xFFFF_FFFF));
    (k as u32, (k >> 32) as u32)
}

/// Word `w` of the row with key `key`: four entries, little-endian bytes.
#[inline(always)]
pub fn row_word(key: (u32, u32), w: u32) -> u32 {
    fmix32(fmix32(w ^ key.0) ^ key.1)
}

/// Words per row for size `n`.
#[inline]
pub const fn words_per_row(n: usize) -> usize {
    n.div_ceil(ENTRIES_PER_WORD)
}

/// Row `i` of matrix `id` as int8 entries, written to `out[..n]`.
pub fn fill_row(s: &[u64; 4], n: usize, id: u64, i: usize, out: &mut [i8]) {
    let key = row_key(s, id, i);
    for (w, chunk) in out[..n].chunks_mut(ENTRIES_PER_WORD).enumerate() {
        let x = row_word(key, w as u32).to_le_bytes();
        for (v, b) in chunk.iter_mut().zip(x) {
            *v = b as i8;
        }
    }
}

/// Row `i` of matrix `id` as entries in `[-128, 127]`.
pub fn row(s: &[u64; 4], n: usize, id: u64, i: usize) -> Vec<i32> {
    let mut raw = vec![0i8; n];
    fill_row(s, n, id, i, &mut raw);
    raw.into_iter().map(i32::from).collect()
}

/// One entry.
pub fn entry(s: &[u64; 4], id: u64, i: usize, j: usize) -> i32 {
    let x = row_word(row_key(s, id, i), (j / ENTRIES_PER_WORD) as u32);
    i32::from(x.to_le_bytes()[j % ENTRIES_PER_WORD] as i8)
}

/// Matrix `id`, row-major, `n * n` entries.
pub fn matrix(s: &[u64; 4], n: usize, id: u64) -> Vec<i32> {
    let mut out = Vec::with_capacity(n * n);
    for i in 0..n {
        out.extend(row(s, n, id, i));
    }
    out
}

/// Matrix `id`, row-major, as int8 (what the GPU's INT8 GEMM reads).
pub fn matrix_i8(s: &[u64; 4], n: usize, id: u64) -> Vec<i8> {
    let mut out = vec![0i8; n * n];
    for (i, r) in out.chunks_mut(n.max(1)).enumerate().take(n) {
        fill_row(s, n, id, i, r);
    }
    out
}

/// The random vector `r` of the reveal: entries in `[0, 2^16)`, `r_j = word(s', j) >> 48`
/// with `s'` the reveal seed.
pub fn r_vector(r_seed: &[u8; 32], n: usize) -> Vec<i32> {
    let s = seed_words(r_seed);
    (0..n as u64)
        .map(|j| (word(&s, j) >> (64 - R_BITS)) as i32)
        .collect()
}

/// Words per block of the streamed product: 64 words = 256 entries, whose partial sum
/// `|sum| <= 256 * 128 * (2^16 - 1) < 2^31` fits an i32.
const BLOCK_WORDS: usize = 64;

/// `r` split into four byte planes, `planes[t][w] = r[4 w + t]`, for the words that are
/// whole (`n / 4`): then the product loop reads four contiguous arrays and vectorises.
fn planes(r: &[i32], n: usize) -> [Vec<i32>; 4] {
    let full = n / ENTRIES_PER_WORD;
    let plane = |t: usize| (0..full).map(|w| r[w * ENTRIES_PER_WORD + t]).collect();
    [plane(0), plane(1), plane(2), plane(3)]
}

/// Words processed together (one vector of 16 u32 lanes).
const LANES: usize = 16;

#[inline(always)]
fn sign_bytes(x: u32) -> [i32; 4] {
    [
        ((x << 24) as i32) >> 24,
        ((x << 16) as i32) >> 24,
        ((x << 8) as i32) >> 24,
        (x as i32) >> 24,
    ]
}

#[inline(always)]
fn row_times_r(key: (u32, u32), n: usize, r: &[i32], p: &[Vec<i32>; 4]) -> i64 {
    let full = n / ENTRIES_PER_WORD;
    let vec_words = full - full % LANES;
    let mut acc: i64 = 0;
    let mut w0 = 0;
    while w0 < vec_words {
        let w1 = (w0 + BLOCK_WORDS).min(vec_words);
        // One i32 accumulator per lane: each sums at most BLOCK_WORDS / LANES words.
        let mut lanes = [0i32; LANES];
        let mut w = w0;
        while w < w1 {
            let mut xs = [0u32; LANES];
            for (t, x) in xs.iter_mut().enumerate() {
                *x = row_word(key, (w + t) as u32);
            }
            for (plane, pv) in p.iter().enumerate() {
                // In bounds: w + LANES <= vec_words <= pv.len() (planes hold n / 4 words).
                let q = &pv[w..w + LANES];
                for ((l, &x), &qv) in lanes.iter_mut().zip(&xs).zip(q) {
                    *l += sign_bytes(x)[plane] * qv;
                }
            }
            w += LANES;
        }
        acc += lanes.iter().map(|&v| i64::from(v)).sum::<i64>();
        w0 = w1;
    }
    // The ragged tail, entry by entry.
    for (j, &rv) in r
        .iter()
        .enumerate()
        .take(n)
        .skip(vec_words * ENTRIES_PER_WORD)
    {
        let x = row_word(key, (j / ENTRIES_PER_WORD) as u32).to_le_bytes();
        acc += i64::from(x[j % ENTRIES_PER_WORD] as i8) * i64::from(rv);
    }
    acc
}

// Inlined into the feature-enabled wrappers below, so that they compile it with their
// instruction sets.
#[inline(always)]
fn matvec_generic(s: &[u64; 4], n: usize, id: u64, r: &[i32]) -> Vec<i64> {
    let p = planes(r, n);
    // A plain loop (no iterator adapters, whose generic code would not inherit the target
    // features of the caller).
    let mut out = vec![0i64; n];
    for (i, o) in out.iter_mut().enumerate() {
        *o = row_times_r(row_key(s, id, i), n, r, &p);
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn matvec_avx2(s: &[u64; 4], n: usize, id: u64, r: &[i32]) -> Vec<i64> {
    // The same code, compiled with 8-lane 32-bit multiplies.
    matvec_generic(s, n, id, r)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn matvec_avx512(s: &[u64; 4], n: usize, id: u64, r: &[i32]) -> Vec<i64> {
    // The same code, compiled with 16-lane 32-bit multiplies.
    matvec_generic(s, n, id, r)
}

/// The AVX-512 VNNI kernel: 16 words (64 entries) per step; the four signed bytes of each
/// PRF word are multiplied by the low and the high bytes of `r` with `vpdpbusd` (unsigned x
/// signed bytes, four products summed into each i32 lane), no unpacking. Per lane and word the
/// sum is at most `4 * 255 * 128 < 2^17`, and a lane sees `n / 64` words, so the i32 lanes
/// cannot overflow for `n <= MAX_EXACT_N`.
///
/// The PRF words are computed exactly as [`row_word`] does, with two rewritings that keep
/// every bit and take work off the one port (p0) that runs 512-bit shifts and multiplies:
/// * the first `t ^ (t >> 16)` of `fmix32(w ^ k0)`: every word index `w` is below `2^16`
///   (`n <= MAX_EXACT_N` gives `w < 2^15`), so `(w ^ k0) >> 16 = k0 >> 16` and the step is
///   `w ^ (k0 ^ (k0 >> 16))` with the constant folded once per row;
/// * the other shifts by 16 are byte shuffles (`vpshufb`, which runs on p5): bytes 2 and 3 of
///   each lane moved down, the upper two zeroed.
///
/// Precondition (besides the CPU features): `n <= MAX_EXACT_N`, checked by the caller.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(unsafe_code)]
fn matvec_vnni(s: &[u64; 4], n: usize, id: u64, r: &[i32]) -> Vec<i64> {
    use std::arch::x86_64::*;
    let full = n / ENTRIES_PER_WORD;
    let vec_words = full - full % LANES;
    debug_assert!(full < 1 << 16, "word indices must stay below 2^16");
    let pack = |shift: u32| -> Vec<u32> {
        (0..vec_words)
            .map(|w| {
                let b = |t: usize| (r[w * ENTRIES_PER_WORD + t] >> shift) as u8;
                u32::from_le_bytes([b(0), b(1), b(2), b(3)])
            })
            .collect()
    };
    let (lo, hi) = (pack(0), pack(8));
    let lane_ids = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let step = _mm512_set1_epi32(LANES as i32);
    let c1 = _mm512_set1_epi32(0x85EB_CA6Bu32 as i32);
    let c2 = _mm512_set1_epi32(0xC2B2_AE35u32 as i32);
    // vpshufb control for `x >> 16` in each 32-bit lane: result bytes (2, 3, zero, zero);
    // a control byte with its top bit set writes zero.
    const SHR16: [u32; LANES] = [
        0x8080_0302,
        0x8080_0706,
        0x8080_0B0A,
        0x8080_0F0E,
        0x8080_0302,
        0x8080_0706,
        0x8080_0B0A,
        0x8080_0F0E,
        0x8080_0302,
        0x8080_0706,
        0x8080_0B0A,
        0x8080_0F0E,
        0x8080_0302,
        0x8080_0706,
        0x8080_0B0A,
        0x8080_0F0E,
    ];
    // SAFETY: SHR16 holds exactly 16 u32 (64 bytes).
    let shr16 = unsafe { _mm512_loadu_si512(SHR16.as_ptr().cast()) };
    // h ^ (h >> 16) with the shift as a byte shuffle.
    let xorshift16 = |h: __m512i| _mm512_xor_si512(h, _mm512_shuffle_epi8(h, shr16));
    // fmix32 after its first xor-shift.
    let fmix_rest = |mut h: __m512i| {
        h = _mm512_mullo_epi32(h, c1);
        h = _mm512_xor_si512(h, _mm512_srli_epi32::<13>(h));
        h = _mm512_mullo_epi32(h, c2);
        xorshift16(h)
    };
    let mut out = vec![0i64; n];
    for (i, o) in out.iter_mut().enumerate() {
        let key = row_key(s, id, i);
        let (k0, k1) = key;
        let k0 = _mm512_set1_epi32((k0 ^ (k0 >> 16)) as i32);
        let k1 = _mm512_set1_epi32(k1 as i32);
        let mut acc_lo = _mm512_setzero_si512();
        let mut acc_hi = _mm512_setzero_si512();
        let mut wv = lane_ids;
        let mut w = 0;
        while w + LANES <= vec_words {
            let x = fmix_rest(xorshift16(_mm512_xor_si512(
                fmix_rest(_mm512_xor_si512(wv, k0)),
                k1,
            )));
            // SAFETY: w + 16 <= vec_words = lo.len() = hi.len(): 16 u32 words in bounds.
            let (l, h) = unsafe {
                (
                    _mm512_loadu_si512(lo.as_ptr().add(w).cast()),
                    _mm512_loadu_si512(hi.as_ptr().add(w).cast()),
                )
            };
            acc_lo = _mm512_dpbusd_epi32(acc_lo, l, x);
            acc_hi = _mm512_dpbusd_epi32(acc_hi, h, x);
            wv = _mm512_add_epi32(wv, step);
            w += LANES;
        }
        let mut lanes_lo = [0i32; LANES];
        let mut lanes_hi = [0i32; LANES];
        // SAFETY: each array holds exactly 16 i32.
        unsafe {
            _mm512_storeu_si512(lanes_lo.as_mut_ptr().cast(), acc_lo);
            _mm512_storeu_si512(lanes_hi.as_mut_ptr().cast(), acc_hi);
        }
        // Summed in i64: one lane stays below 2^31, the sum of 16 may not (n near 2^17).
        let mut acc: i64 = lanes_lo.iter().map(|&v| i64::from(v)).sum::<i64>()
            + 256 * lanes_hi.iter().map(|&v| i64::from(v)).sum::<i64>();
        for (j, &rv) in r
            .iter()
            .enumerate()
            .take(n)
            .skip(vec_words * ENTRIES_PER_WORD)
        {
            let x = row_word(key, (j / ENTRIES_PER_WORD) as u32).to_le_bytes();
            acc += i64::from(x[j % ENTRIES_PER_WORD] as i8) * i64::from(rv);
        }
        *o = acc;
    }
    out
}

/// `M r` for matrix `id` regenerated row by row from the seed, never stored: the verifier's
/// `O(n^2)` half of a Freivalds probe. `r` must hold `n` entries in `[0, 2^16)` (as
/// [`r_vector`] makes); results are exact for `n <= MAX_EXACT_N`. Uses AVX-512 VNNI, AVX-512
/// or AVX2 where the CPU has them.
pub fn matrix_times_vector(s: &[u64; 4], n: usize, id: u64, r: &[i32]) -> Vec<i64> {
    if r.len() < n {
        return Vec::new();
    }
    #[cfg(target_arch = "x86_64")]
    if n <= MAX_EXACT_N as usize
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
    {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX-512F, BW and VNNI (checked just above), and
        // n <= MAX_EXACT_N, the function's one other precondition.
        return unsafe { matvec_vnni(s, n, id, r) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
    {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports the enabled features (checked just above); the function
        // has no other precondition.
        return unsafe { matvec_avx512(s, n, id, r) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX2 (checked just above); the function has no other
        // precondition.
        return unsafe { matvec_avx2(s, n, id, r) };
    }
    matvec_generic(s, n, id, r)
}

/// Words per block of [`row_dot_i64`]: regenerated into a buffer, then multiplied.
const DOT_BLOCK_WORDS: usize = 64;

// Inlined into the feature-enabled wrappers below (see `matvec_generic`).
#[inline(always)]
fn row_dot_i64_generic(key: (u32, u32), n: usize, v: &[i64]) -> i64 {
    let full = n / ENTRIES_PER_WORD;
    let mut acc = 0i64;
    let mut bytes = [0i8; DOT_BLOCK_WORDS * ENTRIES_PER_WORD];
    let mut w0 = 0;
    while w0 < full {
        let m = (full - w0).min(DOT_BLOCK_WORDS);
        for (t, b) in bytes.chunks_exact_mut(ENTRIES_PER_WORD).take(m).enumerate() {
            let x = row_word(key, (w0 + t) as u32).to_le_bytes();
            for (b, x) in b.iter_mut().zip(x) {
                *b = x as i8;
            }
        }
        let e = m * ENTRIES_PER_WORD;
        let vs = &v[w0 * ENTRIES_PER_WORD..w0 * ENTRIES_PER_WORD + e];
        let mut part = 0i64;
        for (&a, &b) in bytes[..e].iter().zip(vs) {
            part = part.wrapping_add(i64::from(a).wrapping_mul(b));
        }
        acc = acc.wrapping_add(part);
        w0 += m;
    }
    for (j, &b) in v.iter().enumerate().take(n).skip(full * ENTRIES_PER_WORD) {
        let x = row_word(key, (j / ENTRIES_PER_WORD) as u32).to_le_bytes();
        acc = acc.wrapping_add(i64::from(x[j % ENTRIES_PER_WORD] as i8).wrapping_mul(b));
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_dot_i64_avx2(key: (u32, u32), n: usize, v: &[i64]) -> i64 {
    row_dot_i64_generic(key, n, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2")]
fn row_dot_i64_avx512(key: (u32, u32), n: usize, v: &[i64]) -> i64 {
    row_dot_i64_generic(key, n, v)
}

/// The dot product of row `i` of matrix `id` with `v[..n]`, regenerated block by block (never
/// stored whole), vectorised where the CPU allows, in wrapping i64: exact while
/// `128 n max|v| < 2^63`, which the verifier's `B r` meets for `n <= 2^15` (`|B r| <= 2^38`).
/// `0` if `v` is shorter than `n`. Equals [`row_dot`] wherever the bound holds.
pub fn row_dot_i64(s: &[u64; 4], n: usize, id: u64, i: usize, v: &[i64]) -> i64 {
    if v.len() < n {
        return 0;
    }
    let key = row_key(s, id, i);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512dq")
    {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports the enabled features (checked just above); the function
        // has no other precondition.
        return unsafe { row_dot_i64_avx512(key, n, v) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX2 (checked just above); no other precondition.
        return unsafe { row_dot_i64_avx2(key, n, v) };
    }
    row_dot_i64_generic(key, n, v)
}

/// The dot product of row `i` of matrix `id` with `v` (any i64 vector of length `n`), in
/// i128 so no `n` or `v` can overflow it.
pub fn row_dot(s: &[u64; 4], n: usize, id: u64, i: usize, v: &[i64]) -> i128 {
    let mut raw = vec![0i8; n];
    fill_row(s, n, id, i, &mut raw);
    raw.iter()
        .zip(v)
        .map(|(&a, &b)| i128::from(a) * i128::from(b))
        .sum()
}

/// The largest `|v|` of `values`, vectorised (see [`dot_i32`]); `0` for an empty slice.
pub fn max_abs(values: &[i32]) -> u32 {
    #[inline(always)]
    fn generic(values: &[i32]) -> u32 {
        values.iter().fold(0, |m, v| m.max(v.unsigned_abs()))
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn avx2(values: &[i32]) -> u32 {
        generic(values)
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX2 (checked just above); no other precondition.
        return unsafe { avx2(values) };
    }
    generic(values)
}

/// `sum a_j b_j` over the shorter of the two slices, in i64 (wrapping, never panicking; exact
/// while the true sum fits), compiled with AVX2 where the CPU has it: the crate is built for
/// baseline x86-64 (SSE2), whose code for this loop is several times slower. The verifier
/// dots each opened row with `r` with it.
pub fn dot_i32(a: &[i32], b: &[i32]) -> i64 {
    #[inline(always)]
    fn generic(a: &[i32], b: &[i32]) -> i64 {
        let mut acc = 0i64;
        for (&x, &y) in a.iter().zip(b) {
            acc = acc.wrapping_add(i64::from(x) * i64::from(y));
        }
        acc
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn avx2(a: &[i32], b: &[i32]) -> i64 {
        generic(a, b)
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX2 (checked just above); no other precondition.
        return unsafe { avx2(a, b) };
    }
    generic(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_cover_the_int8_range() {
        let s = seed_words(&[7u8; 32]);
        let a = matrix(&s, 64, a_id(0));
        assert!(a.iter().all(|v| (-128..=127).contains(v)));
        assert!(a.contains(&-128) || a.iter().any(|&v| v < -120));
        assert!(a.iter().any(|&v| v > 120));
        // Most values occur (4096 draws of 256 values).
        let distinct: std::collections::BTreeSet<i32> = a.iter().copied().collect();
        assert!(distinct.len() > 240, "{}", distinct.len());
        assert_ne!(a, matrix(&s, 64, B_ID));
        assert_ne!(a, matrix(&s, 64, a_id(1)));
        assert_ne!(a, matrix(&seed_words(&[8u8; 32]), 64, a_id(0)));
    }

    #[test]
    fn entry_row_and_matrix_agree_for_ragged_n() {
        let s = seed_words(&[3u8; 32]);
        for n in [1usize, 5, 16, 17, 40] {
            let m = matrix(&s, n, a_id(2));
            let m8 = matrix_i8(&s, n, a_id(2));
            for i in 0..n {
                for j in 0..n {
                    assert_eq!(m[i * n + j], entry(&s, a_id(2), i, j));
                    assert_eq!(m[i * n + j], i32::from(m8[i * n + j]));
                }
            }
        }
    }

    #[test]
    fn streamed_matvec_equals_dense() {
        let s = seed_words(&[9u8; 32]);
        for n in [1usize, 15, 16, 33, 64, 128, 129, 300, 1031] {
            let r = r_vector(&[4u8; 32], n);
            let m = matrix(&s, n, B_ID);
            let dense: Vec<i64> = m
                .chunks(n)
                .map(|row| {
                    row.iter()
                        .zip(&r)
                        .map(|(&a, &b)| i64::from(a) * i64::from(b))
                        .sum()
                })
                .collect();
            assert_eq!(matrix_times_vector(&s, n, B_ID, &r), dense, "n={n}");
            assert_eq!(matvec_generic(&s, n, B_ID, &r), dense, "n={n}");
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: feature checked.
                    assert_eq!(unsafe { matvec_avx2(&s, n, B_ID, &r) }, dense, "n={n}");
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: features checked.
                    assert_eq!(unsafe { matvec_avx512(&s, n, B_ID, &r) }, dense, "n={n}");
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                {
                    // SAFETY: features checked; n <= MAX_EXACT_N.
                    assert_eq!(unsafe { matvec_vnni(&s, n, B_ID, &r) }, dense, "n={n}");
                }
            }
            let wide: Vec<i64> = r.iter().map(|&v| i64::from(v)).collect();
            for (i, d) in dense.iter().enumerate() {
                assert_eq!(row_dot(&s, n, B_ID, i, &wide), i128::from(*d));
                assert_eq!(row_dot_i64(&s, n, B_ID, i, &wide), *d, "n={n} i={i}");
            }
        }
    }

    #[test]
    fn row_dot_i64_matches_i128_on_every_path() {
        // Vectors as large as the verifier's B r (|B r| <= 2^38 at n = 2^15), of both signs.
        let s = seed_words(&[5u8; 32]);
        for n in [1usize, 3, 4, 63, 64, 65, 255, 256, 257, 1000, 4099] {
            let v: Vec<i64> = (0..n as u64)
                .map(|j| (word(&s, j ^ 0xABCD) as i64) >> 25)
                .collect();
            for i in [0usize, 1, n / 2, n - 1] {
                let want = row_dot(&s, n, a_id(3), i, &v);
                let want = i64::try_from(want).expect("fits");
                let key = row_key(&s, a_id(3), i);
                assert_eq!(row_dot_i64(&s, n, a_id(3), i, &v), want, "n={n} i={i}");
                assert_eq!(row_dot_i64_generic(key, n, &v), want, "n={n} i={i}");
                #[cfg(target_arch = "x86_64")]
                #[allow(unsafe_code)]
                {
                    if std::arch::is_x86_feature_detected!("avx2") {
                        // SAFETY: feature checked.
                        assert_eq!(unsafe { row_dot_i64_avx2(key, n, &v) }, want);
                    }
                    if std::arch::is_x86_feature_detected!("avx512f")
                        && std::arch::is_x86_feature_detected!("avx512bw")
                        && std::arch::is_x86_feature_detected!("avx512vl")
                        && std::arch::is_x86_feature_detected!("avx512dq")
                    {
                        // SAFETY: features checked.
                        assert_eq!(unsafe { row_dot_i64_avx512(key, n, &v) }, want);
                    }
                }
            }
        }
        // Too short a vector gives 0, not a panic.
        assert_eq!(row_dot_i64(&s, 10, B_ID, 0, &[1; 9]), 0);
    }

    #[test]
    fn vectorised_helpers_match_the_plain_loops() {
        for len in [0usize, 1, 7, 8, 255, 256, 1000] {
            let a: Vec<i32> = (0..len as u64)
                .map(|j| word(&[1, 2, 3, 4], j) as i32)
                .collect();
            let b: Vec<i32> = r_vector(&[6u8; 32], len);
            let want: i64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| i64::from(x) * i64::from(y))
                .fold(0i64, |s, p| s.wrapping_add(p));
            assert_eq!(dot_i32(&a, &b), want, "len={len}");
            let m = a.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
            assert_eq!(max_abs(&a), m, "len={len}");
        }
        assert_eq!(max_abs(&[i32::MIN, 3]), 1 << 31);
        assert_eq!(dot_i32(&[1, 2, 3], &[4, 5]), 14);
    }

    #[test]
    fn extreme_entries_do_not_overflow_a_block() {
        // The largest block sum the streamed product can meet: 256 entries of -128 times
        // r = 2^16 - 1.
        let worst: i64 = (BLOCK_WORDS * ENTRIES_PER_WORD) as i64 * 128 * ((1 << R_BITS) - 1);
        assert!(worst < i64::from(i32::MAX));
    }

    #[test]
    fn r_is_16_bits() {
        let r = r_vector(&[1u8; 32], 1000);
        assert!(r.iter().all(|&v| (0..1 << R_BITS).contains(&v)));
        assert!(r.iter().any(|&v| v > 1 << (R_BITS - 1)));
    }

    #[test]
    fn known_answer() {
        // Pinned so that the CUDA generation kernel can be checked against these numbers.
        let s = seed_words(&[0u8; 32]);
        assert_eq!(word(&s, 0), KNOWN_WORD0);
        assert_eq!(row_word(row_key(&s, B_ID, 0), 0), KNOWN_B_ROW0_WORD0);
        assert_eq!(row(&s, 8, B_ID, 0), KNOWN_B_ROW0.to_vec());
    }

    // KNOWN_WORD0 is unchanged from protocol v2 (a Python transcription of the module docs);
    // the row values below come from the same transcription of the v3 row PRF.
    const KNOWN_WORD0: u64 = 0x2130_748a_aac8_0268;
    const KNOWN_B_ROW0_WORD0: u32 = 0xd411_98c0;
    const KNOWN_B_ROW0: [i32; 8] = [-64, -104, 17, -44, -50, 103, 42, -110];
}
