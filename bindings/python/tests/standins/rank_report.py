"""A stand-in training script: each worker prints what distributed training reads."""

import os
import sys

e = os.environ
gpus = e["CUDA_VISIBLE_DEVICES"].split(",")
print(
    f"rank {e['RANK']}/{e['WORLD_SIZE']} local {e['LOCAL_RANK']} "
    f"master {e['MASTER_ADDR']}:{e['MASTER_PORT']} gpu {gpus[int(e['LOCAL_RANK'])]} args {sys.argv[1:]}",
    flush=True,
)
