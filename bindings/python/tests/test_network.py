"""The network mode: ``Marketplace.connect`` against one ``spheron devnet`` (anvil with the
contracts, three provider nodes and an operator node, each its own process), started once
for the module.

The devnet binary is ``$SPHERON_BIN`` (default ``<repo>/target/debug/spheron``, built by
``cargo build -p spheron-cli``; ``scripts/python-test.sh`` builds it). Without it the module
is skipped, unless ``SPHERON_REQUIRE_ANVIL`` is set (CI): then it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import spheron

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("SPHERON_BIN") or REPO / "target" / "debug" / "spheron")
REQUIRED = bool(os.environ.get("SPHERON_REQUIRE_ANVIL"))
READY_TIMEOUT_S = 180.0
HELLO = ["python3", "-c", "print('hello from the provider')"]

if not BIN.is_file() and not REQUIRED:
    pytest.skip(
        f"no spheron binary at {BIN}: build it with `cargo build -p spheron-cli` or set "
        "SPHERON_BIN (set SPHERON_REQUIRE_ANVIL to make this a failure)",
        allow_module_level=True,
    )


def one_h100(**kw: Any) -> spheron.GpuRequest:
    """One H100 for an hour at up to 5.00 per GPU-hour: a 5 USDS budget."""
    args: Dict[str, Any] = dict(count=1, hours=1, max_price_per_hour="5")
    args.update(kw)
    return spheron.GpuRequest("h100", **args)


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Starts one devnet for the module; yields its network.json; SIGTERMs it at the end."""
    if not BIN.is_file():
        pytest.fail(f"SPHERON_REQUIRE_ANVIL is set but there is no spheron binary at {BIN}")
    root = tmp_path_factory.mktemp("devnet")
    out_path, err_path = root / "devnet.out", root / "devnet.err"
    # Output goes to files, not pipes: nobody reads a pipe once the devnet is ready.
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [str(BIN), "devnet", "--dir", str(root / "net"), "--providers", "3"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    try:
        network = wait_ready(proc, out_path, err_path)
        yield network
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(proc: "subprocess.Popen[bytes]", out_path: Path, err_path: Path) -> Path:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        for line in out_path.read_text(errors="replace").splitlines():
            if line.startswith("devnet ready: "):
                return Path(line[len("devnet ready: ") :].strip())
        if proc.poll() is not None:
            pytest.fail(
                f"`spheron devnet` exited with {proc.returncode} before it was ready:\n"
                f"{tail(out_path)}\n{tail(err_path)}"
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"`spheron devnet` was not ready within {READY_TIMEOUT_S:.0f} s:\n"
                f"{tail(out_path)}\n{tail(err_path)}"
            )
        time.sleep(0.2)


@pytest.fixture(scope="module")
def network_file(devnet: Path) -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads(devnet.read_text())
    return data


@pytest.fixture(scope="module")
def market(devnet: Path) -> spheron.Marketplace:
    """The devnet's first tenant (the default key)."""
    return spheron.Marketplace.connect(network=devnet, progress=False)


def test_connect_defaults_to_the_first_tenant(
    market: spheron.Marketplace, network_file: Dict[str, Any], devnet: Path
) -> None:
    assert market.kind == "network"
    assert market.network == str(devnet)
    assert market.tenant.lower() == network_file["tenants"][0]["address"].lower()
    assert market.token == network_file["payment"]["symbol"] == "USDS"
    assert "Marketplace.connect(" in repr(market)
    b = market.balance()
    assert isinstance(b.available, Decimal) and b.available > 0 and b.staked == 0


def test_providers_come_from_the_registry(market: spheron.Marketplace, network_file: Dict[str, Any]) -> None:
    providers = market.providers()
    addresses = {p["address"].lower() for p in network_file["parties"] if p["role"] == "provider"}
    assert len(providers) == 3
    assert {p.id.lower() for p in providers} == addresses
    assert all(p.name and p.models for p in providers)


def test_quote_asks_each_provider_gateway(market: spheron.Marketplace) -> None:
    from decimal import Decimal

    before = market.balance()
    quotes = market.quote(one_h100())
    assert market.balance().locked == before.locked  # nothing published or locked
    # The devnet's three H100 providers list 2.20 (ams), 2.40 (fra) and 2.80 (iad).
    listed = {"ams-h100": Decimal("2.20"), "fra-h100": Decimal("2.40"), "iad-h100": Decimal("2.80")}
    assert len(quotes) == 3, quotes
    assert all(listed[q.provider_name] == q.price_per_hour for q in quotes)
    assert [q.price_per_hour for q in quotes] == sorted(q.price_per_hour for q in quotes)
    assert all(q.cost == q.price_per_hour and q.model == "h100-sxm" and q.free_gpus >= 1 for q in quotes)
    registered = {p.id.lower() for p in market.providers()}
    assert {q.provider.lower() for q in quotes} <= registered
    # The matcher's filters apply: one region; a ceiling under every price.
    only = market.quote(one_h100(region="eu-west"))
    assert [q.provider_name for q in only] == ["ams-h100"]
    assert market.quote(one_h100(max_price_per_hour="2")) == []


def test_rent_runs_on_the_provider_and_settles(market: spheron.Marketplace) -> None:
    before = market.balance()
    events: List[spheron.ProgressEvent] = []
    request = one_h100()
    assert request.budget == Decimal("5")
    with market.rent(request, command=HELLO, progress=events.append) as lease:
        assert lease.status == "active"
        lines = [l.line for l in lease.logs()]
        report = lease.wait(timeout=120)
    assert "hello from the provider" in lines
    assert report.closed and report.status == "closed"
    assert report.close_reason == "completed"
    assert report.model.startswith("h100")
    assert report.price_per_gpu_hour <= Decimal("5")
    assert report.proof.passed
    assert report.token == "USDS"
    assert report.provider_name in {p.name for p in market.providers()}
    # Exact money: what was locked is either paid or refunded, to the base unit.
    assert report.budget == Decimal("5")
    assert report.refund is not None
    assert report.cost + report.refund == report.budget == Decimal("5")
    after = market.balance()
    assert after.locked == before.locked
    assert after.available == before.available - report.cost
    kinds = [e.kind for e in events]
    for k in ("published", "matched", "verified", "running"):
        assert k in kinds, kinds
    assert all(e.order == events[0].order for e in events)


def test_rent_async(devnet: Path, network_file: Dict[str, Any]) -> None:
    # The second tenant; the workload reports the process that launched it.
    tenant = network_file["tenants"][1]
    market = spheron.Marketplace.connect(devnet, tenant["key"], progress=False)
    assert market.tenant.lower() == tenant["address"].lower()
    code = "import os; print('hello from the provider'); print('parent', os.getppid())"

    async def main() -> "tuple[List[str], spheron.LeaseReport]":
        lease = await market.rent_async(one_h100(), command=["python3", "-c", code])
        async with lease:
            lines = [l.line async for l in lease.logs()]
            report = await lease.wait_async()
        return lines, report

    lines, report = asyncio.run(main())
    assert "hello from the provider" in lines
    assert report.close_reason == "completed"
    assert report.refund is not None and report.cost + report.refund == Decimal("5")
    # It ran under the chosen provider's node process, not under this one.
    parents = {int(l.split()[1]) for l in lines if l.startswith("parent ")}
    provider_pids = {
        p["pid"] for p in network_file["parties"] if p["address"].lower() == report.provider.lower()
    }
    assert parents and parents <= provider_pids
    assert os.getpid() not in parents


def test_insufficient_funds(market: spheron.Marketplace) -> None:
    available = market.balance().available
    with pytest.raises(spheron.InsufficientFundsError) as e:
        market.rent(one_h100(hours=1000), command=HELLO)  # 5000 USDS > the 1000 escrowed
    assert e.value.needed == Decimal("5000")
    assert e.value.available == available
    assert market.balance().available == available


def test_embedded_only_methods_say_so(market: spheron.Marketplace) -> None:
    with pytest.raises(spheron.UnsupportedError) as e:
        market.ledger_balanced()
    assert e.value.method == "ledger_balanced" and e.value.backend == "network"
    assert "embedded" in str(e.value)


def test_deposit_and_withdraw(devnet: Path, network_file: Dict[str, Any]) -> None:
    market = spheron.Marketplace.connect(devnet, network_file["tenants"][2]["key"], progress=False)
    start = market.balance().available
    market.withdraw("1.5")
    assert market.balance().available == start - Decimal("1.5")
    market.deposit("1.5")
    assert market.balance().available == start
    with pytest.raises(spheron.SpheronError):
        market.withdraw(start + 1)


def test_connect_bad_path_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-network.json"
    with pytest.raises(spheron.InvalidRequestError) as e:
        spheron.Marketplace.connect(network=missing, key="0x" + "11" * 32)
    assert e.value.field == "network"
    assert str(missing) in str(e.value)
    # Without a key the default tenant is read from the same file: the same error.
    with pytest.raises(spheron.InvalidRequestError) as e:
        spheron.Marketplace.connect(network=missing)
    assert str(missing) in str(e.value)


def test_connect_from_the_environment(
    devnet: Path, network_file: Dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = network_file["tenants"][1]
    monkeypatch.setenv("SPHERON_NETWORK", str(devnet))
    monkeypatch.setenv("SPHERON_KEY", tenant["key"])
    market = spheron.Marketplace.connect()
    assert market.tenant.lower() == tenant["address"].lower()
    monkeypatch.delenv("SPHERON_NETWORK")
    with pytest.raises(spheron.InvalidRequestError) as e:
        spheron.Marketplace.connect()
    assert e.value.field == "network" and "SPHERON_NETWORK" in str(e.value)


def test_connect_bad_key(devnet: Path) -> None:
    with pytest.raises(spheron.InvalidRequestError) as e:
        spheron.Marketplace.connect(devnet, "not-a-key")
    assert e.value.field == "key"


NET_SECRET = "net-secret-\u00e9-7f3a9c"


def test_a_string_command_with_env_and_secrets_runs_on_the_provider(
    market: spheron.Marketplace, devnet: Path
) -> None:
    events: List[spheron.ProgressEvent] = []
    code = (
        "import hashlib, os; "
        "print('mode', os.environ['MODE']); "
        "print('sha', hashlib.sha256(os.environ['API_KEY'].encode()).hexdigest())"
    )
    with market.rent(
        one_h100(),
        command=f'python3 -c "{code}"',
        env={"MODE": "train"},
        secrets={"API_KEY": NET_SECRET},
        progress=events.append,
    ) as lease:
        lines = [l.line for l in lease.logs(system=True)]
        report = lease.wait(timeout=120)
    import hashlib

    assert "mode train" in lines
    assert f"sha {hashlib.sha256(NET_SECRET.encode()).hexdigest()}" in lines
    assert report.close_reason == "completed"
    shown = "\n".join(lines + [repr(lease), repr(report)] + [e.message for e in events])
    assert NET_SECRET not in shown
    # Nothing the devnet's nodes wrote (logs, databases, keys, network file) holds it.
    needle = NET_SECRET.encode()
    for f in devnet.parent.rglob("*"):
        if f.is_file():
            assert needle not in f.read_bytes(), f


def test_torchrun_on_two_gpus_of_a_provider(market: spheron.Marketplace) -> None:
    import sys

    standins = Path(__file__).parent / "standins"
    workload = spheron.torchrun(
        standins / "rank_report.py",
        gpus=2,
        master_port=29622,
        program=[sys.executable, str(standins / "fake_torchrun.py")],
    )
    with market.rent(one_h100(count=2), workload) as lease:
        lines = sorted(l.line for l in lease.logs())
        report = lease.wait(timeout=120)
    assert report.close_reason == "completed" and report.gpus == 2, lines
    # The provider's node may run other leases: the lease's two GPUs, whichever they are.
    launcher = next(l for l in lines if l.startswith("launcher "))
    visible = launcher.split("CUDA_VISIBLE_DEVICES=")[1].split(",")
    assert len(set(visible)) == 2, launcher
    assert [l for l in lines if l.startswith("rank ")] == [
        f"rank 0/2 local 0 master 127.0.0.1:29622 gpu {visible[0]} args []",
        f"rank 1/2 local 1 master 127.0.0.1:29622 gpu {visible[1]} args []",
    ]


def test_workdir_upload_and_output_download_through_the_gateway(
    market: spheron.Marketplace, tmp_path: Path
) -> None:
    src = tmp_path / "proj"
    (src / "data").mkdir(parents=True)
    (src / ".venv").mkdir()
    (src / ".venv" / "big").write_bytes(b"\0" * 100_000)
    (src / "data" / "x.txt").write_text("41\n")
    (src / "train.py").write_text(
        "import os, pathlib\n"
        "n = int(pathlib.Path('data/x.txt').read_text()) + 1\n"
        "pathlib.Path(os.environ['SPHERON_OUTPUTS'], 'answer.txt').write_text(str(n))\n"
        "print('listing', sorted(os.listdir('.')), flush=True)\n"
    )
    with market.rent(one_h100(), command="python3 train.py", workdir=src) as lease:
        lines = [l.line for l in lease.logs()]
        report = lease.wait(timeout=120)
    assert report.close_reason == "completed", lines
    assert "listing ['data', 'outputs', 'train.py']" in lines
    # After the lease closed: the provider keeps the outputs for the grace period.
    dest = tmp_path / "answer.txt"
    assert lease.download("outputs/answer.txt", dest) == 2
    assert dest.read_text() == "42"
    with pytest.raises(spheron.BackendError) as e:
        lease.download("../../provider.key", tmp_path / "k")
    assert "no_such_file" in str(e.value) or "NoSuchFile" in str(e.value)


def _pinned_get(endpoint: spheron.Endpoint, path: str, headers: Dict[str, str]) -> "tuple[int, bytes]":
    """GET ``path`` of the endpoint over HTTPS, accepting only the gateway certificate whose
    SHA-256 is ``endpoint.cert_hash`` (what an external client does to pin it)."""
    import hashlib
    import http.client
    import ssl
    import urllib.parse

    u = urllib.parse.urlsplit(endpoint.url)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False  # the certificate is pinned by hash instead
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(u.hostname or "", u.port, context=ctx, timeout=30)
    try:
        conn.connect()
        der = conn.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert der is not None and "0x" + hashlib.sha256(der).hexdigest() == endpoint.cert_hash
        conn.request("GET", u.path.rstrip("/") + path, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_a_service_port_through_the_gateway(market: spheron.Marketplace) -> None:
    serve = "printf served > hello.txt; exec python3 -m http.server \"$PORT\" --bind 127.0.0.1"
    with market.rent(one_h100(), command=["sh", "-c", serve], ports=[8000]) as lease:
        ep = lease.endpoint(8000)
        assert ep.port == 8000
        assert ep.url.startswith("https://") and ep.url.endswith(f"/lease/{lease.id}/ports/8000/")
        assert ep.token and ep.headers == {"authorization": f"Bearer {ep.token}"}
        assert ep.token not in repr(ep)
        deadline = time.monotonic() + 60
        while True:
            status, body = _pinned_get(ep, "/hello.txt", ep.headers)
            if status == 200 or time.monotonic() > deadline:
                break
            assert status == 502, body  # the server is not listening yet
            time.sleep(0.25)
        assert (status, body) == (200, b"served")
        status, body = _pinned_get(ep, "/hello.txt", {})
        assert status == 401 and json.loads(body)["error"] == "unsigned"
        status, body = _pinned_get(ep, "/hello.txt", {"authorization": "Bearer " + "0" * 64})
        assert status == 401 and json.loads(body)["error"] == "bad_token"
        lease.stop()
        with pytest.raises(spheron.LeaseClosedError):
            lease.endpoint(8000)
        deadline = time.monotonic() + 30
        while True:
            status, body = _pinned_get(ep, "/hello.txt", ep.headers)
            if status == 409 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert status == 409 and json.loads(body)["error"] == "not_running", body


def test_the_training_example_uploads_trains_and_downloads_on_the_devnet(devnet: Path) -> None:
    import sys

    example = REPO / "examples" / "python" / "train_on_rented_gpu.py"
    done = subprocess.run(
        [sys.executable, str(example), "--network", str(devnet), "--steps", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "saved checkpoint outputs/model.ckpt" in done.stdout
    assert "downloaded " in done.stdout and "completed" in done.stdout


def test_a_lost_provider_resumes_elsewhere_from_the_checkpoint(
    market: spheron.Marketplace, network_file: Dict[str, Any], tmp_path: Path
) -> None:
    # Last in the module: it kills a provider of the shared devnet.
    src = tmp_path / "proj"
    src.mkdir()
    (src / "train.py").write_text(
        "import os, pathlib, time\n"
        "out = pathlib.Path(os.environ['SPHERON_OUTPUTS'])\n"
        "resume = os.environ.get('SPHERON_RESUME_FROM')\n"
        "start = int(pathlib.Path(resume).read_text()) if resume else 0\n"
        "step = start\n"
        "while step < 30:\n"
        "    step += 1\n"
        "    (out / 'ckpt.tmp').write_text(str(step))\n"
        "    os.replace(out / 'ckpt.tmp', out / 'ckpt')\n"
        "    print('step', step, flush=True)\n"
        "    time.sleep(0.5)\n"
        "(out / 'result').write_text(f'{start} {step}')\n"
    )
    kept = tmp_path / "kept"
    request = one_h100()
    with market.rent(
        request,
        command="python3 train.py",
        workdir=src,
        checkpoint="outputs/ckpt",
        checkpoint_every=1,
        checkpoint_dir=kept,
    ) as lease:
        first = lease.id
        victim = lease.report.provider.lower()
        deadline = time.monotonic() + 60
        held = 0
        while held < 3:
            assert time.monotonic() < deadline, "no checkpoint reached the tenant"
            try:
                held = int((kept / "ckpt").read_text())
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        pid = next(p["pid"] for p in network_file["parties"] if p["address"].lower() == victim)
        os.kill(pid, signal.SIGKILL)
        report = lease.wait(timeout=300)
        assert lease.id == report.lease != first
        dest = tmp_path / "result"
        lease.download("outputs/result", dest)
    assert report.close_reason == "completed"
    assert len(report.resumed) == 1
    r = report.resumed[0]
    assert (r.from_lease, r.from_provider.lower(), r.to_lease) == (first, victim, report.lease)
    assert report.provider.lower() != victim
    assert r.checkpoint_bytes > 0 and r.checkpoint_hash is not None
    assert "resuming" in [e.kind for e in report.progress]
    start, end = (int(x) for x in dest.read_text().split())
    assert start >= held and end == 30, (start, held)
    assert report.total_cost == r.paid + report.cost <= request.budget
