"""GpuRequest: keywords, YAML, and bad inputs naming the field."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

import spheron
from spheron import GpuRequest, InvalidRequestError


def test_keywords_build_an_exact_budget() -> None:
    r = GpuRequest("H100", count=8, hours=2, max_price_per_hour="3.00", region="eu-west", min_tier=3)
    assert r.gpus == ["h100-sxm", "h100-pcie"]
    assert r.count == 8
    assert r.duration_secs == 7200
    assert r.max_price_per_hour == Decimal("3")
    assert r.regions == ["eu-west"]
    assert r.min_tier == 3
    assert r.budget == Decimal("48")  # 8 GPUs x 2 h x 3.00


@pytest.mark.parametrize("price", ["2.5", 2.5, Decimal("2.5")])
def test_price_types_agree(price: object) -> None:
    assert GpuRequest("a100-80g", hours=1, max_price_per_hour=price).max_price_per_hour == Decimal("2.5")


def test_fractional_hours_and_duration_strings() -> None:
    assert GpuRequest("l4", hours=0.5, max_price_per_hour=1).duration_secs == 1800
    assert GpuRequest("l4", duration="1h30m", max_price_per_hour=1).duration_secs == 5400


def test_yaml_spec_and_file(tmp_path: Path) -> None:
    spec = 'gpu: [h100-sxm, a100-80g]\ncount: 2\nduration: 2h\nmax_price_per_gpu_hour: "2.5"\nregions: [eu-west]\n'
    r = GpuRequest.from_yaml(spec)
    assert r.gpus == ["h100-sxm", "a100-80g"] and r.count == 2 and r.duration_secs == 7200
    p = tmp_path / "job.yaml"
    p.write_text(spec)
    assert GpuRequest.load(p) == r
    assert GpuRequest.load(str(p)) == r


def field_of(excinfo: pytest.ExceptionInfo[InvalidRequestError]) -> str:
    e = excinfo.value
    assert isinstance(e, spheron.SpheronError) and isinstance(e, ValueError)
    assert e.field in str(e)
    return e.field


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(gpu="b9000", hours=1, max_price_per_hour=1), "gpu"),
        (dict(gpu=None, hours=1, max_price_per_hour=1), "gpu"),
        (dict(gpu="h100", hours=1, max_price_per_hour="-1"), "max_price_per_hour"),
        (dict(gpu="h100", hours=1, max_price_per_hour=-1), "max_price_per_hour"),
        (dict(gpu="h100", hours=1, max_price_per_hour=-0.5), "max_price_per_hour"),
        (dict(gpu="h100", hours=1, max_price_per_hour=0), "max_price_per_hour"),
        (dict(gpu="h100", hours=1, max_price_per_hour="abc"), "max_price_per_hour"),
        (dict(gpu="h100", hours=1, max_price_per_hour="0.0000001"), "max_price_per_hour"),
        (dict(gpu="h100", hours=1, max_price_per_hour=float("nan")), "max_price_per_hour"),
        (dict(gpu="h100", hours=1, max_price_per_hour=True), "max_price_per_hour"),
        (dict(gpu="h100", hours=1), "max_price_per_hour"),
        (dict(gpu="h100", hours=0, max_price_per_hour=1), "hours"),
        (dict(gpu="h100", hours=-2, max_price_per_hour=1), "hours"),
        (dict(gpu="h100", hours="two", max_price_per_hour=1), "hours"),
        (dict(gpu="h100", max_price_per_hour=1), "hours"),
        (dict(gpu="h100", duration="2x", max_price_per_hour=1), "duration"),
        (dict(gpu="h100", hours=1, duration="1h", max_price_per_hour=1), "duration"),
        (dict(gpu="h100", count=0, hours=1, max_price_per_hour=1), "count"),
        (dict(gpu="h100", count=-1, hours=1, max_price_per_hour=1), "count"),
        (dict(gpu="h100", count=65, hours=1, max_price_per_hour=1), "count"),
        (dict(gpu="h100", count=2**80, hours=1, max_price_per_hour=1), "count"),
        (dict(gpu="h100", hours=1, max_price_per_hour=1, min_tier=9), "min_tier"),
        (dict(gpu="h100", hours=1, max_price_per_hour=1, max_latency_ms=0), "max_latency_ms"),
        (dict(gpu="h100", hours=1, max_price_per_hour=1, region=3), "region"),
    ],
)
def test_bad_inputs_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidRequestError) as excinfo:
        GpuRequest(**kwargs)
    assert field_of(excinfo) == field


def test_bad_yaml_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequestError) as e:
        GpuRequest.from_yaml("gpu: [h100\n")
    assert e.value.field == "spec"
    with pytest.raises(InvalidRequestError) as e:
        GpuRequest.from_yaml('gpu: h100\nduration: 1h\nmax_price_per_gpu_hour: "-3"\n')
    assert e.value.field == "max_price_per_hour"
    with pytest.raises(InvalidRequestError) as e:
        GpuRequest.load("/nonexistent/spec.yaml")
    assert e.value.field == "spec"
