// Proof-of-GPU kernels, compiled at run time with NVRTC (no headers needed).
// The same source compiles as plain C++ for the host-side kernel test
// (tests/cuda_kernels_on_cpu.rs), which defines SPHERON_HOST_TEST and emulates the thread
// indices; keep it free of CUDA-only intrinsics.
//
// Spec: spheron-gpu/src/prf.rs (matrix PRF) and spheron-gpu/src/merkle.rs (BLAKE3 rows).

typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned short u16;

#ifndef SPHERON_HOST_TEST
#define GLOBAL_ID ((u64)blockIdx.x * (u64)blockDim.x + (u64)threadIdx.x)
#define DEV __device__ __forceinline__
#define KERNEL extern "C" __global__
#define CONSTANT __constant__
#else
#define DEV static inline
#define KERNEL extern "C"
#define CONSTANT static const
#endif

// ---------------------------------------------------------------- PRF ----
DEV u64 mix(u64 z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

DEV u64 prf_word(u64 s0, u64 s1, u64 s2, u64 s3, u64 c) {
    return mix(mix(mix(mix(c ^ s0) ^ s1) ^ s2) ^ s3);
}

DEV u32 fmix32(u32 h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    return h ^ (h >> 16);
}

// Rows [row0, row0 + rows) of matrix `id` (n x n, row-major, n a multiple of 4) as int8
// entries, four per little-endian u32 word: out[(i - row0) * n / 4 + w]. One thread per word.
KERNEL void gen_matrix(u32* out, u64 s0, u64 s1, u64 s2, u64 s3, u32 n, u64 id, u32 row0,
                       u32 rows
#ifdef SPHERON_HOST_TEST
                       , u64 gid
#endif
) {
#ifndef SPHERON_HOST_TEST
    u64 gid = GLOBAL_ID;
#endif
    u64 wpr = (u64)n / 4;
    if (gid >= wpr * (u64)rows) return;
    u64 r = gid / wpr;
    u32 w = (u32)(gid % wpr);
    u64 i = (u64)row0 + r;
    u64 key = prf_word(s0, s1, s2, s3, (id << 32) | (i & 0xFFFFFFFFULL));
    u32 k0 = (u32)key;
    u32 k1 = (u32)(key >> 32);
    out[gid] = fmix32(fmix32(w ^ k0) ^ k1);
}

// c_row[j] = sum_l a_row[l] * B[l][j] (int8 in, int32 out): one row of a product, for
// openings. One thread per column j.
KERNEL void row_times_b(const signed char* a_row, const signed char* b, int* c_row, u32 n
#ifdef SPHERON_HOST_TEST
                        , u64 gid
#endif
) {
#ifndef SPHERON_HOST_TEST
    u64 gid = GLOBAL_ID;
#endif
    if (gid >= n) return;
    int acc = 0;
    for (u32 l = 0; l < n; l++) acc += (int)a_row[l] * (int)b[(u64)l * n + gid];
    c_row[gid] = acc;
}

// ------------------------------------------------------------- BLAKE3 ----
CONSTANT u32 IV[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                      0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};
// BLAKE3 message permutation: 2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8.

#define CHUNK_START 1u
#define CHUNK_END 2u
#define ROOT 8u
#define KEYED_HASH 16u

// Tree keys (spheron-gpu/src/merkle.rs): keys[0..8] the leaf key, keys[8..16] the node key,
// as little-endian words. Every hash is BLAKE3 keyed_hash of one chunk.

DEV u32 rotr(u32 x, u32 k) { return (x >> k) | (x << (32 - k)); }

DEV void g(u32* s, int a, int b, int c, int d, u32 mx, u32 my) {
    s[a] = s[a] + s[b] + mx;
    s[d] = rotr(s[d] ^ s[a], 16);
    s[c] = s[c] + s[d];
    s[b] = rotr(s[b] ^ s[c], 12);
    s[a] = s[a] + s[b] + my;
    s[d] = rotr(s[d] ^ s[a], 8);
    s[c] = s[c] + s[d];
    s[b] = rotr(s[b] ^ s[c], 7);
}

// BLAKE3 compression of one 64-byte block (16 little-endian words), counter 0; updates cv.
DEV void compress(u32* cv, const u32* block, u32 block_len, u32 flags) {
    u32 s[16];
    u32 m[16];
    u32 t[16];
    for (int i = 0; i < 8; i++) s[i] = cv[i];
    for (int i = 0; i < 4; i++) s[8 + i] = IV[i];
    s[12] = 0;
    s[13] = 0;
    s[14] = block_len;
    s[15] = flags;
    for (int i = 0; i < 16; i++) m[i] = block[i];
    for (int r = 0; r < 7; r++) {
        g(s, 0, 4, 8, 12, m[0], m[1]);
        g(s, 1, 5, 9, 13, m[2], m[3]);
        g(s, 2, 6, 10, 14, m[4], m[5]);
        g(s, 3, 7, 11, 15, m[6], m[7]);
        g(s, 0, 5, 10, 15, m[8], m[9]);
        g(s, 1, 6, 11, 12, m[10], m[11]);
        g(s, 2, 7, 8, 13, m[12], m[13]);
        g(s, 3, 4, 9, 14, m[14], m[15]);
        if (r < 6) {
            // t[i] = m[PERM[i]], spelled out so the compiler keeps m in registers.
            t[0] = m[2]; t[1] = m[6]; t[2] = m[3]; t[3] = m[10];
            t[4] = m[7]; t[5] = m[0]; t[6] = m[4]; t[7] = m[13];
            t[8] = m[1]; t[9] = m[11]; t[10] = m[12]; t[11] = m[5];
            t[12] = m[9]; t[13] = m[14]; t[14] = m[15]; t[15] = m[8];
            for (int i = 0; i < 16; i++) m[i] = t[i];
        }
    }
    for (int i = 0; i < 8; i++) cv[i] = s[i] ^ s[i + 8];
}

// parent = keyed_hash(node key, left || right), both 8 words.
DEV void parent_hash(const u32* keys, const u32* l, const u32* r, u32* out) {
    u32 block[16];
    for (int i = 0; i < 8; i++) {
        block[i] = l[i];
        block[8 + i] = r[i];
    }
    u32 cv[8];
    for (int i = 0; i < 8; i++) cv[i] = keys[8 + i];
    compress(cv, block, 64, CHUNK_START | CHUNK_END | ROOT | KEYED_HASH);
    for (int i = 0; i < 8; i++) out[i] = cv[i];
}

// Leaf hashes of `rows` rows of an int32 product (row-major, n columns): leaf `l` of row `i`
// covers values [256 l, min(256 l + 256, n)), keyed_hash(leaf key, little-endian int32). One
// thread per leaf; out[(i * leaves_per_row + l) * 8 ..].
KERNEL void hash_leaves(const u32* keys, const int* c, u32* out, u32 n, u32 rows
#ifdef SPHERON_HOST_TEST
                        , u64 gid
#endif
) {
#ifndef SPHERON_HOST_TEST
    u64 gid = GLOBAL_ID;
#endif
    u64 lpr = ((u64)n + 255) / 256;
    if (gid >= lpr * (u64)rows) return;
    u64 i = gid / lpr;
    u64 l = gid % lpr;
    u64 start = l * 256;
    u32 len = (u32)(((u64)n - start) < 256 ? ((u64)n - start) : 256);
    const int* src = c + i * (u64)n + start;
    // BLAKE3 of one chunk, reading the block words straight from the int32 product.
    u32 cv[8];
    for (int k = 0; k < 8; k++) cv[k] = keys[k];
    u32 blocks = (len + 15) / 16;
    for (u32 b = 0; b < blocks; b++) {
        u32 block[16];
        u32 have = len - b * 16;
        if (have > 16) have = 16;
        for (u32 k = 0; k < 16; k++) block[k] = k < have ? (u32)src[b * 16 + k] : 0;
        u32 flags = KEYED_HASH | (b == 0 ? CHUNK_START : 0) |
                    (b + 1 == blocks ? (CHUNK_END | ROOT) : 0);
        compress(cv, block, have * 4, flags);
    }
    for (int k = 0; k < 8; k++) out[gid * 8 + k] = cv[k];
}

// Folds each row's leaf hashes (in place, promoting an odd last node) to the row hash and
// writes it to row_hashes[(first_row + i) * 8 ..]. One thread per row.
KERNEL void fold_rows(const u32* keys, u32* leaves, u32* row_hashes, u32 n, u32 rows,
                      u64 first_row
#ifdef SPHERON_HOST_TEST
                      , u64 gid
#endif
) {
#ifndef SPHERON_HOST_TEST
    u64 gid = GLOBAL_ID;
#endif
    if (gid >= rows) return;
    u64 lpr = ((u64)n + 255) / 256;
    u32* h = leaves + gid * lpr * 8;
    u64 width = lpr;
    while (width > 1) {
        u64 half = width / 2;
        for (u64 p = 0; p < half; p++)
            parent_hash(keys, h + 2 * p * 8, h + (2 * p + 1) * 8, h + p * 8);
        if (width % 2 == 1)
            for (int k = 0; k < 8; k++) h[half * 8 + k] = h[(width - 1) * 8 + k];
        width = (width + 1) / 2;
    }
    for (int k = 0; k < 8; k++) row_hashes[(first_row + gid) * 8 + k] = h[k];
}

// One level of the tree over row hashes: out[p] = H(in[2p] || in[2p+1]), or in[2p] promoted.
KERNEL void tree_level(const u32* keys, const u32* in, u32* out, u64 width
#ifdef SPHERON_HOST_TEST
                       , u64 gid
#endif
) {
#ifndef SPHERON_HOST_TEST
    u64 gid = GLOBAL_ID;
#endif
    u64 parents = (width + 1) / 2;
    if (gid >= parents) return;
    if (2 * gid + 1 < width) {
        parent_hash(keys, in + 2 * gid * 8, in + (2 * gid + 1) * 8, out + gid * 8);
    } else {
        for (int k = 0; k < 8; k++) out[gid * 8 + k] = in[2 * gid * 8 + k];
    }
}
