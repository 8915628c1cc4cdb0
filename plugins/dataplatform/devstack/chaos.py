"""``make chaos``: the whole demo under injected AWS faults, compared with the same demo without faults.

Two passes over the same seed data, each on its own moto server and Airflow home (``.local/chaos/``):
``faults`` (a seeded fraction of the DAG runs' AWS requests answered as AWS does under trouble: throttling,
503s, conflicts, connection resets, read timeouts after the write happened) and ``baseline`` (none). The
lake is seeded with faults off; faults are on for the DAG runs only. Then both final states are read
straight from the AWS APIs (``lake_state.snapshot``) and compared: the difference must be empty, every run
must succeed, and no invariant may break (no GDPR request left IN_PROGRESS, no launch priced twice, no
batch in two groups).

Retry delays are scaled down for both passes (``task_retries.DELAY_SCALE_ENV``): the same number of
retries, after seconds instead of minutes. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataplatform.config import settings
from dataplatform.devstack import lake_state
from dataplatform.devstack.airflow_env import gdpr_hmac_connection
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
from dataplatform.task_retries import DELAY_SCALE_ENV

CHAOS_DIR = LOCAL_DIR / "chaos"
# Figures measured by other commands (the crash harness, the bad-input tests), one JSON object per file,
# read into the last line when present.
# Where `make crash` (crash_points.json) and tests/bad_input/count.py (bad_inputs.json) leave their figures.
FIGURES_DIR = LOCAL_DIR / "chaos"
RETRY_DELAY_SCALE = 0.01
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
        return [outcome for outcome in self.outcomes if outcome.state != "success"]


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


def run_pass(workdir: Path, label: str, plan: FaultPlan | None, runs: tuple[DemoRun, ...]) -> PassResult:
    """Seed a fresh lake (faults off), run ``runs`` under ``plan``, read the final state (faults off)."""
    home = workdir / label
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    started = time.monotonic()
    print(f"\n== pass '{label}': {describe_plan(plan)}", flush=True)
    with MotoServer(log_path=home / "moto.log", request_log=home / "requests.jsonl") as moto:
        moto.set_faults(None)
        moto.set_phase("seed")
        env = prepare_airflow(home, moto.url)
        env[DELAY_SCALE_ENV] = str(RETRY_DELAY_SCALE)
        # The Hudi tables (a Spark job to write, another to read) only when the runs erase them.
        hudi = any(run.dag_id == "gdpr_erasure" for run in runs)
        seed_local_lake(moto.url, hudi=hudi)
        moto.reset_fault_stats()
        moto.set_faults(plan)
        outcomes = execute_runs(runs, env, home, moto, home / "logs")
        moto.set_faults(None)
        # Read before the snapshot's requests; the stats' plan is the current one (none by now): the
        # pass's own plan is kept with its result.
        stats = {**moto.fault_stats(), "plan": dataclasses.asdict(plan) if plan else None}
        moto.set_phase("snapshot")
        state = lake_state.snapshot(settings(), moto.url, hudi=hudi)
    (home / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True, default=str))
    return PassResult(
        label, home, outcomes, stats, task_retries(home / "airflow.db"), state, time.monotonic() - started
    )


def _run_pass_to_log(
    workdir: Path, label: str, plan: FaultPlan | None, runs: tuple[DemoRun, ...]
) -> PassResult:
    """``run_pass`` in a child process, its console output in ``<workdir>/<label>.log``."""
    import contextlib

    log = workdir / f"{label}.log"
    with open(log, "w", buffering=1) as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        return run_pass(workdir, label, plan, runs)


def run_passes_in_parallel(
    workdir: Path, passes: dict[str, FaultPlan | None], runs: tuple[DemoRun, ...]
) -> list[PassResult]:
    """Both passes at once, each in its own process (its own moto server, Airflow home and environment):
    they share nothing but the machine, and the chaos run takes half the time."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workdir.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(passes), mp_context=context) as pool:
        futures = {
            label: pool.submit(_run_pass_to_log, workdir, label, plan, runs) for label, plan in passes.items()
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


def task_retries(db: Path) -> dict[str, Any]:
    """From the Airflow metadata database: task retries (tries beyond the first), and the runs that
    needed at least one, per DAG."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT dag_id, run_id, task_id, map_index, try_number FROM task_instance"
        ).fetchall()
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


# -- figures from the other parts of issue 14 (one small function each, wired at merge) ---------------------


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


def iam_figures(request_log: Path) -> dict[str, Any]:
    """IAM actions used and grants unused, checked over the faulted pass's request log."""
    try:
        from dataplatform.devstack.iam_check import check  # the IAM part of issue 14
    except ImportError:
        return {key: _figure("iam", key) for key in ("iam_actions_used", "iam_unused_grants")}
    result = check(request_log)
    return {"iam_actions_used": result["iam_actions_used"], "iam_unused_grants": result["iam_unused_grants"]}


# -- the report --------------------------------------------------------------------------------------------


def print_summary(
    faulted: PassResult, baseline: PassResult, differences: list[str], problems: list[str]
) -> None:
    stats = faulted.stats
    rows: list[tuple[str, str, str]] = [
        ("AWS requests (DAG runs)", str(stats["requests"]), str(baseline.stats["requests"])),
        ("faults injected", str(stats["faults"]), "0"),
    ]
    rows += [(f"  {kind}", str(n), "") for kind, n in sorted(stats["faults_by_kind"].items())]
    rows += [
        ("task retries", str(faulted.retries["task_retries"]), str(baseline.retries["task_retries"])),
        (
            "runs that needed a retry",
            f"{faulted.retries['runs_retried']} of {len(faulted.outcomes)}",
            f"{baseline.retries['runs_retried']} of {len(baseline.outcomes)}",
        ),
        ("runs that failed", str(len(faulted.failed_runs)), str(len(baseline.failed_runs))),
        ("invariant violations", str(len(problems)), ""),
        ("state differences", str(len(differences)), ""),
        ("duration", f"{faulted.seconds / 60:.1f} min", f"{baseline.seconds / 60:.1f} min"),
    ]
    widths = [max(len(r[i]) for r in [("", "with faults", "without"), *rows]) for i in range(3)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    print("\n" + line)
    print(
        "| "
        + " | ".join(h.ljust(w) for h, w in zip(("", "with faults", "without"), widths, strict=True))
        + " |"
    )
    print(line)
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(line)
    print(
        f"retry delays x{RETRY_DELAY_SCALE} in both passes ({DELAY_SCALE_ENV}); the number of retries is "
        "the DAGs' own"
    )
    for outcome in faulted.failed_runs + baseline.failed_runs:
        print(f"FAILED RUN: {outcome.run.dag_id} ({outcome.run.what}): {outcome.state}")
    if faulted.retries["retried_tasks"]:
        print("retried tasks (with faults): " + ", ".join(faulted.retries["retried_tasks"]))
    for problem in problems:
        print(f"INVARIANT: {problem}")
    for difference in differences[:200]:
        print(f"DIFF: {difference}")
    if len(differences) > 200:
        print(f"... and {len(differences) - 200} more (states in {faulted.home.parent}/*/state.json)")


def figures(faulted: PassResult, differences: list[str], problems: list[str]) -> dict[str, Any]:
    return {
        "faults_injected": faulted.stats["faults"],
        "faults_by_kind": dict(sorted(faulted.stats["faults_by_kind"].items())),
        "requests": faulted.stats["requests"],
        "task_retries": faulted.retries["task_retries"],
        "runs_retried": faulted.retries["runs_retried"],
        "runs_failed": len(faulted.failed_runs),
        "state_differences": len(differences),
        "invariant_violations": len(problems),
        "rate": faulted.stats["plan"]["rate"],
        "seed": faulted.stats["plan"]["seed"],
        "crash_points_survived": crash_points_survived(),
        "bad_inputs_refused": bad_inputs_refused(),
        **iam_figures(faulted.home / "requests.jsonl"),
    }


def run_chaos(
    rate: float,
    seed: int,
    kinds: tuple[str, ...] | None = None,
    dags: tuple[str, ...] | None = None,
    parallel: bool = True,
) -> int:
    check_every_dag_has_a_run()
    runs = select_runs(dags)
    print(f"java: {check_java()}")
    os.environ["AIRFLOW_CONN_GDPR_HMAC"] = gdpr_hmac_connection(_HMAC_KEY)
    passes = {"faults": fault_plan(rate, seed, kinds), "baseline": None}
    # One folder per rate, seed and DAG selection: runs with other settings do not overwrite each other.
    workdir = CHAOS_DIR / "-".join([f"rate{rate:g}", f"seed{seed}", *(dags or ())])
    if parallel:
        faulted, baseline = run_passes_in_parallel(workdir, passes, runs)
    else:
        faulted, baseline = (run_pass(workdir, label, plan, runs) for label, plan in passes.items())
    differences = lake_state.diff(baseline.state, faulted.state)
    problems = [f"with faults: {p}" for p in lake_state.invariants(faulted.state)]
    problems += [f"without faults: {p}" for p in lake_state.invariants(baseline.state)]
    print_summary(faulted, baseline, differences, problems)
    print(json.dumps(figures(faulted, differences, problems), sort_keys=True))
    ok = not differences and not problems and not faulted.failed_runs and not baseline.failed_runs
    return 0 if ok else 1
