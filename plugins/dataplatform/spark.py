"""One Spark job spec (``SparkJob``) and the pure builders that turn it into what each backend runs.

Backends (``spark.backend`` in the config):

- ``local``: ``spark-submit`` from the installed pyspark (``spark_submit_argv``), with the repository root
  on the subprocess' ``PYTHONPATH`` (``local_spark_env``) so ``spark_jobs.common`` imports. ``local_conf``
  gives it what EMR has on every cluster: the jars EMR installs (pinned copies, ``dataplatform.spark_jars``)
  and S3 through S3A, with ``s3://`` mapped to S3A, against the connection's endpoint (moto locally), so a
  job reads and writes the same ``s3://`` URIs as on EMR.
- ``emr``: one command-runner.jar step (``emr_step``) on a configured cluster or on a transient cluster
  built from ``include/emr/transient_cluster.json`` (``transient_cluster_config``).
- ``emr_serverless``: a ``sparkSubmit`` job driver (``emr_serverless_job_driver``).

On EMR the job code is read from ``spark.code_uri``: ``<code_uri>spark_jobs.zip`` (``build_py_files_zip``,
or ``python -m dataplatform.spark package dist/spark_jobs.zip``) as ``--py-files`` and the entry script at
``<code_uri><entry path>``, the path it has in this repository (``spark_jobs/partition_profile.py``).

Nothing here imports Airflow: ``dataplatform.operators.spark`` wraps these builders in tasks. Job args may
hold Jinja (``"{{ ds }}"``); the builders keep them as strings and the operator fields that carry them are
templated.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dataplatform import spark_jars
from dataplatform.config import REPO_ROOT, SparkSettings
from spark_jobs.common.iceberg_sql import EMR_ICEBERG_JAR

SPARK_JOBS_PACKAGE = "spark_jobs"
SPARK_JOBS_DIR = REPO_ROOT / SPARK_JOBS_PACKAGE
PY_FILES_ZIP = f"{SPARK_JOBS_PACKAGE}.zip"

# The name becomes an Airflow task group id and an EMR step name: no dots (they separate group and task).
_JOB_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_ENTRY = re.compile(r"^spark_jobs(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_MEMORY = re.compile(r"^[1-9][0-9]*[kmgt]$")
# A fixed timestamp for every zip entry: the same sources give a byte-identical zip.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

# Where EMR (on EC2 and Serverless) installs the Hudi Spark bundle.
EMR_HUDI_JAR = "/usr/lib/hudi/hudi-spark-bundle.jar"
# The jars EMR installs, by the path a job's ``spark.jars`` names them with -> the locked jars that stand in
# for them locally (Iceberg's runtime needs the AWS SDK v2 beside it; EMR has it on the classpath).
EMR_JARS: dict[str, tuple[str, ...]] = {
    EMR_HUDI_JAR: ("hudi-spark-bundle",),
    EMR_ICEBERG_JAR: ("iceberg-spark-runtime", "iceberg-aws-bundle"),
}
# S3A: what EMRFS is on EMR. Every local job gets it, so every job can read and write s3:// URIs.
S3A_JARS = ("hadoop-aws", "aws-java-sdk-bundle")
ICEBERG_SPARK_CATALOG = "org.apache.iceberg.spark.SparkCatalog"


@dataclass(frozen=True)
class SparkSizing:
    """Driver and executor resources on EMR and EMR Serverless.

    ``executor_instances=None`` leaves the count to dynamic allocation. Local runs ignore sizing: there the
    driver is the whole application and ``spark.local.master`` (``local[2]``) sets the parallelism.
    """

    driver_cores: int = 1
    driver_memory: str = "2g"
    executor_cores: int = 2
    executor_memory: str = "4g"
    executor_instances: int | None = None

    def __post_init__(self) -> None:
        for key in ("driver_cores", "executor_cores", "executor_instances"):
            value = getattr(self, key)
            if value is None and key == "executor_instances":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SparkSizing.{key} must be a positive integer, got {value!r}")
        for key in ("driver_memory", "executor_memory"):
            value = getattr(self, key)
            if not isinstance(value, str) or not _MEMORY.match(value):
                raise ValueError(f"SparkSizing.{key} must look like '512m' or '4g', got {value!r}")

    def conf(self) -> dict[str, str]:
        conf = {
            "spark.driver.cores": str(self.driver_cores),
            "spark.driver.memory": self.driver_memory,
            "spark.executor.cores": str(self.executor_cores),
            "spark.executor.memory": self.executor_memory,
        }
        if self.executor_instances is not None:
            conf["spark.executor.instances"] = str(self.executor_instances)
        return conf


SIZING_KEYS = frozenset({*SparkSizing(executor_instances=1).conf()})


@dataclass(frozen=True)
class SparkJob:
    """A PySpark job in ``spark_jobs/``: entry module, arguments (may hold Jinja), Spark conf and sizing.

    ``entry`` is the dotted module (``spark_jobs.partition_profile``); its file must exist under
    ``spark_jobs/``. ``conf`` must not set sizing keys (``spark.executor.memory`` ...): those come from
    ``sizing`` only, so there is one place to read a job's resources from.
    """

    name: str
    entry: str
    args: Sequence[str] = ()
    conf: Mapping[str, str] = field(default_factory=dict)
    sizing: SparkSizing = field(default_factory=SparkSizing)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _JOB_NAME.match(self.name):
            raise ValueError(
                "SparkJob.name must be 1-100 letters, digits, '-' or '_' (it names the task group and "
                f"the EMR step), got {self.name!r}"
            )
        if not isinstance(self.entry, str) or not _ENTRY.match(self.entry):
            raise ValueError(
                f"SparkJob {self.name!r}: entry must be a module under spark_jobs "
                f"(like 'spark_jobs.partition_profile'), got {self.entry!r}"
            )
        entry_file = REPO_ROOT / self.entry_path
        if not entry_file.is_file():
            raise ValueError(
                f"SparkJob {self.name!r}: entry {self.entry!r} has no file {self.entry_path} "
                f"under {SPARK_JOBS_DIR}"
            )
        if isinstance(self.args, str):
            raise ValueError(f"SparkJob {self.name!r}: args must be a list of strings, not one string")
        args = tuple(self.args)
        for position, arg in enumerate(args):
            if not isinstance(arg, str):
                raise ValueError(
                    f"SparkJob {self.name!r}: args[{position}] must be a string, "
                    f"got {arg!r} ({type(arg).__name__})"
                )
        conf = dict(self.conf)
        for key, value in conf.items():
            if not isinstance(key, str) or not key or "=" in key or key != key.strip():
                raise ValueError(f"SparkJob {self.name!r}: bad Spark conf key {key!r}")
            if not isinstance(value, str):
                raise ValueError(
                    f"SparkJob {self.name!r}: conf[{key!r}] must be a string, got {value!r} "
                    f"({type(value).__name__})"
                )
        sizing_in_conf = sorted(SIZING_KEYS & conf.keys())
        if sizing_in_conf:
            raise ValueError(
                f"SparkJob {self.name!r}: set {sizing_in_conf} through SparkJob.sizing, not conf"
            )
        if not isinstance(self.sizing, SparkSizing):
            raise ValueError(f"SparkJob {self.name!r}: sizing must be a SparkSizing, got {self.sizing!r}")
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "conf", MappingProxyType(conf))

    @property
    def entry_path(self) -> str:
        """The entry script's path relative to the repository root (and to ``spark.code_uri``)."""
        return self.entry.replace(".", "/") + ".py"

    def cluster_conf(self) -> dict[str, str]:
        """Spark conf on EMR and EMR Serverless: sizing first, then the job's own conf."""
        return {**self.sizing.conf(), **self.conf}


# -- local ---------------------------------------------------------------------------------------------


def default_spark_submit() -> str:
    """``<pyspark package dir>/bin/spark-submit`` of the installed pyspark (found without importing it)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyspark is not installed: set spark.local.spark_submit or install pyspark")
    return str(Path(next(iter(spec.submodule_search_locations))) / "bin" / "spark-submit")


def _conf_args(conf: Mapping[str, str]) -> list[str]:
    return [part for key, value in conf.items() for part in ("--conf", f"{key}={value}")]


def local_spark_submit_command(
    *,
    spark_submit: str | None,
    master: str,
    conf: Mapping[str, str],
    application: str,
    application_args: Sequence[str],
) -> list[str]:
    """The local ``spark-submit`` argv; ``spark_submit=None`` means the installed pyspark's."""
    return [
        spark_submit or default_spark_submit(),
        "--master",
        master,
        *_conf_args(conf),
        application,
        *application_args,
    ]


def local_application(job: SparkJob) -> str:
    return str(REPO_ROOT / job.entry_path)


def spark_submit_argv(
    job: SparkJob, settings: SparkSettings, *, endpoint_url: str | None = None, region: str = "us-east-1"
) -> list[str]:
    """What the local backend runs for ``job`` (args unrendered: Jinja is rendered by the operator)."""
    return local_spark_submit_command(
        spark_submit=settings.local.spark_submit,
        master=settings.local.master,
        conf=local_conf(job.conf, endpoint_url, region),
        application=local_application(job),
        application_args=job.args,
    )


def _jar_list(jars: str | None) -> list[str]:
    """``a.jar, b.jar`` (a ``spark.jars`` value) -> ``[a.jar, b.jar]``."""
    return [part.strip() for part in (jars or "").split(",") if part.strip()]


def local_jars(jars: str | None) -> list[str]:
    """``spark.jars`` for a local run: each EMR-installed jar replaced by its locked stand-ins, the S3A
    jars added. Raises ``spark_jars.JarError`` (naming the artifact) when one is missing or corrupt."""
    names: list[str] = []
    others: list[str] = []
    for jar in _jar_list(jars):
        if jar in EMR_JARS:
            names.extend(EMR_JARS[jar])
        else:
            others.append(jar)
    names.extend(S3A_JARS)
    return [*spark_jars.jar_paths(tuple(dict.fromkeys(names))), *others]


def s3a_conf(endpoint_url: str | None, region: str) -> dict[str, str]:
    """S3 through S3A for ``s3://`` and ``s3a://`` URIs; with an endpoint (moto), path-style requests to it.

    Credentials are not conf (the argv is logged): S3A's default chain reads them from the environment
    that ``local_spark_env`` sets."""
    conf = {
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
        "spark.hadoop.fs.s3a.endpoint.region": region,
    }
    if endpoint_url:
        conf |= {
            "spark.hadoop.fs.s3a.endpoint": endpoint_url,
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint_url.startswith("https:")).lower(),
        }
    return conf


def iceberg_catalogs(conf: Mapping[str, str]) -> list[str]:
    """Names of the Iceberg catalogs ``conf`` defines (``spark.sql.catalog.<name> = SparkCatalog``)."""
    prefix = "spark.sql.catalog."
    return sorted(
        key[len(prefix) :]
        for key, value in conf.items()
        if key.startswith(prefix) and "." not in key[len(prefix) :] and value == ICEBERG_SPARK_CATALOG
    )


def iceberg_endpoint_conf(catalog: str, endpoint_url: str | None, region: str) -> dict[str, str]:
    """The Glue and S3 endpoints of an Iceberg catalog (its AWS SDK v2 clients do not read Hadoop's conf)."""
    prefix = f"spark.sql.catalog.{catalog}"
    conf = {f"{prefix}.client.region": region}
    if endpoint_url:
        conf |= {
            f"{prefix}.glue.endpoint": endpoint_url,
            f"{prefix}.s3.endpoint": endpoint_url,
            f"{prefix}.s3.path-style-access": "true",
        }
    return conf


def local_conf(job_conf: Mapping[str, str], endpoint_url: str | None, region: str) -> dict[str, str]:
    """The conf a job runs with on the local backend: its own, with the jars EMR installs stood in for by
    the locked ones, S3A for ``s3://``, and the endpoint of every Iceberg catalog it defines."""
    conf = {**dict(job_conf), **s3a_conf(endpoint_url, region)}
    conf["spark.jars"] = ",".join(local_jars(job_conf.get("spark.jars")))
    if EMR_HUDI_JAR in _jar_list(job_conf.get("spark.jars")):
        hudi = str(spark_jars.jar_path("hudi-spark-bundle"))
        # Hudi's Avro records (HoodieDeleteRecord in log blocks) are looked up by Avro, which Spark loads
        # from its own jars: from spark.jars' child class loader Avro cannot see them and reads a
        # GenericData.Record, which then fails to cast (seen reading metadata-table logs). On the driver's
        # class path, as EMR puts /usr/lib/hudi, they are found; in local mode the driver is every executor.
        extra = [part for part in (conf.get("spark.driver.extraClassPath") or "").split(":") if part]
        conf["spark.driver.extraClassPath"] = ":".join([hudi, *extra])
    for catalog in iceberg_catalogs(job_conf):
        conf |= iceberg_endpoint_conf(catalog, endpoint_url, region)
    return conf


# What an in-process local session sets besides ``local_conf``: few shuffle partitions for test-sized data,
# no UI port to clash over, UTC (the jobs' own builder, ``spark_jobs.common``, sets UTC too).
LOCAL_SESSION_DEFAULTS = MappingProxyType(
    {
        "spark.sql.shuffle.partitions": "4",
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
    }
)


def local_session(
    app_name: str,
    job_conf: Mapping[str, str],
    endpoint_url: str | None,
    region: str,
    extra: Mapping[str, str] | None = None,
):
    """An in-process ``local[2]`` SparkSession with the conf a job of ``job_conf`` gets from the local
    backend (``local_conf``: the locked jars, S3A on ``endpoint_url``), for tests and benchmarks that call
    a job's functions directly instead of through ``spark-submit``. ``extra`` wins over everything."""
    from pyspark.sql import SparkSession

    conf = {**LOCAL_SESSION_DEFAULTS, **local_conf(job_conf, endpoint_url, region), **(extra or {})}
    builder = SparkSession.builder.master("local[2]").appName(app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


SPARK_JOB_UA_APP_ID = "dataplatform-spark-job"


def local_spark_env(
    base: Mapping[str, str],
    python: str = sys.executable,
    credentials: tuple[str | None, str | None, str | None] | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> dict[str, str]:
    """The environment of a local ``spark-submit``.

    The repository root goes first on ``PYTHONPATH`` so the driver and the Python workers (which in local
    mode share this machine) import ``spark_jobs.common`` from the checkout, as ``--py-files`` provides it
    on EMR. Driver and workers use this interpreter unless the caller chose another: it is the one whose
    pyspark spark-submit belongs to.
    """
    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *[part for part in env.get("PYTHONPATH", "").split(os.pathsep) if part]]
    )
    env.setdefault("PYSPARK_PYTHON", python)
    env.setdefault("PYSPARK_DRIVER_PYTHON", python)
    # S3A and Iceberg's SDK v2 clients read these: the Airflow connection's keys reach the JVM without
    # passing through the (logged) argv.
    access_key, secret_key, token = credentials or (None, None, None)
    if access_key and secret_key:
        env["AWS_ACCESS_KEY_ID"] = access_key
        env["AWS_SECRET_ACCESS_KEY"] = secret_key
        if token:
            env["AWS_SESSION_TOKEN"] = token
        else:
            env.pop("AWS_SESSION_TOKEN", None)
    if region:
        env["AWS_REGION"] = region
        env.setdefault("AWS_DEFAULT_REGION", region)
    # boto3 in the driver and the Python workers (a job reading its spec from s3://, Storage) goes where
    # S3A goes: the connection's endpoint (moto locally; none on EMR, where this function is not used).
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    # Every boto3 call of the job says it comes from a Spark job (``app/dataplatform-spark-job`` in its
    # User-Agent; S3A and Iceberg's clients say ``aws-sdk-java``): the IAM check holds these calls to the
    # job's role (the EMR instance profile), not to the Airflow worker's, as in AWS.
    env["AWS_SDK_UA_APP_ID"] = SPARK_JOB_UA_APP_ID
    return env


# -- EMR and EMR Serverless ----------------------------------------------------------------------------


def _code_uri(settings: SparkSettings) -> str:
    if not settings.code_uri:
        raise ValueError("spark.code_uri is required to run Spark jobs on EMR or EMR Serverless")
    return settings.code_uri.rstrip("/") + "/"


def wait_attempts(timeout_minutes: int, poll_seconds: int) -> int:
    """Polls that cover ``timeout_minutes`` at one poll every ``poll_seconds`` (at least one)."""
    return max(1, math.ceil(timeout_minutes * 60 / poll_seconds))


def emr_step(job: SparkJob, settings: SparkSettings, action_on_failure: str = "CONTINUE") -> dict[str, Any]:
    """One command-runner.jar step. ``CONTINUE`` on failure for a configured cluster, which keeps serving
    other steps; a transient cluster's step says ``TERMINATE_CLUSTER`` (``transient_cluster_config``)."""
    code_uri = _code_uri(settings)
    return {
        "Name": job.name,
        "ActionOnFailure": action_on_failure,
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": [
                "spark-submit",
                "--deploy-mode",
                "cluster",
                *_conf_args(job.cluster_conf()),
                "--py-files",
                code_uri + PY_FILES_ZIP,
                code_uri + job.entry_path,
                *job.args,
            ],
        },
    }


def emr_serverless_job_driver(job: SparkJob, settings: SparkSettings) -> dict[str, Any]:
    """The ``jobDriver`` of StartJobRun.

    ``sparkSubmitParameters`` is one space-separated string, so a conf value with whitespace cannot be
    passed through it: that fails here rather than as a mangled option on the cluster.
    """
    code_uri = _code_uri(settings)
    conf = job.cluster_conf()
    with_space = sorted(key for key, value in conf.items() if re.search(r"\s", value))
    if with_space:
        raise ValueError(
            f"SparkJob {job.name!r}: conf values of {with_space} contain whitespace, which EMR Serverless' "
            "sparkSubmitParameters cannot carry"
        )
    parameters = [*_conf_args(conf), "--py-files", code_uri + PY_FILES_ZIP]
    return {
        "sparkSubmit": {
            "entryPoint": code_uri + job.entry_path,
            "entryPointArguments": list(job.args),
            "sparkSubmitParameters": " ".join(parameters),
        }
    }


def emr_serverless_configuration_overrides(settings: SparkSettings) -> dict[str, Any] | None:
    """Driver and executor logs to ``spark.emr_serverless.log_uri`` when one is configured."""
    log_uri = settings.emr_serverless.log_uri
    if not log_uri:
        return None
    return {"monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": log_uri}}}


def transient_cluster_config(
    template_path: str | Path,
    settings: SparkSettings,
    name: str,
    step: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The RunJobFlow request for a transient cluster that runs ``step`` and ends with it: the template with
    name, release label, log URI, tags and the step filled in. A relative ``template_path`` is relative to
    the repository root.

    The step travels in the request and says ``TERMINATE_CLUSTER`` on failure, and the template must not
    keep the cluster alive without steps: so the cluster ends when its step ends (``TERMINATED`` after a
    completed step, ``TERMINATED_WITH_ERRORS`` after a failed one), and the one task that waits for that
    end lives exactly as long as the cluster (it holds the ``emr_transient_clusters`` pool's slot). The
    template must also install Spark. A template that breaks either fails here, before any cluster is billed.
    """
    path = Path(template_path)
    if not path.is_absolute():
        path = REPO_ROOT / path
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"EMR cluster template {path} not found (spark.emr.cluster_template)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"EMR cluster template {path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"EMR cluster template {path} must hold one JSON object")
    instances = config.get("Instances")
    if not isinstance(instances, dict) or instances.get("KeepJobFlowAliveWhenNoSteps") is not False:
        raise ValueError(
            f"EMR cluster template {path}: Instances.KeepJobFlowAliveWhenNoSteps must be false (the cluster "
            "runs the step given in the request and must end with it; alive, it would idle, billed, "
            "after the task that holds its pool slot has ended)"
        )
    if "Steps" in config:
        raise ValueError(f"EMR cluster template {path}: Steps must not be set (the job's step is added)")
    applications = [app.get("Name") for app in config.get("Applications", []) if isinstance(app, dict)]
    if "Spark" not in applications:
        raise ValueError(f"EMR cluster template {path}: Applications must include Spark, got {applications}")

    config["Name"] = name
    config["ReleaseLabel"] = settings.emr.release_label
    if settings.emr.log_uri:
        config["LogUri"] = settings.emr.log_uri
    else:
        config.pop("LogUri", None)
    if tags:
        kept = [tag for tag in config.get("Tags", []) if tag.get("Key") not in tags]
        config["Tags"] = [*kept, *({"Key": key, "Value": value} for key, value in tags.items())]
    config["Steps"] = [{**step, "ActionOnFailure": "TERMINATE_CLUSTER"}]
    return config


def unfinished_steps(cluster_id: str, steps: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the steps of a transient cluster (ListSteps' ``Steps``) did not all complete, or None when
    they did: each step that did not, by name, id, state and failure reason. No step at all is a failure
    too (the cluster ended before its step was accepted)."""
    if not steps:
        return f"EMR cluster {cluster_id} ended without running its step"
    lines = []
    for step in steps:
        status = step.get("Status", {})
        state = status.get("State", "UNKNOWN")
        if state == "COMPLETED":
            continue
        failure = status.get("FailureDetails") or {}
        reason = (
            failure.get("Message")
            or failure.get("Reason")
            or (status.get("StateChangeReason") or {}).get("Message")
        )
        line = f"step {step.get('Name')!r} ({step.get('Id')}) on EMR cluster {cluster_id} is {state}"
        if reason:
            line += f": {reason}"
        if failure.get("LogFile"):
            line += f" (log: {failure['LogFile']})"
        lines.append(line)
    return "; ".join(lines) or None


# -- packaging -----------------------------------------------------------------------------------------


def build_py_files_zip(out: Path) -> Path:
    """Zip the ``spark_jobs`` package (``.py`` files only, no ``__pycache__``) for ``--py-files``.

    Entries are ``spark_jobs/...`` so ``import spark_jobs.common`` works from the zip; entry order and
    timestamps are fixed, so the same sources give the same bytes.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sources = sorted(
        path
        for path in SPARK_JOBS_DIR.rglob("*.py")
        if "__pycache__" not in path.relative_to(SPARK_JOBS_DIR).parts
        and not any(part.startswith(".") for part in path.relative_to(SPARK_JOBS_DIR).parts)
    )
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sources:
            info = zipfile.ZipInfo(path.relative_to(REPO_ROOT).as_posix(), date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    partial.replace(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataplatform.spark")
    commands = parser.add_subparsers(dest="command", required=True)
    package = commands.add_parser("package", help="zip spark_jobs/ for --py-files")
    package.add_argument("out", type=Path, help="where to write the zip, e.g. dist/spark_jobs.zip")
    args = parser.parse_args(argv)
    out = build_py_files_zip(args.out)
    with zipfile.ZipFile(out) as archive:
        count = len(archive.namelist())
    print(f"wrote {out}: {count} files from {SPARK_JOBS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
