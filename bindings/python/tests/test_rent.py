"""Renting on the embedded marketplace: sync and async, logs, cost, settlement."""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import ROUND_DOWN, Decimal
from typing import List

import pytest

import spheron
from conftest import FOREVER, FUNDS, TRAIN, h100, py


def assert_settled(market: spheron.Marketplace, report: spheron.LeaseReport) -> None:
    """Closed, cost + refund == budget exactly, the tenant got the refund, the ledger holds."""
    assert report.closed and report.status == "closed"
    assert report.refund is not None
    assert report.cost + report.refund == report.budget
    balance = market.balance()
    assert balance.locked == 0
    assert balance.available == Decimal(FUNDS) - report.cost
    assert market.ledger_balanced()


def expected_cost(report: spheron.LeaseReport) -> Decimal:
    """Price x GPUs x billed seconds / 3600, rounded down to the token's base unit."""
    assert report.seconds_billed is not None
    exact = report.price_per_gpu_hour * report.gpus * report.seconds_billed / 3600
    return exact.quantize(Decimal("0.000001"), rounding=ROUND_DOWN)


def test_happy_path_sync(market: spheron.Marketplace) -> None:
    with market.rent(h100(), command=TRAIN) as lease:
        assert lease.status == "active"
        lines = list(lease.logs())
        report = lease.wait()
    assert [l.line for l in lines] == [f"step {i} loss={1.0 / (i + 1):.4f}" for i in range(5)]
    seqs = [l.seq for l in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert all(l.source == "stdout" for l in lines)
    assert report.close_reason == "completed"
    assert report.model in ("h100-sxm", "h100-pcie")
    assert report.price_per_gpu_hour <= Decimal("2.50")
    assert report.budget == Decimal("2.5")
    assert report.proof.passed and report.proof.claimed == report.model
    assert report.breakdown and abs(sum(c.points for c in report.breakdown) - report.score) < 1e-9
    assert report.seconds_billed is not None
    assert report.cost == expected_cost(report)
    assert_settled(market, report)


def test_failover_reason_is_on_the_report(failover_market: spheron.Marketplace) -> None:
    # fra-bargain is ranked first and fails its proof: the next bid is taken, with the reason.
    market = failover_market
    with market.rent(h100(), command=TRAIN) as lease:
        report = lease.wait()
    assert report.provider_name != "fra-bargain"
    failed = [s for s in report.skipped if s.kind == "challenge_failed"]
    assert [s.provider_name for s in failed] == ["fra-bargain"]
    assert "proof-of-GPU" in failed[0].reason
    kinds = [e.kind for e in report.progress]
    assert kinds.index("challenge_failed") < kinds.index("verified")
    # every provider that could not bid is explained too
    named = {s.provider_name for s in report.skipped}
    unfit = {p.name for p in market.providers() if not any(m.startswith("h100") for m in p.models)}
    assert len(unfit) == 8 and unfit <= named and report.provider_name not in named
    assert_settled(market, report)


def test_happy_path_async(market: spheron.Marketplace) -> None:
    async def main() -> tuple[List[str], spheron.LeaseReport]:
        async with await market.rent_async(h100(), command=TRAIN) as lease:
            lines = [l.line async for l in lease.logs()]
            report = await lease.wait_async()
        return lines, report

    lines, report = asyncio.run(main())
    assert lines == [f"step {i} loss={1.0 / (i + 1):.4f}" for i in range(5)]
    assert report.close_reason == "completed"
    assert_settled(market, report)


def test_context_manager_settles_when_the_body_raises(market: spheron.Marketplace) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with market.rent(h100(), command=FOREVER) as lease:
            assert next(iter(lease.logs())).line == "started"
            raise RuntimeError("boom")
    report = lease.report
    assert report.close_reason == "stopped by tenant"
    assert_settled(market, report)


def test_async_context_manager_settles_when_the_body_raises(market: spheron.Marketplace) -> None:
    leases: List[spheron.Lease] = []

    async def main() -> None:
        async with await market.rent_async(h100(), command=FOREVER) as lease:
            leases.append(lease)
            raise KeyError("boom")

    with pytest.raises(KeyError):
        asyncio.run(main())
    report = leases[0].report
    assert report.close_reason == "stopped by tenant"
    assert_settled(market, report)


def test_report_while_running_then_stop(market: spheron.Marketplace) -> None:
    lease = market.rent(h100(), command=FOREVER)
    try:
        running = lease.report
        assert running.status == "active" and not running.closed
        assert running.refund is None and running.cost <= running.budget
        with pytest.raises(spheron.WaitTimeoutError) as e:
            lease.wait(timeout=0.05)
        assert isinstance(e.value, TimeoutError) and e.value.lease == lease.id
        time.sleep(1.1)
        assert lease.report.cost > 0  # accrues per second while running
    finally:
        report = lease.stop()
    assert report.close_reason == "stopped by tenant"
    assert report.seconds_billed is not None and report.seconds_billed >= 1
    assert report.cost == expected_cost(report)
    assert_settled(market, report)
    # stop() is idempotent: a second one gives the same final report.
    again = lease.stop()
    assert (again.lease, again.close_reason, again.cost, again.refund) == (
        report.lease,
        report.close_reason,
        report.cost,
        report.refund,
    )


def test_stop_async(market: spheron.Marketplace) -> None:
    async def main() -> spheron.LeaseReport:
        lease = await market.rent_async(h100(), command=FOREVER)
        return await lease.stop_async()

    report = asyncio.run(main())
    assert report.close_reason == "stopped by tenant"
    assert_settled(market, report)


def test_workload_failure_is_reported_not_raised(market: spheron.Marketplace) -> None:
    with market.rent(h100(), command=py("import sys; print('bad', flush=True); sys.exit(3)")) as lease:
        report = lease.wait()
    assert report.close_reason == "workload failed (exit code 3)"
    assert_settled(market, report)


def test_progress_callback_sees_every_step_in_order(failover_market: spheron.Marketplace) -> None:
    market = failover_market
    seen: List[spheron.ProgressEvent] = []
    with market.rent(h100(), command=TRAIN, progress=seen.append) as lease:
        lease.wait()
    kinds = [e.kind for e in seen]
    assert kinds[:2] == ["published", "bids_in"]
    assert kinds[-4:] == ["verified", "escrow_locked", "launching", "running"]
    assert "challenge_failed" in kinds
    assert seen[0].amount == Decimal("2.5") and "2.5 USDS" in seen[0].message
    assert all(e.order == seen[0].order for e in seen)


def test_progress_display_writes_to_the_given_stream(failover_market: spheron.Marketplace) -> None:
    import io

    market = failover_market
    out = io.StringIO()
    with market.rent(h100(), command=TRAIN, progress=spheron.ProgressDisplay(out)) as lease:
        lease.wait()
    text = out.getvalue()
    assert "verifying" in text and "fra-bargain failed its challenge" in text and "running" in text


def test_raw_events_iterator_sync_and_async(market: spheron.Marketplace) -> None:
    events = market.events()
    with market.rent(h100(), command=TRAIN) as lease:
        lease.wait()
    kinds = []
    while (e := events.next(timeout=1.0)) is not None:
        kinds.append(e.kind)
        if e.kind == "settled":
            break
    assert kinds[0] == "published" and kinds[-1] == "settled"

    async def main() -> List[str]:
        it = market.events()
        async with await market.rent_async(h100(), command=TRAIN) as lease:
            await lease.wait_async()
        out = []
        async for e in it:
            out.append(e.kind)
            if e.kind == "settled":
                break
        return out

    kinds = asyncio.run(main())
    assert kinds[0] == "published" and kinds[-1] == "settled"


def test_gil_is_released_while_waiting(market: spheron.Marketplace) -> None:
    ticks = 0
    done = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.005)

    with market.rent(h100(), command=py("import time; time.sleep(1)")) as lease:
        t = threading.Thread(target=count)
        t.start()
        try:
            lease.wait()  # blocks for about a second
        finally:
            done.set()
            t.join()
    # With the GIL held for the whole wait the counter could not move at all.
    assert ticks >= 20


def test_logs_include_system_lines_on_request(market: spheron.Marketplace) -> None:
    with market.rent(h100(), command=TRAIN) as lease:
        lease.wait()
        every = list(lease.logs(system=True))
    assert any(l.source == "system" for l in every)
    assert [l.seq for l in every] == sorted(l.seq for l in every)


def test_cancelled_rent_async_settles_the_lease_it_produced() -> None:
    # The flow is never cut half-way: the lease it produces after the caller went away is
    # stopped and settled (otherwise this FOREVER workload would never settle).
    market = spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.5, progress=False)
    events = market.events()

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(market.rent_async(h100(), command=FOREVER), timeout=0.1)

    asyncio.run(main())
    kinds = []
    while (e := events.next(timeout=10.0)) is not None:
        kinds.append(e.kind)
        if e.kind == "settled":
            break
    assert kinds[-1] == "settled" and "running" in kinds
    b = market.balance()
    assert b.locked == 0 and market.ledger_balanced()
    assert b.available > Decimal(FUNDS) - Decimal("2.5")
