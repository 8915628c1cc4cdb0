"""The crash harness: run a pipeline's tasks as separate processes, kill one with SIGKILL at a chosen AWS call,
rerun it as an Airflow retry would, finish the run, and compare the final state with an uninterrupted run.

A pipeline (``tests/crash/pipelines/``) is a seed, an ordered list of steps (the functions its Airflow tasks
call, with the inputs the DAG hands them) and a snapshot of the state it owns. A crash point is
(step, k, before|after): the step's process group (the task and any spark-submit it started) is killed by
the crash proxy (``tests/crash/proxy.py``) at its k-th AWS request, before forwarding it or after moto has
answered it. The harness then reruns the step with the same inputs and runs the steps after it, and
compares the snapshot with the one of an uninterrupted run on the same seed.

Each step runs in a child of a fork server that has the libraries imported already (a process per task, as
Airflow's workers do, at a fraction of the start-up cost), with the AWS connection pointed at the proxy.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataplatform.devstack.moto_server import connection_uri_json

REPO_ROOT = Path(__file__).resolve().parents[2]
# What the fork server imports once, so that a task process starts in milliseconds.
PRELOAD = [
    "boto3",
    "botocore.session",
    "airflow.providers.amazon.aws.hooks.base_aws",
    "airflow.sdk",
    "pyarrow",
    "pyiceberg.catalog.glue",
    "pyiceberg.io.pyarrow",
    *(
        f"tests.crash.pipelines.{name}"
        for name in ("glue", "recon_stateless", "recon_stateful", "iceberg", "gdpr", "pricing")
    ),
]
KILLED = -9
# Mapped tasks of one step run the same code on other inputs: the first two get crash points.
MAPPED_TASKS_CRASHED = 2


@dataclass(frozen=True)
class Step:
    """One Airflow task: ``run(inputs)`` gets the outputs of the steps before it by name. ``expand`` makes
    it a mapped task: ``run(inputs, item)`` once per item, each in its own process."""

    name: str
    run: Callable[..., Any]
    expand: Callable[[dict], list] | None = None
    spark: bool = False  # a spark-submit: its crash points are drawn apart (and left out of the quick set)
    # The same work in the harness's own process (a Spark job's ``run`` in its session): how the runs
    # crashing another step get past this one quickly. ``(lake, inputs) -> output``.
    in_harness: Callable[[Any, dict], Any] | None = None


@dataclass(frozen=True)
class Pipeline:
    name: str
    seed: Callable[[Any], None]  # (lake) -> None, in the harness process, straight to moto
    steps: tuple[Step, ...]
    snapshot: Callable[[Any], dict]  # (lake) -> the canonical state the pipeline owns
    per_step: int = 4  # crash points per task (spread over its calls), unless the command line says


@dataclass(frozen=True)
class CrashPoint:
    step: str
    k: int
    when: str  # "before": the k-th request never reaches AWS; "after": it took effect, no answer came back
    item: int = 0  # the map index, for a mapped step

    def label(self) -> str:
        mapped = f"[{self.item}]" if self.item else ""
        return f"{self.step}{mapped}@{self.k}:{self.when}"


@dataclass
class Outcome:
    point: CrashPoint
    killed: bool
    survived: bool
    difference: list[str] = field(default_factory=list)
    error: str = ""


class CrashProxy:
    """``tests.crash.proxy`` in a subprocess, forwarding to ``upstream`` (the moto server)."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self._process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> CrashProxy:
        port_file = Path(tempfile.mkdtemp(prefix="crash-proxy-")) / "port"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.crash.proxy", self.upstream, str(port_file)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if port_file.exists() and port_file.read_text():
                self.url = f"http://127.0.0.1:{port_file.read_text()}"
                return self
            time.sleep(0.05)
        raise RuntimeError("the crash proxy did not start")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def control(self, action: str, body: dict | None = None) -> dict:
        return control(self.url, action, body)


def control(proxy_url: str, action: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{proxy_url}/crash-api/{action}", data=data, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def step_of(pipeline: str, name: str) -> Step:
    module = importlib.import_module(f"tests.crash.pipelines.{pipeline}")
    return next(step for step in module.PIPELINE.steps if step.name == name)


def _task_process(pipeline, step, inputs, item, env, proxy_url, k, when, out_path, log_path) -> None:
    """The body of one task process: its own process group (the proxy kills the group), the AWS
    connection on the proxy, the proxy armed for this process, then the step."""
    os.setpgid(0, 0)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ.update(env)
    from dataplatform.config import settings

    settings.cache_clear()
    control(proxy_url, "arm", {"pgid": os.getpid(), "k": k, "when": when})
    try:
        runner = step_of(pipeline, step).run
        output = runner(inputs) if item is None else runner(inputs, item)
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    Path(out_path).write_text(json.dumps(output, default=str))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class TaskRunner:
    """Runs steps as task processes through the proxy; ``env``: what the tasks see (config, connection)."""

    def __init__(self, proxy: CrashProxy, env: dict[str, str], log_path: Path):
        self.proxy = proxy
        self.env = {**env, "AIRFLOW_CONN_AWS_DEFAULT": connection_uri_json(proxy.url)}
        self.log_path = log_path
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)

    def run(
        self,
        pipeline: str,
        step: str,
        inputs: dict,
        item: Any = None,
        k: int | None = None,
        when: str = "after",
    ) -> tuple[int, Any, int]:
        """(exit code, output or None, AWS requests made). Exit code -9: killed at the crash point."""
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
            out_path = out.name
        process = self._context.Process(
            target=_task_process,
            args=(
                pipeline,
                step,
                inputs,
                item,
                self.env,
                self.proxy.url,
                k,
                when,
                out_path,
                str(self.log_path),
            ),
        )
        process.start()
        process.join()
        count = self.proxy.control("disarm")["count"]
        raw = Path(out_path).read_text()
        os.unlink(out_path)
        return process.exitcode, json.loads(raw) if raw else None, count


class StepFailed(RuntimeError):
    pass


def run_pipeline(
    runner: TaskRunner, pipeline: Pipeline, lake: Any, crash: CrashPoint | None = None
) -> tuple[dict[tuple[str, int], int], bool]:
    """Seed, then every step in order; at ``crash`` kill the step and rerun it (the Airflow retry).
    Returns the AWS requests per (step, map index) of the uninterrupted steps, and whether the kill
    happened (a k past the step's last request does not kill). With a crash point, the steps that can run
    in the harness (``Step.in_harness``) do so unless they are the one crashed."""
    pipeline.seed(lake)
    outputs: dict[str, Any] = {}
    counts: dict[tuple[str, int], int] = {}
    killed = False
    for step in pipeline.steps:
        items = step.expand(outputs) if step.expand else [None]
        results = []
        if crash and step.in_harness and crash.step != step.name:
            outputs[step.name] = step.in_harness(lake, outputs)
            continue
        for index, item in enumerate(items):
            attempt = 1
            if crash and crash.step == step.name and crash.item == index:
                inputs = {**outputs, "_try": attempt}
                code, output, _ = runner.run(pipeline.name, step.name, inputs, item, crash.k, crash.when)
                killed = code == KILLED
                if code not in (0, KILLED):
                    raise StepFailed(f"{step.name}[{index}] failed before its crash point (exit {code})")
                attempt += 1
            # The retry (or the only attempt): Airflow runs the task again with the same inputs.
            inputs = {**outputs, "_try": attempt}
            code, output, count = runner.run(pipeline.name, step.name, inputs, item)
            if code != 0:
                raise StepFailed(f"{step.name}[{index}] failed (exit {code}); see {runner.log_path}")
            counts[(step.name, index)] = count
            results.append(output)
        outputs[step.name] = results if step.expand else results[0]
    return counts, killed


def spread(calls: int, per_step: int) -> list[int]:
    """``per_step`` call numbers spread over 1..calls: the first, the last and evenly between."""
    if calls <= 0:
        return []
    if calls <= per_step:
        return list(range(1, calls + 1))
    picks = {1, calls}
    for n in range(1, per_step - 1):
        picks.add(1 + round(n * (calls - 1) / (per_step - 1)))
    return sorted(picks)


def crash_points(
    pipeline: Pipeline, counts: dict[tuple[str, int], int], per_step: int, spark_per_step: int
) -> list[CrashPoint]:
    """Crash points over every task, alternating before / after: ``per_step`` spread over the calls of
    each step (its first mapped task), and the first and last call of its second mapped task."""
    points = []
    for (name, index), calls in counts.items():
        if index >= MAPPED_TASKS_CRASHED:
            continue
        step = next(s for s in pipeline.steps if s.name == name)
        wanted = spark_per_step if step.spark else per_step if index == 0 else min(per_step, 2)
        for n, k in enumerate(spread(calls, wanted)):
            points.append(CrashPoint(name, k, "after" if (n + index) % 2 == 0 else "before", index))
    return points


def diff(expected: dict, actual: dict, path: str = "") -> list[str]:
    """Human-readable differences between two snapshots (nested dicts; other values compared whole)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        lines = []
        for key in sorted(set(expected) | set(actual), key=str):
            where = f"{path}/{key}"
            if key not in actual:
                lines.append(f"{where}: lost")
            elif key not in expected:
                lines.append(f"{where}: unexpected {str(actual[key])[:200]}")
            else:
                lines.extend(diff(expected[key], actual[key], where))
        return lines
    if expected != actual:
        return [f"{path}: expected {str(expected)[:300]}, got {str(actual)[:300]}"]
    return []


def campaign(
    runner: TaskRunner,
    pipeline: Pipeline,
    lake: Any,
    per_step: int,
    spark_per_step: int,
    select: Callable[[list[CrashPoint]], list[CrashPoint]] = lambda points: points,
    report: Callable[[str], None] = print,
) -> list[Outcome]:
    """The uninterrupted run (its counts pick the crash points), then one run per crash point."""
    lake.reset()
    counts, _ = run_pipeline(runner, pipeline, lake)
    baseline = pipeline.snapshot(lake)
    outcomes = []
    for point in select(crash_points(pipeline, counts, per_step, spark_per_step)):
        lake.reset()
        try:
            _, killed = run_pipeline(runner, pipeline, lake, point)
            difference = diff(baseline, pipeline.snapshot(lake))
            outcome = Outcome(point, killed, killed and not difference, difference)
        except Exception as exc:
            outcome = Outcome(point, True, False, error=f"{type(exc).__name__}: {exc}")
        report(
            f"{pipeline.name} {point.label()}: "
            + ("not reached" if not outcome.killed else "survived" if outcome.survived else "FAILED")
            + (f" {outcome.error}" if outcome.error else "")
            + "".join(f"\n    {line}" for line in outcome.difference[:10])
        )
        outcomes.append(outcome)
    return outcomes


def summary(results: dict[str, list[Outcome]]) -> dict:
    """The figures ``make chaos`` reads: per pipeline the crash points tried (killed), survived, failures."""
    pipelines = {}
    for name, outcomes in results.items():
        tried = [o for o in outcomes if o.killed]
        pipelines[name] = {
            "tried": len(tried),
            "survived": sum(o.survived for o in tried),
            "failures": [
                {"point": o.point.label(), "error": o.error, "difference": o.difference[:20]}
                for o in tried
                if not o.survived
            ],
        }
    return {"pipelines": pipelines, "crash_points_survived": sum(p["survived"] for p in pipelines.values())}
