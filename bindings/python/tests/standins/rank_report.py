"""A stand-in training script: each worker prints what distributed training reads."""

import os
import sys

e = os.environ
gpus = e["CUDA_VISIBLE_DEVICES"].split(",")
line = (
    f"rank {e['RANK']}/{e['WORLD_SIZE']} local {e['LOCAL_RANK']} "
    f"master {e['MASTER_ADDR']}:{e['MASTER_PORT']} gpu {gpus[int(e['LOCAL_RANK'])]} args {sys.argv[1:]}"
)
# The workers share one stdout pipe: one write of the whole line (under PIPE_BUF bytes, so
# atomic) keeps two workers' lines apart. `print` may write the text and the newline
# separately (unbuffered stdout), and then another worker's line lands between them.
os.write(1, (line + "\n").encode())
