#!/usr/bin/env python3
"""Rent a GPU on the embedded spheron marketplace, run a small training job on it, stream
its logs and print what it cost.

    pip install ./bindings/python
    python examples/python/train_on_rented_gpu.py [--steps 20]

The marketplace runs in process with a simulated fleet of twelve providers; the training
job is a real Python process (a tiny linear regression printing its loss per step) started
by the local launcher. Money is exact: cost + refund equals the budget to the last unit.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

import spheron

TRAIN = textwrap.dedent(
    """
    import os, random, time
    random.seed(0)
    xs = [random.uniform(-1.0, 1.0) for _ in range(512)]
    ys = [3.0 * x + 0.5 + random.gauss(0.0, 0.1) for x in xs]
    w, b, lr = 0.0, 0.0, 0.3
    steps = int(os.environ["STEPS"])
    print(f"lease {os.environ.get('SPHERON_LEASE_ID', '?')}: {len(xs)} samples, {steps} steps", flush=True)
    for step in range(1, steps + 1):
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
        time.sleep(0.1)
    print("saved checkpoint model.ckpt", flush=True)
    """
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps (default 20)")
    args = parser.parse_args()

    market = spheron.Marketplace.local(funds="50", seed=7)
    request = spheron.GpuRequest(
        "H100",
        count=1,
        hours=1,
        max_price_per_hour="2.50",
        region=["eu-central", "eu-west"],
        location=(50.94, 6.96),  # the tenant sits in Cologne
    )
    print(
        f"renting 1 x H100 for up to 1 h at <= {request.max_price_per_hour} {market.token}/GPU-hour "
        f"in {', '.join(request.regions)} (budget {request.budget} {market.token})"
    )
    try:
        with market.rent(
            request,
            command=[sys.executable, "-c", TRAIN],
            env={"STEPS": str(args.steps)},
            progress=True,
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
    except spheron.NoMatchError as e:
        print(f"no provider could serve the request: {e}", file=sys.stderr)
        for s in e.rejected:
            print(f"  {s.provider_name or s.provider}: {s.reason}", file=sys.stderr)
        return 1

    assert report.refund is not None
    print(f"lease {report.lease} {report.close_reason} after {report.seconds_billed} s billed")
    print(f"cost   {report.cost} {report.token}")
    print(f"refund {report.refund} {report.token}")
    print(f"budget {report.budget} {report.token} (cost + refund: {report.cost + report.refund})")
    if report.cost + report.refund != report.budget or report.close_reason != "completed":
        print("unexpected settlement", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
