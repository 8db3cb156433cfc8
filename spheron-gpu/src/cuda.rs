//! The CUDA prover (being written).
