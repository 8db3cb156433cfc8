"""Services in the embedded marketplace: ``ports=[...]`` gives the workload loopback ports
of its own and ``lease.endpoint(port)`` is the workload's address."""

from __future__ import annotations

import time
import urllib.request

import pytest

import spheron

from conftest import h100, py

SERVE = py(
    """
    import os, pathlib, subprocess, sys
    pathlib.Path("hello.txt").write_text("embedded " + os.environ["SPHERON_PORT_8000"])
    os.execv(sys.executable, [sys.executable, "-m", "http.server", os.environ["PORT"], "--bind", "127.0.0.1"])
    """
)


def test_an_embedded_endpoint_is_the_workloads_loopback_address(market: spheron.Marketplace) -> None:
    with market.rent(h100(), command=SERVE, ports=[8000]) as lease:
        ep = lease.endpoint(8000)
        assert ep.url.startswith("http://127.0.0.1:") and ep.url.endswith("/")
        assert ep.token is None and ep.headers == {} and ep.cert_hash is None
        port = ep.url.rstrip("/").rsplit(":", 1)[1]
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(ep.url + "hello.txt", timeout=10) as r:
                    body = r.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "the workload never listened"
                time.sleep(0.1)
        assert body == f"embedded {port}"
        with pytest.raises(spheron.InvalidRequestError) as e:
            lease.endpoint(8001)
        assert e.value.field == "ports"
        lease.stop()
        with pytest.raises(spheron.LeaseClosedError):
            lease.endpoint(8000)


@pytest.mark.parametrize("ports", [[0], [70000], [8000, 8000], list(range(1, 18)), "8000", [True]])
def test_bad_ports_are_refused_before_anything_is_rented(market: spheron.Marketplace, ports: object) -> None:
    before = market.balance().available
    with pytest.raises(spheron.InvalidRequestError) as e:
        market.rent(h100(), command=SERVE, ports=ports)  # type: ignore[arg-type]
    assert e.value.field == "ports"
    assert market.balance().available == before
