#!/usr/bin/env node
// Compiles spheron-chain/contracts with solc from the npm registry, resolving OpenZeppelin
// imports from node_modules, and writes artifacts/<Contract>.json ({abi, bytecode}).
// With --check it writes nothing and exits 1 when the committed artifacts differ.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const root = path.resolve(__dirname, "..");
const contractsDir = path.join(root, "contracts");
const artifactsDir = path.join(root, "artifacts");
const check = process.argv.includes("--check");

function listSol(dir) {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? listSol(path.join(dir, e.name)) : e.name.endsWith(".sol") ? [path.join(dir, e.name)] : []))
    .sort();
}

const sources = {};
for (const file of listSol(contractsDir)) {
  const key = "contracts/" + path.relative(contractsDir, file).split(path.sep).join("/");
  sources[key] = { content: fs.readFileSync(file, "utf8") };
}

function findImports(p) {
  for (const base of [path.join(root, "node_modules"), root]) {
    const full = path.join(base, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, "utf8") };
  }
  return { error: `import not found: ${p} (run npm ci in spheron-chain)` };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    viaIR: true,
    evmVersion: "cancun",
    metadata: { bytecodeHash: "none", appendCBOR: false },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};

const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (out.errors || []).filter((e) => e.severity === "error");
for (const e of out.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);

const wanted = new Map();
for (const [file, contracts] of Object.entries(out.contracts)) {
  if (!file.startsWith("contracts/")) continue;
  for (const [name, c] of Object.entries(contracts)) {
    if (!c.evm.bytecode.object) continue; // abstract contracts and interfaces
    const artifact = { contractName: name, sourceName: file, compiler: "solc " + solc.version(), abi: c.abi, bytecode: "0x" + c.evm.bytecode.object };
    wanted.set(name + ".json", JSON.stringify(artifact, null, 2) + "\n");
  }
}

if (check) {
  let bad = 0;
  const present = fs.existsSync(artifactsDir) ? fs.readdirSync(artifactsDir).filter((f) => f.endsWith(".json")) : [];
  for (const [name, text] of wanted) {
    const p = path.join(artifactsDir, name);
    if (!fs.existsSync(p)) { console.error(`missing artifact ${name}`); bad++; }
    else if (fs.readFileSync(p, "utf8") !== text) { console.error(`artifact ${name} differs from the sources`); bad++; }
  }
  for (const f of present) if (!wanted.has(f)) { console.error(`stale artifact ${f}`); bad++; }
  if (bad) { console.error(`${bad} artifact(s) out of date: run \`npm run build\` in spheron-chain and commit artifacts/`); process.exit(1); }
  console.log(`artifacts match the sources (${wanted.size} contracts, solc ${solc.version()})`);
} else {
  fs.mkdirSync(artifactsDir, { recursive: true });
  for (const [name, text] of wanted) fs.writeFileSync(path.join(artifactsDir, name), text);
  console.log(`wrote ${wanted.size} artifacts with solc ${solc.version()}`);
}
