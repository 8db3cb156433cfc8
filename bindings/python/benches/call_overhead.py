#!/usr/bin/env python3
"""Per-call overhead of cheap binding calls, measured with timeit (best of 5 repeats).

    python bindings/python/benches/call_overhead.py

Build the extension in release for figures worth quoting:
MATURIN_PEP517_ARGS="--profile release" pip install ./bindings/python
"""

from __future__ import annotations

import sys
import timeit
from decimal import Decimal

import spheron


def best_ns(stmt: str, number: int, env: dict) -> float:
    times = timeit.repeat(stmt, globals=env, number=number, repeat=5)
    return min(times) / number * 1e9


def main() -> None:
    market = spheron.Marketplace.local("100", seed=7, bid_window=0.0, progress=False)
    req = spheron.GpuRequest("H100", count=1, hours=1, max_price_per_hour="2.50", region="eu-west")
    lease = market.rent(req, command=[sys.executable, "-c", "import time; time.sleep(600)"])
    env = dict(spheron=spheron, Decimal=Decimal, lease=lease, market=market, noop=lambda: None)
    cases = [
        ("python no-op call (baseline)", "noop()", 1_000_000),
        ("Decimal('3.00') (baseline)", "Decimal('3.00')", 1_000_000),
        (
            "GpuRequest('H100', count=8, hours=2, max_price_per_hour='3.00')",
            "spheron.GpuRequest('H100', count=8, hours=2, max_price_per_hour='3.00')",
            100_000,
        ),
        ("lease.status (property)", "lease.status", 200_000),
        ("lease.report (runtime round trip, 27 fields)", "lease.report", 20_000),
        ("market.balance() (runtime round trip)", "market.balance()", 50_000),
    ]
    try:
        print(f"{'call':<66} {'ns/call':>10}")
        for name, stmt, n in cases:
            print(f"{name:<66} {best_ns(stmt, n, env):>10.0f}")
    finally:
        lease.stop()


if __name__ == "__main__":
    main()
