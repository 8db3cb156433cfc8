#!/usr/bin/env bash
# Python bindings: builds and installs them into a fresh virtualenv, then runs their
# pytest suite, mypy's stubtest against the hand-written stubs, a strict mypy check of the
# package and the example, and the example itself. The network tests
# (bindings/python/tests/test_network.py) start a `spheron devnet`: the CLI binary is built
# first and handed to them as SPHERON_BIN (they need anvil: scripts/chain-setup.sh).
#
# Idempotent: each run makes its own virtualenv under
# "${XDG_CACHE_HOME:-$HOME/.cache}/spheron/venv-test-PID" and removes it at exit; pip's download cache and the
# workspace target dir (shared with cargo through CARGO_TARGET_DIR) make reruns fast.
# The extension is built with the dev profile (MATURIN_PEP517_ARGS) so CI compiles the
# workspace once, not in debug and release both; set MATURIN_PEP517_ARGS="--profile release" to
# measure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/spheron"
# One virtualenv per run (removed at exit), so two runs at once never share or delete each
# other's environment.
VENV="$CACHE/venv-test-$$"
trap 'rm -rf "$VENV"' EXIT
PY="${PYTHON:-python3}"

say() { echo "python-test: $*"; }

mkdir -p "$CACHE"
say "creating a fresh virtualenv at $VENV with $("$PY" --version 2>&1)"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install --quiet --disable-pip-version-check --upgrade pip

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export MATURIN_PEP517_ARGS="${MATURIN_PEP517_ARGS:---profile dev}"
# pyo3 >= 0.26: marks the build as an extension module (no libpython link); maturin sets
# it too, this keeps older maturin releases right.
export PYO3_BUILD_EXTENSION_MODULE=1
say "pip install ./bindings/python (maturin from PyPI via the build backend, $MATURIN_PEP517_ARGS, target $CARGO_TARGET_DIR)"
"$VPY" -m pip install --disable-pip-version-check --quiet ./bindings/python
say "pip install pytest mypy rich tqdm (the progress displays' tests use the last two)"
"$VPY" -m pip install --disable-pip-version-check --quiet "pytest>=8" "mypy>=1.10" "rich>=13" "tqdm>=4.60"

say "cargo build -p spheron-cli (the devnet of the network tests)"
cargo build --quiet -p spheron-cli
export SPHERON_BIN="${SPHERON_BIN:-$CARGO_TARGET_DIR/debug/spheron}"

# Run from outside the source tree so `import spheron` is the installed package.
cd "$CACHE"
say "pytest"
"$VPY" -m pytest -p no:cacheprovider -q "$ROOT/bindings/python/tests"
say "stubtest spheron._native"
"$VPY" -m mypy.stubtest spheron._native
say "mypy --strict on the package and the example"
"$VPY" -m mypy --strict --no-incremental -p spheron
"$VPY" -m mypy --strict --no-incremental "$ROOT/examples/python/train_on_rented_gpu.py"
say "example: examples/python/train_on_rented_gpu.py"
"$VPY" "$ROOT/examples/python/train_on_rented_gpu.py"
say "all passed"
