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

/// The hash of one row of values: the root over its leaves ([`leaf_hash`] of each run of
/// [`LEAF_VALUES`] values).
pub fn row_hash(key: &TreeKey, values: &[i32]) -> Hash {
    let leaves: Vec<Hash> = values
        .chunks(LEAF_VALUES)
        .map(|c| leaf_hash(key, c))
        .collect();
    root(key, &leaves)
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
            let v: Vec<i32> = (0..len as i32).map(|i| i.wrapping_mul(-7_654_321)).collect();
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            assert_eq!(
                leaf_hash(&key, &v),
                *blake3::keyed_hash(&key.leaf, &bytes).as_bytes(),
                "len={len}"
            );
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
