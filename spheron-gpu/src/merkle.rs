//! BLAKE3 Merkle commitments over product rows.
//!
//! A row of `n` i32 values (little-endian) is cut into leaves of at most 1 KiB (one BLAKE3
//! chunk, 256 values); a leaf's hash is `blake3(bytes)`. A parent is `blake3(left || right)`
//! (64 bytes); an odd node at the end of a level is promoted unchanged. A row's hash is the root
//! of its leaves; the commitment is the root over the row hashes of all products in order
//! (product 0's rows, then product 1's, ...).

/// Values per leaf: 256 i32 = 1 KiB, one BLAKE3 chunk.
pub const LEAF_VALUES: usize = 256;

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// Hash of two children.
pub fn parent(l: &Hash, r: &Hash) -> Hash {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(l);
    buf[32..].copy_from_slice(r);
    *blake3::hash(&buf).as_bytes()
}

/// Root over `nodes` (empty → all-zero hash).
pub fn root(nodes: &[Hash]) -> Hash {
    if nodes.is_empty() {
        return [0u8; 32];
    }
    let mut level = nodes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| {
                if p.len() == 2 {
                    parent(&p[0], &p[1])
                } else {
                    p[0]
                }
            })
            .collect();
    }
    level[0]
}

/// Sibling path from leaf `index` to the root. Promoted levels contribute no sibling.
pub fn path(nodes: &[Hash], mut index: usize) -> Vec<Hash> {
    let mut out = Vec::new();
    let mut level = nodes.to_vec();
    while level.len() > 1 {
        let sib = index ^ 1;
        if sib < level.len() {
            out.push(level[sib]);
        }
        level = level
            .chunks(2)
            .map(|p| {
                if p.len() == 2 {
                    parent(&p[0], &p[1])
                } else {
                    p[0]
                }
            })
            .collect();
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
    pub fn new(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let next = levels
                .last()
                .map(|l| {
                    l.chunks(2)
                        .map(|p| {
                            if p.len() == 2 {
                                parent(&p[0], &p[1])
                            } else {
                                p[0]
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
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
pub fn root_from_path(leaf: Hash, mut index: usize, leaves: usize, path: &[Hash]) -> Option<Hash> {
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
                parent(&h, s)
            } else {
                parent(s, &h)
            };
        }
        index /= 2;
        width = width.div_ceil(2);
    }
    it.next().is_none().then_some(h)
}

/// The hash of one row of values.
pub fn row_hash(values: &[i32]) -> Hash {
    let leaves: Vec<Hash> = values
        .chunks(LEAF_VALUES)
        .map(|c| {
            let bytes: Vec<u8> = c.iter().flat_map(|v| v.to_le_bytes()).collect();
            *blake3::hash(&bytes).as_bytes()
        })
        .collect();
    root(&leaves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_verify_for_every_leaf_and_size() {
        for n in 1..20usize {
            let leaves: Vec<Hash> = (0..n)
                .map(|i| *blake3::hash(&[i as u8]).as_bytes())
                .collect();
            let r = root(&leaves);
            assert_eq!(Tree::new(leaves.clone()).root(), r);
            for i in 0..n {
                let p = path(&leaves, i);
                assert_eq!(root_from_path(leaves[i], i, n, &p), Some(r), "n={n} i={i}");
                assert_eq!(Tree::new(leaves.clone()).path(i), Some(p.clone()));
                let mut bad = leaves[i];
                bad[0] ^= 1;
                assert_ne!(root_from_path(bad, i, n, &p), Some(r));
            }
        }
    }

    #[test]
    fn row_hash_of_small_row_is_plain_blake3() {
        let v = [1i32, -2, 3];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(row_hash(&v), *blake3::hash(&bytes).as_bytes());
    }
}
