"""What both reconciliation pipelines share under crash test: the landed batches, the pipeline context, the
Spark job as its task runs it (a local spark-submit, killed with its task), the same job in the harness's
own Spark session when it is not the step under test, and the snapshot of everything the pipeline owns."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime

from tests.crash.pipelines import without_clock, without_uuids

START = datetime(2024, 3, 5, 10, tzinfo=UTC)
# Small, with every feature of the generator: skewed keys, redeliveries, late corrections, malformed rows.
BATCHES = 4


def land(lake) -> None:
    from dataplatform.devstack.seed import ensure_bucket
    from dataplatform.reconciliation.generator import GeneratorConfig, write_batches
    from spark_jobs.common.storage import Storage

    recon = lake.settings.reconciliation
    ensure_bucket(lake.s3, recon.landing_uri.removeprefix("s3://").split("/")[0])
    write_batches(
        Storage(lake.s3),
        recon.landing_uri,
        GeneratorConfig(
            seed=5,
            n_keys=150,
            events_per_batch=120,
            files_per_batch=2,
            malformed_share=0.03,
            redelivery_share=0.05,
        ),
        batches=BATCHES,
        start=START,
    )


def harness_context(lake):
    """The pipeline context in the harness: straight to moto."""
    from dataplatform.reconciliation.pipeline import ReconContext
    from spark_jobs.common.storage import Storage

    return ReconContext(
        settings=lake.settings.reconciliation,
        dynamodb=lake.dynamodb,
        storage=Storage(lake.s3),
        region=lake.settings.aws.region,
        aws_endpoint_url=lake.server.url,
    )


def task_context():
    from dataplatform.operators.reconciliation import recon_context

    return recon_context()


def spark_submit(job, spec_uri: str) -> dict:
    """The job as ``LocalSparkSubmitOperator`` runs it, but in this task's process group, so that the crash
    kills spark-submit, its JVM and its Python workers with the task."""
    from dataplatform import aws, spark
    from dataplatform.config import settings

    config = settings()
    endpoint = aws.endpoint_url()
    argv = spark.local_spark_submit_command(
        spark_submit=None,
        master="local[2]",
        conf=spark.local_conf(job.conf, endpoint, config.aws.region),
        application=spark.local_application(job),
        application_args=["--spec", spec_uri],
    )
    env = spark.local_spark_env(
        os.environ, credentials=aws.explicit_credentials(), region=config.aws.region, endpoint_url=endpoint
    )
    run = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL)
    if run.returncode != 0:
        raise RuntimeError(f"spark-submit of {job.entry} exited with code {run.returncode}")
    return {"spec_uri": spec_uri}


def in_session(lake, module: str, spec_uri: str) -> dict:
    """The same job's ``run`` in the harness's Spark session (what ``LocalRunner`` does)."""
    import importlib

    from spark_jobs.common.storage import Storage

    storage = Storage(lake.s3)
    importlib.import_module(f"spark_jobs.{module}").run(lake.spark, storage.read_json(spec_uri), storage)
    return {"spec_uri": spec_uri}


def spark_session(endpoint: str):
    from dataplatform.spark import local_session

    return local_session("dataplatform-crash", {}, endpoint, "us-east-1")


def snapshot(lake) -> dict:
    """The ledger (without clock readings), every indexed artifact read alone through the index, and the
    work area's objects: JSON files whole, part files as their sorted lines (Spark names them at random)."""
    from dataplatform.reconciliation import index
    from spark_jobs.common.storage import Storage

    recon = lake.settings.reconciliation
    ledger = {
        item["pk"]: without_clock(json.loads(without_uuids(json.dumps(item, default=str))))
        for item in lake.items(recon.ledger_table)
    }
    storage = Storage(lake.s3)
    artifacts = {
        item["artifact_key"]: index.get_artifact(
            lake.dynamodb, storage, recon.index_table, item["artifact_key"]
        )
        for item in lake.items(recon.index_table)
    }
    bucket, _, prefix = recon.work_uri.removeprefix("s3://").partition("/")
    work: dict[str, list] = {}
    for key, body in lake.objects(bucket, prefix).items():
        folder, _, name = without_uuids(key).rpartition("/")
        if name.startswith("part-"):
            # How a job's rows split into part files depends on Spark's parallelism, not on the data.
            work.setdefault(f"{folder}/part-*", []).extend(_lines(key, body))
        elif body.lstrip().startswith((b"{", b"[")):
            # _job.json, _stats.json, _COMMITTED...: part-file URIs inside carry Spark's random names.
            work[f"{folder}/{name}"] = without_clock(json.loads(without_uuids(body.decode())))
        else:
            work[f"{folder}/{name}"] = body.decode(errors="replace")
    return {
        "ledger": ledger,
        "index": artifacts,
        "work": {name: sorted(value) if name.endswith("part-*") else value for name, value in work.items()},
    }


def _lines(key: str, body: bytes) -> list[str]:
    """A data file's records as strings: JSON lines as they are, Parquet rows (Spark's bytes differ from
    write to write, its rows do not)."""
    if key.endswith(".parquet"):
        import io

        import pyarrow.parquet as pq

        return [
            json.dumps(row, sort_keys=True, default=str)
            for row in pq.read_table(io.BytesIO(body)).to_pylist()
        ]
    return body.decode().splitlines()
