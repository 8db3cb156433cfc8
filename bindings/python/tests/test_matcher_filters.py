"""A Python matcher gets only the bids that pass the standard filters, the others with
their reasons in ``order.rejected``, unless it asks for every bid."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, List, Tuple

import pytest

import spheron

from conftest import FUNDS, TRAIN, h100


class Recording:
    """Cheapest first among what it is given; remembers every call."""

    def __init__(self) -> None:
        self.calls: List[Tuple[spheron.Order, List[spheron.Bid]]] = []

    def rank(self, order: spheron.Order, bids: List[spheron.Bid]) -> List[spheron.Bid]:
        self.calls.append((order, list(bids)))
        return sorted(bids, key=lambda b: b.price_per_hour)


def test_python_matcher_sees_only_eligible_bids() -> None:
    m = Recording()
    market = spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.05, matcher=m, progress=False)
    # fra-bargain (tier 5, the cheapest H100) is what a matcher without filters would take.
    with market.rent(h100(min_tier=6), command=TRAIN) as lease:
        report = lease.wait()
    assert len(m.calls) == 1
    order, bids = m.calls[0]
    assert bids, "no eligible bid reached the matcher"
    for b in bids:
        assert b.tier >= 6, b
        assert b.price_per_hour <= Decimal("2.50"), b
        assert b.region in ("eu-central", "eu-west"), b
    rejected = {b.provider_name: reason for b, reason in order.rejected}
    assert "below minimum" in rejected["fra-bargain"]
    assert not rejected.keys() & {b.provider_name for b in bids}
    # Indices are positions among all of the order's bids: given and rejected together.
    indices = [b.index for b in bids] + [b.index for b, _ in order.rejected]
    assert sorted(indices) == list(range(len(indices)))
    assert report.provider_name in {b.provider_name for b in bids}
    skipped = {s.provider_name: s.reason for s in report.skipped}
    assert "below minimum" in skipped["fra-bargain"]


def test_a_matcher_may_ask_for_every_bid() -> None:
    class Everything(Recording):
        wants_all_bids = True

        def rank(self, order: spheron.Order, bids: List[spheron.Bid]) -> List[spheron.Bid]:
            super().rank(order, bids)
            dropped = {b.index for b, _ in order.rejected}
            return sorted((b for b in bids if b.index not in dropped), key=lambda b: b.price_per_hour)

    m = Everything()
    market = spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.05, matcher=m, progress=False)
    with market.rent(h100(min_tier=6), command=TRAIN) as lease:
        report = lease.wait()
    order, bids = m.calls[0]
    names = {b.provider_name for b in bids}
    assert "fra-bargain" in names
    assert {b.provider_name for b, _ in order.rejected} <= names
    assert report.tier >= 6


def test_returning_a_filtered_bid_is_a_clear_error() -> None:
    class Sneaky:
        def rank(self, order: spheron.Order, bids: List[spheron.Bid]) -> List[Any]:
            return [b for b, _ in order.rejected] + list(bids)

    market = spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.05, matcher=Sneaky(), progress=False)
    with pytest.raises(spheron.MatcherError, match="not one of the bids"):
        market.rent(h100(min_tier=6), command=TRAIN)
