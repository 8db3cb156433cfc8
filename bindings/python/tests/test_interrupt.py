"""Ctrl-C (a real SIGINT) during a blocking call stops and settles the lease before
KeyboardInterrupt propagates. Each case runs in its own interpreter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

CHILD = textwrap.dedent(
    """
    import json, signal, sys
    import spheron

    # What a program started from a terminal has, even where CI starts us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    where = sys.argv[1]
    market = spheron.Marketplace.local("100", seed=7, bid_window=float(sys.argv[2]))
    req = spheron.GpuRequest("h100", hours=1, max_price_per_hour="2.50",
                             region=["eu-central", "eu-west"], location=(50.94, 6.96))
    forever = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(600)"]
    lease = None
    try:
        if where == "async":
            import asyncio

            holder = []

            async def main():
                async with await market.rent_async(req, command=forever) as l:
                    holder.append(l)
                    print("READY", flush=True)
                    await l.wait_async()

            try:
                asyncio.run(main())
            finally:
                lease = holder[0] if holder else None
        elif where == "rent":
            print("READY", flush=True)
            lease = market.rent(req, command=forever)
            print("RENTED", flush=True)
        else:
            lease = market.rent(req, command=forever)
            it = lease.logs()
            next(it)
            print("READY", flush=True)
            if where == "wait":
                lease.wait()
            else:
                for _ in it:
                    pass
        outcome = "not interrupted"
    except KeyboardInterrupt:
        outcome = "interrupted"
    b = market.balance()
    out = {"outcome": outcome, "locked": str(b.locked), "available": str(b.available),
           "balanced": market.ledger_balanced()}
    if lease is not None:
        r = lease.report
        out.update(status=r.status, reason=r.close_reason, cost=str(r.cost),
                   refund=str(r.refund), budget=str(r.budget))
    print("RESULT " + json.dumps(out), flush=True)
    """
)


def run_and_interrupt(tmp_path: Path, where: str, bid_window: float, delay: float) -> dict:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    p = subprocess.Popen(
        [sys.executable, str(script), where, str(bid_window)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip() == "READY", line + (p.stderr.read() if p.stderr else "")
        time.sleep(delay)
        os.kill(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    results = [l for l in out.splitlines() if l.startswith("RESULT ")]
    assert results, f"stdout: {out!r}\nstderr: {err!r}"
    return json.loads(results[-1][len("RESULT ") :])


def settled(r: dict) -> None:
    from decimal import Decimal

    assert r["outcome"] == "interrupted"
    assert r["locked"] == "0.000000" and r["balanced"]
    if "status" in r:
        assert r["status"] == "closed" and r["reason"] == "stopped by tenant"
        assert Decimal(r["cost"]) + Decimal(r["refund"]) == Decimal(r["budget"])
        assert Decimal(r["available"]) == Decimal("100") - Decimal(r["cost"])


@pytest.mark.parametrize("where", ["wait", "logs", "async"])
def test_ctrl_c_while_waiting_settles_the_lease(tmp_path: Path, where: str) -> None:
    r = run_and_interrupt(tmp_path, where, bid_window=0.05, delay=0.3)
    assert "status" in r
    settled(r)


def test_ctrl_c_during_rent_settles_the_lease_it_produced(tmp_path: Path) -> None:
    # A 2 s bid window: the signal lands while the order collects bids. The flow is not
    # cut half-way; the lease it produces is stopped and settled, nothing stays locked.
    r = run_and_interrupt(tmp_path, "rent", bid_window=2.0, delay=0.5)
    settled(r)
    assert "status" not in r  # rent raised, no lease object reached the program
    from decimal import Decimal

    assert Decimal("97.5") <= Decimal(r["available"]) <= Decimal("100")
