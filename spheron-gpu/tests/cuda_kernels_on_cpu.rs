//! The CUDA kernel source (`src/cuda_kernels.cu`) compiled as plain C++ and run on the CPU,
//! thread by thread: the generated FP16/BF16 matrices, the BLAKE3 leaf and row hashes and the
//! tree must reproduce the CPU reference prover's commitment bit for bit. This checks the
//! kernels' logic on machines without a GPU (cuBLAS is stood in for by a host GEMM in FP32,
//! exact for these integers). Needs a C++ compiler (`c++`); without one the test says so and
//! is skipped.

use spheron_core::GpuModel;
use spheron_core::proof::{Challenge, ChallengeProver, Dtype, PROTOCOL_VERSION};
use spheron_gpu::CpuProver;
use std::path::PathBuf;
use std::process::Command;

const HARNESS: &str = r#"
#include <cstdio>
#include <cstdlib>
#include <vector>
#define SPHERON_HOST_TEST 1
#include "kernels.cu"

static float decode(u16 bits, int bf16) {
    const u16* t = bf16 ? BF16_OF : F16_OF;
    for (int v = 0; v < 8; v++) if (t[v] == bits) return (float)(v - 4);
    std::abort();
}

int main(int argc, char** argv) {
    u64 s[4];
    for (int i = 0; i < 4; i++) s[i] = strtoull(argv[1 + i], 0, 16);
    u32 n = (u32)atoi(argv[5]);
    u32 K = (u32)atoi(argv[6]);
    int bf16 = atoi(argv[7]);
    u64 wpr = (n + 15) / 16;
    u64 lpr = (n + 255) / 256;
    std::vector<u16> braw((size_t)n * n), araw((size_t)n * n);
    for (u64 g = 0; g < wpr * n; g++) gen_matrix(braw.data(), s[0], s[1], s[2], s[3], n, 0, 0, n, bf16, g);
    std::vector<float> b((size_t)n * n), a((size_t)n * n), c((size_t)n * n);
    for (size_t x = 0; x < b.size(); x++) b[x] = decode(braw[x], bf16);
    std::vector<u32> leaves(lpr * n * 8), rows((size_t)K * n * 8);
    for (u32 k = 0; k < K; k++) {
        // Generate A_k in two halves to exercise row0.
        u32 h = n / 2;
        for (u64 g = 0; g < wpr * h; g++) gen_matrix(araw.data(), s[0], s[1], s[2], s[3], n, k + 1, 0, h, bf16, g);
        for (u64 g = 0; g < wpr * (n - h); g++) gen_matrix(araw.data() + (size_t)h * n, s[0], s[1], s[2], s[3], n, k + 1, h, n - h, bf16, g);
        for (size_t x = 0; x < a.size(); x++) a[x] = decode(araw[x], bf16);
        for (u32 i = 0; i < n; i++)
            for (u32 j = 0; j < n; j++) {
                float acc = 0;
                for (u32 l = 0; l < n; l++) acc += a[(size_t)i * n + l] * b[(size_t)l * n + j];
                c[(size_t)i * n + j] = acc;
            }
        for (u64 g = 0; g < lpr * n; g++) hash_leaves(c.data(), leaves.data(), n, n, g);
        for (u64 g = 0; g < n; g++) fold_rows(leaves.data(), rows.data(), n, n, (u64)k * n, g);
    }
    u64 width = (u64)K * n;
    std::vector<u32> level = rows;
    while (width > 1) {
        u64 parents = (width + 1) / 2;
        std::vector<u32> next(parents * 8);
        for (u64 g = 0; g < parents; g++) tree_level(level.data(), next.data(), width, g);
        level.swap(next);
        width = parents;
    }
    for (int k = 0; k < 8; k++)
        for (int byte = 0; byte < 4; byte++) printf("%02x", (level[k] >> (8 * byte)) & 0xff);
    printf("\n");
    return 0;
}
"#;

fn compiler() -> Option<String> {
    ["c++", "g++", "clang++"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuda_kernels_reproduce_the_cpu_commitment() {
    let Some(cxx) = compiler() else {
        eprintln!(
            "SKIPPED cuda_kernels_reproduce_the_cpu_commitment: no C++ compiler (c++, g++ or \
             clang++) on PATH; install one (e.g. apt-get install g++) to run it"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/cuda_kernels.cu");
    std::fs::copy(&src, dir.path().join("kernels.cu")).expect("copy kernels");
    std::fs::write(dir.path().join("harness.cpp"), HARNESS).expect("write harness");
    let bin = dir.path().join("harness");
    let out = Command::new(&cxx)
        .args(["-O2", "-std=c++11", "-o"])
        .arg(&bin)
        .arg(dir.path().join("harness.cpp"))
        .output()
        .expect("run compiler");
    assert!(
        out.status.success(),
        "kernel source does not compile as C++:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // n = 40: ragged words; 300: two leaves per row; 520: three leaves (odd promotion).
    for (n, batch, dtype, seed) in [
        (40u32, 3u32, Dtype::F16, 7u8),
        (300, 2, Dtype::Bf16, 9),
        (520, 1, Dtype::F16, 11),
    ] {
        let ch = Challenge {
            version: PROTOCOL_VERSION,
            session: [1; 16],
            seed: [seed; 32],
            claimed: GpuModel::H100Sxm,
            n,
            batch,
            dtype,
            deadline_us: 60_000_000,
        };
        let cpu = CpuProver::new(None).commit(&ch).await.expect("cpu commit");
        let words = spheron_gpu::prf::seed_words(&ch.seed);
        let run = Command::new(&bin)
            .args(words.iter().map(|w| format!("{w:x}")))
            .arg(n.to_string())
            .arg(batch.to_string())
            .arg(if dtype == Dtype::Bf16 { "1" } else { "0" })
            .output()
            .expect("run harness");
        assert!(run.status.success(), "harness failed for n = {n}");
        let root = String::from_utf8_lossy(&run.stdout).trim().to_string();
        assert_eq!(root, hex(&cpu.root), "n = {n}, batch = {batch}, {dtype:?}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
