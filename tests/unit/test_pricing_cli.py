"""``python -m dataplatform.pricing emr-serverless`` in a new process, priced from the offline snapshot (no
AWS call): reference 06's figures, arguments refused before anything is priced, and a region without a
price as one line on standard error."""

from __future__ import annotations

import json

import pytest

from tests.cli_helpers import run_cli

pytestmark = pytest.mark.unit

# Reference 06: x86_64 404 vCPU / 1616 GB / 18000 billable GB for 0.82 h; Graviton2 100 workers of
# 20 GB free storage each for 0.74 h.
X86 = ("--vcpu", "404", "--memory-gb", "1616", "--storage-gb", "18000", "--hours", "0.82")
ARM = ("--vcpu", "404", "--memory-gb", "1616", "--storage-gb", "20000", "--workers", "100", "--hours", "0.74",
       "--arch", "arm64")  # fmt: skip


def serverless(*args: str):
    return run_cli("pricing", "emr-serverless", *args)


def test_reference_06_to_the_cent():
    x86, arm = serverless(*X86), serverless(*ARM, "--json")

    assert (x86.returncode, x86.stderr) == (0, "")
    assert x86.stdout.splitlines()[-1] == "  total    26.7289 USD = 26.73 USD"
    assert (arm.returncode, arm.stderr) == (0, "")
    shown = json.loads(arm.stdout)
    assert (shown["total_usd"], shown["total_cost"]) == ("19.60", "19.5972")
    # 20000 GB configured, 100 x 20 GB free: 18000 billable GB for 0.74 h.
    storage = next(row for row in shown["dimensions"] if row["dimension"] == "storage")
    assert (storage["amount"], storage["usage"], storage["cost"]) == ("18000", "13320", "1.4785")


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("--vcpu", "0", "argument --vcpu: must be a number > 0, got '0'"),
        ("--memory-gb", "0", "argument --memory-gb: must be a number > 0, got '0'"),
        ("--hours", "0", "argument --hours: must be a number > 0, got '0'"),
        ("--hours", "-0.5", "argument --hours: must be a number > 0, got '-0.5'"),
        ("--hours", "inf", "argument --hours: must be a number > 0, got 'inf'"),
        ("--storage-gb", "-1", "argument --storage-gb: must be a number >= 0, got '-1'"),
        # A negative worker count would add free storage to the bill instead of taking it off.
        ("--workers", "-100", "argument --workers: must be a whole number >= 0, got '-100'"),
        ("--workers", "2.5", "argument --workers: must be a whole number >= 0, got '2.5'"),
        ("--vcpu", "many", "argument --vcpu: not a number: 'many'"),
    ],
)
def test_a_bad_number_is_refused_naming_the_argument(argument, value, message):
    args = dict(zip(ARM[::2], ARM[1::2], strict=False))
    args[argument] = value
    refused = serverless(*(part for pair in args.items() for part in pair))

    assert (refused.returncode, refused.stdout) == (2, "")
    assert (
        refused.stderr.splitlines()[-1] == f"python -m dataplatform.pricing emr-serverless: error: {message}"
    )


@pytest.mark.parametrize("region", ["eu-west-9", "ap-southeast-7"])
def test_a_region_without_a_price_is_one_line_on_stderr(region):
    refused = serverless(*X86, "--region", region)

    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.splitlines() == [
        f"error: no price for ElasticMapReduce EMR Serverless x86_64 vcpu in {region} in snapshot:include/pricing"
    ]
