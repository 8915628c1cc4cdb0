"""Run the reconciliation stages in this process with a given SparkSession, in the order the DAGs run
them: for tests, the benchmark and debugging a stage without Airflow.

Each Spark stage calls the same ``run(spark, spec, storage)`` the job's ``main`` calls under
spark-submit, with the same job spec the Airflow task would pass, so what is tested here is what runs on
EMR; only the process boundary differs.
"""

from __future__ import annotations

from datetime import datetime

from dataplatform.reconciliation import pipeline
from dataplatform.reconciliation.pipeline import ReconContext


class LocalRunner:
    def __init__(self, ctx: ReconContext, spark):
        self.ctx = ctx
        self.spark = spark

    def _run_job(self, module: str, spec_uri: str) -> dict:
        import importlib

        job = importlib.import_module(f"spark_jobs.{module}")
        return job.run(self.spark, self.ctx.storage.read_json(spec_uri), self.ctx.storage)

    # -- stateless ---------------------------------------------------------------------------------------

    def stateless(
        self, run_id: str, max_batches: int | None = None, now: datetime | None = None
    ) -> dict | None:
        """setup -> register -> plan -> Spark -> commit; the plan (with the stats) or None."""
        pipeline.setup_tables(self.ctx)
        pipeline.register_batches(self.ctx, now)
        plan = pipeline.plan_stateless(self.ctx, run_id, max_batches, now)
        if plan is None:
            return None
        self._run_job("recon_stateless", plan["spec_uri"])
        return {**plan, "stats": pipeline.commit_stateless(self.ctx, plan["group_id"], now)}

    # -- stateful, stage by stage (tests interleave the stages of overlapping runs) ----------------------

    def begin(self, run_id: str) -> dict | None:
        return pipeline.begin_stateful(self.ctx, run_id)

    def prefetch(self, run: dict) -> dict:
        return self._run_job("recon_prefetch", run["spec_uri"])

    def process(self, run: dict) -> list[str]:
        """The Spark process stage and its commit; refuses to run out of order, as the DAG's wait does."""
        if not pipeline.previous_run_reached(self.ctx, run["seq"], "PROCESSED"):
            raise pipeline.StageError(f"run {run['seq']} cannot process before run {run['seq'] - 1}")
        self._run_job("recon_stateful", run["spec_uri"])
        return pipeline.commit_process(self.ctx, run["seq"])

    def index(self, run: dict, part_uris: list[str]) -> dict:
        if not pipeline.previous_run_reached(self.ctx, run["seq"], "INDEXED"):
            raise pipeline.StageError(f"run {run['seq']} cannot index before run {run['seq'] - 1}")
        stats = [pipeline.index_part_file(self.ctx, run["seq"], uri) for uri in part_uris]
        return pipeline.commit_index(self.ctx, run["seq"], stats)

    def stateful(self, run_id: str) -> dict | None:
        """One whole stateful run; its report, or None when no group was ready."""
        run = self.begin(run_id)
        if run is None:
            return None
        self.prefetch(run)
        parts = self.process(run)
        return self.index(run, parts)
