"""A canonical, comparable snapshot of everything the DAGs own, read straight from the AWS APIs (moto).

``snapshot(config, endpoint_url)`` reads Glue, DynamoDB, S3 and the Iceberg tables (through the Glue catalog
with pyiceberg), and the Hudi tables (one ``spark-submit``), never the pipelines' own run reports: what a
pipeline says it did is exactly what a fault can make untrue. ``diff(a, b)`` lists, readably, where two
snapshots differ; ``invariants(state)`` lists what is wrong in one snapshot on its own (a request left
IN_PROGRESS, a launch priced twice, a batch in two groups).

Two runs of the same DAGs on the same seed data legitimately differ in a few things, normalised here and
only here (each place says why): identifiers made of uuids, snapshot ids, timestamps and Airflow run ids,
and the names of files that contain them. What is compared instead is what the name stood for: a group by
the batches it holds, a snapshot by its sequence number, a file by its kind, folder, tags and content.

No Airflow import: plain boto3 clients on the endpoint, and the settings.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import boto3
from botocore.config import Config

from dataplatform.config import Settings
from dataplatform.dynamodb import from_item

CREDENTIALS = ("testing", "testing", None)

# -- clients -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LakeClients:
    s3: Any
    dynamodb: Any
    glue: Any
    endpoint_url: str | None
    region: str


def lake_clients(endpoint_url: str | None, region: str) -> LakeClients:
    """Clients for reading the state; standard retries so a stray fault left on does not fail a read."""
    config = Config(retries={"max_attempts": 10, "mode": "standard"}, max_pool_connections=16)

    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=CREDENTIALS[0] if endpoint_url else None,
            aws_secret_access_key=CREDENTIALS[1] if endpoint_url else None,
            config=config,
        )

    return LakeClients(client("s3"), client("dynamodb"), client("glue"), endpoint_url, region)


# -- generic normalisation -------------------------------------------------------------------------------

# Fields that hold when something happened, which Airflow run did it, or a random token of one call
# (pricing's write tokens): they differ between any two runs.
_VOLATILE_SUFFIXES = ("_at", "_time_utc", "_seconds", "_ms", "_token")
_VOLATILE_NAMES = {"run_id", "claimed_by", "deadline", "try_number", "record_id", "price_date", "at"}
# Audit counts of bytes and object versions that differ between two correct runs: the files embed commit
# times, uuids and file names (so their sizes differ), and a write resent after a read timeout leaves one
# more noncurrent version to delete. Compared as "some" or "none"; what must hold afterwards (no version
# of an erased row left) is compared in each table's ``versions``.
_AUDIT_AMOUNTS = ("bytes_read", "unreachable_bytes_read", "noncurrent_versions_deleted")
# Hudi commit instants (yyyyMMddHHmmssSSS, clock readings) and Iceberg snapshot ids (random), as values or
# as keys: compared as "a commit", keys numbered in commit order.
_COMMIT_ID = re.compile(r"(?<!\d)\d{17,19}(?!\d)")


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _is_volatile(name: str) -> bool:
    return name in _VOLATILE_NAMES or name.endswith(_VOLATILE_SUFFIXES)


def _plain(value: Any) -> Any:
    """JSON-comparable: Decimals as int or str (exact), sets as sorted lists, nested values alike."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _stable(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in item.items() if not _is_volatile(k)}


def _scan(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    try:
        pages = dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
        return [from_item(item) for page in pages for item in page.get("Items", [])]
    except dynamodb.exceptions.ResourceNotFoundException:
        return []


def _sorted_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((_plain(row) for row in rows), key=lambda row: json.dumps(row, sort_keys=True, default=str))


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _list_objects(s3: Any, uri: str) -> list[dict[str, Any]]:
    bucket, prefix = _split(uri)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [dict(obj, Bucket=bucket) for page in pages for obj in page.get("Contents", [])]


def _tags(s3: Any, bucket: str, key: str) -> dict[str, str]:
    tag_set = s3.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
    return {tag["Key"]: tag["Value"] for tag in tag_set}


# -- Glue partition loading ------------------------------------------------------------------------------


def glue_state(clients: LakeClients, config: Settings) -> dict[str, Any]:
    """Per configured table: every partition's values and location, sorted."""
    state = {}
    for name, table in config.glue.tables.items():
        try:
            pages = clients.glue.get_paginator("get_partitions").paginate(
                DatabaseName=table.database, TableName=table.table
            )
            partitions = [
                [list(p["Values"]), p["StorageDescriptor"]["Location"]]
                for page in pages
                for p in page["Partitions"]
            ]
        except clients.glue.exceptions.EntityNotFoundException:
            partitions = None
        state[name] = {"partitions": sorted(partitions) if partitions is not None else "no table"}
    return state


# -- reconciliation ---------------------------------------------------------------------------------------


def _group_alias(group: dict[str, Any]) -> str:
    # A group is named after the Airflow run that made it (manual__<timestamp>): two runs of the demo
    # name the same group differently. What identifies it is the batches it won.
    return "group[" + ",".join(sorted(group.get("batches", []))) + "]"


def _ledger(items: list[dict[str, Any]]) -> dict[str, Any]:
    groups = {item["group_id"]: _group_alias(item) for item in items if item.get("kind") == "group"}
    runs = {item["run_id"]: int(item["seq"]) for item in items if item.get("kind") == "stateful_run"}

    def alias(value: Any) -> Any:
        if isinstance(value, str):
            if value in groups:
                return groups[value]
            if value in runs:
                return f"stateful-run-{runs[value]}"
            # A stateful run's part files are named with Spark's job uuid; their lines are compared in
            # state_part_lines.
            return _UUID.sub("<uuid>", value)
        if isinstance(value, list):
            return [alias(v) for v in value]
        return value

    ledger = {}
    for item in items:
        pk = item["pk"]
        kind, _, ident = pk.partition("#")
        # The pk embeds the group id or the Airflow run id: replaced by the alias (group) or seq (run).
        name = f"{kind}#{alias(ident)}"
        stable = {k: alias(v) for k, v in _stable(item).items() if k not in ("pk", "group_id")}
        if kind in ("group", "batch") and "stats" in stable:
            stable["stats"] = (
                _stable(stable["stats"]) if isinstance(stable["stats"], dict) else stable["stats"]
            )
        ledger[name] = stable
    return dict(sorted(ledger.items()))


def _artifacts(clients: LakeClients, index_items: list[dict[str, Any]]) -> dict[str, Any]:
    """Every indexed artifact: its version and seq, and the artifact itself as read through the index
    (file, offset, length) -- compared by content, the part file's name is not compared (it holds
    Spark's job uuid). Each part file is fetched once and sliced at the indexed offsets."""
    files: dict[str, bytes] = {}
    artifacts = {}
    for item in index_items:
        uri = item["file"]
        if uri not in files:
            bucket, key = _split(uri)
            files[uri] = clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        offset, length = int(item["offset"]), int(item["length"])
        raw = files[uri][offset : offset + length]
        try:
            artifact = json.loads(raw)
        except ValueError:
            artifact = {"unreadable": raw[:200].decode("utf-8", "replace")}
        artifacts[item["artifact_key"]] = {
            "version": int(item["version"]),
            "seq": int(item["seq"]),
            "artifact": _plain(artifact),
        }
    return dict(sorted(artifacts.items()))


def _state_lines(clients: LakeClients, work_uri: str) -> dict[str, Any]:
    """Every artifact line in the state part files, per run folder (``state/<seq8>/``), as a sorted
    multiset: a half-written or duplicated part file shows here even when the index does not point at it.
    File names hold Spark's job uuid, so lines are compared, not files."""
    if not work_uri.startswith("s3://"):
        return {}
    per_run: dict[str, list[str]] = {}
    for obj in _list_objects(clients.s3, work_uri.rstrip("/") + "/state/"):
        name = obj["Key"].rsplit("/", 1)[-1]
        if name.startswith(("_", ".")):
            continue
        run = obj["Key"].rsplit("/", 2)[-2]
        body = clients.s3.get_object(Bucket=obj["Bucket"], Key=obj["Key"])["Body"].read()
        per_run.setdefault(run, []).extend(line.decode() for line in body.splitlines() if line.strip())
    return {run: sorted(lines) for run, lines in sorted(per_run.items())}


def recon_state(clients: LakeClients, config: Settings) -> dict[str, Any]:
    recon = config.reconciliation
    index_items = _scan(clients.dynamodb, recon.index_table)
    return {
        "ledger": _ledger(_scan(clients.dynamodb, recon.ledger_table)),
        "index": _artifacts(clients, index_items),
        "state_part_lines": _state_lines(clients, recon.work_uri),
    }


# -- Iceberg -------------------------------------------------------------------------------------------------


def object_kind(relative_key: str) -> str:
    """An Iceberg table's object by what it is, not its name (names hold uuids and snapshot ids):
    metadata JSON, manifest list, manifest, statistics, or a data file in its partition folder."""
    folder, _, name = relative_key.rpartition("/")
    if name.endswith(".metadata.json"):
        return "metadata.json"
    if name.startswith("snap-") and name.endswith(".avro"):
        return "manifest-list"
    if name.endswith(".avro"):
        return "manifest"
    if name.endswith((".stats", ".puffin")):
        return "statistics"
    # Hudi names its files <file id>_<write token>_<instant>.<ext>, log files .<file id>_<instant>.log.<n>_<token>:
    # the extension after the first dot that is a plain word says what the file is.
    extension = next((part for part in name.split(".")[1:] if part.isalpha()), "")
    return f"{_UUID.sub('<uuid>', folder)}/*.{extension}"


def _objects(clients: LakeClients, location: str) -> dict[str, int]:
    """Objects under a table's location: how many of each kind carry which tags."""
    counts: Counter[str] = Counter()
    root = location.rstrip("/") + "/"
    for obj in _list_objects(clients.s3, root):
        tags = _tags(clients.s3, obj["Bucket"], obj["Key"])
        kind = object_kind(obj["Key"][len(_split(root)[1]) :])
        counts[f"{kind} tags={json.dumps(tags, sort_keys=True)}"] += 1
    return dict(sorted(counts.items()))


def _versions(clients: LakeClients, location: str, data_files_only: bool = False) -> dict[str, int]:
    """Object versions under a GDPR dataset's location (a versioned bucket): how many of each kind are
    current, noncurrent, or delete markers. The purge must leave no noncurrent version behind that held a
    subject's rows, whatever the faults did. ``data_files_only`` (Hudi): only the partitions' base and
    log files; Hudi's ``.hoodie/`` folder and S3A's directory markers come and go with timing."""
    bucket, prefix = _split(location.rstrip("/") + "/")
    counts: Counter[str] = Counter()
    for page in clients.s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for version in page.get("Versions", []):
            if data_files_only and not _is_hudi_data_file(version["Key"][len(prefix) :]):
                continue
            state = "current" if version["IsLatest"] else "noncurrent"
            counts[f"{object_kind(version['Key'][len(prefix) :])} {state}"] += 1
        for marker in page.get("DeleteMarkers", []):
            if data_files_only and not _is_hudi_data_file(marker["Key"][len(prefix) :]):
                continue
            counts[f"{object_kind(marker['Key'][len(prefix) :])} delete-marker"] += 1
    return dict(sorted(counts.items()))


def _is_hudi_data_file(relative_key: str) -> bool:
    return not relative_key.startswith(".hoodie/") and object_kind(relative_key).endswith(
        ("*.parquet", "*.log")
    )


def _table_state(clients: LakeClients, table: Any) -> dict[str, Any]:
    metadata = table.metadata
    # Snapshot ids are random; a snapshot is named by its sequence number (the order of commits).
    sequence = {s.snapshot_id: s.sequence_number for s in metadata.snapshots}
    refs = {
        name: {
            "type": str(ref.snapshot_ref_type),
            "snapshot": sequence.get(ref.snapshot_id, "expired"),
            # Set from the run's clock (two runs are milliseconds apart): compared in whole hours.
            "max_ref_age_hours": None
            if ref.max_ref_age_ms is None
            else round(ref.max_ref_age_ms / 3_600_000),
        }
        for name, ref in metadata.refs.items()
    }
    return {
        "rows": _sorted_rows(table.scan().to_arrow().to_pylist()),
        "refs": dict(sorted(refs.items())),
        "snapshots_kept": sorted(sequence.values()),
        "schema": str(table.schema()),
        "partition_spec": str(table.spec()),
        "properties": dict(sorted(table.properties.items())),
        "objects": _objects(clients, table.location()),
    }


def iceberg_catalog(clients: LakeClients):
    from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog

    return load_glue_catalog(AwsAccess(clients.region, clients.endpoint_url, *CREDENTIALS[:2]))


def iceberg_state(clients: LakeClients, config: Settings, catalog: Any = None) -> dict[str, Any]:
    """Every Iceberg table in the maintained tables' databases (the archive tables registered there too),
    except the GDPR datasets (``gdpr_state``), and the lifecycle rules of their buckets."""
    catalog = catalog or iceberg_catalog(clients)
    gdpr = {d.identifier for d in config.gdpr.datasets.values() if d.format == "iceberg"}
    databases = sorted({policy.database for policy in config.iceberg.tables.values()})
    tables, buckets = {}, set()
    for database in databases:
        for identifier in iceberg_tables(clients.glue, database):
            if identifier in gdpr:
                continue
            table = catalog.load_table(identifier)
            tables[identifier] = _table_state(clients, table)
            buckets.add(_split(table.location())[0])
    return {
        "tables": tables,
        "lifecycle": {bucket: _lifecycle(clients.s3, bucket) for bucket in sorted(buckets)},
    }


def iceberg_tables(glue: Any, database: str) -> list[str]:
    """The Glue tables of ``database`` that are Iceberg tables (Glue's ``table_type`` parameter)."""
    pages = glue.get_paginator("get_tables").paginate(DatabaseName=database)
    return sorted(
        f"{database}.{t['Name']}"
        for page in pages
        for t in page["TableList"]
        if t.get("Parameters", {}).get("table_type", "").upper() == "ICEBERG"
    )


def _lifecycle(s3: Any, bucket: str) -> Any:
    try:
        return _plain(s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"])
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration":
            return None
        raise


# -- GDPR erasure --------------------------------------------------------------------------------------------


def _requests(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Per subject (the request ids of trigger-form requests hold the Airflow run id): status, reason
    and each dataset's outcome, without when or by which run."""
    requests = {}
    for item in items:
        progress = {
            dataset: _stable(outcome) if isinstance(outcome, dict) else _plain(outcome)
            for dataset, outcome in (item.get("progress") or {}).items()
        }
        requests[item["subject_id"]] = {
            "status": item.get("status"),
            "reason": item.get("reason"),
            "progress": dict(sorted(progress.items())),
        }
    return dict(sorted(requests.items()))


# Audit fields that hold snapshot ids or commit instants (random or clock-made): compared as present or not.
_AUDIT_IDS = ("commit", "expired_snapshots", "dropped_refs")


def _audit(items: list[dict[str, Any]], subjects: dict[str, str]) -> dict[str, Any]:
    """The audit records per subject and dataset, without timestamps, run ids or snapshot ids.

    Records with ``outcome: error`` are left out: each documents one failed attempt that a retry then
    finished, so how many there are depends on the faults by design. Every other record is compared,
    so a duplicated ``verified`` record is a difference."""
    audit: dict[str, list[Any]] = {}
    for item in items:
        if item.get("outcome") == "error":
            continue
        record = _stable(item)
        record.pop("request_id", None)
        for name in _AUDIT_IDS:
            if name in record:
                value = record[name]
                record[name] = len(value) if isinstance(value, list) else bool(value)
        for name in ("verification", "details"):
            if isinstance(record.get(name), str):
                record[name] = _normalised_json(record[name])
        subject = subjects.get(item["request_id"], item["request_id"])
        audit.setdefault(f"{subject} {item.get('dataset')}", []).append(record)
    return {key: _sorted_rows(records) for key, records in sorted(audit.items())}


def _normalised_json(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return _drop_volatile_deep(value)


def _drop_volatile_deep(value: Any) -> Any:
    if isinstance(value, dict):
        commits = sorted(k for k in value if _COMMIT_ID.fullmatch(str(k)))
        names = {k: f"<commit {n}>" for n, k in enumerate(commits)}
        return {
            names.get(k, k): (bool(v) if k in _AUDIT_AMOUNTS else _drop_volatile_deep(v))
            for k, v in value.items()
            if not _is_volatile(k) and k not in ("snapshot_id", "commit", "files")
        }
    if isinstance(value, list):
        # As multisets: with uuids and instants taken out, the order left is theirs.
        return sorted((_drop_volatile_deep(v) for v in value), key=json.dumps)
    if isinstance(value, str):
        # Data file names hold a uuid per write; commit instants are clock readings.
        return _COMMIT_ID.sub("<commit>", _UUID.sub("<uuid>", value))
    return value


def gdpr_state(clients: LakeClients, config: Settings, catalog: Any = None, hudi: bool = True) -> dict:
    """Requests (status per subject), audit records, and the erased tables' contents: Iceberg datasets
    through the catalog (with their metadata, as ``iceberg_state``), Hudi datasets through Spark."""
    gdpr = config.gdpr
    catalog = catalog or iceberg_catalog(clients)
    items = _scan(clients.dynamodb, gdpr.requests_table)
    # The month counters (``#completed#YYYY-MM``) share the table: compared as they are, a completion
    # counted twice (or not at all) under faults is a state difference.
    counters = {
        item["request_id"]: _plain(item["completed"]) for item in items if item["request_id"][0] == "#"
    }
    request_items = [item for item in items if item["request_id"][0] != "#"]
    subjects = {item["request_id"]: item["subject_id"] for item in request_items}
    tables = {}
    for key, dataset in gdpr.datasets.items():
        if dataset.format == "iceberg":
            table = catalog.load_table(dataset.identifier)
            tables[key] = {**_table_state(clients, table), "versions": _versions(clients, table.location())}
    hudi_locations = {k: d.location for k, d in gdpr.datasets.items() if d.format == "hudi"}
    if hudi and hudi_locations:
        rows = read_hudi_tables(hudi_locations, clients.endpoint_url, clients.region)
        tables.update(
            {
                key: {**rows[key], "versions": _versions(clients, loc, data_files_only=True)}
                for key, loc in hudi_locations.items()
            }
        )
    return {
        "requests": _requests(request_items),
        "completed_counters": dict(sorted(counters.items())),
        "audit": _audit(_scan(clients.dynamodb, gdpr.audit_table), subjects),
        "tables": tables,
    }


def read_hudi_tables(locations: dict[str, str], endpoint_url: str | None, region: str) -> dict[str, Any]:
    """The latest rows of each Hudi table (Hudi's ``_hoodie_*`` columns left out: they hold commit
    instants and file names), in one ``spark-submit`` of ``devstack/hudi_read.py``."""
    from dataplatform.devstack import hudi_read
    from dataplatform.devstack.hudi_seed import run_hudi_program

    command = hudi_read.read_command(locations, endpoint_url, region)
    stdout = run_hudi_program(command, endpoint_url, region, CREDENTIALS, "reading the Hudi tables")
    (line,) = [line for line in stdout.splitlines() if line.startswith(hudi_read.RESULT)]
    tables = json.loads(line.removeprefix(hudi_read.RESULT))
    return {name: {"rows": _sorted_rows(rows)} for name, rows in tables.items()}


# -- benchmark pricing ---------------------------------------------------------------------------------------

# What the workflow manager wrote about the compute a launch used: moto makes new random ids for the
# instances, volumes and jobs each time the demo is seeded.
_LAUNCH_RESOURCE_IDS = ("batch_job_ids", "instance_ids", "volume_ids", "fsx_file_system_id")


def pricing_state(clients: LakeClients, config: Settings) -> dict[str, Any]:
    """Every launch record (its costs and pricing outcome) and every Spark job cost record."""
    launches = {}
    for item in _scan(clients.dynamodb, config.pricing.launches_table):
        record = {k: v for k, v in _stable(item).items() if k not in _LAUNCH_RESOURCE_IDS}
        launches[item["launch_id"]] = record
    jobs = {
        f"{item.get('job_name')} #{n}": _stable(item)
        for n, item in enumerate(
            sorted(
                _scan(clients.dynamodb, config.pricing.job_costs_table),
                key=lambda item: (item.get("job_name", ""), item.get("run_key", "")),
            )
        )
    }
    return {"launches": dict(sorted(launches.items())), "job_costs": jobs}


# -- the whole lake --------------------------------------------------------------------------------------------


def snapshot(config: Settings, endpoint_url: str | None, hudi: bool = True) -> dict[str, Any]:
    """Everything the DAGs own, per pipeline. ``hudi=False`` skips the Hudi tables' Spark read."""
    clients = lake_clients(endpoint_url, config.aws.region)
    catalog = iceberg_catalog(clients)
    return {
        "glue": glue_state(clients, config),
        "reconciliation": recon_state(clients, config),
        "iceberg": iceberg_state(clients, config, catalog),
        "gdpr": gdpr_state(clients, config, catalog, hudi=hudi),
        "pricing": pricing_state(clients, config),
    }


def invariants(state: dict[str, Any]) -> list[str]:
    """What is wrong in one snapshot whatever the other run did."""
    problems = []
    for subject, request in state.get("gdpr", {}).get("requests", {}).items():
        if request["status"] == "IN_PROGRESS":
            problems.append(f"gdpr: the request of {subject} is left IN_PROGRESS")
    for launch_id, launch in state.get("pricing", {}).get("launches", {}).items():
        problems += _priced_once(launch_id, launch)
    problems += _ledger_problems(state.get("reconciliation", {}))
    return problems


def _priced_once(launch_id: str, launch: dict[str, Any]) -> list[str]:
    """A launch priced twice shows as a total that is not the sum of its parts (costs added twice) or
    as a cost beside a pricing error."""
    if "total_cost" not in launch:
        return []
    parts = [
        Decimal(str(launch.get(name, "0"))) for name in ("instance_cost", "volume_cost", "filesystem_cost")
    ]
    problems = []
    if Decimal(str(launch["total_cost"])) != sum(parts):
        problems.append(f"pricing: launch {launch_id} total {launch['total_cost']} is not the sum of {parts}")
    if launch.get("pricing_error"):
        problems.append(f"pricing: launch {launch_id} is priced and has a pricing error")
    return problems


def _ledger_problems(recon: dict[str, Any]) -> list[str]:
    """Each batch in at most one group, each group in at most one stateful run, seqs without a hole,
    and every index entry pointing at its own artifact."""
    ledger = recon.get("ledger", {})
    problems = []
    owner: dict[str, str] = {}
    for name, item in ledger.items():
        if name.startswith("group#"):
            for batch in item.get("batches", []):
                if batch in owner:
                    problems.append(f"recon: batch {batch} is in {owner[batch]} and {name}")
                owner[batch] = name
    claimed: dict[str, str] = {}
    seqs = []
    for name, item in ledger.items():
        if name.startswith("stateful#"):
            seqs.append(int(item["seq"]))
            for group in item.get("groups", []):
                if group in claimed:
                    problems.append(f"recon: {group} is in stateful runs {claimed[group]} and {item['seq']}")
                claimed[group] = str(item["seq"])
    if sorted(seqs) != list(range(1, len(seqs) + 1)):
        problems.append(f"recon: stateful run seqs {sorted(seqs)} have a hole")
    for key, entry in recon.get("index", {}).items():
        artifact = entry["artifact"]
        if artifact.get("key") != key or artifact.get("version") != entry["version"]:
            problems.append(f"recon: index entry {key} v{entry['version']} points at {str(artifact)[:80]}")
    return problems


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Readable differences between two snapshots (or parts of them): one line per differing leaf,
    with its path, e.g. ``gdpr.requests.cust-000004.status: 'COMPLETED' != 'IN_PROGRESS'``."""
    if isinstance(a, dict) and isinstance(b, dict):
        lines = []
        for key in sorted(set(a) | set(b), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in a:
                lines.append(f"{where}: only in the second: {_short(b[key])}")
            elif key not in b:
                lines.append(f"{where}: only in the first: {_short(a[key])}")
            else:
                lines += diff(a[key], b[key], where)
        return lines
    if isinstance(a, list) and isinstance(b, list):
        if a == b:
            return []
        if len(a) == len(b) and all(isinstance(x, (dict, list)) for x in a):
            return [
                line for i, (x, y) in enumerate(zip(a, b, strict=True)) for line in diff(x, y, f"{path}[{i}]")
            ]
        return _list_diff(a, b, path)
    return [] if a == b else [f"{path}: {_short(a)} != {_short(b)}"]


def _list_diff(a: list, b: list, path: str) -> list[str]:
    """Lists as multisets: what only one of them holds (and how many times)."""
    count_a = Counter(json.dumps(x, sort_keys=True, default=str) for x in a)
    count_b = Counter(json.dumps(x, sort_keys=True, default=str) for x in b)
    lines = [f"{path}: {len(a)} items != {len(b)} items"] if len(a) != len(b) else []
    for value, n in sorted((count_a - count_b).items()):
        lines.append(f"{path}: only in the first ({n}x): {_short(value)}")
    for value, n in sorted((count_b - count_a).items()):
        lines.append(f"{path}: only in the second ({n}x): {_short(value)}")
    return lines or [f"{path}: same items in another order"]


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
