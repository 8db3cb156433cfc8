"""Cost control on the embedded marketplace: spend caps per lease and per marketplace, and the
idle detector (only log output counts here: the fleet's GPUs are simulated)."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

import pytest

import spheron
from conftest import FOREVER, FUNDS, h100, py


def billed(report: spheron.LeaseReport) -> Decimal:
    """Price x GPUs x billed seconds / 3600, rounded down to the token's base unit."""
    assert report.seconds_billed is not None
    exact = report.price_per_gpu_hour * report.gpus * report.seconds_billed / 3600
    return exact.quantize(Decimal("0.000001"), rounding=ROUND_DOWN)


def test_request_keywords_parse_and_name_their_field() -> None:
    r = h100(max_spend="1.25", idle_timeout="10m")
    assert r.max_spend == Decimal("1.25") and r.idle_timeout_secs == 600
    assert h100().max_spend is None and h100().idle_timeout_secs is None
    assert h100().with_limits(idle_timeout=90).idle_timeout_secs == 90
    assert h100().with_limits(max_spend=1).max_spend == Decimal("1")
    for kw, field in (
        ({"idle_timeout": "soon"}, "idle_timeout"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"idle_timeout": True}, "idle_timeout"),
        ({"max_spend": "0"}, "max_spend"),
        # Less than one second's worth at the 2.50 ceiling.
        ({"max_spend": "0.000001"}, "max_spend"),
    ):
        with pytest.raises(spheron.InvalidRequestError) as e:
            h100(**kw)
        assert e.value.field == field, kw


def test_an_idle_lease_is_stopped_and_billed_until_the_stop(market: spheron.Marketplace) -> None:
    quiet = py(
        """
        import time
        print("loaded", flush=True)
        time.sleep(30)
        """
    )
    with market.rent(h100(), command=quiet, idle_timeout=2) as lease:
        report = lease.wait(timeout=40)
    assert report.close_reason is not None and report.close_reason.startswith("idle"), report
    assert report.seconds_billed is not None and 2 <= report.seconds_billed <= 15
    assert report.cost == billed(report)
    assert report.cost * 100 < report.budget
    assert report.refund is not None and report.cost + report.refund == report.budget
    assert market.ledger_balanced()


def test_a_lease_spend_cap_is_never_exceeded(market: spheron.Marketplace) -> None:
    # 0.002 USD buys about 3 s of one H100 at 2.50 per hour (more at a lower bid).
    with market.rent(h100(), command=FOREVER, max_spend="0.002") as lease:
        assert lease.report.budget == Decimal("0.002")
        report = lease.wait(timeout=40)
    assert report.close_reason == "spend cap reached"
    assert report.cost <= Decimal("0.002")
    assert report.cost == billed(report)
    assert market.balance().available == Decimal(FUNDS) - report.cost


def test_a_marketplace_spend_cap_refuses_the_rent_past_it() -> None:
    market = spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.05, progress=False, spend_cap="3")
    with market.rent(h100(), command=FOREVER) as first:
        with pytest.raises(spheron.SpendCapExceededError) as e:
            market.rent(h100(), command=FOREVER)
        assert (e.value.cap, e.value.committed, e.value.requested) == (
            Decimal("3"),
            Decimal("2.5"),
            Decimal("2.5"),
        )
        # Nothing was locked for the refused rent.
        assert market.balance().locked == Decimal("2.5")
        report = first.stop()
    # The first lease's refund returned to the allowance: the next rent fits.
    with market.rent(h100(), command=FOREVER) as second:
        assert second.status == "active"
    assert report.cost < Decimal("0.5")
