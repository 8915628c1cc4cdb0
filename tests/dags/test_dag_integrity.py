"""Every DAG file imports cleanly, without network or metadata-database access, and is documented."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p.name for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_"))

# Runs in a fresh interpreter: sockets refuse to connect and the metadata database URL points at a
# directory that does not exist, so any network or database access during parsing is an import error.
PARSE_SCRIPT = textwrap.dedent(
    """
    import json, os, socket, sys, time

    def refuse(*args, **kwargs):
        raise RuntimeError(f"network access at DAG parse time: {args}")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = "sqlite:////nonexistent-dir/airflow.db"

    from airflow.dag_processing.dagbag import DagBag

    started = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    seconds = time.perf_counter() - started
    dags = {
        dag_id: {
            "fileloc": os.path.basename(dag.fileloc),
            "owners": sorted({t.owner for t in dag.tasks}),
            "retries": sorted({t.retries for t in dag.tasks}),
            "tags": sorted(dag.tags),
            "doc_md": bool(dag.doc_md and dag.doc_md.strip()),
            "description": dag.description,
            "params": {k: v.schema for k, v in dag.params.items()},
        }
        for dag_id, dag in bag.dags.items()
    }
    print(json.dumps({"seconds": seconds, "errors": {k: str(v) for k, v in bag.import_errors.items()},
                      "dags": dags}))
    """
)


@pytest.fixture(scope="module")
def parsed():
    result = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(REPO / "dags")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\nparse time of dags/ ({len(report['dags'])} DAGs): {report['seconds']:.2f} s")
    return report


def test_dag_files_exist():
    assert "glue_partition_loader.py" in DAG_FILES


def test_every_dag_file_imports_without_errors_network_or_database(parsed):
    assert parsed["errors"] == {}
    files = {info["fileloc"] for info in parsed["dags"].values()}
    assert files == set(DAG_FILES), "every file in dags/ defines a DAG"


def test_every_dag_has_owner_tags_retries_and_docs(parsed):
    for dag_id, info in parsed["dags"].items():
        assert info["owners"] and "airflow" not in info["owners"], f"{dag_id}: set an owner"
        assert info["tags"], f"{dag_id}: add tags"
        assert min(info["retries"]) >= 1, f"{dag_id}: every task retries"
        assert info["doc_md"], f"{dag_id}: add doc_md"


def test_params_carry_a_json_schema(parsed):
    params = parsed["dags"]["glue_partition_loader"]["params"]
    assert params["mode"]["enum"] == ["interval", "discover", "events", "msck", "crawler"]
    assert params["dry_run"]["type"] == "boolean"
    assert params["table"]["type"] == ["null", "string"]


def test_every_dag_has_a_one_line_description(parsed):
    """What the DAG list shows under each DAG's name."""
    for dag_id, info in parsed["dags"].items():
        description = info["description"] or ""
        assert description.strip(), f"{dag_id}: add a description"
        assert "\n" not in description and len(description) <= 110, f"{dag_id}: one line"


# The trigger forms' name params: (DAG, param, the config section whose keys they name, the first task's
# check of the value).
NAME_PARAMS = [
    ("glue_partition_loader", "table", lambda c: c.glue.tables, "glue"),
    ("iceberg_maintenance", "tables", lambda c: c.iceberg.tables, "iceberg"),
    ("iceberg_archive_register", "table", lambda c: c.iceberg.tables, "iceberg_archive"),
    ("gdpr_erasure", "datasets", lambda c: c.gdpr.datasets, "gdpr"),
]


def first_task_check(kind: str, name: str):
    """What the DAG's first task runs on the param (select_tables, check, accept_requests)."""
    from dataplatform.config import settings

    config = settings()
    if kind == "glue":
        from dataplatform.operators.glue import check_request

        return check_request(name, "discover", False, config)
    if kind == "iceberg":
        from dataplatform.operators.iceberg import check_tables

        return check_tables([name], False, config.iceberg)
    if kind == "iceberg_archive":
        from dataplatform.operators.iceberg_archive import source_identifier

        return source_identifier(name, config.iceberg)
    from dataplatform.operators.gdpr import check_datasets

    return check_datasets([name], config.gdpr)


@pytest.mark.parametrize(("dag_id", "param", "section", "kind"), NAME_PARAMS)
def test_trigger_forms_offer_the_configured_names_and_the_first_task_refuses_others(
    parsed, dag_id, param, section, kind
):
    import jsonschema
    from airflow.sdk.exceptions import AirflowFailException

    from dataplatform.config import settings

    schema = parsed["dags"][dag_id]["params"][param]
    configured = list(section(settings()))
    assert configured and schema["examples"] == configured
    # The choices are suggestions: the form still takes another name (a table configured after the DAG
    # was parsed), and the first task refuses it, naming it, before anything is touched.
    unknown = "no_such_name"
    jsonschema.validate([unknown] if schema["type"] == "array" else unknown, schema)
    with pytest.raises(AirflowFailException, match=unknown):
        first_task_check(kind, unknown)
    assert first_task_check(kind, configured[0])


def test_the_parse_guard_catches_network_access(tmp_path):
    """The check above can fail: a DAG file that opens a socket at import is reported."""
    (tmp_path / "bad_dag.py").write_text(
        "import socket\nsocket.create_connection(('127.0.0.1', 9))\n"
        "from airflow.sdk import dag\n@dag(schedule=None)\ndef bad():\n    pass\nbad()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert any("network access at DAG parse time" in error for error in report["errors"].values())
