"""Every CLI argument, one bad value at a time, through each CLI's ``main(argv)``: a non-zero exit with
one message on standard error naming the argument, nothing on standard output, the lake unchanged."""

from __future__ import annotations

import pytest

from tests.bad_input.lake import INJECTION_LIKE, LAUNCH_RUNNING, REQUEST_ID, refuse_cli

pytestmark = [pytest.mark.integration]

# Values an id-like argument must refuse (argparse cannot take a NUL in argv: it comes in through
# main(argv) from Python callers only, which is what these tests do).
BAD_IDS = {**INJECTION_LIKE, "empty": "", "leading_dash_in_value": "=x"}


def _cases(prefix: list[str], argument: str, values: dict, names, suffix=()) -> list:
    return [
        pytest.param(
            [*prefix, *([argument, value] if argument else [value]), *suffix],
            names,
            id=f"{' '.join(prefix)} {argument or 'arg'}-{case}",
        )
        for case, value in values.items()
    ]


GDPR = [
    pytest.param([], "command", id="gdpr-no-command"),
    pytest.param(["erase-everything"], "command", id="gdpr-unknown-command"),
    pytest.param(["submit"], "--subject-id", id="gdpr-submit-missing-subject"),
    pytest.param(
        ["submit", "--subject-id", "cust-000001", "--force"], "--force", id="gdpr-submit-unknown-option"
    ),
    pytest.param(
        ["submit", "--subject-id", "cust-000009", "--request-id", REQUEST_ID],
        "request",
        id="gdpr-submit-request-of-another-subject",
    ),
    *_cases(
        ["submit"],
        "--subject-id",
        {**BAD_IDS, "wrong_format": "cust-1", "upper": "CUST-000001"},
        "subject id",
    ),
    *_cases(
        ["submit", "--subject-id", "cust-000003"],
        "--request-id",
        {**BAD_IDS, "too_long": "r" * 129},
        "request id",
    ),
    *_cases(["status"], "--request-id", {**BAD_IDS, "too_long": "r" * 129}, "request id"),
    pytest.param(["status", "--json", "--verbose"], "--verbose", id="gdpr-status-unknown-option"),
]


SERVERLESS = ["emr-serverless", "--vcpu", "4", "--memory-gb", "16", "--hours", "1"]
NUMBERS = {
    "zero": "0",
    "negative": "-1",
    "word": "abc",
    "nan": "nan",
    "inf": "inf",
    "empty": "",
    "sql": "1; DROP TABLE x",
    "huge_exponent": "1e999999999",
}


def _serverless_with(argument: str, value: str) -> list[str]:
    argv = list(SERVERLESS)
    if argument in argv:
        argv[argv.index(argument) + 1] = value
    else:
        argv += [argument, value]
    return argv


PRICING = [
    pytest.param([], "command", id="pricing-no-command"),
    pytest.param(["--source", "guess", "launch", "x"], "--source", id="pricing-source-unknown"),
    pytest.param(["emr-serverless", "--vcpu", "4"], "--memory-gb", id="pricing-serverless-missing"),
    *[
        pytest.param(_serverless_with(argument, value), argument, id=f"pricing {argument}-{case}")
        for argument in ("--vcpu", "--memory-gb", "--hours")
        for case, value in NUMBERS.items()
    ],
    *[
        pytest.param(
            _serverless_with("--storage-gb", value), "--storage-gb", id=f"pricing --storage-gb-{case}"
        )
        for case, value in {"negative": "-1", "word": "x", "nan": "nan"}.items()
    ],
    *[
        pytest.param(_serverless_with("--workers", value), "--workers", id=f"pricing --workers-{case}")
        for case, value in {"fraction": "1.5", "negative": "-1", "word": "many"}.items()
    ],
    pytest.param(_serverless_with("--arch", "sparc"), "--arch", id="pricing --arch-unknown"),
    *[
        pytest.param(_serverless_with("--region", value), "--region", id=f"pricing --region-{case}")
        for case, value in {**INJECTION_LIKE, "empty": "", "upper": "US-EAST-1"}.items()
    ],
    pytest.param(["launch"], "launch_id", id="pricing-launch-missing-id"),
    pytest.param(["launch", "nope"], "launch", id="pricing-launch-unknown"),
    *_cases(
        ["launch"],
        "",
        {
            k: v
            for k, v in BAD_IDS.items()
            if k
            not in (
                "path_traversal",
                "sql_quote",
                "sql_comment",
                "shell_metachars",
                "unicode_lookalike",
                "leading_dash_in_value",
            )
        },
        "launch_id",
    ),
    pytest.param(["launch", LAUNCH_RUNNING], "launch", id="pricing-launch-not-complete"),
]


RECON = [
    pytest.param([], "command", id="recon-no-command"),
    pytest.param(["status", "--all"], "--all", id="recon-status-unknown-option"),
    pytest.param(["get"], "key", id="recon-get-missing-key"),
    pytest.param(["get", "order-that-is-not-indexed"], "artifact", id="recon-get-unknown-key"),
    *_cases(["get"], "", {"empty": "", "newline": "k\ny", "nul": "k\x00", "huge": "k" * 2000}, "key"),
    pytest.param(["ack-invalid"], "batch_id", id="recon-ack-missing-batch"),
    pytest.param(["ack-invalid", "20240305T1000"], "batch", id="recon-ack-batch-not-invalid"),
    *_cases(["ack-invalid"], "", {k: v for k, v in BAD_IDS.items() if k != "leading_dash_in_value"}, "batch"),
]


DEVSTACK = [
    pytest.param([], "command", id="devstack-no-command"),
    pytest.param(["deploy"], "command", id="devstack-unknown-command"),
    *_cases(
        ["up"],
        "--port",
        {
            "word": "http",
            "negative": "-1",
            "zero": "0",
            "privileged": "80",
            "too_big": "70000",
            "empty": "",
            "float": "80.5",
        },
        "--port",
    ),
    pytest.param(["demo", "--fast"], "--fast", id="devstack-demo-unknown-option"),
]


CLIS = {"gdpr": GDPR, "pricing": PRICING, "reconciliation": RECON, "devstack": DEVSTACK}


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("cli", "argv", "names"),
    [pytest.param(cli, *case.values, id=case.id) for cli, cases in CLIS.items() for case in cases],
)
def test_cli_argument(lake, capsys, cli, argv, names):
    """``python -m dataplatform.<cli>`` run as ``main(argv)``."""
    import importlib

    main = importlib.import_module(f"dataplatform.{cli}.__main__").main
    refuse_cli(lake, main, argv, names, capsys)
