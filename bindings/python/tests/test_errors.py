"""Each exception raised by a realistic cause, and custom Python matchers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, List

import pytest

import spheron
from conftest import FUNDS, TRAIN, h100


def test_hierarchy() -> None:
    for cls in (
        spheron.InvalidRequestError,
        spheron.NoMatchError,
        spheron.ChallengeFailedError,
        spheron.InsufficientFundsError,
        spheron.LaunchError,
        spheron.MatcherError,
        spheron.LeaseClosedError,
        spheron.ProverError,
        spheron.BackendError,
        spheron.MarketplaceError,
        spheron.WaitTimeoutError,
        spheron.StepTimeoutError,
        spheron.UnsupportedError,
    ):
        assert issubclass(cls, spheron.SpheronError)
    assert issubclass(spheron.ChallengeFailedError, spheron.NoMatchError)
    assert issubclass(spheron.StepTimeoutError, TimeoutError)
    assert issubclass(spheron.WaitTimeoutError, TimeoutError)


def test_embedded_withdraw_and_kind(market: spheron.Marketplace) -> None:
    assert market.kind == "local" and market.network is None
    market.withdraw("40")
    assert market.balance().available == Decimal(FUNDS) - 40
    with pytest.raises(spheron.InsufficientFundsError):
        market.withdraw("1000")
    market.deposit("40")
    assert market.balance().available == Decimal(FUNDS)
    assert market.ledger_balanced()


def test_insufficient_funds() -> None:
    market = spheron.Marketplace.local("1", seed=7, bid_window=0.05)
    with pytest.raises(spheron.InsufficientFundsError) as e:
        market.rent(h100(), command=TRAIN)
    assert e.value.needed == Decimal("2.5") and e.value.available == Decimal("1")
    assert market.balance().available == Decimal("1")


def test_no_match_lists_every_provider_and_why(market: spheron.Marketplace) -> None:
    # Nobody offers a T4 in Europe: the failure names all twelve providers with a reason.
    with pytest.raises(spheron.NoMatchError) as e:
        market.rent(spheron.GpuRequest("t4", hours=1, max_price_per_hour="1", region="eu-west"), command=TRAIN)
    assert not isinstance(e.value, spheron.ChallengeFailedError)
    reasons = e.value.reasons()
    assert len(reasons) == 12
    assert "not a requested model" in reasons["ams-hyperscale"]
    assert "region ap-south not allowed" in reasons["bom-entry"]
    assert e.value.order is not None and "no provider can serve" in str(e.value)
    assert market.balance().available == Decimal(FUNDS) and market.balance().locked == 0


def test_no_match_on_price(market: spheron.Marketplace) -> None:
    with pytest.raises(spheron.NoMatchError) as e:
        market.rent(h100(max_price_per_hour="0.50"), command=TRAIN)
    assert {s.kind for s in e.value.rejected} >= {"model", "other"}


def test_challenge_failed_when_only_a_cheat_can_serve(market: spheron.Marketplace) -> None:
    with pytest.raises(spheron.ChallengeFailedError) as e:
        market.rent(h100(allow_providers=["fra-bargain"]), command=TRAIN)
    assert [s.provider_name for s in e.value.failed] == ["fra-bargain"]
    assert isinstance(e.value, spheron.NoMatchError)
    # the cheat was penalised: slashed and demoted
    bargain = next(p for p in market.providers() if p.name == "fra-bargain")
    assert bargain.stake < Decimal("500") and bargain.tier < 5
    assert market.balance().locked == 0


def test_launch_error_refunds_everything(market: spheron.Marketplace) -> None:
    with pytest.raises(spheron.LaunchError) as e:
        market.rent(h100(), command=["/nonexistent/definitely-not-a-program"])
    assert "definitely-not-a-program" in str(e.value)
    b = market.balance()
    assert b.available == Decimal(FUNDS) and b.locked == 0
    assert market.ledger_balanced()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(command=[]), "command"),
        (dict(command=[""]), "command"),
        (dict(command=["true"], env={"1BAD": "x"}), "env"),
    ],
)
def test_bad_workload_is_an_invalid_request(market: spheron.Marketplace, kwargs: dict, field: str) -> None:
    with pytest.raises(spheron.InvalidRequestError) as e:
        market.rent(h100(), **kwargs)
    assert e.value.field == field


def test_bad_marketplace_arguments() -> None:
    with pytest.raises(spheron.InvalidRequestError) as e:
        spheron.Marketplace.local("-5")
    assert e.value.field == "funds"
    with pytest.raises(spheron.InvalidRequestError) as e:
        spheron.Marketplace.local("5", max_attempts=0)
    assert e.value.field == "max_attempts"
    with pytest.raises(spheron.InvalidRequestError) as e:
        spheron.Marketplace.local("5", bid_window=-1.0)
    assert e.value.field == "bid_window"


class PickMostExpensive:
    """Honours nothing but price, highest first: easy to tell from the default matcher."""

    def __init__(self) -> None:
        self.calls: List[Any] = []

    def rank(self, order: spheron.Order, bids: List[spheron.Bid]) -> List[spheron.Bid]:
        self.calls.append((order, list(bids)))
        return sorted(bids, key=lambda b: b.price_per_hour, reverse=True)


def test_custom_matcher_is_called_and_honoured() -> None:
    m = PickMostExpensive()
    market = spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.05, matcher=m)
    with market.rent(h100(max_price_per_hour="3.00"), command=TRAIN) as lease:
        report = lease.wait()
    assert len(m.calls) == 1
    order, bids = m.calls[0]
    assert order.count == 1 and order.max_price_per_hour == Decimal("3")
    assert order.gpus == ["h100-sxm", "h100-pcie"]
    top = max(bids, key=lambda b: b.price_per_hour)
    assert report.provider_name == top.provider_name
    assert report.price_per_gpu_hour == top.price_per_hour


def test_custom_matcher_may_name_providers_and_leave_bids_out() -> None:
    class OnlyPar:
        def rank(self, order: spheron.Order, bids: List[spheron.Bid]) -> List[object]:
            return ["par-gpu-coop"]

    market = spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.05, matcher=OnlyPar())
    with market.rent(h100(), command=TRAIN) as lease:
        report = lease.wait()
    assert report.provider_name == "par-gpu-coop"
    assert any(s.reason == "not chosen by OnlyPar" for s in report.skipped)


def test_custom_matcher_pairs_with_scores() -> None:
    class Scored:
        def rank(self, order: spheron.Order, bids: List[spheron.Bid]) -> List[object]:
            return [(b, float(b.tier)) for b in sorted(bids, key=lambda b: -b.tier)]

    market = spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.05, matcher=Scored())
    with market.rent(h100(), command=TRAIN) as lease:
        report = lease.wait()
    assert report.tier == 7 and report.score == 7.0


def test_matcher_that_raises_is_a_clear_error() -> None:
    class Broken:
        def rank(self, order: spheron.Order, bids: List[spheron.Bid]) -> List[spheron.Bid]:
            raise ValueError("weights file missing")

    market = spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.05, matcher=Broken())
    with pytest.raises(spheron.MatcherError) as e:
        market.rent(h100(), command=TRAIN)
    assert "Broken.rank raised" in str(e.value) and "weights file missing" in str(e.value)
    assert isinstance(e.value.__cause__, ValueError)
    assert market.balance().available == Decimal(FUNDS) and market.balance().locked == 0


@pytest.mark.parametrize(
    "result, message",
    [
        (42, "must return a list of bids"),
        (["nobody"], "not one of the bids"),
        (["ams-hyperscale", "ams-hyperscale"], "twice"),
        ([("ams-hyperscale", float("inf"))], "not finite"),
    ],
)
def test_matcher_returning_nonsense_is_a_clear_error(result: object, message: str) -> None:
    class Odd:
        def rank(self, order: spheron.Order, bids: List[spheron.Bid]) -> object:
            return result

    market = spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.05, matcher=Odd())
    with pytest.raises(spheron.MatcherError, match=message):
        market.rent(h100(), command=TRAIN)


def test_not_a_matcher() -> None:
    with pytest.raises(TypeError, match="rank"):
        spheron.Marketplace.local(FUNDS, matcher=object())  # type: ignore[arg-type]


def test_async_errors_are_the_same_classes(market: spheron.Marketplace) -> None:
    import asyncio

    async def main() -> None:
        await market.rent_async(h100(allow_providers=["fra-bargain"]), command=TRAIN)

    with pytest.raises(spheron.ChallengeFailedError):
        asyncio.run(main())


def test_matcher_may_call_back_into_the_marketplace() -> None:
    # rank runs on a runtime worker thread; blocking calls from there must not deadlock or panic.
    class ByTier:
        market: spheron.Marketplace
        seen: List[Decimal] = []

        def rank(self, order: spheron.Order, bids: List[spheron.Bid]) -> List[spheron.Bid]:
            self.seen.append(self.market.balance().available)
            tiers = {p.name: p.tier for p in self.market.providers()}
            return sorted(bids, key=lambda b: -tiers[b.provider_name])

    m = ByTier()
    market = spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.05, matcher=m)
    m.market = market
    with market.rent(h100(), command=TRAIN) as lease:
        assert lease.wait().tier == 7
    assert m.seen == [Decimal(FUNDS)]
