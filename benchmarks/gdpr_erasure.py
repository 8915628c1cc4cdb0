"""Benchmark: GDPR erasure of 50 subjects from an Iceberg table of 10,000,000 rows in 1,000 data files,
against rewriting the whole table without their rows, in the same run.

Tables: three identical Iceberg tables in the Glue catalog on the moto server (S3 + Glue), each
``--files`` parquet files of ``--rows`` rows over ``--subjects`` subjects, clustered by subject id: the
rows are sorted by (subject id, event time) and cut into files at subject boundaries, so each file holds
a narrow range of subjects and no subject spans two files. The parquet files are written once with
pyarrow (zstd, one row group, column statistics, no field ids), put under each table's ``data/`` prefix
and registered with pyiceberg ``add_files`` in ``--commits`` appends, which takes the column bounds from
the footers (what the erasure prunes with). The ``--erase`` subjects are picked at random (seeded) from
the key range. The contenders, each on its own table:

- **erasure**: ``dataplatform.gdpr.iceberg_erasure.delete_subject_rows`` on the subject id column.
- **full rewrite baseline**: ``table.scan().to_arrow()``, the subjects' rows dropped with pyarrow
  compute, ``table.overwrite(rest)``: the whole table rewritten without those rows.
- **pyiceberg delete** (reference figure, no target): ``table.delete(In(subject_id, ids))``, pyiceberg's
  own copy-on-write delete (it prunes by column stats too).

Each contender is timed from the loaded table to its commit. After each, the table must hold the
original rows minus the subjects' rows and a scan filtered on the subjects must return none; the
erasure's ``rows_deleted`` must equal the rows the baseline removed. ``purge_subject_history``, the
sweep of unreachable copies and the independent verification are timed after the comparison.

The moto server runs on the same cores as the contenders and does real work per request, so ``cpu``
reports, per contender, this process's CPU seconds, the moto process's and moto's requests by method;
``erasure_phase_seconds`` splits the erasure's wall time (plan / rewrite / commit). The process exits
non-zero when a target or a check is missed.

    .venv/bin/python benchmarks/gdpr_erasure.py [--rows 10000000] [--files 1000] [--subjects 200000]
        [--erase 50] [--commits 4] [--workers 8] [--seed 5]

Targets (issue #5): the erasure rewrites only the files holding the subjects (<= 5% of the data files)
and is >= 10x faster than the full rewrite. Issue 12: the independent verification, which looks at every
object version under the table location (``verify_objects_read`` >= the data files; footers first, the
subject column only where the statistics leave room), takes at most 3x the erasure's time
(``verify_seconds`` <= 3 x ``erasure_seconds``).
"""

from __future__ import annotations

import argparse
import bisect
import functools
import gc
import io
import itertools
import json
import logging
import os
import random
import re
import sys
import tempfile
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import boto3  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from botocore.config import Config  # noqa: E402
from pyiceberg.expressions import In  # noqa: E402
from pyiceberg.schema import Schema  # noqa: E402
from pyiceberg.table.sorting import SortField, SortOrder  # noqa: E402
from pyiceberg.transforms import IdentityTransform  # noqa: E402
from pyiceberg.types import DoubleType, NestedField, StringType, TimestamptzType  # noqa: E402

from dataplatform.devstack.moto_server import MotoServer  # noqa: E402
from dataplatform.gdpr import iceberg_erasure, unreachable, verify  # noqa: E402
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog  # noqa: E402

REGION = "us-east-1"
BUCKET = "bench-gdpr"
DATABASE = "bench_gdpr"
SUBJECT_COLUMN = "subject_id"
TABLES = {"erasure": "events_erasure", "full_rewrite": "events_full_rewrite", "pyiceberg": "events_pyiceberg"}
MAX_FILES_SHARE = 0.05
MIN_SPEEDUP = 10.0
MAX_VERIFY_FACTOR = 3.0

SCHEMA = Schema(
    NestedField(1, "subject_id", StringType(), required=False),
    NestedField(2, "event_id", StringType(), required=False),
    NestedField(3, "event_time", TimestamptzType(), required=False),
    NestedField(4, "amount", DoubleType(), required=False),
    NestedField(5, "country", StringType(), required=False),
    NestedField(6, "note", StringType(), required=False),
)
SORT_ORDER = SortOrder(SortField(source_id=1, transform=IdentityTransform()))
ARROW_SCHEMA = pa.schema(
    [
        ("subject_id", pa.string()),
        ("event_id", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("amount", pa.float64()),
        ("country", pa.string()),
        ("note", pa.string()),
    ]
)
COUNTRIES = ["DE", "FR", "NL", "BE", "ES", "IT", "PT", "IE", "AT", "PL", "SE", "DK", "FI", "CZ", "GB", "US"]
NOTE_WORDS = (
    ("card payment", "refund", "transfer", "direct debit", "subscription", "cash withdrawal", "chargeback"),
    ("at", "from", "to", "via", "for"),
    ("grocery store", "online shop", "fuel station", "pharmacy", "restaurant", "airline", "utility", "ATM"),
    ("ok", "pending review", "disputed", "settled", "reversed", "flagged by rules"),
)
YEAR_2024_US = (1_704_067_200_000_000, 1_735_689_600_000_000)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def subject_ids(indices) -> pa.Array:
    """``cust-000123``-style ids of subject indices (vectorised: 10M ids in a second)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(indices, pa.int64()), pa.string()), 6, "0")
    return pc.binary_join_element_wise("cust-", digits, "")


# -- the data -----------------------------------------------------------------------------------------------


def uniform_ints(n: int, low: int, high: int, seed: int) -> pa.Array:
    """``n`` seeded random integers in [low, high) (pyarrow's uniform doubles, scaled)."""
    scaled = pc.floor(pc.multiply(pc.random(n, initializer=seed), float(high - low)))
    return pc.add(pc.cast(scaled, pa.int64()), low)


def make_rows(n_rows: int, n_subjects: int, seed: int) -> tuple[pa.Table, pa.Array]:
    """``n_rows`` events of ``n_subjects`` subjects, sorted by (subject, event time). Returns the rows and
    each row's subject index."""
    keys = pa.table(
        {
            "subject": uniform_ints(n_rows, 0, n_subjects, seed),
            "event_time": uniform_ints(n_rows, *YEAR_2024_US, seed + 1),
        }
    )
    keys = keys.take(pc.sort_indices(keys, [("subject", "ascending"), ("event_time", "ascending")]))
    subject = keys["subject"].combine_chunks()
    # A random permutation of 0..n-1: the ranks of n random doubles.
    event_numbers = pc.cast(pc.sort_indices(pc.random(n_rows, initializer=seed + 2)), pa.int64())
    words = [
        pa.array(choices).take(uniform_ints(n_rows, 0, len(choices), seed + 3 + i))
        for i, choices in enumerate(NOTE_WORDS)
    ]
    amount = pc.round(pc.exp(pc.multiply(pc.random(n_rows, initializer=seed + 9), 8.0)), 2)  # 1 .. 3,000
    rows = pa.Table.from_arrays(
        [
            subject_ids(subject),
            pc.binary_join_element_wise(
                "evt-", pc.utf8_lpad(pc.cast(event_numbers, pa.string()), 10, "0"), ""
            ),
            keys["event_time"].cast(pa.timestamp("us", tz="UTC")),
            amount,
            pa.array(COUNTRIES).take(uniform_ints(n_rows, 0, len(COUNTRIES), seed + 10)),
            pc.binary_join_element_wise(*words, " "),
        ],
        schema=ARROW_SCHEMA,
    )
    return rows, subject


def file_bounds(subject: pa.Array, n_files: int) -> list[tuple[int, int]]:
    """Row ranges of ``n_files`` files of about equal size, each cut at the first subject boundary at or
    after its even share (so no subject spans two files, as a writer clustering by subject lays them out).
    ``subject`` is sorted."""
    n_rows = len(subject)
    # first row of each subject but the first
    starts = pc.add(pc.indices_nonzero(pc.not_equal(subject[1:], subject[:-1])), 1).to_pylist()
    cuts = {0, n_rows}
    for i in range(1, n_files):
        at = bisect.bisect_left(starts, i * n_rows / n_files)
        if at < len(starts):
            cuts.add(starts[at])
    if len(cuts) - 1 != n_files:
        raise ValueError(f"{n_files} files need fewer rows per subject (the cuts made {len(cuts) - 1} files)")
    return list(itertools.pairwise(sorted(cuts)))


def parquet_bytes(rows: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(rows, sink, compression="zstd", row_group_size=len(rows) or None, write_statistics=True)
    return sink.getvalue()


# -- building the tables --------------------------------------------------------------------------------------


def s3_client(url: str):
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "adaptive", "max_attempts": 10}, max_pool_connections=16),
    )


def build_tables(url: str, catalog, rows: pa.Table, bounds: list[tuple[int, int]], commits: int) -> dict:
    """Write the parquet files once, put them under every table's location, register them with
    ``add_files`` in ``commits`` appends. Returns the build figures."""
    s3 = s3_client(url)
    s3.create_bucket(Bucket=BUCKET)
    catalog.create_namespace(DATABASE)
    locations = {name: f"s3://{BUCKET}/warehouse/{name}" for name in TABLES.values()}
    file_names = [f"part-{i:05d}-clustered.parquet" for i in range(len(bounds))]

    def write_one(i: int) -> int:
        start, stop = bounds[i]
        body = parquet_bytes(rows.slice(start, stop - start))
        for location in locations.values():
            s3.put_object(Bucket=BUCKET, Key=f"{location.split('/', 3)[3]}/data/{file_names[i]}", Body=body)
        return len(body)

    started = time.perf_counter()
    sizes = []
    with ThreadPoolExecutor(4) as pool:
        for i, size in enumerate(pool.map(write_one, range(len(bounds))), 1):
            sizes.append(size)
            if i % max(1, len(bounds) // 5) == 0:
                log(
                    f"  wrote {i}/{len(bounds)} files x {len(locations)} tables, {time.perf_counter() - started:.0f}s"
                )
    write_seconds = time.perf_counter() - started

    started = time.perf_counter()
    per_commit = -(-len(file_names) // commits)
    chunks = [file_names[i : i + per_commit] for i in range(0, len(file_names), per_commit)]
    for name, location in locations.items():
        table = catalog.create_table(
            f"{DATABASE}.{name}", schema=SCHEMA, location=location, sort_order=SORT_ORDER
        )
        for chunk in chunks:
            table.add_files([f"{location}/data/{file_name}" for file_name in chunk])
        log(
            f"  registered {len(file_names)} files in {DATABASE}.{name} ({commits} commits), "
            f"{time.perf_counter() - started:.0f}s"
        )
    return {
        "write_seconds": write_seconds,
        "register_seconds": time.perf_counter() - started,
        "bytes": sum(sizes),
    }


# -- measuring a contender ----------------------------------------------------------------------------------


def live_files(table) -> dict[str, int]:
    """Live data files of the current snapshot: path -> size in bytes."""
    files = table.inspect.data_files()
    return dict(zip(files["file_path"].to_pylist(), files["file_size_in_bytes"].to_pylist(), strict=True))


def changes(before: dict[str, int], after: dict[str, int]) -> dict:
    """What a contender's commits did to the live data files."""
    removed = before.keys() - after.keys()
    added = after.keys() - before.keys()
    return {
        "files_removed": len(removed),
        "bytes_removed": sum(before[p] for p in removed),
        "files_added": len(added),
        "bytes_added": sum(after[p] for p in added),
    }


def check_table(table, expected_rows: int, subject_filter) -> dict:
    """The table holds ``expected_rows`` (by its file record counts) and none of the subjects' rows (by
    reading the files whose bounds may hold them)."""
    rows = sum(task.file.record_count for task in table.scan().plan_files())
    left = table.scan(row_filter=subject_filter).to_arrow().num_rows
    ok = rows == expected_rows and left == 0
    if not ok:
        log(
            f"  CHECK FAILED {table.name()}: {rows} rows (expected {expected_rows}), {left} rows of the subjects left"
        )
    return {"rows_after": rows, "subject_rows_left": left, "ok": ok}


class PhaseTimer:
    """Wall seconds of the erasure's phases: wraps the module's functions that ``delete_subject_rows``
    calls through the module (as ``iceberg_maintenance.py``'s StepTimer does), those that exist; a phase
    whose function is gone is simply not reported."""

    PHASES = {
        "plan": ("SubjectScanner", "candidates"),
        "rewrite": (None, "rewrite_files"),
        "commit": (None, "commit_rewrites"),
        "count_live_files": (None, "live_data_files"),
    }

    def __init__(self, module):
        self.module = module
        self.seconds: dict[str, float] = {}
        self._originals: list[tuple[object, str, object]] = []

    def _wrap(self, phase: str, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started

        return timed

    def __enter__(self):
        for phase, (class_name, name) in self.PHASES.items():
            owner = getattr(self.module, class_name, None) if class_name else self.module
            original = getattr(owner, name, None)
            if callable(original):
                self._originals.append((owner, name, original))
                setattr(owner, name, self._wrap(phase, original))
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._originals):
            setattr(owner, name, original)


class MotoMeter:
    """What the moto server did meanwhile: its CPU seconds (Linux ``/proc``) and its requests by method
    (from its access log). moto shares the 2 cores with the contenders, so its work is part of theirs."""

    REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) \S+ HTTP/')

    def __init__(self, pid: int | None, log_path: Path):
        self.pid, self.log_path, self.offset = pid, log_path, 0

    def cpu_seconds(self) -> float | None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def requests_since_last(self) -> dict[str, int]:
        with open(self.log_path, "rb") as handle:
            handle.seek(self.offset)
            text = handle.read().decode(errors="replace")
        complete = text[: text.rfind("\n") + 1]
        self.offset += len(complete.encode(errors="replace"))
        return dict(sorted(Counter(self.REQUEST.findall(complete)).items()))


def run_contender(catalog, meter: MotoMeter, key: str, expected_rows: int, subject_filter, run) -> dict:
    """Time ``run(table)`` from the loaded table to its return, then look at what it changed."""
    identifier = f"{DATABASE}.{TABLES[key]}"
    table = catalog.load_table(identifier)
    before = live_files(table)
    load_average = os.getloadavg()[0]
    meter.requests_since_last()
    moto_cpu, cpu, started = meter.cpu_seconds(), time.process_time(), time.perf_counter()
    output = run(table)
    seconds = time.perf_counter() - started
    cpu, moto_after = time.process_time() - cpu, meter.cpu_seconds()
    requests = meter.requests_since_last()
    gc.collect()
    after = catalog.load_table(identifier)
    return {
        "seconds": seconds,
        "output": output,
        "cpu_seconds": round(cpu, 2),
        "moto_cpu_seconds": round(moto_after - moto_cpu, 2) if moto_cpu is not None else None,
        "moto_requests": requests,
        "load_average_before": round(load_average, 2),
        "files_before": len(before),
        **changes(before, live_files(after)),
        **check_table(after, expected_rows, subject_filter),
    }


def full_rewrite(table, ids: list[str]) -> dict:
    """The baseline: read the whole table, drop the subjects' rows, overwrite the table with the rest."""
    started = time.perf_counter()
    everything = table.scan().to_arrow()
    read_seconds = time.perf_counter() - started
    # An expression, not a mask: Table.filter with a boolean ChunkedArray mask took 5 s on the 1,000-chunk
    # table that to_arrow returns, the expression 0.4 s (pyarrow 26), and the baseline must not be slow
    # for that.
    started = time.perf_counter()
    keep = everything.filter(~pc.field(SUBJECT_COLUMN).isin(ids))
    removed = everything.num_rows - keep.num_rows
    filter_seconds = time.perf_counter() - started
    del everything
    started = time.perf_counter()
    table.overwrite(keep)
    return {
        "rows_removed": removed,
        "read_seconds": read_seconds,
        "filter_seconds": filter_seconds,
        "overwrite_seconds": time.perf_counter() - started,
    }


def time_purge_and_verify(module, catalog, s3, ids: list[str], workers: int) -> dict:
    """After the erasure: expire the snapshots that still reach the subjects' rows and delete their files
    (``purge_subject_history``), sweep the copies the metadata no longer reaches
    (``unreachable.purge_unreachable_copies``), then the independent verification
    (``verify.verify_iceberg_table``: every object version under the location read from S3). Not part of
    the comparison; verification has its own target against the erasure's time."""
    log("purge_subject_history on the erased table ...")
    table = catalog.load_table(f"{DATABASE}.{TABLES['erasure']}")
    subject_filter = module.SubjectFilter.build(table.schema(), [SUBJECT_COLUMN], ids)
    scanner = module.SubjectScanner(table, subject_filter, workers)
    state_uri = f"s3://{BUCKET}/gdpr-state/{DATABASE}.{TABLES['erasure']}.json"
    started = time.perf_counter()
    purge = module.purge_subject_history(table, scanner, s3, state_uri, "fail")
    purge_seconds = time.perf_counter() - started
    log(
        f"  expired {len(purge.expired_snapshots)} of {purge.snapshots_before} snapshots, deleted "
        f"{purge.files_deleted} files in {purge_seconds:.2f}s"
    )
    log("purge_unreachable_copies ...")
    table = catalog.load_table(f"{DATABASE}.{TABLES['erasure']}")
    started = time.perf_counter()
    copies = unreachable.purge_unreachable_copies(table, catalog, s3, subject_filter, workers)
    sweep_seconds = time.perf_counter() - started
    log(f"  {copies.candidates} candidates, {len(copies.deleted)} deleted in {sweep_seconds:.2f}s")
    log("verify_iceberg_table ...")
    started = time.perf_counter()
    verification = verify.verify_iceberg_table(table, s3, subject_filter, workers)
    verify_seconds = time.perf_counter() - started
    log(
        f"  {'passed' if verification.passed else 'FAILED'} in {verify_seconds:.2f}s: "
        f"{verification.objects_read} objects, {verification.bytes_read} bytes read"
    )
    return {
        "purge_seconds": round(purge_seconds, 2),
        "purge_snapshots_before": purge.snapshots_before,
        "purge_expired_snapshots": len(purge.expired_snapshots),
        "purge_files_deleted": purge.files_deleted,
        "purge_files_read": scanner.files_read,
        "unreachable_sweep_seconds": round(sweep_seconds, 2),
        "unreachable_candidates": copies.candidates,
        "unreachable_files_deleted": len(copies.deleted),
        "verify_seconds": round(verify_seconds, 2),
        "verify_versions_listed": verification.versions_listed,
        "verify_objects_read": verification.objects_read,
        "verify_bytes_read": verification.bytes_read,
        "verify_checked": verification.checked,
        "verify_passed": verification.passed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=1_000, help="data files per table")
    parser.add_argument("--subjects", type=int, default=200_000, help="distinct subject ids in the table")
    parser.add_argument("--erase", type=int, default=50, help="subjects to erase")
    parser.add_argument("--commits", type=int, default=4, help="add_files commits that build each table")
    parser.add_argument("--workers", type=int, default=8, help="delete_subject_rows workers")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="  %(name)s: %(message)s")
    logging.getLogger("dataplatform").setLevel(logging.INFO)
    warnings.filterwarnings("ignore", "Delete operation did not match any records")
    erasure_module = iceberg_erasure

    wall_started = time.perf_counter()
    log(f"generating {args.rows:,} rows of {args.subjects:,} subjects ...")
    started = time.perf_counter()
    rows, subject = make_rows(args.rows, args.subjects, args.seed)
    bounds = file_bounds(subject, args.files)
    # Subjects that have rows, picked at random over the whole key range.
    erase_idx = sorted(random.Random(args.seed).sample(pc.unique(subject).to_pylist(), args.erase))
    ids = subject_ids(erase_idx).to_pylist()
    subject_rows = pc.sum(pc.is_in(subject, pa.array(erase_idx, pa.int64()))).as_py()
    first_subjects = [subject[start].as_py() for start, _ in bounds]
    files_holding = len({bisect.bisect_right(first_subjects, s) - 1 for s in erase_idx})
    del subject
    generate_seconds = time.perf_counter() - started
    log(
        f"  {generate_seconds:.1f}s; erasing {args.erase} subjects: {subject_rows} rows in {files_holding} files"
    )
    subject_filter = In(SUBJECT_COLUMN, ids)
    expected_rows = args.rows - subject_rows

    tmp = Path(tempfile.mkdtemp(prefix="gdpr-bench-"))
    with MotoServer(log_path=tmp / "moto.log") as moto:
        process = getattr(moto, "_process", None)
        meter = MotoMeter(process.pid if process else None, tmp / "moto.log")
        catalog = load_glue_catalog(AwsAccess(REGION, moto.url, "testing", "testing"))
        log(f"building {len(TABLES)} tables of {args.files} files ...")
        built = build_tables(moto.url, catalog, rows, bounds, args.commits)
        del rows
        gc.collect()

        log(f"erasure: delete_subject_rows(workers={args.workers}) ...")
        with PhaseTimer(erasure_module) as phases:
            erasure = run_contender(
                catalog,
                meter,
                "erasure",
                expected_rows,
                subject_filter,
                lambda table: erasure_module.delete_subject_rows(
                    table, [SUBJECT_COLUMN], ids, workers=args.workers
                ),
            )
        out = erasure["output"]
        log(
            f"  {out.files_scanned} files scanned, {out.files_rewritten} rewritten, {out.rows_deleted} rows "
            f"deleted in {erasure['seconds']:.2f}s"
        )

        log("pyiceberg table.delete(In(subject_id, ids)) ...")
        reference = run_contender(
            catalog,
            meter,
            "pyiceberg",
            expected_rows,
            subject_filter,
            lambda table: table.delete(subject_filter),
        )
        log(f"  {reference['files_removed']} files replaced in {reference['seconds']:.2f}s")

        log("full rewrite baseline: scan, filter, overwrite ...")
        full = run_contender(
            catalog,
            meter,
            "full_rewrite",
            expected_rows,
            subject_filter,
            lambda table: full_rewrite(table, ids),
        )
        log(
            f"  {full['output']['rows_removed']} rows removed in {full['seconds']:.1f}s (read "
            f"{full['output']['read_seconds']:.1f}s, filter {full['output']['filter_seconds']:.1f}s, overwrite {full['output']['overwrite_seconds']:.1f}s)"
        )

        extras = time_purge_and_verify(erasure_module, catalog, s3_client(moto.url), ids, args.workers)

    out = erasure["output"]
    result = {
        "benchmark": "gdpr_erasure",
        "rows": args.rows,
        "subjects": args.subjects,
        "subjects_erased": args.erase,
        "subject_rows": subject_rows,
        "files_holding_subjects": files_holding,
        "data_files": out.data_files,
        "data_bytes": built["bytes"],
        "files_scanned": out.files_scanned,
        "files_rewritten": out.files_rewritten,
        "bytes_rewritten": out.bytes_rewritten,
        "rows_deleted": out.rows_deleted,
        "subjects_with_rows_deleted": sum(1 for n in out.rows_by_subject.values() if n),
        "erasure_seconds": round(erasure["seconds"], 3),
        "erasure_workers": args.workers,
        # plan: manifests read, files pruned by the subject column's bounds; rewrite: the candidates
        # read, filtered and written; commit: the overwrite snapshot (manifests, metadata, Glue) and the
        # refresh; other: the rest of delete_subject_rows.
        "erasure_phase_seconds": {
            **{phase: round(seconds, 3) for phase, seconds in phases.seconds.items()},
            "other": round(erasure["seconds"] - sum(phases.seconds.values()), 3),
        },
        "erasure_files_removed": erasure["files_removed"],
        "erasure_files_added": erasure["files_added"],
        "full_rewrite_files_scanned": full["files_before"],
        "full_rewrite_files_rewritten": full["files_removed"],
        "full_rewrite_bytes_rewritten": full["bytes_removed"],
        "full_rewrite_files_written": full["files_added"],
        "full_rewrite_bytes_written": full["bytes_added"],
        "full_rewrite_rows_removed": full["output"]["rows_removed"],
        "full_rewrite_seconds": round(full["seconds"], 2),
        "full_rewrite_read_seconds": round(full["output"]["read_seconds"], 2),
        "full_rewrite_filter_seconds": round(full["output"]["filter_seconds"], 2),
        "full_rewrite_overwrite_seconds": round(full["output"]["overwrite_seconds"], 2),
        "speedup": round(full["seconds"] / erasure["seconds"], 1),
        "pyiceberg_delete_seconds": round(reference["seconds"], 2),
        "pyiceberg_delete_files_rewritten": reference["files_removed"],
        "pyiceberg_delete_bytes_rewritten": reference["bytes_removed"],
        "pyiceberg_delete_speedup": round(full["seconds"] / reference["seconds"], 1),
        **extras,
        # Where the time went: CPU seconds of this process and of the moto server during each contender
        # (2 cores between them), moto's requests, and the 1-minute load average just before it.
        "cpu": {
            name: {
                "client_cpu_seconds": r["cpu_seconds"],
                "moto_cpu_seconds": r["moto_cpu_seconds"],
                "moto_requests": r["moto_requests"],
                "load_average_before": r["load_average_before"],
            }
            for name, r in (("erasure", erasure), ("pyiceberg_delete", reference), ("full_rewrite", full))
            if r is not None
        },
        "cpu_count": os.cpu_count(),
        "generate_seconds": round(generate_seconds, 1),
        "build_write_seconds": round(built["write_seconds"], 1),
        "build_register_seconds": round(built["register_seconds"], 1),
        "wall_seconds": round(time.perf_counter() - wall_started, 1),
    }
    result["targets_met"] = {
        "files_rewritten_le_5pct": bool(out) and out.files_rewritten <= MAX_FILES_SHARE * out.data_files,
        "speedup_ge_10x": bool(erasure) and full["seconds"] / erasure["seconds"] >= MIN_SPEEDUP,
        "verify_le_3x_erasure": extras["verify_seconds"] <= MAX_VERIFY_FACTOR * erasure["seconds"],
    }
    checks = {
        "data_files": full["files_before"] == reference["files_before"] == args.files,
        "full_rewrite_table": full["ok"],
        "full_rewrite_removed_subject_rows": full["output"]["rows_removed"] == subject_rows,
        "pyiceberg_delete_table": reference["ok"],
    }
    if out:
        checks |= {
            "erasure_table": erasure["ok"],
            "erasure_data_files": out.data_files == erasure["files_before"],
            "erasure_rows_deleted_equals_baseline": out.rows_deleted == full["output"]["rows_removed"],
            "erasure_rows_by_subject_sum": sum(out.rows_by_subject.values()) == out.rows_deleted,
            "erasure_only_files_holding_subjects": erasure["files_removed"]
            == out.files_rewritten
            <= files_holding,
        }
    if "verify_passed" in extras:
        checks["erasure_verified_after_purge"] = extras["verify_passed"]
        # Every object under the location is looked at: at least every data file.
        checks["verify_read_every_data_file"] = extras["verify_objects_read"] >= out.data_files
    result["checks"] = checks
    for name, met in {**result["targets_met"], **checks}.items():
        if not met:
            log(f"MISSED: {name}")
    print(json.dumps(result))
    return 0 if all(result["targets_met"].values()) and all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
