"""``make chaos``: the whole demo under injected AWS faults, compared with the same demo without faults.

Passes over the same seed data, each on its own moto server, Airflow home and metadata database
(``.local/chaos/``), all at once: one ``faults-seed<N>`` pass per fault seed (a seeded fraction of the DAG
runs' AWS requests answered as AWS does under trouble: throttling, 503s, conflicts, connection resets,
read timeouts after the write happened; another seed, other requests hit) and one ``baseline`` (none).
The lake is seeded with faults off; faults are on for the DAG runs only. Then every final state is read
straight from the AWS APIs (``lake_state.snapshot``) and each faulted pass's is compared with the
baseline's: every difference must be empty, every run must succeed, and no invariant may break (no GDPR
request left IN_PROGRESS, no launch priced twice, no batch in two groups).

The metadata database is SQLite in each pass's home, or (``--db postgres``, as in MWAA and CI) a
PostgreSQL server per pass. Retry delays are scaled down in every pass (``task_retries.DELAY_SCALE_ENV``):
the same number of retries, after seconds instead of minutes. The last line printed is one JSON object
with the figures, summed over the faulted passes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataplatform.config import settings
from dataplatform.devstack import lake_state
from dataplatform.devstack.airflow_env import gdpr_hmac_connection, query_metadata_db
from dataplatform.devstack.demo import (
    DEMO_RUNS,
    LOCAL_DIR,
    DemoError,
    DemoRun,
    RunOutcome,
    check_every_dag_has_a_run,
    check_java,
    execute_runs,
    prepare_airflow,
    seed_local_lake,
)
from dataplatform.devstack.faults import ALL_KINDS, FaultPlan
from dataplatform.devstack.moto_server import MotoServer
from dataplatform.devstack.postgres import PostgresServer
from dataplatform.task_retries import DELAY_SCALE_ENV

CHAOS_DIR = LOCAL_DIR / "chaos"
# Figures measured by other commands (the crash harness, the bad-input tests), one JSON object per file,
# read into the last line when present.
# Where `make crash` (crash_points.json) and tests/bad_input/count.py (bad_inputs.json) leave their figures.
FIGURES_DIR = LOCAL_DIR / "chaos"
RETRY_DELAY_SCALE = 0.01
BASELINE = "baseline"
DATABASES = ("sqlite", "postgres")
# One GDPR HMAC key for both passes: the audit records hold the subjects' HMACs, compared between passes.
_HMAC_KEY = "chaos-" + "0" * 58


@dataclass(frozen=True)
class PassResult:
    label: str
    home: Path
    outcomes: list[RunOutcome]
    stats: dict[str, Any]
    retries: dict[str, Any]
    state: dict[str, Any]
    seconds: float

    @property
    def failed_runs(self) -> list[RunOutcome]:
        """Runs that did not end as the demo expects (its one run that fails on purpose must fail)."""
        return [outcome for outcome in self.outcomes if outcome.state != outcome.run.expect]


def fault_plan(rate: float, seed: int, kinds: tuple[str, ...] | None = None) -> FaultPlan:
    """The configured plan (``include/config/faults.yaml``) at this rate and seed."""
    plan = dataclasses.replace(FaultPlan.load(), rate=rate, seed=seed)
    return dataclasses.replace(plan, kinds=kinds) if kinds else plan


def select_runs(dags: tuple[str, ...] | None) -> tuple[DemoRun, ...]:
    """The demo's runs, or only those of ``dags`` (to iterate on one pipeline)."""
    if not dags:
        return DEMO_RUNS
    unknown = set(dags) - {run.dag_id for run in DEMO_RUNS}
    if unknown:
        raise DemoError(f"no demo run for {sorted(unknown)}; DAGs: {sorted({r.dag_id for r in DEMO_RUNS})}")
    return tuple(run for run in DEMO_RUNS if run.dag_id in dags)


def run_pass(
    workdir: Path, label: str, plan: FaultPlan | None, runs: tuple[DemoRun, ...], db: str = "sqlite"
) -> PassResult:
    """Seed a fresh lake (faults off), run ``runs`` under ``plan``, read the final state (faults off)."""
    home = workdir / label
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    started = time.monotonic()
    print(f"\n== pass '{label}': {describe_plan(plan)}; metadata database {db}", flush=True)
    with contextlib.ExitStack() as stack:
        moto = stack.enter_context(
            MotoServer(log_path=home / "moto.log", request_log=home / "requests.jsonl")
        )
        database_url = None
        if db == "postgres":
            postgres = stack.enter_context(PostgresServer(home / "postgres", log_path=home / "postgres.log"))
            print(postgres.describe(), flush=True)
            database_url = postgres.url
        moto.set_faults(None)
        moto.set_phase("seed")
        env = prepare_airflow(home, moto.url, database_url)
        env[DELAY_SCALE_ENV] = str(RETRY_DELAY_SCALE)
        # The Hudi tables (a Spark job to write, another to read) only when the runs erase them.
        hudi = any(run.dag_id == "gdpr_erasure" for run in runs)
        seed_local_lake(moto.url, hudi=hudi)
        moto.reset_fault_stats()
        moto.set_faults(plan)
        outcomes = execute_runs(runs, env, moto, home / "logs")
        moto.set_faults(None)
        # Read before the snapshot's requests; the stats' plan is the current one (none by now): the
        # pass's own plan is kept with its result.
        stats = {**moto.fault_stats(), "plan": dataclasses.asdict(plan) if plan else None}
        retries = task_retries(env)
        moto.set_phase("snapshot")
        state = lake_state.snapshot(settings(), moto.url, hudi=hudi)
    (home / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True, default=str))
    return PassResult(label, home, outcomes, stats, retries, state, time.monotonic() - started)


def _run_pass_to_log(
    workdir: Path, label: str, plan: FaultPlan | None, runs: tuple[DemoRun, ...], db: str
) -> PassResult:
    """``run_pass`` in a child process, its console output in ``<workdir>/<label>.log``."""
    log = workdir / f"{label}.log"
    with open(log, "w", buffering=1) as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        return run_pass(workdir, label, plan, runs, db)


def run_passes_in_parallel(
    workdir: Path, passes: dict[str, FaultPlan | None], runs: tuple[DemoRun, ...], db: str
) -> list[PassResult]:
    """Every pass at once, each in its own process (its own moto server, Airflow home, database and
    environment): they share nothing but the machine."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workdir.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(passes), mp_context=context) as pool:
        futures = {
            label: pool.submit(_run_pass_to_log, workdir, label, plan, runs, db)
            for label, plan in passes.items()
        }
        for label in futures:
            print(
                f"pass '{label}': {describe_plan(passes[label])}; progress in {workdir / label}.log",
                flush=True,
            )
        return [futures[label].result() for label in passes]


def describe_plan(plan: FaultPlan | None) -> str:
    if plan is None or not plan.enabled:
        return "no faults"
    kinds = "every kind" if set(plan.kinds) == set(ALL_KINDS) else ", ".join(plan.kinds)
    return f"faults on {plan.rate:.1%} of the DAG runs' AWS requests (seed {plan.seed}, {kinds})"


def task_retries(env: dict[str, str]) -> dict[str, Any]:
    """From the Airflow metadata database of ``env``: task retries (tries beyond the first), and the runs
    that needed at least one, per DAG."""
    rows = query_metadata_db(env, "SELECT dag_id, run_id, task_id, map_index, try_number FROM task_instance")
    retried = [
        (dag_id, run_id, task_id, map_index, tries)
        for dag_id, run_id, task_id, map_index, tries in rows
        if tries > 1
    ]
    runs = sorted({(dag_id, run_id) for dag_id, run_id, *_ in retried})
    per_dag: dict[str, int] = {}
    for dag_id, _, _, _, tries in retried:
        per_dag[dag_id] = per_dag.get(dag_id, 0) + tries - 1
    return {
        "task_retries": sum(tries - 1 for *_, tries in retried),
        "runs_retried": len(runs),
        "retries_by_dag": dict(sorted(per_dag.items())),
        "retried_tasks": [
            f"{dag_id}.{task_id}[{map_index}] x{tries - 1}"
            for dag_id, _, task_id, map_index, tries in retried
        ],
    }


# -- figures measured by other commands ---------------------------------------------------------------------


def _figure(name: str, key: str) -> Any:
    """``key`` from ``.local/chaos/<name>.json`` when a run of that command left it, else None."""
    path = FIGURES_DIR / f"{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get(key)


def crash_points_survived() -> Any:
    """Crash points survived (the crash harness: ``make crash``)."""
    return _figure("crash_points", "crash_points_survived")


def bad_inputs_refused() -> Any:
    """Bad inputs refused before any change (the bad-input catalogue: ``python tests/bad_input/count.py``)."""
    return _figure("bad_inputs", "bad_inputs_refused")


def iam_figures(request_logs: list[Path], combined: Path) -> dict[str, Any]:
    """IAM actions used and grants unused, checked over every faulted pass's requests (one log of them
    all, ``combined``): retries and recovery paths call what a quiet run may not."""
    from dataplatform.devstack.iam_check import check

    with open(combined, "wb") as out:
        for log in request_logs:
            out.write(log.read_bytes())
    result = check(combined)
    return {"iam_actions_used": result["iam_actions_used"], "iam_unused_grants": result["iam_unused_grants"]}


# -- the report --------------------------------------------------------------------------------------------


def print_summary(
    faulted: list[PassResult], baseline: PassResult, differences: dict[str, list[str]], problems: list[str]
) -> None:
    """One column per pass: requests, faults by kind, retries, failed runs, differences from the baseline."""
    passes = [*faulted, baseline]
    kinds = sorted({kind for result in faulted for kind in result.stats["faults_by_kind"]})
    rows: list[tuple[str, ...]] = [
        ("AWS requests (DAG runs)", *(str(p.stats["requests"]) for p in passes)),
        ("faults injected", *(str(p.stats["faults"]) for p in passes)),
        *((f"  {kind}", *(str(p.stats["faults_by_kind"].get(kind, "")) for p in passes)) for kind in kinds),
        ("task retries", *(str(p.retries["task_retries"]) for p in passes)),
        (
            "runs that needed a retry",
            *(f"{p.retries['runs_retried']} of {len(p.outcomes)}" for p in passes),
        ),
        ("runs that failed", *(str(len(p.failed_runs)) for p in passes)),
        ("invariant violations", *(str(sum(p.label in v for v in problems)) for p in passes)),
        ("state differences", *(str(len(differences[p.label])) for p in faulted), ""),
        ("duration", *(f"{p.seconds / 60:.1f} min" for p in passes)),
    ]
    print_grid(("", *(p.label for p in passes)), rows)
    print(
        f"retry delays x{RETRY_DELAY_SCALE} in every pass ({DELAY_SCALE_ENV}); the number of retries is "
        "the DAGs' own"
    )
    for result in passes:
        for outcome in result.failed_runs:
            print(f"FAILED RUN ({result.label}): {outcome.run.dag_id} ({outcome.run.what}): {outcome.state}")
    for result in faulted:
        if result.retries["retried_tasks"]:
            print(f"retried tasks ({result.label}): " + ", ".join(result.retries["retried_tasks"]))
    for problem in problems:
        print(f"INVARIANT: {problem}")
    for label, lines in differences.items():
        for difference in lines[:100]:
            print(f"DIFF ({label}): {difference}")
        if len(lines) > 100:
            print(f"... and {len(lines) - 100} more (states in {baseline.home.parent}/*/state.json)")


def print_grid(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def cells(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"

    print("\n" + "\n".join([line, cells(headers), line, *map(cells, rows), line]))


def _summed(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, n in count.items():
            total[key] = total.get(key, 0) + n
    return dict(sorted(total.items()))


def figures(
    faulted: list[PassResult], differences: dict[str, list[str]], problems: list[str], every_dag: bool
) -> dict[str, Any]:
    """The last line: totals over the faulted passes (each compared with the one baseline). Unused IAM
    grants only when every DAG ran (with ``--dags``, the others' grants are unused by construction)."""
    iam = iam_figures(
        [p.home / "requests.jsonl" for p in faulted], faulted[0].home.parent / "requests-faulted.jsonl"
    )
    if not every_dag:
        iam["iam_unused_grants"] = None
    return {
        "faults_injected": sum(p.stats["faults"] for p in faulted),
        "faults_by_kind": _summed([p.stats["faults_by_kind"] for p in faulted]),
        "requests": sum(p.stats["requests"] for p in faulted),
        "task_retries": sum(p.retries["task_retries"] for p in faulted),
        "runs_retried": sum(p.retries["runs_retried"] for p in faulted),
        "runs_failed": sum(len(p.failed_runs) for p in faulted),
        "state_differences": sum(len(lines) for lines in differences.values()),
        "invariant_violations": len(problems),
        "rate": faulted[0].stats["plan"]["rate"],
        "seeds": [p.stats["plan"]["seed"] for p in faulted],
        "crash_points_survived": crash_points_survived(),
        "bad_inputs_refused": bad_inputs_refused(),
        **iam,
    }


def pass_plans(
    rate: float, seeds: tuple[int, ...], kinds: tuple[str, ...] | None
) -> dict[str, FaultPlan | None]:
    """One faulted pass per seed, then the baseline."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise DemoError(f"seeds must be one or more distinct integers, got {list(seeds)}")
    return {**{f"faults-seed{seed}": fault_plan(rate, seed, kinds) for seed in seeds}, BASELINE: None}


def run_chaos(
    rate: float,
    seeds: tuple[int, ...],
    kinds: tuple[str, ...] | None = None,
    dags: tuple[str, ...] | None = None,
    parallel: bool = True,
    db: str = "sqlite",
) -> int:
    if db not in DATABASES:
        raise DemoError(f"db must be one of {DATABASES}, got {db!r}")
    check_every_dag_has_a_run()
    runs = select_runs(dags)
    passes = pass_plans(rate, seeds, kinds)
    print(f"java: {check_java()}")
    os.environ["AIRFLOW_CONN_GDPR_HMAC"] = gdpr_hmac_connection(_HMAC_KEY)
    # One folder per rate, seeds, database and DAG selection: other settings do not overwrite each other.
    name = [f"rate{rate:g}", "seeds" + "_".join(map(str, seeds)), db, *(dags or ())]
    workdir = CHAOS_DIR / "-".join(name)
    if parallel:
        results = run_passes_in_parallel(workdir, passes, runs, db)
    else:
        results = [run_pass(workdir, label, plan, runs, db) for label, plan in passes.items()]
    *faulted, baseline = results
    differences = {p.label: lake_state.diff(baseline.state, p.state) for p in faulted}
    problems = [f"{p.label}: {problem}" for p in results for problem in lake_state.invariants(p.state)]
    print_summary(faulted, baseline, differences, problems)
    print(json.dumps(figures(faulted, differences, problems, every_dag=not dags), sort_keys=True))
    failed = any(p.failed_runs for p in results)
    ok = not any(differences.values()) and not problems and not failed
    return 0 if ok else 1
