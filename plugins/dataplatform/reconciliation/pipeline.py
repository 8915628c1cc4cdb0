"""The stages of the reconciliation pipeline, as the Airflow tasks (and the local runner) call them.

Stateless run (DAG ``recon_stateless``, one group of batches per run)::

    setup_tables -> register_batches -> plan_stateless (claim + job spec) -> [Spark recon_stateless]
                 -> commit_stateless (ledger READY, asset event)

Stateful run (DAG ``recon_stateful``, one per asset event, up to ``max_in_flight`` at once)::

    begin_stateful (claim READY groups, take a seq, job spec) -> [Spark recon_prefetch]
      -> wait: run seq-1 PROCESSED -> [Spark recon_stateful] -> commit_process (part files)
      -> wait: run seq-1 INDEXED  -> index_part_file (mapped) -> commit_index

The waits make the stateful runs an assembly line: the prefetch of run N may run while run N-1 still
processes or indexes, but N processes only after N-1 has written its part files (which N reads as
in-flight state) and indexes only after N-1 finished indexing (so an older version never overwrites a
newer one in the index). Every stage is idempotent: a retry or a rerun changes nothing.

Nothing here imports Airflow: the context (clients, settings) is passed in.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dataplatform.config import ReconciliationSettings
from dataplatform.reconciliation import backlog, index, ledger
from spark_jobs.common.storage import Storage, join

log = logging.getLogger(__name__)

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_.=-]")


class StageError(RuntimeError):
    """A stage cannot go on; the message says what is missing and what to do."""


@dataclass
class ReconContext:
    """What every stage needs: the settings, a DynamoDB client, storage, and (locally) the AWS endpoint
    the Spark jobs must use (in AWS ``None``: the jobs use the default endpoints and the cluster role)."""

    settings: ReconciliationSettings
    dynamodb: Any
    storage: Storage
    region: str
    aws_endpoint_url: str | None = None


def group_id_for(run_id: str) -> str:
    """A stateless group is named after the Airflow run that made it (safe in paths and keys)."""
    return _UNSAFE_ID.sub("_", run_id)[:128]


def stateless_uri(ctx: ReconContext, group_id: str) -> str:
    return join(ctx.settings.work_uri, "stateless", group_id) + "/"


def seq_dir(seq: int) -> str:
    return f"{seq:08d}"


def state_uri(ctx: ReconContext, seq: int) -> str:
    return join(ctx.settings.work_uri, "state", seq_dir(seq)) + "/"


def stateful_uri(ctx: ReconContext, seq: int) -> str:
    return join(ctx.settings.work_uri, "stateful", seq_dir(seq)) + "/"


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


# -- setup and the stateless run -----------------------------------------------------------------------


def setup_tables(ctx: ReconContext) -> dict[str, bool]:
    """Create the ledger and index tables when missing (idempotent)."""
    created = {
        ctx.settings.ledger_table: ledger.create_ledger_table(ctx.dynamodb, ctx.settings.ledger_table),
        ctx.settings.index_table: index.create_index_table(ctx.dynamodb, ctx.settings.index_table),
    }
    for table, was_created in created.items():
        log.info("DynamoDB table %s %s", table, "created" if was_created else "already exists")
    return created


def register_batches(ctx: ReconContext, now: datetime | None = None) -> dict:
    """Register every landed batch whose manifest has appeared; a batch failing its manifest check is
    recorded INVALID with the reason (and never claimed)."""
    result = ledger.register_batches(
        ctx.dynamodb, ctx.settings.ledger_table, ctx.storage, ctx.settings.landing_uri, _now(now)
    )
    log.info(
        "registered %d new batches, %d invalid, %d already known",
        len(result["registered"]),
        len(result["invalid"]),
        result["already_known"],
    )
    for bad in result["invalid"]:
        log.warning("batch %s is INVALID: %s", bad["batch_id"], bad["reason"])
    return result


def plan_stateless(
    ctx: ReconContext, run_id: str, max_batches: int | None = None, now: datetime | None = None
) -> dict | None:
    """Claim pending batches for this run's group (more when the backlog is long) and write the Spark
    job spec. ``None`` when nothing is pending. A retry returns the same group and batches."""
    now = _now(now)
    table = ctx.settings.ledger_table
    group_id = group_id_for(run_id)
    pending = ledger.count_by_state(ctx.dynamodb, table).get("PENDING", 0)
    limit = backlog.claim_limit(pending, ctx.settings.backlog, max_batches)
    batches = ledger.claim_batches(
        ctx.dynamodb,
        table,
        group_id,
        limit,
        now,
        timedelta(minutes=ctx.settings.claim_timeout_minutes),
    )
    if not batches:
        log.info("no pending batches (backlog %d): nothing to do", pending)
        return None
    output_uri = stateless_uri(ctx, group_id)
    spec_uri = join(output_uri, "_job.json")
    batch_ids = [b["batch_id"] for b in batches]
    if ctx.storage.exists(spec_uri) and _spec_batches(ctx.storage.read_json(spec_uri)) == batch_ids:
        # A retry of this run: keep the spec it wrote, so the job dedups against the same groups even if
        # other groups have been committed since.
        log.info("group %s already claimed batches %s (retry): reusing its job spec", group_id, batch_ids)
    else:
        dedup_groups = [
            group
            for group in ledger.dedup_group_ids(ctx.dynamodb, table, now, ctx.settings.dedup_horizon_days)
            if group != group_id
        ]
        spec = {
            "group_id": group_id,
            "batches": [{"batch_id": b["batch_id"], "files": list(b["files"])} for b in batches],
            "dedup_group_uris": [stateless_uri(ctx, group) for group in dedup_groups],
            "output_uri": output_uri,
        }
        ctx.storage.write_json(spec_uri, spec)
        log.info(
            "group %s claimed %d of %d pending batches (limit %d): %s",
            group_id,
            len(batches),
            pending,
            limit,
            ", ".join(batch_ids),
        )
    return {
        "group_id": group_id,
        "spec_uri": spec_uri,
        "batches": [b["batch_id"] for b in batches],
        "backlog": pending,
        "limit": limit,
    }


def _spec_batches(spec: dict) -> list[str]:
    return [batch["batch_id"] for batch in spec["batches"]]


def commit_stateless(ctx: ReconContext, group_id: str, now: datetime | None = None) -> dict:
    """After the stateless Spark job: mark the group READY for the stateful runs and its batches
    STATELESS_DONE, then write ``_COMMITTED`` so a rerun of the job is a no-op."""
    output_uri = stateless_uri(ctx, group_id)
    stats_uri = join(output_uri, "_stats.json")
    if not ctx.storage.exists(stats_uri):
        raise StageError(f"stateless group {group_id}: {stats_uri} is missing; did the Spark job finish?")
    stats = ctx.storage.read_json(stats_uri)
    ledger.commit_group(ctx.dynamodb, ctx.settings.ledger_table, group_id, stats, _now(now))
    ctx.storage.write_json(join(output_uri, "_COMMITTED"), {"group_id": group_id, "stats": stats})
    log.info(
        "group %s committed: %d input rows, %d valid, %d quarantined %s, %d duplicates dropped, %d artifacts",
        group_id,
        stats["input_rows"],
        stats["valid_rows"],
        stats["quarantined_rows"],
        stats["quarantined"],
        stats["duplicates_in_run"] + stats["duplicates_seen_before"],
        stats["artifacts"],
    )
    return stats


def stateless_summary(plan: dict, stats: dict) -> str:
    return (
        f"group of {len(plan['batches'])} batches (backlog {plan['backlog']}): {stats['input_rows']} rows, "
        f"{stats['quarantined_rows']} quarantined, "
        f"{stats['duplicates_in_run'] + stats['duplicates_seen_before']} duplicate events dropped, "
        f"{stats['artifacts']} stateless artifacts"
    )


# -- the stateful run ----------------------------------------------------------------------------------


def begin_stateful(ctx: ReconContext, run_id: str, now: datetime | None = None) -> dict | None:
    """Claim every READY stateless group for a new stateful run, take its sequence number and write its
    Spark job spec. ``None`` when no group is ready. A retry returns the same run."""
    run = ledger.begin_stateful_run(ctx.dynamodb, ctx.settings.ledger_table, run_id, _now(now))
    if run is None:
        log.info("no stateless group is READY: nothing to do")
        return None
    output_uri = stateful_uri(ctx, run.seq)
    spec = {
        "seq": run.seq,
        "run_id": run.run_id,
        "groups": list(run.groups),
        "stateless_uris": [stateless_uri(ctx, group) for group in run.groups],
        # Runs after the index watermark may not be (fully) indexed yet: their part files are joined in
        # as in-flight state, so this run sees their artifacts whatever its prefetch found.
        "inflight_state_uris": [state_uri(ctx, seq) for seq in run.inflight_seqs],
        "state_uri": state_uri(ctx, run.seq),
        "output_uri": output_uri,
        "index_table": ctx.settings.index_table,
        "region": ctx.region,
        "aws_endpoint_url": ctx.aws_endpoint_url,
        "prefetch": ctx.settings.prefetch.model_dump(),
        "state_part_files": ctx.settings.state_part_files,
    }
    spec_uri = ctx.storage.write_json(join(output_uri, "_job.json"), spec)
    log.info(
        "stateful run %d (%s): groups %s; index watermark %d; in-flight runs %s",
        run.seq,
        run_id,
        ", ".join(run.groups),
        run.watermark,
        list(run.inflight_seqs) or "none",
    )
    return {"seq": run.seq, "spec_uri": spec_uri, "groups": list(run.groups)}


_ORDER = {"BEGUN": 0, "PROCESSED": 1, "INDEXED": 2}


def previous_run_reached(ctx: ReconContext, seq: int, stage: str) -> bool:
    """Has run ``seq - 1`` reached ``stage`` (PROCESSED or INDEXED)? Run 1 has no predecessor."""
    if seq <= 1:
        return True
    state = ledger.run_state(ctx.dynamodb, ctx.settings.ledger_table, seq - 1)
    if state is None:
        raise StageError(
            f"stateful run {seq - 1} is missing from the ledger {ctx.settings.ledger_table}, so run {seq} "
            "cannot be ordered after it"
        )
    reached = _ORDER.get(state, -1) >= _ORDER[stage]
    if not reached:
        log.info("run %d waits for run %d to be %s (it is %s)", seq, seq - 1, stage, state)
    return reached


def commit_process(ctx: ReconContext, seq: int) -> list[str]:
    """After the stateful Spark job: record its part files (``_COMMITTED`` and the ledger) and return
    them for the indexer. Idempotent: a committed run returns its recorded part files."""
    output = state_uri(ctx, seq)
    committed_uri = join(output, "_COMMITTED")
    if ctx.storage.exists(committed_uri):
        committed = ctx.storage.read_json(committed_uri)
    else:
        if not ctx.storage.exists(join(output, "_SUCCESS")):
            raise StageError(f"stateful run {seq}: {output} has no _SUCCESS; the Spark job did not finish")
        part_files = [
            {"uri": uri, "bytes": size}
            for uri, size in ctx.storage.list_files(output)
            if uri.rsplit("/", 1)[-1].startswith("part-")
        ]
        stats = ctx.storage.read_json(join(stateful_uri(ctx, seq), "_process_stats.json"))
        committed = {"seq": seq, "part_files": part_files, "artifacts": stats["artifacts_written"]}
        ctx.storage.write_json(committed_uri, committed)
    stats = ctx.storage.read_json(join(stateful_uri(ctx, seq), "_process_stats.json"))
    ledger.mark_processed(
        ctx.dynamodb,
        ctx.settings.ledger_table,
        seq,
        [part["uri"] for part in committed["part_files"]],
        stats,
    )
    log.info(
        "stateful run %d processed: %d artifacts in %d part files (%d created, %d updated, "
        "%d already applied)",
        seq,
        committed["artifacts"],
        len(committed["part_files"]),
        stats["created"],
        stats["updated"],
        stats["already_applied"],
    )
    return [part["uri"] for part in committed["part_files"] if part["bytes"] > 0]


def index_part_file(ctx: ReconContext, seq: int, part_uri: str) -> dict:
    """Index one part file. Normally a plain BatchWriteItem is safe (runs index in order); when a later
    run has already indexed (this run was cleared and rerun by hand), writes become conditional so an
    older version never replaces a newer one."""
    conditional = ledger.highest_indexed_seq(ctx.dynamodb, ctx.settings.ledger_table) >= seq
    if conditional:
        log.warning("run %d: a run >= %d is already indexed; writing the index conditionally", seq, seq)
    return index.index_part_file(
        ctx.dynamodb,
        ctx.storage,
        ctx.settings.index_table,
        part_uri,
        seq,
        conditional=conditional,
        writers=ctx.settings.index_writers,
    )


def commit_index(ctx: ReconContext, seq: int, part_stats: list[dict]) -> dict:
    """Mark the run INDEXED (its groups APPLIED, its batches INDEXED: their windows may now be complete)
    and return the run's report."""
    prefetch = ctx.storage.read_json(join(stateful_uri(ctx, seq), "_prefetch_stats.json"))
    process = ctx.storage.read_json(join(stateful_uri(ctx, seq), "_process_stats.json"))
    indexed = {
        key: sum(stats.get(key, 0) for stats in part_stats)
        for key in ("entries", "written", "skipped_newer", "batch_calls", "retries")
    }
    report = {"seq": seq, "prefetch": prefetch, "process": process, "index": indexed}
    ledger.mark_indexed(ctx.dynamodb, ctx.settings.ledger_table, seq, indexed)
    report["summary"] = (
        f"run {seq}: prefetched {prefetch['prefetched_artifacts']} artifacts with "
        f"{prefetch['range_reads']} ranged GETs; wrote {process['artifacts_written']} artifacts "
        f"({process['created']} new, {process['updated']} updated); indexed {indexed['written']}"
    )
    log.info("%s", report["summary"])
    return report
