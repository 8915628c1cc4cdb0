"""The bad-input catalogue's shared state: one seeded lake on the session's moto server for the whole
directory, fingerprinted once (``tests/moto_state.py``), and ``refuse``, which runs one bad input and
checks that it was refused with an error naming the field and that the lake is exactly as seeded.

The lake holds what the entry points read before they refuse or accept: the Glue tables of the config
with S3 partitions, an Iceberg table (``orders``, for the archive DAG), landed reconciliation batches
(good ones and tampered ones), and the DynamoDB tables of the ledger, index, GDPR requests and audit and
workflow launches with a few items. Every test here leaves it unchanged; a test that changes it fails and
the lake is seeded again, so one bad case cannot hide or cause another's failure.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.moto_state import MotoState, differences

# Landed batches: good ones, and one folder per tampered manifest (tests/bad_input/test_manifests.py).
GOOD_BATCHES = 2
LAUNCH_COMPLETE = "bad-input-launch-0001"
LAUNCH_RUNNING = "bad-input-launch-0002"
REQUEST_ID = "bad-input-request-0001"


@dataclass
class SeededLake:
    server: Any
    state: MotoState
    seed: Callable[[], None]
    # A file:// landing area beside the lake (most tampered batches live there: see tampered.py).
    local_landing: Path
    baseline: dict = field(default_factory=dict)

    def fingerprint(self) -> dict:
        return {**self.state.fingerprint(), "files": {"landing": tree_fingerprint(self.local_landing)}}

    def check_unchanged(self, what: str) -> None:
        after = self.fingerprint()
        changed = differences(self.baseline, after)
        if changed:
            self.server.reset()
            self.seed()
            self.baseline = self.fingerprint()
            pytest.fail(f"{what} changed the lake: {changed}")


def tree_fingerprint(root: Path) -> list[tuple[str, str]]:
    """Every file under ``root`` with the sha256 of its bytes."""
    return sorted(
        (str(path.relative_to(root)), hashlib.sha256(path.read_bytes()).hexdigest())
        for path in root.rglob("*")
        if path.is_file()
    )


def _seed_lake(local_landing: Path) -> None:
    from dataplatform import aws
    from dataplatform.config import settings
    from dataplatform.devstack import seed
    from dataplatform.gdpr import audit, requests
    from dataplatform.glue.catalog import create_partitions, describe_table
    from dataplatform.glue.layout import PartitionLayout
    from dataplatform.iceberg.sample import write_sample_table
    from dataplatform.operators.iceberg import glue_catalog
    from dataplatform.pricing import launches
    from dataplatform.reconciliation import index, ledger
    from dataplatform.reconciliation.generator import GeneratorConfig, write_batches
    from spark_jobs.common.storage import Storage
    from tests.bad_input.tampered import write_tampered_batches

    config = settings()
    s3, glue, dynamodb = aws.client("s3"), aws.client("glue"), aws.client("dynamodb")
    seed.ensure_bucket(s3, "dataplatform-local-lake")
    for table in config.glue.tables.values():
        # Two partitions in S3 and one registered: enough for the loader's checks, cheap to fingerprint.
        seed.create_table(glue, table)
        layout = PartitionLayout(table)
        partitions = layout.values_for_interval(datetime(2024, 3, 1), datetime(2024, 3, 1, 2))[:2]
        seed.put_partitions(s3, table, partitions, success_marker=table.wait_for_success_marker)
        descriptor = describe_table(glue, table.database, table.table)
        create_partitions(glue, descriptor, [(partitions[0], table.location + layout.render(partitions[0]))])
    policy = config.iceberg.tables["orders"]
    write_sample_table(glue_catalog(), policy.identifier, seed.iceberg_demo_location(config, "orders"), 2)
    recon = config.reconciliation
    storage = Storage(s3)
    manifests = write_batches(
        storage,
        recon.landing_uri,
        GeneratorConfig(seed=5, n_keys=20, events_per_batch=30, files_per_batch=1),
        batches=GOOD_BATCHES,
        start=datetime(2024, 3, 5, 10),
    )
    shutil.rmtree(local_landing, ignore_errors=True)
    write_tampered_batches(storage, recon.landing_uri, f"file://{local_landing}/", manifests[0])
    ledger.create_ledger_table(dynamodb, recon.ledger_table)
    index.create_index_table(dynamodb, recon.index_table)
    gdpr = config.gdpr
    requests.create_requests_table(dynamodb, gdpr.requests_table)
    audit.create_audit_table(dynamodb, gdpr.audit_table)
    requests.submit_request(
        dynamodb, gdpr.requests_table, REQUEST_ID, "cust-000001", datetime(2024, 3, 1, tzinfo=UTC), 30
    )
    launches.ensure_launches_table(dynamodb, config.pricing.launches_table)
    launches.put_launch(dynamodb, config.pricing.launches_table, good_launch_record())
    launches.put_launch(
        dynamodb,
        config.pricing.launches_table,
        good_launch_record(launch_id=LAUNCH_RUNNING, status="RUNNING", completed_at=None),
    )


def good_launch_record(**changes: Any) -> dict[str, Any]:
    """A COMPLETE launch record as the workflow manager writes it (its resources are not on moto: the
    bad-input tests never get as far as collecting them)."""
    record = {
        "launch_id": LAUNCH_COMPLETE,
        "workflow_type": "germline-wgs",
        "status": "COMPLETE",
        "region": "us-east-1",
        "created_at": "2024-03-01T09:55:00Z",
        "started_at": "2024-03-01T10:00:00Z",
        "completed_at": "2024-03-01T12:00:00Z",
        "batch_job_ids": ["8d3f1d1e-0000-4000-8000-000000000001"],
        "instance_ids": ["i-0123456789abcdef0"],
        "volume_ids": ["vol-0123456789abcdef0"],
        "fsx_file_system_id": "fs-0123456789abcdef0",
    }
    record.update(changes)
    return {key: value for key, value in record.items() if value is not None}


def seeded_lake(moto_server, local_landing: Path) -> SeededLake:
    """A fresh seeded lake on ``moto_server`` (everything on it before is reset) and its fingerprint."""
    moto_server.reset()
    _seed_lake(local_landing)
    lake = SeededLake(
        moto_server, MotoState(moto_server.url), lambda: _seed_lake(local_landing), local_landing
    )
    lake.baseline = lake.fingerprint()
    return lake


def refuse(
    lake: SeededLake,
    call: Callable[[], Any],
    names: str | Iterable[str],
    errors: type[BaseException] | tuple[type[BaseException], ...] = Exception,
) -> str:
    """Run ``call`` (one bad input through a real entry point); it must raise one of ``errors`` whose
    message names the field (any of ``names``, case-insensitive), and the lake must be unchanged.
    Returns the message."""
    names = [names] if isinstance(names, str) else list(names)
    try:
        with pytest.raises(errors) as caught:
            call()
    finally:
        # Also when the input was accepted: the next case must start from the seeded lake.
        lake.check_unchanged(f"refusing {names}")
    message = str(caught.value)
    assert any(re.search(re.escape(name), message, re.IGNORECASE) for name in names), (
        f"the error does not name {names}: {message!r}"
    )
    return message


def refuse_cli(lake: SeededLake, main: Callable[[list[str]], int], argv: list[str], names, capsys) -> str:
    """A CLI's ``main(argv)``: a non-zero exit (argparse's SystemExit(2) or the command's code) with a
    message on standard error naming the argument, nothing on standard output, the lake unchanged."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    finally:
        lake.check_unchanged(f"{argv}")
    out, err = capsys.readouterr()
    assert code not in (0, None), f"{argv} was accepted (exit {code}); stdout: {out!r}"
    assert out == "", f"{argv}: standard output must stay empty on an error, got {out!r}"
    names = [names] if isinstance(names, str) else list(names)
    assert any(re.search(re.escape(name), err, re.IGNORECASE) for name in names), (
        f"{argv}: the error does not name {names}: {err!r}"
    )
    return err


# Values every string field must refuse, by kind (ids are the pytest ids of the cases).
INJECTION_LIKE = {
    "sql_quote": "x' OR '1'='1",
    "sql_comment": "x; DROP TABLE t; --",
    "path_traversal": "../../etc/passwd",
    "shell_metachars": "x$(touch /tmp/pwned)`id`|;&",
    "newline": "x\ny",
    "nul": "x\x00y",
    "huge": "x" * 100_000,
    "unicode_lookalike": "cust\u2010000001",
}
WRONG_TYPES = {"int": 42, "float": 1.5, "bool": True, "dict": {"a": 1}, "nested_list": [["a"]]}
