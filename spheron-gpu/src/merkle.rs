//! BLAKE3 Merkle commitments over product rows, keyed by the session and with leaves
//! domain-separated from internal nodes.
//!
//! Every hash is BLAKE3 in keyed mode with one of two keys derived from the session id
//! ([`TreeKey::for_session`]): the *leaf key* for data, the *node key* for parents. A parent can
//! therefore never be passed off as a leaf (or the reverse), and a tree built for one session
//! says nothing about another (no precomputed or replayed trees). Separate keys replace the
//! usual prefix byte (`0x00` leaf, `0x01` node) with the same effect, and keep every leaf a
//! whole number of 32-bit words, which the GPU kernels hash straight from the product.
//!
//! A row of `n` i32 values (little-endian) is cut into leaves of at most 1 KiB (one BLAKE3
//! chunk, 256 values); a leaf's hash is `keyed(leaf_key, bytes)`. A parent is
//! `keyed(node_key, left || right)` (64 bytes); an odd node at the end of a level is promoted
//! unchanged. A row's hash is the root of its leaves; the commitment is the root over the row
//! hashes of all products in order (product 0's rows, then product 1's, ...).

/// Context string of the leaf key.
pub const LEAF_CONTEXT: &str = "spheron 2026 proof-of-gpu merkle leaf";
/// Context string of the node key.
pub const NODE_CONTEXT: &str = "spheron 2026 proof-of-gpu merkle node";

/// The two keys of one session's tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeKey {
    /// Key of leaf (data) hashes.
    pub leaf: [u8; 32],
    /// Key of parent (node) hashes.
    pub node: [u8; 32],
}

impl TreeKey {
    /// The keys of the tree committed in session `session`.
    pub fn for_session(session: &[u8; 16]) -> Self {
        TreeKey {
            leaf: blake3::derive_key(LEAF_CONTEXT, session),
            node: blake3::derive_key(NODE_CONTEXT, session),
        }
    }
}

/// Values per leaf: 256 i32 = 1 KiB, one BLAKE3 chunk.
pub const LEAF_VALUES: usize = 256;

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// Hash of two children.
pub fn parent(key: &TreeKey, l: &Hash, r: &Hash) -> Hash {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(l);
    buf[32..].copy_from_slice(r);
    *blake3::keyed_hash(&key.node, &buf).as_bytes()
}

fn next_level(key: &TreeKey, level: &[Hash]) -> Vec<Hash> {
    level
        .chunks(2)
        .map(|p| {
            if p.len() == 2 {
                parent(key, &p[0], &p[1])
            } else {
                p[0]
            }
        })
        .collect()
}

/// Root over `nodes` (empty → all-zero hash).
pub fn root(key: &TreeKey, nodes: &[Hash]) -> Hash {
    let Some(first) = nodes.first() else {
        return [0u8; 32];
    };
    let mut level = nodes.to_vec();
    while level.len() > 1 {
        level = next_level(key, &level);
    }
    level.first().copied().unwrap_or(*first)
}

/// Sibling path from leaf `index` to the root. Promoted levels contribute no sibling.
pub fn path(key: &TreeKey, nodes: &[Hash], mut index: usize) -> Vec<Hash> {
    let mut out = Vec::new();
    let mut level = nodes.to_vec();
    while level.len() > 1 {
        if let Some(s) = level.get(index ^ 1) {
            out.push(*s);
        }
        level = next_level(key, &level);
        index /= 2;
    }
    out
}

/// A Merkle tree with every level kept, for answering many path queries.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// Builds the tree over `leaves` with the same rules as [`root`].
    pub fn new(key: &TreeKey, leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(l) = levels.last().filter(|l| l.len() > 1) {
            let next = next_level(key, l);
            levels.push(next);
        }
        Tree { levels }
    }

    /// The root (all-zero for an empty tree).
    pub fn root(&self) -> Hash {
        match self.levels.last() {
            Some(l) if l.len() == 1 => l[0],
            _ => [0u8; 32],
        }
    }

    /// Number of leaves.
    pub fn leaves(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    /// Sibling path of leaf `index` (same as [`path`]); `None` if out of range.
    pub fn path(&self, mut index: usize) -> Option<Vec<Hash>> {
        if index >= self.leaves() {
            return None;
        }
        let mut out = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(s) = level.get(index ^ 1) {
                out.push(*s);
            }
            index /= 2;
        }
        Some(out)
    }
}

/// Recomputes the root from a leaf, its index, the number of leaves and its path.
/// Returns `None` if the path has the wrong length.
pub fn root_from_path(
    key: &TreeKey,
    leaf: Hash,
    mut index: usize,
    leaves: usize,
    path: &[Hash],
) -> Option<Hash> {
    if index >= leaves {
        return None;
    }
    let mut h = leaf;
    let mut width = leaves;
    let mut it = path.iter();
    while width > 1 {
        let sib = index ^ 1;
        if sib < width {
            let s = it.next()?;
            h = if index.is_multiple_of(2) {
                parent(key, &h, s)
            } else {
                parent(key, s, &h)
            };
        }
        index /= 2;
        width = width.div_ceil(2);
    }
    it.next().is_none().then_some(h)
}

/// The hash of one leaf: `keyed(leaf_key, values as little-endian bytes)`. A leaf holds at
/// most [`LEAF_VALUES`] values; longer slices are hashed whole all the same (the same bytes,
/// the same hash), only without the stack buffer.
pub fn leaf_hash(key: &TreeKey, values: &[i32]) -> Hash {
    if values.len() > LEAF_VALUES {
        let mut h = blake3::Hasher::new_keyed(&key.leaf);
        for v in values {
            h.update(&v.to_le_bytes());
        }
        return *h.finalize().as_bytes();
    }
    // The bytes on the stack: no allocation per leaf.
    let mut buf = [0u8; LEAF_VALUES * 4];
    for (b, v) in buf.chunks_exact_mut(4).zip(values) {
        b.copy_from_slice(&v.to_le_bytes());
    }
    *blake3::keyed_hash(&key.leaf, &buf[..values.len() * 4]).as_bytes()
}

/// Appends to `out` the hash of every leaf of `values` ([`leaf_hash`] of each run of
/// [`LEAF_VALUES`] values, the last one possibly shorter), in order. Runs of 16 full leaves
/// are hashed together, one per vector lane, where the CPU has AVX-512 (the same hashes, bit
/// for bit); the rest through the `blake3` crate one by one.
pub fn leaf_hashes(key: &TreeKey, values: &[i32], out: &mut Vec<Hash>) {
    #[cfg(target_arch = "x86_64")]
    let values = if std::arch::is_x86_feature_detected!("avx512f") {
        let (groups, tail) = values.as_chunks::<{ x16::GROUP }>();
        for g in groups {
            #[allow(unsafe_code)]
            // SAFETY: the CPU supports AVX-512F (checked just above); the function has no
            // other precondition.
            out.extend(unsafe { x16::hash_avx512(&key.leaf, g) });
        }
        tail
    } else {
        values
    };
    out.extend(values.chunks(LEAF_VALUES).map(|c| leaf_hash(key, c)));
}

/// The hash of one row of values: the root over its leaves ([`leaf_hashes`]).
pub fn row_hash(key: &TreeKey, values: &[i32]) -> Hash {
    let mut leaves = Vec::with_capacity(values.len().div_ceil(LEAF_VALUES));
    leaf_hashes(key, values, &mut leaves);
    root(key, &leaves)
}

/// Sixteen keyed BLAKE3 hashes of 1 KiB inputs at once, one per 32-bit lane of AVX-512
/// registers: the leaves of a row are independent hashes of one chunk each, which the
/// `blake3` crate can only compute one after the other (its parallel path is for the chunks
/// of one long input). Written from the BLAKE3 specification; cross-checked against the
/// `blake3` crate in the tests.
#[cfg(target_arch = "x86_64")]
mod x16 {
    use super::{Hash, LEAF_VALUES};
    use std::arch::x86_64::*;

    /// Inputs hashed together.
    pub(super) const LANES: usize = 16;
    /// Values hashed together: 16 leaves.
    pub(super) const GROUP: usize = LANES * LEAF_VALUES;

    const IV: [u32; 4] = [0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A];
    const CHUNK_START: u32 = 1;
    const CHUNK_END: u32 = 2;
    const ROOT: u32 = 8;
    const KEYED_HASH: u32 = 16;
    const BLOCK_WORDS: usize = 16;
    const BLOCKS: usize = LEAF_VALUES / BLOCK_WORDS;
    const PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];

    /// Message word order of each of the 7 rounds: round `r + 1` reads the words of round `r`
    /// through [`PERMUTATION`].
    const SCHEDULE: [[usize; 16]; 7] = {
        let mut s = [[0usize; 16]; 7];
        let mut i = 0;
        while i < 16 {
            s[0][i] = i;
            i += 1;
        }
        let mut r = 1;
        while r < 7 {
            let mut i = 0;
            while i < 16 {
                s[r][i] = s[r - 1][PERMUTATION[i]];
                i += 1;
            }
            r += 1;
        }
        s
    };

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn g(v: &mut [__m512i; 16], [a, b, c, d]: [usize; 4], x: __m512i, y: __m512i) {
        v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), x);
        v[d] = _mm512_ror_epi32::<16>(_mm512_xor_si512(v[d], v[a]));
        v[c] = _mm512_add_epi32(v[c], v[d]);
        v[b] = _mm512_ror_epi32::<12>(_mm512_xor_si512(v[b], v[c]));
        v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), y);
        v[d] = _mm512_ror_epi32::<8>(_mm512_xor_si512(v[d], v[a]));
        v[c] = _mm512_add_epi32(v[c], v[d]);
        v[b] = _mm512_ror_epi32::<7>(_mm512_xor_si512(v[b], v[c]));
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn round(v: &mut [__m512i; 16], m: &[__m512i; 16], s: &[usize; 16]) {
        g(v, [0, 4, 8, 12], m[s[0]], m[s[1]]);
        g(v, [1, 5, 9, 13], m[s[2]], m[s[3]]);
        g(v, [2, 6, 10, 14], m[s[4]], m[s[5]]);
        g(v, [3, 7, 11, 15], m[s[6]], m[s[7]]);
        g(v, [0, 5, 10, 15], m[s[8]], m[s[9]]);
        g(v, [1, 6, 11, 12], m[s[10]], m[s[11]]);
        g(v, [2, 7, 8, 13], m[s[12]], m[s[13]]);
        g(v, [3, 4, 9, 14], m[s[14]], m[s[15]]);
    }

    /// `keyed_hash(key, leaf as little-endian bytes)` for each of the 16 leaves of
    /// `values` (leaf `l` at `values[l * 256..]`): one chunk each, chunk counter 0, 16 full
    /// blocks, the last one flagged as the root. A little-endian i32 is the little-endian u32
    /// of the same bits, so the values are the message words.
    #[target_feature(enable = "avx512f")]
    #[allow(unsafe_code)]
    pub(super) fn hash_avx512(key: &[u8; 32], values: &[i32; GROUP]) -> [Hash; LANES] {
        let mut cv = [_mm512_setzero_si512(); 8];
        for (c, k) in cv.iter_mut().zip(key.chunks_exact(4)) {
            *c = _mm512_set1_epi32(i32::from_le_bytes([k[0], k[1], k[2], k[3]]));
        }
        // Offset of each lane's leaf.
        let lanes = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(LEAF_VALUES as i32),
        );
        let splat = |x: u32| _mm512_set1_epi32(x as i32);
        for b in 0..BLOCKS {
            let mut m = [_mm512_setzero_si512(); 16];
            for (w, mw) in m.iter_mut().enumerate() {
                let at = b * BLOCK_WORDS + w;
                // SAFETY: lane l reads values[l * 256 + at] with l <= 15 and
                // at <= 15 * 16 + 15 = 255: at most index 4095 < GROUP = values.len().
                *mw = unsafe { _mm512_i32gather_epi32::<4>(lanes, values.as_ptr().add(at)) };
            }
            let mut flags = KEYED_HASH;
            if b == 0 {
                flags |= CHUNK_START;
            }
            if b == BLOCKS - 1 {
                flags |= CHUNK_END | ROOT;
            }
            let mut v = [
                cv[0],
                cv[1],
                cv[2],
                cv[3],
                cv[4],
                cv[5],
                cv[6],
                cv[7],
                splat(IV[0]),
                splat(IV[1]),
                splat(IV[2]),
                splat(IV[3]),
                splat(0),
                splat(0),
                splat((BLOCK_WORDS * 4) as u32),
                splat(flags),
            ];
            // Seven rounds written out, so that every message index is a constant.
            round(&mut v, &m, &SCHEDULE[0]);
            round(&mut v, &m, &SCHEDULE[1]);
            round(&mut v, &m, &SCHEDULE[2]);
            round(&mut v, &m, &SCHEDULE[3]);
            round(&mut v, &m, &SCHEDULE[4]);
            round(&mut v, &m, &SCHEDULE[5]);
            round(&mut v, &m, &SCHEDULE[6]);
            for (i, c) in cv.iter_mut().enumerate() {
                *c = _mm512_xor_si512(v[i], v[i + 8]);
            }
        }
        let mut words = [[0u32; LANES]; 8];
        for (w, c) in words.iter_mut().zip(cv) {
            // SAFETY: `w` holds exactly 16 u32 (64 bytes).
            unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast(), c) };
        }
        let mut out = [[0u8; 32]; LANES];
        for (l, o) in out.iter_mut().enumerate() {
            for (w, c) in words.iter().enumerate() {
                o[4 * w..4 * w + 4].copy_from_slice(&c[l].to_le_bytes());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_verify_for_every_leaf_and_size() {
        let key = TreeKey::for_session(&[3; 16]);
        for n in 1..20usize {
            let leaves: Vec<Hash> = (0..n)
                .map(|i| *blake3::hash(&[i as u8]).as_bytes())
                .collect();
            let r = root(&key, &leaves);
            assert_eq!(Tree::new(&key, leaves.clone()).root(), r);
            for i in 0..n {
                let p = path(&key, &leaves, i);
                assert_eq!(
                    root_from_path(&key, leaves[i], i, n, &p),
                    Some(r),
                    "n={n} i={i}"
                );
                assert_eq!(Tree::new(&key, leaves.clone()).path(i), Some(p.clone()));
                let mut bad = leaves[i];
                bad[0] ^= 1;
                assert_ne!(root_from_path(&key, bad, i, n, &p), Some(r));
            }
        }
    }

    #[test]
    fn leaf_hash_is_the_keyed_hash_of_the_bytes() {
        let key = TreeKey::for_session(&[4; 16]);
        for len in [0usize, 1, 255, 256, 257, 600] {
            let v: Vec<i32> = (0..len as i32)
                .map(|i| i.wrapping_mul(-7_654_321))
                .collect();
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            assert_eq!(
                leaf_hash(&key, &v),
                *blake3::keyed_hash(&key.leaf, &bytes).as_bytes(),
                "len={len}"
            );
        }
    }

    #[test]
    fn sixteen_lane_leaf_hashes_equal_the_blake3_crate() {
        let key = TreeKey::for_session(&[9; 16]);
        // Rows of 0, 1, 15, 16, 17, 33 full leaves plus ragged ends, values of both signs.
        for len in [
            0usize,
            100,
            255 * 16,
            4096,
            4096 + 7,
            4352,
            2 * 4096 + 256 + 3,
        ] {
            let v: Vec<i32> = (0..len as u32)
                .map(|i| i.wrapping_mul(0x9E37_79B9).rotate_left(7) as i32)
                .collect();
            let want: Vec<Hash> = v
                .chunks(LEAF_VALUES)
                .map(|c| {
                    let bytes: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
                    *blake3::keyed_hash(&key.leaf, &bytes).as_bytes()
                })
                .collect();
            let mut got = Vec::new();
            leaf_hashes(&key, &v, &mut got);
            assert_eq!(got, want, "len={len}");
            assert_eq!(row_hash(&key, &v), root(&key, &want), "len={len}");
        }
    }

    #[test]
    fn leaves_are_keyed_and_separated_from_nodes() {
        let key = TreeKey::for_session(&[1; 16]);
        let v = [1i32, -2, 3];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            row_hash(&key, &v),
            *blake3::keyed_hash(&key.leaf, &bytes).as_bytes()
        );
        // The same 64 bytes hash differently as a leaf and as a node.
        let (l, r) = ([5u8; 32], [6u8; 32]);
        let as_values: Vec<i32> = l
            .chunks(4)
            .chain(r.chunks(4))
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_ne!(row_hash(&key, &as_values), parent(&key, &l, &r));
        // Another session, another tree.
        let other = TreeKey::for_session(&[2; 16]);
        assert_ne!(row_hash(&key, &v), row_hash(&other, &v));
        assert_ne!(parent(&key, &l, &r), parent(&other, &l, &r));
    }
}
