"""``make up``: moto server, the seeded demo lake and ``airflow standalone`` for the web UI.

Runs until Ctrl-C, then stops Airflow (its whole process group) and the moto server. The metadata
database lives in ``.local/airflow`` and survives restarts; the moto state does not (it is re-seeded).
"""

from __future__ import annotations

import signal

from dataplatform.devstack.airflow_env import airflow_env
from dataplatform.devstack.demo import LOCAL_DIR, check_java, seed_local_lake
from dataplatform.devstack.moto_server import MotoServer, connection_uri_json
from dataplatform.devstack.standalone import StandaloneAirflow


def run_up(port: int = 8080) -> int:
    print(f"java: {check_java()}")
    home = LOCAL_DIR / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    with MotoServer(log_path=home / "moto.log") as moto:
        print(f"moto server: {moto.url}")
        seed_local_lake(moto.url)
        print("starting airflow standalone (about a minute) ...", flush=True)
        with StandaloneAirflow(home, airflow_env(home, moto.url), port=port) as airflow:
            airflow.start_and_wait()
            print()
            print(f"  Airflow UI and API: {airflow.url}")
            print(f"  login:              {airflow.username} / {airflow.password}")
            print(f"  AWS (moto):         {moto.url}   logs: {home}")
            print("  DAGs start paused: unpause one, or trigger it with a config, in the UI.")
            print("  CLI (another shell, e.g. `python -m dataplatform.reconciliation status`):")
            print(f"    export AIRFLOW_CONN_AWS_DEFAULT='{connection_uri_json(moto.url)}'")
            print("  Ctrl-C stops everything.", flush=True)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
            print("stopping airflow and moto ...")
    return 0
