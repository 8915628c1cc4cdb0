import pytest

from dataplatform.devstack.demo import DEMO_RUNS, dag_ids_in_repo, print_table
from dataplatform.devstack.moto_server import connection_uri_json

pytestmark = pytest.mark.unit


def test_every_dag_in_the_repo_has_a_demo_run():
    assert "glue_partition_loader" in dag_ids_in_repo()
    assert dag_ids_in_repo() <= {run.dag_id for run in DEMO_RUNS}


def test_demo_shows_a_rerun_so_idempotency_is_visible():
    confs = [run.conf for run in DEMO_RUNS if run.dag_id == "glue_partition_loader"]
    assert confs.count({"mode": "discover"}) == 2


def test_summary_table_keeps_every_report_line(capsys):
    print_table(
        [
            ("dag_a", "run one", "success", "t1: registered 3\nt2: registered 0"),
            ("dag_b", "run two", "failed", "(no report written)"),
        ]
    )
    out = capsys.readouterr().out
    assert "t1: registered 3" in out and "t2: registered 0" in out
    assert "| dag_b" in out and "failed" in out and "(no report written)" in out


def test_connection_points_hooks_at_the_endpoint_only_through_the_extra():
    import json

    conn = json.loads(connection_uri_json("http://127.0.0.1:5555", region="eu-west-1"))
    assert conn["conn_type"] == "aws"
    assert conn["extra"] == {"endpoint_url": "http://127.0.0.1:5555", "region_name": "eu-west-1"}
