"""Daily GDPR erasure. Wiring only: see dataplatform.gdpr (requests, erasure, iceberg_erasure, audit) and
dataplatform.operators.gdpr."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, TriggerRule, dag, task
from airflow.timetables.trigger import CronTriggerTimetable

from dataplatform.config import settings
from dataplatform.operators import assets
from dataplatform.operators.gdpr import GdprIcebergErasureOperator
from dataplatform.operators.gdpr_spark import spark_datasets, spark_erasure_tasks
from dataplatform.operators.notifiers import dag_alerts, task_alerts
from dataplatform.task_retries import retry_args

DOC = """
### GDPR erasure

Daily (03:00 UTC). Erases the people of open right-to-be-forgotten requests (DynamoDB `gdpr_requests`,
submitted with `python -m dataplatform.gdpr submit --subject-id ...` or from this DAG's trigger form)
from every dataset in `gdpr.datasets` (`include/config/<env>.yaml`):

1. **accept_requests**: checks the params (bad subject ids or unknown datasets fail here, before
   anything is stored or changed) and submits the form's subject ids as requests.
2. **claim_requests**: up to `batch_size` open requests (PENDING, FAILED, or IN_PROGRESS with a dead
   claim), oldest first, each claimed with a conditional write.
3. **erase_iceberg** (mapped, one per pyiceberg dataset): deletes the subjects' rows (copy-on-write: only
   the files whose statistics can hold them are read and rewritten, in one commit whose manifests hold
   no DELETED entry and no subject id as a bound); expires every snapshot that still reaches their rows
   or names them in its manifests, whatever retain_last says (a tag or branch pinning one:
   `pinned_refs: fail` stops the dataset and names the refs, `drop` removes them); deletes the files the
   expiry unreferences (statistics files included), the previous metadata files that list an expired
   snapshot, and their noncurrent versions; deletes every copy under the table location that no
   metadata reaches (files maintenance kept with the delete tag, orphans of failed writers, noncurrent
   versions) and holds their rows, listing them in the audit; verifies from S3 itself: every object
   version under the location is read (data files for their rows, manifests for their ids in column
   bounds, metadata and statistics files for the ids), and the report says how many objects and bytes
   that read; writes each request's progress and an audit record (DynamoDB `gdpr_audit`, append-only).
   An archive table registered from the dataset (`iceberg_archive_register`) that is not itself a
   configured dataset stops the dataset before any change.
4. **erase_<dataset>** (a task group per `engine: spark` dataset): `plan` writes the job spec (it holds
   the subject ids) under `gdpr.work_uri`; the Spark job runs, Hudi datasets on their own transient EMR
   cluster when `spark.backend` is EMR or EMR Serverless (instance fleets, Spot task nodes; `run_on_cluster`
   creates it with the step in its request and holds an `emr_transient_clusters` slot until it has
   ended; `terminate_cluster` is a teardown, so the cluster goes also when that task fails or is killed),
   locally as `spark-submit` on the local backend: Hudi `delete` with the BLOOM index, inline compaction
   for merge-on-read, the metadata table compacted, then an empty commit whose clean keeps one commit
   (a job killed before that clean leaves the requests FAILED; the next run finishes the purge); Iceberg `DELETE FROM`,
   `rewrite_manifests` and `expire_snapshots` of every snapshot that held the rows and the DELETE's. Each
   job verifies every retained commit or snapshot (Hudi: active and archived commits, base and log files,
   and the metadata table's column stats and record index; Iceberg: every remaining manifest entry's bounds) and writes its counts; `record` checks them,
   deletes noncurrent versions under the table location in a versioned bucket, sweeps the copies the
   metadata no longer reaches (Iceberg) and verifies every object version under the location itself,
   records progress and audit as above, and deletes the spec.
5. **finish_requests**: a request is COMPLETED when every dataset verified it; otherwise FAILED with the
   reasons, and later runs claim it again. The task fails (the run shows red) when any request failed.

Subject ids never appear in logs, XCom or reports: subjects are named by an HMAC keyed with the password of
the Airflow connection `gdpr_hmac`. Reports: XCom and JSON under `reports_uri`.

Alerts (README, *Alerts*): a failed run, a task failed after its retries and the first success after a
failed run are published to `alerts.sns_topic_arn` (empty: logged only).
"""


@dag(
    dag_id="gdpr_erasure",
    description="Daily: erase the people of open right-to-be-forgotten requests from every dataset; verified, audited.",
    schedule=CronTriggerTimetable("0 3 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "data-platform",
        **retry_args(2, timedelta(minutes=5)),
        **task_alerts(),
    },
    **dag_alerts(),
    tags=["gdpr", "iceberg", "hudi"],
    doc_md=DOC,
    params={
        "subject_ids": Param(
            [],
            type="array",
            items={"type": "string", "minLength": 1, "maxLength": 256},
            title="Subject ids",
            description="Submit erasure requests for these people before claiming (one request each).",
        ),
        "datasets": Param(
            [],
            type="array",
            items={"type": "string"},
            examples=list(settings().gdpr.datasets),
            title="Datasets",
            description="Keys of gdpr.datasets in the config; empty for every dataset.",
        ),
    },
)
def gdpr_erasure():
    pyiceberg_keys = [key for key, d in settings().gdpr.datasets.items() if d.engine == "pyiceberg"]

    @task(outlets=[assets.gdpr_requests()])
    def accept_requests(params: dict, run_id: str) -> dict:
        from dataplatform.operators.gdpr import accept_requests

        return accept_requests(params, run_id)

    @task(inlets=[assets.gdpr_requests()], outlets=[assets.gdpr_requests()])
    def claim_requests(accepted: dict, run_id: str) -> list[str]:
        from dataplatform.operators.gdpr import claim

        return claim(run_id)

    @task
    def pyiceberg_datasets(accepted: dict, claimed: list[str]) -> list[str]:
        datasets = settings().gdpr.datasets
        return [key for key in accepted["datasets"] if datasets[key].engine == "pyiceberg"] if claimed else []

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[assets.gdpr_requests()])
    def finish_requests(claimed: list[str], **context) -> dict:
        from dataplatform.operators.gdpr import finish_requests

        return finish_requests(claimed, context)

    accepted = accept_requests()
    claimed = claim_requests(accepted)
    erase = GdprIcebergErasureOperator.partial(
        task_id="erase_iceberg",
        request_ids=claimed,
        map_index_template="{{ task.dataset }}",
        inlets=[assets.gdpr_requests()],
        outlets=[*assets.gdpr_datasets(pyiceberg_keys), assets.gdpr_requests(), assets.gdpr_audit()],
    ).expand(dataset=pyiceberg_datasets(accepted, claimed))
    finish = finish_requests(claimed)
    erase >> finish
    # One group per `engine: spark` dataset (Hudi, large Iceberg tables), known from the config at parse time.
    for key in spark_datasets():
        spark_erasure_tasks(key, accepted, claimed) >> finish


gdpr_erasure()
