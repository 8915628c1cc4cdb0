"""docker-compose.yaml as Docker Compose itself reads it: ``docker compose config`` (no engine needed, it
only parses, interpolates and validates the file against the Compose specification), where a compose
client exists on the machine. test_compose.py checks what the specification cannot know (paths, pins)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.dags.test_compose import COMPOSE_FILE, REPO_ROOT, REQUIRED_SERVICES, REQUIREMENTS

pytestmark = pytest.mark.unit


def compose_client() -> list[str] | None:
    """``docker compose`` (the CLI plugin) or the standalone ``docker-compose``, whichever answers."""
    candidates = [["docker", "compose"]] if shutil.which("docker") else []
    candidates += [["docker-compose"]] if shutil.which("docker-compose") else []
    for command in candidates:
        if subprocess.run([*command, "version"], capture_output=True, timeout=60).returncode == 0:
            return command
    return None


@pytest.fixture(scope="module")
def compose_command() -> list[str]:
    command = compose_client()
    if command is None:
        pytest.skip(
            "no Docker Compose client here (neither the `docker compose` plugin nor `docker-compose` answers "
            "`version`): docker-compose.yaml is only checked statically, by test_compose.py"
        )
    return command


def compose_config(command: list[str], text: str) -> subprocess.CompletedProcess:
    """``config --format json`` of ``text`` as if it were the repository's docker-compose.yaml."""
    return subprocess.run(
        [*command, "--project-directory", str(REPO_ROOT), "-f", "-", "config", "--format", "json"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


def test_docker_compose_accepts_the_file_and_reads_the_postgres_stack(compose_command):
    result = compose_config(compose_command, COMPOSE_FILE.read_text())
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert set(config["services"]) >= set(REQUIRED_SERVICES)
    url = config["services"]["airflow-scheduler"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert url.startswith("postgresql+psycopg2://"), url
    # The image installs requirements.txt: the drivers of that URL (sync) and of the api-server's async
    # engine Airflow derives from it must be in it.
    pins = REQUIREMENTS.read_text()
    assert "\npsycopg2-binary==" in pins and "\nasyncpg==" in pins


@pytest.mark.parametrize(
    ("break_it", "complaint"),
    [
        (
            lambda c: c["services"]["airflow-scheduler"].update(depends_on={"no-such-service": {}}),
            "no-such-service",
        ),
        (lambda c: c["services"]["postgres"].update(healthcheck={"interval": "often"}), "often"),
        (lambda c: c["services"]["moto"].update(unknown_key=True), "unknown_key"),
    ],
    ids=["dependency on a missing service", "healthcheck interval not a duration", "unknown key"],
)
def test_docker_compose_refuses_a_broken_copy(compose_command, break_it, complaint):
    compose = yaml.safe_load(Path(COMPOSE_FILE).read_text())
    break_it(compose)
    result = compose_config(compose_command, yaml.safe_dump(compose))
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr
