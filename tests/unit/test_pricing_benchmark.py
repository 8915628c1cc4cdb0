"""The pricing benchmark (benchmarks/pricing.py) on a small workload with no modelled latency."""

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "pricing.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("pricing_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(bench, capsys, *args):
    code = bench.main(["--launches", "300", "--api-latency-ms", "0", *args])
    return code, json.loads(capsys.readouterr().out)


def test_full_run_meets_targets_and_checks(bench, capsys):
    code, result = run(bench, capsys)
    assert code == 0
    assert result["launches"] == 300
    assert result["instance_types"] == 20
    assert result["cached_calls"] == result["distinct_price_keys"]
    assert result["uncached_calls"] == result["uncached_calls_measured"] == result["price_lookups"]
    assert not result["uncached_sampled"]
    assert result["totals_match"] is True
    assert all(result["targets"].values()) and all(result["checks"].values())


def test_workload_is_deterministic(bench, capsys):
    _, first = run(bench, capsys)
    _, second = run(bench, capsys)
    assert first["total_cost_usd"] == second["total_cost_usd"]
    _, other_seed = run(bench, capsys, "--seed", "7")
    assert other_seed["total_cost_usd"] != first["total_cost_usd"]


def test_sampled_uncached_run_is_extrapolated_and_labelled(bench, capsys):
    code, result = run(bench, capsys, "--uncached-sample", "30")
    assert code == 0
    assert result["uncached_sampled"] is True
    assert result["uncached_sampled_launches"] == 30
    assert result["uncached_calls"] == round(result["uncached_calls_measured"] * 300 / 30)
    assert "note" in result
    assert all(result["checks"].values())


def test_distinct_keys_follow_the_billing_rules(bench):
    launches = bench.generate_launches(50, bench.snapshot_instance_types(), seed=1)
    for usage in launches:
        keys = bench.price_lookups(usage)
        on_demand = [i for i in usage.instances if i.lifecycle == "on-demand"]
        assert sum(k.product.startswith("instance ") for k in keys) == len(on_demand)
        assert sum(k.product.endswith(" storage") for k in keys) == len(usage.volumes)
        assert sum(k.service == "AmazonFSx" for k in keys) == len(usage.file_systems)
