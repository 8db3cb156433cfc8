"""Shared fixtures: an embedded marketplace per test and workloads that are real Python
subprocesses."""

from __future__ import annotations

import sys
import textwrap
from typing import List

import pytest

import spheron

FUNDS = "100"


def py(code: str) -> List[str]:
    """A workload command running `code` in this interpreter."""
    return [sys.executable, "-c", textwrap.dedent(code)]


#: Prints `step i loss=...` five times, a little apart.
TRAIN = py(
    """
    import time
    for i in range(5):
        print(f"step {i} loss={1.0 / (i + 1):.4f}", flush=True)
        time.sleep(0.05)
    """
)

#: Runs until stopped.
FOREVER = py(
    """
    import time
    print("started", flush=True)
    time.sleep(600)
    """
)


def h100(**kw: object) -> spheron.GpuRequest:
    """One H100 for an hour at up to 2.50/GPU-hour in Europe, near Cologne."""
    args: dict = dict(
        count=1,
        hours=1,
        max_price_per_hour="2.50",
        region=["eu-central", "eu-west"],
        location=(50.94, 6.96),
    )
    args.update(kw)
    return spheron.GpuRequest("h100", **args)


@pytest.fixture
def market() -> spheron.Marketplace:
    return spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.05, progress=False)


class CheatFirst:
    """Ranks fra-bargain (whose "H100" fails proof-of-GPU) first, then by price: makes the
    marketplace fail over, whatever the default matcher's weights."""

    def rank(self, order: spheron.Order, bids: List[spheron.Bid]) -> List[spheron.Bid]:
        return sorted(bids, key=lambda b: (b.provider_name != "fra-bargain", b.price_per_hour))


@pytest.fixture
def failover_market() -> spheron.Marketplace:
    return spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.05, matcher=CheatFirst(), progress=False)
