"""A stand-in for ``torchrun`` (no PyTorch needed): parses torchrun's single-node options,
reports the launcher's view of the rendezvous environment, then starts one worker per GPU
with the variables torchrun gives its workers (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT) and exits with the worst worker's status."""

import os
import subprocess
import sys

opts = {}
rest = sys.argv[1:]
while rest and rest[0].startswith("--"):
    key, _, value = rest.pop(0)[2:].partition("=")
    opts[key] = value
script, args = rest[0], rest[1:]
n = int(opts["nproc_per_node"])
names = ["MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NPROC_PER_NODE", "NNODES", "NODE_RANK", "CUDA_VISIBLE_DEVICES"]
print("launcher", " ".join(f"{k}={os.environ.get(k, '-')}" for k in names), flush=True)
print("options", " ".join(f"{k}={v}" for k, v in sorted(opts.items())), flush=True)
workers = []
for rank in range(n):
    env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(n))
    env.update(MASTER_ADDR=opts["master_addr"], MASTER_PORT=opts["master_port"])
    workers.append(subprocess.Popen([sys.executable, script, *args], env=env))
sys.exit(max(w.wait() for w in workers))
