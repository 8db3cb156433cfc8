"""Code and data travel with the lease (``workdir=``), results come back
(``lease.download``), on the embedded marketplace (the network's are in test_network.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import spheron
from conftest import h100

TRAIN = """
import json, os, pathlib
data = json.loads(pathlib.Path("data/points.json").read_text())
w = sum(x * y for x, y in data) / sum(x * x for x, _ in data)
out = pathlib.Path(os.environ["SPHERON_OUTPUTS"])
(out / "model.json").write_text(json.dumps({"w": round(w, 6)}))
print("trained w =", round(w, 6), "cwd has", sorted(os.listdir(".")), flush=True)
"""


def project(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    (root / "data" / "points.json").write_text("[[1, 2], [2, 4], [3, 6]]")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: main")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"junk")
    return root


def test_workdir_runs_and_outputs_download(market: spheron.Marketplace, tmp_path: Path) -> None:
    src = project(tmp_path / "proj")
    with market.rent(h100(), command=[sys.executable, "train.py"], workdir=src) as lease:
        lines = [l.line for l in lease.logs()]
        report = lease.wait()
        assert report.close_reason == "completed", lines
        assert lines == ["trained w = 2.0 cwd has ['data', 'outputs', 'train.py']"]
        dest = tmp_path / "got"
        dest.mkdir()
        assert lease.download("outputs/model.json", dest) > 0
        assert (dest / "model.json").read_text() == '{"w": 2.0}'
        assert lease.download("outputs/model.json", tmp_path / "m.json") > 0
        for bad in ["../proj/train.py", "/etc/passwd", "outputs/none.json", "outputs"]:
            with pytest.raises(spheron.InvalidRequestError) as e:
                lease.download(bad, tmp_path / "x")
            assert e.value.field == "path"


def test_a_bad_workdir_is_refused_before_renting(market: spheron.Marketplace, tmp_path: Path) -> None:
    before = market.balance().available
    with pytest.raises(spheron.InvalidRequestError) as e:
        market.rent(h100(), command="true", workdir=tmp_path / "missing")
    assert e.value.field == "workdir"
    (tmp_path / "f").write_text("x")
    with pytest.raises(spheron.InvalidRequestError):
        market.rent(h100(), command="true", workdir=tmp_path / "f")
    assert market.balance().available == before
