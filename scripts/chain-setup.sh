#!/usr/bin/env bash
# Sets up what spheron-chain's tests need, idempotently:
#   1. npm ci in spheron-chain (solc, OpenZeppelin, anvil from the npm registry), with the npm
#      cache under ${XDG_CACHE_HOME:-$HOME/.cache}/spheron/npm;
#   2. anvil available at ${XDG_CACHE_HOME:-$HOME/.cache}/spheron/anvil/bin/anvil (and in
#      spheron-chain/node_modules), where the test harness finds it;
#   3. recompiles the contracts and FAILS if the committed artifacts differ from the sources.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chain="$here/spheron-chain"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/spheron"
mkdir -p "$cache/npm" "$cache/anvil/bin"

say() { printf 'chain-setup: %s\n' "$*"; }

command -v node >/dev/null || { say "node (>= 18) is required: install Node.js"; exit 1; }
command -v npm >/dev/null || { say "npm is required: install Node.js with npm"; exit 1; }

stamp="$chain/node_modules/.spheron-lock-sha"
want="$(sha256sum "$chain/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -d "$chain/node_modules/solc" ]]; then
  say "node_modules up to date with package-lock.json"
else
  say "npm ci in spheron-chain (cache: $cache/npm)"
  (cd "$chain" && npm_config_cache="$cache/npm" npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi

anvil_src="$chain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
if [[ -x "$anvil_src" ]]; then
  if ! cmp -s "$anvil_src" "$cache/anvil/bin/anvil"; then
    say "installing anvil to $cache/anvil/bin/anvil"
    cp "$anvil_src" "$cache/anvil/bin/anvil.tmp" && mv "$cache/anvil/bin/anvil.tmp" "$cache/anvil/bin/anvil"
    chmod +x "$cache/anvil/bin/anvil"
  fi
  say "anvil: $("$cache/anvil/bin/anvil" --version | head -1)"
elif command -v anvil >/dev/null; then
  say "no npm anvil for this platform; using $(command -v anvil)"
else
  say "anvil is not available for $(uname -sm) from npm; install Foundry (https://getfoundry.sh) or set SPHERON_ANVIL"
  exit 1
fi

say "recompiling contracts and comparing with the committed artifacts"
(cd "$chain" && node scripts/compile.js --check)

# forge (the invariant suite, scripts/invariants.sh) comes from the same npm install; it
# compiles through spheron-chain/forge/tools/solc (solc-js), as native solc builds are not on
# any package registry. Cached beside anvil.
forge_src="$chain/node_modules/@foundry-rs/forge-linux-amd64/bin/forge"
mkdir -p "$cache/forge/bin"
if [[ -x "$forge_src" ]]; then
  if ! cmp -s "$forge_src" "$cache/forge/bin/forge"; then
    say "installing forge to $cache/forge/bin/forge"
    cp "$forge_src" "$cache/forge/bin/forge.tmp" && mv "$cache/forge/bin/forge.tmp" "$cache/forge/bin/forge"
    chmod +x "$cache/forge/bin/forge"
  fi
  say "forge: $("$cache/forge/bin/forge" --version | head -1)"
elif command -v forge >/dev/null; then
  say "no npm forge for this platform; using $(command -v forge)"
else
  say "forge is not available for $(uname -sm) from npm: the invariant suite (scripts/invariants.sh) cannot run"
fi
