"""What a crash campaign needs around the harness: the environment the tasks see, the crash proxy in front
of the moto server, the lake (clients straight to moto) and the task runner. Used by the pytest module
(``tests/crash/test_crash.py``) with the session's moto server, and by ``python -m tests.crash``."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from tests.crash.harness import CrashProxy, Pipeline, TaskRunner
from tests.crash.pipelines import Lake

# The steps read the local config without its Spark-maintained Iceberg tables and Spark/Hudi GDPR datasets:
# the crash runs seed none of those (the Spark crash points are the reconciliation jobs').
CONFIG_NAME = "crash-local.yaml"
RESULTS_PATH = Path(".local/chaos/crash_points.json")


def crash_config(folder: Path) -> Path:
    from tests.gdpr_helpers import pyiceberg_only_config_file

    path = pyiceberg_only_config_file(folder)
    return path.rename(folder / CONFIG_NAME)


def pipeline(name: str) -> Pipeline:
    return importlib.import_module(f"tests.crash.pipelines.{name}").PIPELINE


@contextlib.contextmanager
def crash_session(moto_server, work_dir: Path, spark=None) -> Iterator[tuple[TaskRunner, Lake]]:
    """(task runner, lake) on ``moto_server``; the config file, proxy and task log live in ``work_dir``."""
    from dataplatform import aws
    from dataplatform.config import load_settings
    from dataplatform.config import settings as current_settings
    from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog

    work_dir.mkdir(parents=True, exist_ok=True)
    config = crash_config(work_dir)
    # The crash config only for this session: the tests after it read the suite's own config.
    previous = os.environ.get("DATAPLATFORM_CONFIG")
    os.environ["DATAPLATFORM_CONFIG"] = str(config)
    current_settings.cache_clear()
    settings = load_settings(config)
    proxy = CrashProxy(moto_server.url).start()
    try:
        runner = TaskRunner(proxy, {"DATAPLATFORM_CONFIG": str(config)}, log_path=work_dir / "tasks.log")
        lake = Lake(
            server=moto_server,
            settings=settings,
            s3=aws.client("s3"),
            glue=aws.client("glue"),
            dynamodb=aws.client("dynamodb"),
            catalog=load_glue_catalog(AwsAccess(settings.aws.region, moto_server.url, "testing", "testing")),
            spark=spark,
        )
        yield runner, lake
    finally:
        proxy.stop()
        if previous is None:
            os.environ.pop("DATAPLATFORM_CONFIG", None)
        else:
            os.environ["DATAPLATFORM_CONFIG"] = previous
        current_settings.cache_clear()


def write_results(summary: dict, path: Path = RESULTS_PATH) -> dict:
    """Merge ``summary`` into the results file (a run of some pipelines keeps the others' figures) and
    return the merged figures."""
    pipelines = json.loads(path.read_text())["pipelines"] if path.exists() else {}
    pipelines.update(summary["pipelines"])
    merged = {
        "pipelines": pipelines,
        "crash_points_survived": sum(row["survived"] for row in pipelines.values()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    return merged
