"""The local config with the Airflow deadlines of ``aws.yaml`` switched on.

Locally they are off (``health.deadlines`` all 0 in ``local.yaml``): Airflow 3.3.1's ``dag.test()`` and
``airflow dags test``, which run every DAG of ``make demo`` and of the tests, fail a DAG run that has a
deadline when it succeeds. The tests of the deadlines themselves run on this config instead.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from dataplatform.config import CONFIG_DIR


def local_config_with_aws_deadlines(directory: Path) -> Path:
    raw = yaml.safe_load((CONFIG_DIR / "local.yaml").read_text())
    raw["health"]["deadlines"] = yaml.safe_load((CONFIG_DIR / "aws.yaml").read_text())["health"]["deadlines"]
    assert all(raw["health"]["deadlines"].values()), "aws.yaml sets every deadline"
    path = directory / "local-with-deadlines.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
