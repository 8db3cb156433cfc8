#!/usr/bin/env python3
"""Rent a GPU, upload a small training project to it, train, download the checkpoint and
print what it cost.

    pip install ./bindings/python
    python examples/python/train_on_rented_gpu.py [--steps 20]                 # embedded
    python examples/python/train_on_rented_gpu.py --network devnet/network.json  # a devnet

Embedded, the marketplace runs in process with a simulated fleet of twelve providers; with
``--network`` (or ``$SPHERON_NETWORK``) it is a tenant of a network started by ``spheron
devnet``, and the project travels through the chosen provider's gateway: packed, its hash
signed in the manifest, unpacked as the workload's working directory. The training job is a
real Python process (a tiny linear regression on the uploaded data printing its loss per
step) that writes its checkpoint to ``$SPHERON_OUTPUTS``; ``lease.download`` brings it back.
On a network it also checkpoints every step (``outputs/state.json``, renamed into place): if
the provider is lost, the lease resumes on another one from the last checkpoint
(``$SPHERON_RESUME_FROM``) for the time left. Money is exact: cost + refund equals the budget
to the last unit.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import textwrap
from pathlib import Path

import spheron

TRAIN = textwrap.dedent(
    """
    import json, os, pathlib, time
    rows = [line.split(",") for line in pathlib.Path("data/train.csv").read_text().split()]
    xs = [float(x) for x, _ in rows]
    ys = [float(y) for _, y in rows]
    w, b, lr = 0.0, 0.0, 0.3
    steps = int(os.environ["STEPS"])
    out = pathlib.Path(os.environ["SPHERON_OUTPUTS"])
    first = 1
    resume = os.environ.get("SPHERON_RESUME_FROM")
    if resume:  # the last provider was lost: go on from its last checkpoint
        state = json.loads(pathlib.Path(resume).read_text())
        w, b, first = state["w"], state["b"], state["step"] + 1
        print(f"resumed from step {state['step']}", flush=True)
    print(f"lease {os.environ.get('SPHERON_LEASE_ID', '?')}: {len(xs)} samples, {steps} steps", flush=True)
    for step in range(first, steps + 1):
        gw = gb = loss = 0.0
        for x, y in zip(xs, ys):
            err = w * x + b - y
            loss += err * err
            gw += 2.0 * err * x
            gb += 2.0 * err
        n = len(xs)
        w -= lr * gw / n
        b -= lr * gb / n
        print(f"step {step:3d}  loss={loss / n:.5f}  w={w:.3f}  b={b:.3f}", flush=True)
        # The checkpoint, always whole: a temporary name, then renamed over the last one.
        (out / "state.json.tmp").write_text(json.dumps({"w": w, "b": b, "step": step}))
        os.replace(out / "state.json.tmp", out / "state.json")
        time.sleep(0.1)
    ckpt = pathlib.Path(os.environ["SPHERON_OUTPUTS"], "model.ckpt")
    ckpt.write_text(json.dumps({"w": w, "b": b, "steps": steps}))
    print(f"saved checkpoint outputs/{ckpt.name}", flush=True)
    """
)


def make_project(root: Path) -> Path:
    """The project to upload: the training script and its data (y = 3x + 0.5 + noise)."""
    rng = random.Random(0)
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    rows = []
    for _ in range(512):
        x = rng.uniform(-1.0, 1.0)
        rows.append(f"{x:.6f},{3.0 * x + 0.5 + rng.gauss(0.0, 0.1):.6f}")
    (root / "data" / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps (default 20)")
    parser.add_argument(
        "--network",
        default=os.environ.get("SPHERON_NETWORK"),
        help="a network.json (from `spheron devnet`) to rent on; default: the embedded marketplace",
    )
    args = parser.parse_args()

    if args.network:
        market = spheron.Marketplace.connect(args.network)
        request = spheron.GpuRequest("h100", count=1, hours=1, max_price_per_hour="5")
    else:
        market = spheron.Marketplace.local(funds="50", seed=7)
        request = spheron.GpuRequest(
            "H100",
            count=1,
            hours=1,
            max_price_per_hour="2.50",
            region=["eu-central", "eu-west"],
            location=(50.94, 6.96),  # the tenant sits in Cologne
        )
    for q in market.quote(request):
        print(f"  quote: {q.provider_name:<16} {q.region:<11} {q.model:<10} {q.price_per_hour}/GPU-hour")
    work = Path(tempfile.mkdtemp(prefix="spheron-example-"))
    project = make_project(work / "project")
    print(
        f"renting 1 x H100 for up to 1 h at <= {request.max_price_per_hour} {market.token}/GPU-hour "
        f"in {', '.join(request.regions)} (budget {request.budget} {market.token})"
    )
    try:
        with market.rent(
            request,
            command="python3 train.py",
            env={"STEPS": str(args.steps)},
            workdir=project,
            progress=True,
            # On a network: a lost provider's lease resumes elsewhere from this checkpoint.
            checkpoint="outputs/state.json" if args.network else None,
            checkpoint_every=5,
        ) as lease:
            now = lease.report
            print(
                f"lease {lease.id} on {now.provider_name} ({now.region}, tier {now.tier}: {now.tier_reason}) "
                f"at {now.price_per_gpu_hour} {now.token}/GPU-hour; proof of GPU {now.proof.verdict}"
            )
            for s in now.skipped:
                if s.kind == "challenge_failed":
                    print(f"  failed over from {s.provider_name}: {s.reason}")
            print("score:", ", ".join(f"{c.criterion} {c.points:.3f}" for c in now.breakdown))
            for line in lease.logs():
                print(f"  | {line}")
            report = lease.wait()
            ckpt = work / "model.ckpt"
            size = lease.download("outputs/model.ckpt", ckpt)
            model = json.loads(ckpt.read_text())
            print(f"downloaded {ckpt} ({size} bytes): w={model['w']:.3f} b={model['b']:.3f}")
    except spheron.NoMatchError as e:
        print(f"no provider could serve the request: {e}", file=sys.stderr)
        for s in e.rejected:
            print(f"  {s.provider_name or s.provider}: {s.reason}", file=sys.stderr)
        return 1

    assert report.refund is not None
    for r in report.resumed:
        print(
            f"lease {r.from_lease} lost its provider ({r.reason}) after {r.seconds} s, cost {r.paid}; "
            f"lease {r.to_lease} went on from a {r.checkpoint_bytes}-byte checkpoint"
        )
    print(f"lease {report.lease} {report.close_reason} after {report.seconds_billed} s billed")
    print(f"cost   {report.cost} {report.token}")
    print(f"refund {report.refund} {report.token}")
    print(f"budget {report.budget} {report.token} (cost + refund: {report.cost + report.refund})")
    if report.cost + report.refund != report.budget or report.close_reason != "completed":
        print("unexpected settlement", file=sys.stderr)
        return 1
    if model["steps"] != args.steps or not 0.0 < model["w"] <= 3.5:
        print(f"unexpected checkpoint {model}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
