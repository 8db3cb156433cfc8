"""Multi-GPU training: the launcher's CUDA_VISIBLE_DEVICES and the torchrun helper, with a
stand-in torchrun and training script (no PyTorch needed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List

import pytest

import spheron
from conftest import h100

STANDINS = Path(__file__).parent / "standins"
FAKE_TORCHRUN = [sys.executable, str(STANDINS / "fake_torchrun.py")]
SCRIPT = STANDINS / "rank_report.py"


def test_torchrun_builds_the_command_and_rendezvous() -> None:
    w = spheron.torchrun("train.py", "--lr", "0.1", gpus=4, master_port=29611, env={"EXTRA": "1"})
    assert w.command == [
        "torchrun",
        "--nnodes=1",
        "--node_rank=0",
        "--nproc_per_node=4",
        "--master_addr=127.0.0.1",
        "--master_port=29611",
        "train.py",
        "--lr",
        "0.1",
    ]
    assert w.env == {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29611",
        "WORLD_SIZE": "4",
        "NPROC_PER_NODE": "4",
        "NNODES": "1",
        "NODE_RANK": "0",
        "EXTRA": "1",
    }
    assert w.gpus == 4
    port = int(spheron.torchrun("t.py", gpus=1).env["MASTER_PORT"])
    assert 29500 <= port < 39500
    assert spheron.torchrun("t.py", gpus=1, program="python3 -m torch.distributed.run").command[:3] == [
        "python3",
        "-m",
        "torch.distributed.run",
    ]
    with pytest.raises(spheron.InvalidRequestError) as e:
        spheron.torchrun("t.py", gpus=0)
    assert e.value.field == "gpus"


def test_torchrun_on_two_gpus_starts_one_worker_per_gpu(market: spheron.Marketplace) -> None:
    workload = spheron.torchrun(SCRIPT, "--epochs=1", gpus=2, master_port=29611, program=FAKE_TORCHRUN)
    with market.rent(h100(count=2), workload) as lease:
        # The workers write whole lines in one write each (rank_report.py): two lines never
        # run together, and no empty line appears.
        lines: List[str] = sorted(l.line for l in lease.logs())
        report = lease.wait()
    assert report.close_reason == "completed" and report.gpus == 2
    assert lines == [
        "launcher MASTER_ADDR=127.0.0.1 MASTER_PORT=29611 WORLD_SIZE=2 NPROC_PER_NODE=2 NNODES=1 "
        "NODE_RANK=0 CUDA_VISIBLE_DEVICES=0,1",
        "options master_addr=127.0.0.1 master_port=29611 nnodes=1 node_rank=0 nproc_per_node=2",
        "rank 0/2 local 0 master 127.0.0.1:29611 gpu 0 args ['--epochs=1']",
        "rank 1/2 local 1 master 127.0.0.1:29611 gpu 1 args ['--epochs=1']",
    ]


def test_a_workload_for_other_gpu_counts_is_refused(market: spheron.Marketplace) -> None:
    with pytest.raises(spheron.InvalidRequestError) as e:
        market.rent(h100(count=1), spheron.torchrun(SCRIPT, gpus=2, program=FAKE_TORCHRUN))
    assert e.value.field == "gpus"
    with pytest.raises(spheron.InvalidRequestError):
        market.rent(h100(count=2), spheron.torchrun(SCRIPT, gpus=2), command="echo both")


def test_a_checkpoint_policy_is_checked_and_is_for_network_leases(
    market: spheron.Marketplace,
) -> None:
    # Failover from a checkpoint is a network feature (test_network.py runs it).
    with pytest.raises(spheron.InvalidRequestError) as e:
        market.rent(h100(), command="echo hi", checkpoint="outputs/ckpt")
    assert e.value.field == "checkpoint" and "network" in str(e.value)
    for bad in ("ckpt", "../outputs/ckpt", "/outputs/ckpt"):
        with pytest.raises(spheron.InvalidRequestError) as e:
            market.rent(h100(), command="echo hi", checkpoint=bad)
        assert e.value.field == "checkpoint", bad
    with pytest.raises(spheron.InvalidRequestError) as e:
        market.rent(h100(), command="echo hi", checkpoint="outputs/ckpt", checkpoint_every=0)
    assert e.value.field == "checkpoint_every"
    assert market.balance().locked == 0
