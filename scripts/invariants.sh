#!/usr/bin/env bash
# Invariant suite for spheron-chain's contracts on a real EVM (forge from the npm registry;
# scripts/chain-setup.sh installs it). Runs forge's invariant fuzzer over
# spheron-chain/forge/test: random sequences of deposits, withdrawals, orders, bids, quorum
# matches, starts, extensions, closes, batch settlements, expiries, stakes, verdict slashes,
# equivocation reports, operator membership, time warps, pauses and attacker calls, with an
# ordinary 6-decimal token, a fee-on-transfer token and a token whose transfer hook re-enters
# other market functions. Every call's outcome is checked against a reference model.
#
#   RUNS=40000    total random sequences, split across the two invariant campaigns (default 40000,
#                about 7 minutes at ~95 sequences/s on 2 cores; RUNS=100000 takes ~18 minutes)
#   DEPTH=20      calls per sequence
#   CHECK_INTERVAL=0  full ledger/model checks every N calls (0: at the end of each sequence;
#                     each call's outcome is checked against the model as it happens either way)
#   SEED=0x..     fuzz seed (default: random; printed on failure)
#
# Exits non-zero on any failure. Prints sequences per second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chain="$here/spheron-chain"
forge="${SPHERON_FORGE:-$chain/node_modules/@foundry-rs/forge-linux-amd64/bin/forge}"
say() { printf 'invariants: %s\n' "$*"; }

if [[ ! -x "$forge" ]]; then
  if command -v forge >/dev/null; then forge="$(command -v forge)"; else
    say "forge not found at $forge: run scripts/chain-setup.sh first"; exit 1
  fi
fi
[[ -d "$chain/node_modules/solc" && -d "$chain/node_modules/@openzeppelin/contracts" ]] || {
  say "spheron-chain/node_modules is missing solc or OpenZeppelin: run scripts/chain-setup.sh"; exit 1; }

runs_total="${RUNS:-40000}"
depth="${DEPTH:-20}"
campaigns=2 # MarketInvariantsA and MarketInvariantsB, run on parallel threads
per=$(( (runs_total + campaigns - 1) / campaigns ))
args=(test --match-path 'test/MarketInvariants.t.sol')
[[ -n "${SEED:-}" ]] && args+=(--fuzz-seed "$SEED")

say "$("$forge" --version | head -1); $campaigns campaigns x $per sequences x depth $depth"
cd "$chain/forge"
# forge compiles through tools/solc (solc-js 0.8.30, viaIR): the first build takes minutes.
"$forge" build >/dev/null
start=$(date +%s.%N)
set +e
FOUNDRY_INVARIANT_RUNS="$per" FOUNDRY_INVARIANT_DEPTH="$depth" \
  FOUNDRY_INVARIANT_CHECK_INTERVAL="${CHECK_INTERVAL:-0}" "$forge" "${args[@]}"
rc=$?
set -e
end=$(date +%s.%N)
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
seqs=$(( per * campaigns ))
rate=$(awk -v n="$seqs" -v s="$secs" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
if [[ $rc -ne 0 ]]; then
  say "FAILED (forge exit $rc) after ${secs}s"
  exit "$rc"
fi
say "$seqs sequences x $depth calls in ${secs}s: $rate sequences/s"
echo "invariants: $campaigns passed, 0 failed"
