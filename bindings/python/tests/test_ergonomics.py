"""Training-script ergonomics: string commands, leases that never outlive the interpreter,
idempotent stop, secrets, image refusal, progress per rent."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import List

import pytest

import spheron
from conftest import FOREVER, FUNDS, TRAIN, h100, py


def wait_dead(pid: int, limit: float = 15.0) -> bool:
    """Whether process `pid` is gone within `limit` seconds (a bounded wait, not a timing
    assertion)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def pid_writer(path: Path) -> List[str]:
    """A workload that writes its pid to `path`, then runs until stopped."""
    return py(
        f"""
        import os, time
        open({str(path)!r}, "w").write(str(os.getpid()))
        print("started", flush=True)
        time.sleep(600)
        """
    )


def read_pid(path: Path) -> int:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.02)
    raise AssertionError(f"the workload never wrote {path}")


def lines(lease: spheron.Lease, system: bool = False) -> List[str]:
    return [l.line for l in lease.logs(system=system)]


# --- command ------------------------------------------------------------------------------


def test_a_string_command_runs_split_like_a_shell(market: spheron.Marketplace) -> None:
    cmd = f"{sys.executable} -c \"import sys; print('args:', sys.argv[1:])\" 'two words' x"
    with market.rent(h100(), command=cmd) as lease:
        out = lines(lease)
        report = lease.wait()
    assert out == ["args: ['two words', 'x']"]
    assert report.close_reason == "completed"


def test_a_list_command_is_taken_as_is_and_accepts_paths(market: spheron.Marketplace, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("import sys; print('ran', sys.argv[1])\n")
    with market.rent(h100(), command=[Path(sys.executable), script, "a b"]) as lease:
        assert lines(lease) == ["ran a b"]


def test_bad_commands_are_refused_before_renting(market: spheron.Marketplace) -> None:
    before = market.balance().available
    with pytest.raises(spheron.InvalidRequestError) as e:
        market.rent(h100(), command="python -c 'unclosed")
    assert e.value.field == "command"
    with pytest.raises(spheron.InvalidRequestError):
        market.rent(h100(), command="   ")
    with pytest.raises(TypeError):
        market.rent(h100(), command=b"python train.py")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        market.rent(h100(), command=["python", 3])  # type: ignore[list-item]
    assert market.balance().available == before


# --- stop ---------------------------------------------------------------------------------


def test_stop_is_idempotent_also_while_settling(market: spheron.Marketplace) -> None:
    lease = market.rent(h100(), command=FOREVER)
    reports: List[spheron.LeaseReport] = []
    errors: List[BaseException] = []

    def stop() -> None:
        try:
            reports.append(lease.stop())
        except BaseException as e:  # noqa: BLE001 - the test reports any
            errors.append(e)

    threads = [threading.Thread(target=stop) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    reports.append(lease.stop())
    assert {(r.lease, r.close_reason, r.cost, r.refund) for r in reports} == {
        (lease.id, "stopped by tenant", reports[0].cost, reports[0].refund)
    }
    assert market.ledger_balanced()

    async def twice() -> List[spheron.LeaseReport]:
        lease = await market.rent_async(h100(), command=FOREVER)
        return list(await asyncio.gather(lease.stop_async(), lease.stop_async()))

    a, b = asyncio.run(twice())
    assert a.lease == b.lease and a.close_reason == b.close_reason == "stopped by tenant"


def test_stop_after_the_workload_ended_gives_the_report(market: spheron.Marketplace) -> None:
    lease = market.rent(h100(), command=TRAIN)
    done = lease.wait()
    assert lease.stop().close_reason == done.close_reason == "completed"


# --- leases never outlive the interpreter -------------------------------------------------


def test_a_lease_left_open_at_interpreter_exit_is_stopped_and_settled(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    child = textwrap.dedent(
        f"""
        import atexit, sys

        state = {{}}

        def check():  # registered before spheron's handler, so it runs after it
            lease, market = state["lease"], state["market"]
            print("closed", lease.closed, file=sys.stdout)
            print("reason", lease.report.close_reason, file=sys.stdout)
            print("balanced", market.ledger_balanced(), file=sys.stdout)
            sys.stdout.flush()

        atexit.register(check)
        import spheron
        market = spheron.Marketplace.local("100", seed=7, bid_window=0.05, progress=False)
        request = spheron.GpuRequest("h100", count=1, hours=1, max_price_per_hour="2.50")
        lease = market.rent(request, command={pid_writer(pidfile)!r})
        state.update(lease=lease, market=market)
        assert next(iter(lease.logs())).line == "started"
        print("rented", lease.id, flush=True)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    lease_id = out[0].split()[1]
    assert out[1:] == ["closed True", "reason stopped by tenant", "balanced True"], done.stdout
    assert f"stopped and settled lease(s) {lease_id} left open at exit" in done.stderr
    assert wait_dead(read_pid(pidfile))


def test_a_collected_open_lease_warns_and_is_stopped(market: spheron.Marketplace, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    before = market.balance()
    lease = market.rent(h100(), command=pid_writer(pidfile))
    pid = read_pid(pidfile)
    with pytest.warns(spheron.UnclosedLeaseWarning, match=f"lease {lease.id} was still open"):
        del lease
        gc.collect()
    assert wait_dead(pid)
    deadline = time.monotonic() + 15
    while market.balance().locked != before.locked and time.monotonic() < deadline:
        time.sleep(0.05)
    assert market.balance().locked == before.locked
    assert market.ledger_balanced()


def test_a_closed_lease_is_collected_silently(market: spheron.Marketplace) -> None:
    import warnings

    with market.rent(h100(), command=TRAIN) as lease:
        lease.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del lease
        gc.collect()
    assert spheron._native.settle_open_leases() == []


# --- env, secrets, image ------------------------------------------------------------------

SECRET = "hunter2-\u00e9-very-secret-token"


def test_secrets_reach_the_workload_but_not_logs_repr_or_events(market: spheron.Marketplace) -> None:
    events: List[spheron.ProgressEvent] = []
    code = """
        import hashlib, os
        print("token sha256", hashlib.sha256(os.environ["HF_TOKEN"].encode()).hexdigest(), flush=True)
        print("mode", os.environ["MODE"], flush=True)
        """
    with market.rent(
        h100(), command=py(code), env={"MODE": "train"}, secrets={"HF_TOKEN": SECRET}, progress=events.append
    ) as lease:
        out = lines(lease, system=True)
        report = lease.wait()
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    assert f"token sha256 {digest}" in out and "mode train" in out
    shown = "\n".join(out + [repr(lease), repr(report), repr(market)] + [e.message for e in events])
    assert SECRET not in shown


def test_a_name_in_env_and_secrets_and_bad_names_are_refused(market: spheron.Marketplace) -> None:
    with pytest.raises(spheron.InvalidRequestError) as e:
        market.rent(h100(), command=TRAIN, env={"K": "a"}, secrets={"K": "b"})
    assert e.value.field == "secrets"
    with pytest.raises(spheron.InvalidRequestError) as e:
        market.rent(h100(), command=TRAIN, secrets={"1BAD": SECRET})
    assert SECRET not in str(e.value)
    with pytest.raises(TypeError) as t:
        market.rent(h100(), command=TRAIN, secrets={"K": 5})  # type: ignore[dict-item]
    assert "5" not in str(t.value)


def test_the_local_launcher_refuses_an_image(market: spheron.Marketplace) -> None:
    before = market.balance()
    with pytest.raises(spheron.InvalidRequestError) as e:
        market.rent(h100(), command=TRAIN, image="nvcr.io/nvidia/pytorch:24.05-py3")
    assert e.value.field == "image" and "nvcr.io/nvidia/pytorch:24.05-py3" in str(e.value)
    after = market.balance()
    assert (after.available, after.locked) == (before.available, before.locked)
    assert market.ledger_balanced()


# --- progress per rent --------------------------------------------------------------------


def test_concurrent_rents_see_only_their_own_progress() -> None:
    market = spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.2, progress=False)
    seen: List[List[spheron.ProgressEvent]] = [[], [], []]

    async def main() -> None:
        leases = await asyncio.gather(
            *(market.rent_async(h100(), command=TRAIN, progress=s.append) for s in seen[:2])
        )
        for lease in leases:
            await lease.stop_async()

    asyncio.run(main())

    def thread() -> None:
        with market.rent(h100(), command=TRAIN, progress=seen[2].append) as lease:
            lease.wait()

    t = threading.Thread(target=thread)
    t.start()
    with market.rent(h100(), command=TRAIN, progress=False) as lease:
        lease.wait()
    t.join()
    orders = []
    for events in seen:
        kinds = [e.kind for e in events]
        assert kinds[0] == "published" and kinds[-1] == "running", kinds
        assert len({e.order for e in events}) == 1
        orders.append(events[0].order)
    assert len(set(orders)) == 3


def test_plain_progress_names_the_order(market: spheron.Marketplace) -> None:
    out = io.StringIO()
    with market.rent(h100(), command=TRAIN, progress=spheron.ProgressDisplay(out)) as lease:
        lease.wait()
    first = out.getvalue().splitlines()[0]
    assert first.startswith("spheron order ") and "bidding" in first


@pytest.mark.parametrize("style", ["rich", "tqdm"])
def test_rich_and_tqdm_displays_when_installed(market: spheron.Marketplace, style: str) -> None:
    pytest.importorskip(style)
    out = io.StringIO()
    with market.rent(h100(), command=TRAIN, progress=spheron.ProgressDisplay(out, style=style)) as lease:
        lease.wait()
    assert "running" in out.getvalue()


def test_progress_styles_are_checked() -> None:
    from spheron import _progress

    with pytest.raises(ValueError):
        spheron.ProgressDisplay(style="fancy")
    assert _progress.default_style() in _progress.STYLES
    assert not _progress.in_notebook()


# --- quote --------------------------------------------------------------------------------


class Recorder:
    """Ranks by price and remembers the bids it saw."""

    def __init__(self) -> None:
        self.bids: List[spheron.Bid] = []

    def rank(self, order: spheron.Order, bids: List[spheron.Bid]) -> List[spheron.Bid]:
        self.bids = list(bids)
        return sorted(bids, key=lambda b: b.price_per_hour)


def test_quote_shows_the_prices_the_rent_then_gets() -> None:
    from decimal import Decimal

    recorder = Recorder()
    market = spheron.Marketplace.local(FUNDS, seed=7, bid_window=0.05, matcher=recorder, progress=False)
    request = h100(count=2, hours=2, max_price_per_hour="3")
    before = market.balance()
    quotes = market.quote(request)
    assert market.balance().locked == before.locked  # nothing locked
    assert quotes and all(q.region in ("eu-central", "eu-west") for q in quotes)
    prices = [q.price_per_hour for q in quotes]
    assert prices == sorted(prices) and all(p <= Decimal("3") for p in prices)
    assert all(q.cost == q.price_per_hour * 2 * 2 for q in quotes)
    assert "GPU-hour" in repr(quotes[0])
    with market.rent(request, command=TRAIN) as lease:
        lease.wait()
    bid_prices = {b.provider_name: b.price_per_hour for b in recorder.bids if b.region in ("eu-central", "eu-west")}
    assert {q.provider_name: q.price_per_hour for q in quotes} == bid_prices
    # A ceiling below every price: no quote.
    assert market.quote(h100(max_price_per_hour="0.01")) == []
