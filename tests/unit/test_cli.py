"""``dataplatform.cli.run``: while a command runs, only its ``Output`` reaches standard output."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from botocore.exceptions import ClientError

from dataplatform import cli
from dataplatform.dynamodb import table_must_exist

pytestmark = pytest.mark.unit


def test_logging_set_up_during_the_command_and_stray_prints_go_to_stderr(capsys):
    logger = logging.getLogger("tests.cli.stdout_handler")
    logger.propagate = False

    def command(out: cli.Output) -> int:
        # What importing Airflow does: a StreamHandler on whatever sys.stdout is at that moment.
        handler = logging.StreamHandler(sys.stdout)
        logger.addHandler(handler)
        try:
            logger.warning("AWS Connection credentials retrieved")
            print("a library's print")
            out.json({"key": "ORD-1", "version": 2})
        finally:
            logger.removeHandler(handler)
        return 0

    assert cli.run(command) == 0

    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"key": "ORD-1", "version": 2}
    assert captured.err == "AWS Connection credentials retrieved\na library's print\n"


def test_a_command_error_is_one_line_on_stderr_and_its_exit_code(capsys):
    def command(out: cli.Output) -> int:
        raise cli.CommandError("no price for X in eu-west-9", exit_code=3)

    assert cli.run(command) == 3
    assert capsys.readouterr() == ("", "error: no price for X in eu-west-9\n")


def test_no_cli_module_imports_airflow_before_run_points_stdout_away():
    # Airflow's logging takes sys.stdout when Airflow is first imported: that must happen inside run().
    script = (
        "import sys\n"
        "import dataplatform.reconciliation.__main__, dataplatform.gdpr.__main__, dataplatform.pricing.__main__\n"
        "import dataplatform.health.__main__\n"
        "print(sorted(name for name in sys.modules if name == 'airflow' or name.startswith('airflow.')))\n"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )

    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


def test_a_missing_table_is_one_error_line_and_other_aws_errors_pass(capsys):
    def failing(code: str):
        def command(out: cli.Output) -> int:
            with table_must_exist("recon_ledger", "setup_tables"):
                raise ClientError({"Error": {"Code": code, "Message": "..."}}, "Query")

        return command

    assert cli.run(failing("ResourceNotFoundException")) == 1
    assert (
        capsys.readouterr().err
        == "error: DynamoDB table recon_ledger does not exist yet: setup_tables creates it\n"
    )
    with pytest.raises(ClientError, match="AccessDenied"):
        cli.run(failing("AccessDeniedException"))
