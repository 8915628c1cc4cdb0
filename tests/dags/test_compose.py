"""Static checks of the local stack: docker-compose.yaml, Dockerfile and requirements.txt.

Nothing is started: the files are parsed (compose with PyYAML, which resolves the ``x-airflow-common``
anchors and ``<<`` merge keys) and cross-checked against each other and against the repository tree.
Each ``find_*_problems`` helper returns a list of human-readable problems (empty means OK), so the
same helpers can be fed deliberately broken copies to show that the checks do fail.
"""

from __future__ import annotations

import copy
import glob
import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from packaging.specifiers import SpecifierSet

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
REQUIREMENTS = REPO_ROOT / "requirements.txt"
PYPROJECT = REPO_ROOT / "pyproject.toml"

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
REQUIRED_SERVICES = ("postgres", "moto", *AIRFLOW_SERVICES)
MOTO_SERVICE = "moto"
AWS_CONN_VAR = "AIRFLOW_CONN_AWS_DEFAULT"
REQUIREMENTS_NAME = "requirements.txt"
AIRFLOW_IMAGE_RE = re.compile(
    r"^(?:docker\.io/)?apache/airflow:(?P<version>\d+\.\d+\.\d+)(?:-python(?P<python>\d+\.\d+))?$"
)


# --------------------------------------------------------------------------------------------------
# Loading / parsing
# --------------------------------------------------------------------------------------------------


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict), f"{path.name} does not contain a YAML mapping"
    return data


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """Return ``(INSTRUCTION, arguments)`` pairs: comments dropped, ``\\`` continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            # Comment lines are ignored, also in the middle of a continued instruction.
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    if pending.strip():
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def split_copy_args(args: str) -> tuple[list[str], list[str], str]:
    """Split COPY/ADD arguments into (flags, sources, destination); handles the JSON form."""
    flags: list[str] = []
    rest = args
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.strip()
    parts = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    if len(parts) < 2:
        return flags, [], parts[0] if parts else ""
    return flags, parts[:-1], parts[-1]


def requirements_airflow_pin(requirements_text: str) -> str | None:
    match = re.search(r"^apache-airflow==([^\s;#]+)", requirements_text, re.MULTILINE | re.IGNORECASE)
    return match.group(1) if match else None


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        return dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def airflow_service_names(compose: dict[str, Any]) -> list[str]:
    services = compose.get("services") or {}
    extra = sorted(name for name in services if name.startswith("airflow") and name not in AIRFLOW_SERVICES)
    return [name for name in AIRFLOW_SERVICES if name in services] + extra


# --------------------------------------------------------------------------------------------------
# docker-compose.yaml checks
# --------------------------------------------------------------------------------------------------


def find_missing_services(compose: dict[str, Any]) -> list[str]:
    services = compose.get("services") or {}
    return [
        f"docker-compose.yaml: service {name!r} is missing"
        for name in REQUIRED_SERVICES
        if name not in services
    ]


def find_build_problems(compose: dict[str, Any], repo_root: Path = REPO_ROOT) -> list[str]:
    problems: list[str] = []
    services = compose.get("services") or {}
    for name in airflow_service_names(compose):
        build = services[name].get("build")
        if build is None:
            problems.append(
                f"docker-compose.yaml: service {name!r} has no 'build' (must build the Dockerfile)"
            )
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = build.get("context")
        if context not in (".", "./"):
            problems.append(
                f"docker-compose.yaml: service {name!r} builds with context {context!r}, expected '.' "
                "(the repository root)"
            )
            continue
        dockerfile = repo_root / context / build.get("dockerfile", "Dockerfile")
        if dockerfile.resolve() != (repo_root / "Dockerfile").resolve():
            problems.append(
                f"docker-compose.yaml: service {name!r} builds {build.get('dockerfile')!r}, "
                "expected the repository's Dockerfile"
            )
        elif not dockerfile.is_file():
            problems.append(
                f"docker-compose.yaml: service {name!r} builds {dockerfile}, which does not exist"
            )
    return problems


def _mount_source(volume: Any) -> tuple[str | None, bool]:
    """Return (source, is_bind) for a short-syntax string or long-syntax mapping."""
    if isinstance(volume, dict):
        source = volume.get("source")
        return source, volume.get("type") == "bind"
    source, sep, _ = str(volume).partition(":")
    if not sep:  # anonymous volume: only a container path
        return None, False
    return source, source.startswith((".", "/", "~"))


def find_mount_problems(compose: dict[str, Any], repo_root: Path = REPO_ROOT) -> list[str]:
    problems: list[str] = []
    declared_volumes = set((compose.get("volumes") or {}).keys())
    for name, service in (compose.get("services") or {}).items():
        for volume in service.get("volumes") or []:
            source, is_bind = _mount_source(volume)
            if source is None:
                continue
            if not is_bind:
                if source not in declared_volumes:
                    problems.append(
                        f"docker-compose.yaml: service {name!r} mounts named volume {source!r}, "
                        "which is not declared under top-level 'volumes'"
                    )
                continue
            if source.startswith(("/", "~")):
                problems.append(
                    f"docker-compose.yaml: service {name!r} mounts host path {source!r}, "
                    "which is outside the repository"
                )
                continue
            host_path = (repo_root / source).resolve()
            if not host_path.is_relative_to(repo_root.resolve()):
                problems.append(
                    f"docker-compose.yaml: service {name!r} mounts host path {source!r}, "
                    "which is outside the repository"
                )
            elif not host_path.exists():
                problems.append(
                    f"docker-compose.yaml: service {name!r} mounts host path {source!r}, "
                    f"which does not exist in the repository ({host_path})"
                )
    return problems


def find_aws_connection_problems(compose: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    services = compose.get("services") or {}
    if MOTO_SERVICE not in services:
        problems.append(f"docker-compose.yaml: service {MOTO_SERVICE!r} (the AWS endpoint) is missing")
    for name in airflow_service_names(compose):
        raw = service_environment(services[name]).get(AWS_CONN_VAR)
        if not raw:
            problems.append(f"docker-compose.yaml: service {name!r} does not set {AWS_CONN_VAR}")
            continue
        try:
            conn = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(
                f"docker-compose.yaml: service {name!r}: {AWS_CONN_VAR} is not valid JSON ({exc})"
            )
            continue
        if not isinstance(conn, dict):
            problems.append(f"docker-compose.yaml: service {name!r}: {AWS_CONN_VAR} is not a JSON object")
            continue
        if conn.get("conn_type") != "aws":
            problems.append(
                f"docker-compose.yaml: service {name!r}: {AWS_CONN_VAR} has conn_type "
                f"{conn.get('conn_type')!r}, expected 'aws'"
            )
        extra = conn.get("extra") or {}
        if isinstance(extra, str):
            try:
                extra = json.loads(extra)
            except json.JSONDecodeError:
                extra = {}
        endpoint = extra.get("endpoint_url") if isinstance(extra, dict) else None
        if not endpoint:
            problems.append(
                f"docker-compose.yaml: service {name!r}: {AWS_CONN_VAR} has no extra.endpoint_url "
                f"(expected http://{MOTO_SERVICE}:<port>)"
            )
            continue
        parsed = urlparse(endpoint)
        if parsed.hostname != MOTO_SERVICE:
            problems.append(
                f"docker-compose.yaml: service {name!r}: {AWS_CONN_VAR} endpoint_url {endpoint!r} does not "
                f"point at the {MOTO_SERVICE!r} service"
            )
            continue
        moto_ports = _container_ports(services.get(MOTO_SERVICE) or {})
        if moto_ports and parsed.port not in moto_ports:
            problems.append(
                f"docker-compose.yaml: service {name!r}: {AWS_CONN_VAR} endpoint_url {endpoint!r} uses port "
                f"{parsed.port}, but {MOTO_SERVICE!r} listens on {sorted(moto_ports)}"
            )
    return problems


def _container_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            target = port.get("target")
        else:
            target = str(port).rsplit(":", 1)[-1].split("/", 1)[0]
        if target is not None and str(target).isdigit():
            ports.add(int(target))
    return ports


def find_dependency_problems(compose: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    services = compose.get("services") or {}
    expected = {"airflow-init": "service_completed_successfully", MOTO_SERVICE: "service_healthy"}
    for name in airflow_service_names(compose):
        expected_here = {"postgres": "service_healthy"} if name == "airflow-init" else expected
        depends_on = services[name].get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {dep: {"condition": "service_started"} for dep in depends_on}
        for dep, condition in expected_here.items():
            actual = (depends_on.get(dep) or {}).get("condition")
            if actual != condition:
                problems.append(
                    f"docker-compose.yaml: service {name!r} must depend on {dep!r} with condition "
                    f"{condition!r} (found {actual!r})"
                )
    return problems


def find_compose_problems(compose: dict[str, Any], repo_root: Path = REPO_ROOT) -> list[str]:
    return [
        *find_missing_services(compose),
        *find_build_problems(compose, repo_root),
        *find_mount_problems(compose, repo_root),
        *find_aws_connection_problems(compose),
        *find_dependency_problems(compose),
    ]


# --------------------------------------------------------------------------------------------------
# Dockerfile checks
# --------------------------------------------------------------------------------------------------


def find_from_problems(
    dockerfile_text: str, requirements_text: str, python_spec: str | None = None
) -> list[str]:
    froms = [args for keyword, args in parse_dockerfile(dockerfile_text) if keyword == "FROM"]
    if not froms:
        return ["Dockerfile: no FROM line"]
    # The final stage is the image that runs; drop a trailing "AS name" and any --platform flag.
    image = next(token for token in froms[-1].split() if not token.startswith("--"))
    match = AIRFLOW_IMAGE_RE.match(image)
    if not match:
        return [f"Dockerfile: FROM {image!r} is not an official apache/airflow:<version>[-pythonX.Y] image"]
    problems: list[str] = []
    version = match.group("version")
    if not version.startswith("3.3."):
        problems.append(f"Dockerfile: FROM {image!r} is Airflow {version}, expected Airflow 3.3.x")
    pin = requirements_airflow_pin(requirements_text)
    if pin is None:
        problems.append("requirements.txt: no 'apache-airflow==' pin")
    elif pin != version:
        problems.append(
            f"Dockerfile: FROM {image!r} is Airflow {version}, "
            f"but requirements.txt pins apache-airflow=={pin}"
        )
    python = match.group("python")
    if python_spec and python and f"{python}.0" not in SpecifierSet(python_spec):
        problems.append(
            f"Dockerfile: FROM {image!r} uses Python {python}, outside the project's requires-python "
            f"{python_spec!r}"
        )
    return problems


def find_copy_problems(dockerfile_text: str, repo_root: Path = REPO_ROOT) -> list[str]:
    problems: list[str] = []
    for keyword, args in parse_dockerfile(dockerfile_text):
        if keyword not in ("COPY", "ADD"):
            continue
        flags, sources, _dest = split_copy_args(args)
        if any(flag.startswith("--from") for flag in flags):
            continue  # copied from another build stage / image, not from the build context
        if not sources:
            problems.append(f"Dockerfile: cannot parse '{keyword} {args}'")
        for source in sources:
            if keyword == "ADD" and re.match(r"^[a-z]+://", source):
                continue  # remote URL
            if not glob.glob(str(repo_root / source)):
                problems.append(
                    f"Dockerfile: '{keyword} {args}' copies {source!r}, "
                    "which does not exist in the repository"
                )
    return problems


def _pip_install_commands(run_args: str) -> list[list[str]]:
    """Each ``pip install ...`` / ``python -m pip install ...`` command of a RUN line, as its arguments."""
    tokens = json.loads(run_args) if run_args.startswith("[") else shlex.split(run_args, posix=True)
    commands: list[list[str]] = []
    current: list[str] = []
    for token in [*tokens, "&&"]:
        if token in ("&&", "||", ";", "|"):
            if current:
                commands.append(current)
            current = []
            continue
        current.append(token)
    installs: list[list[str]] = []
    for command in commands:
        for i, token in enumerate(command[:-1]):
            if re.fullmatch(r"(?:\S*/)?pip3?(?:\.\d+)?", token) and command[i + 1] == "install":
                installs.append(command[i + 2 :])
                break
    return installs


def find_requirements_install_problems(dockerfile_text: str) -> list[str]:
    instructions = parse_dockerfile(dockerfile_text)
    problems: list[str] = []

    # Where does requirements.txt land in the image?
    workdir = PurePosixPath("/")
    copied_to: set[str] = set()
    for keyword, args in instructions:
        if keyword == "WORKDIR":
            workdir = workdir / args.strip()
        elif keyword in ("COPY", "ADD"):
            flags, sources, dest = split_copy_args(args)
            if any(flag.startswith("--from") for flag in flags):
                continue
            for source in sources:
                if PurePosixPath(source) == PurePosixPath(REQUIREMENTS_NAME):
                    target = workdir / dest
                    if dest.endswith("/") or len(sources) > 1:
                        target = target / REQUIREMENTS_NAME
                    copied_to.add(str(target))
    if not copied_to:
        problems.append(f"Dockerfile: does not COPY the repository's {REQUIREMENTS_NAME}")

    # Every pip install must be exactly `-r <the copied requirements.txt>` plus options.
    workdir = PurePosixPath("/")
    installs_requirements = False
    for keyword, args in instructions:
        if keyword == "WORKDIR":
            workdir = workdir / args.strip()
        if keyword != "RUN":
            continue
        for install_args in _pip_install_commands(args):
            requirement_files: list[str] = []
            positional: list[str] = []
            it = iter(install_args)
            for arg in it:
                if arg in ("-r", "--requirement"):
                    requirement_files.append(next(it, ""))
                elif arg.startswith("--requirement="):
                    requirement_files.append(arg.split("=", 1)[1])
                elif arg.startswith("-r") and len(arg) > 2:
                    requirement_files.append(arg[2:])
                elif arg in ("-c", "--constraint", "-e", "--editable"):
                    positional.append(f"{arg} {next(it, '')}")
                elif not arg.startswith("-"):
                    positional.append(arg)
            for req in requirement_files:
                if str(workdir / req) in copied_to:
                    installs_requirements = True
                else:
                    problems.append(
                        f"Dockerfile: 'pip install -r {req}' does not install the copied {REQUIREMENTS_NAME} "
                        f"(copied to {sorted(copied_to)})"
                    )
            if positional:
                problems.append(
                    f"Dockerfile: pip installs {positional} besides {REQUIREMENTS_NAME}; "
                    "the image must install exactly the lock"
                )
    if copied_to and not installs_requirements:
        problems.append(
            f"Dockerfile: no 'pip install -r' of the copied {REQUIREMENTS_NAME} ({sorted(copied_to)})"
        )
    return problems


def find_dockerfile_problems(
    dockerfile_text: str, requirements_text: str, repo_root: Path = REPO_ROOT, python_spec: str | None = None
) -> list[str]:
    return [
        *find_from_problems(dockerfile_text, requirements_text, python_spec),
        *find_copy_problems(dockerfile_text, repo_root),
        *find_requirements_install_problems(dockerfile_text),
    ]


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    return load_compose()


@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def requirements_text() -> str:
    assert REQUIREMENTS.is_file(), f"{REQUIREMENTS} is missing"
    return REQUIREMENTS.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def python_spec() -> str | None:
    if not PYPROJECT.is_file():
        return None
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8")).get("project", {}).get("requires-python")


def _report(problems: list[str]) -> str:
    return "\n".join(["", *problems])


# --------------------------------------------------------------------------------------------------
# Tests of the real files
# --------------------------------------------------------------------------------------------------


def test_required_services_present(compose):
    problems = find_missing_services(compose)
    assert not problems, _report(problems)


def test_airflow_services_build_repository_dockerfile(compose):
    problems = find_build_problems(compose)
    assert not problems, _report(problems)


def test_mounted_host_paths_exist(compose):
    problems = find_mount_problems(compose)
    assert not problems, _report(problems)


def test_aws_connection_points_at_moto(compose):
    problems = find_aws_connection_problems(compose)
    assert not problems, _report(problems)


def test_airflow_services_wait_for_init_and_moto(compose):
    problems = find_dependency_problems(compose)
    assert not problems, _report(problems)


def test_dockerfile_from_matches_airflow_pin(dockerfile_text, requirements_text, python_spec):
    problems = find_from_problems(dockerfile_text, requirements_text, python_spec)
    assert not problems, _report(problems)


def test_dockerfile_copied_files_exist(dockerfile_text):
    problems = find_copy_problems(dockerfile_text)
    assert not problems, _report(problems)


def test_dockerfile_installs_exactly_requirements_txt(dockerfile_text):
    problems = find_requirements_install_problems(dockerfile_text)
    assert not problems, _report(problems)


# --------------------------------------------------------------------------------------------------
# The checks can fail: feed deliberately broken copies to the same helpers
# --------------------------------------------------------------------------------------------------


def _remove_moto(c):
    del c["services"]["moto"]


def _bad_context(c):
    c["services"]["airflow-scheduler"]["build"] = {"context": "docker"}


def _missing_mount(c):
    c["services"]["airflow-triggerer"]["volumes"] = [
        *c["services"]["airflow-triggerer"]["volumes"],
        "./no-such-dir:/opt/airflow/nothing:ro",
    ]


def _undeclared_volume(c):
    c["services"]["postgres"]["volumes"] = ["not-declared:/var/lib/postgresql/data"]


def _conn_not_json(c):
    c["services"]["airflow-apiserver"]["environment"][AWS_CONN_VAR] = "aws://testing:testing@"


def _conn_wrong_endpoint(c):
    conn = json.loads(c["services"]["airflow-dag-processor"]["environment"][AWS_CONN_VAR])
    conn["extra"]["endpoint_url"] = "http://localhost:5000"
    c["services"]["airflow-dag-processor"]["environment"][AWS_CONN_VAR] = json.dumps(conn)


def _no_init_dependency(c):
    c["services"]["airflow-scheduler"]["depends_on"] = {"moto": {"condition": "service_healthy"}}


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_remove_moto, "service 'moto' is missing"),
        (_bad_context, "service 'airflow-scheduler' builds with context 'docker'"),
        (_missing_mount, "'./no-such-dir', which does not exist"),
        (_undeclared_volume, "named volume 'not-declared'"),
        (_conn_not_json, "service 'airflow-apiserver': AIRFLOW_CONN_AWS_DEFAULT is not valid JSON"),
        (_conn_wrong_endpoint, "'http://localhost:5000' does not point at the 'moto' service"),
        (_no_init_dependency, "service 'airflow-scheduler' must depend on 'airflow-init'"),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else "",
)
def test_compose_checks_detect_breakage(compose, breakage, expected):
    assert not find_compose_problems(compose), "the real docker-compose.yaml must be clean for this test"
    broken = copy.deepcopy(compose)
    # The anchors are shared objects after loading: deepcopy keeps them shared within the copy, so
    # give each service its own environment / volumes before editing one service.
    for service in broken["services"].values():
        if "environment" in service:
            service["environment"] = dict(service["environment"])
        if "volumes" in service:
            service["volumes"] = list(service["volumes"])
    breakage(broken)
    problems = find_compose_problems(broken)
    assert any(expected in problem for problem in problems), (
        f"expected a problem containing {expected!r}, got:{_report(problems) or ' none'}"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("apache/airflow:3.3.1-python3.11", "apache/airflow:3.2.0-python3.11", "expected Airflow 3.3.x"),
        ("apache/airflow:3.3.1-python3.11", "apache/airflow:3.3.0-python3.11", "pins apache-airflow==3.3.1"),
        ("apache/airflow:3.3.1-python3.11", "apache/airflow:3.3.1-python3.12", "outside the project's"),
        ("apache/airflow:3.3.1-python3.11", "python:3.11-slim", "not an official apache/airflow"),
        ("COPY requirements.txt", "COPY requirements-missing.txt", "does not COPY the repository's"),
        (
            "COPY requirements.txt",
            "COPY requirements-missing.txt",
            "'requirements-missing.txt', which does not",
        ),
        ("-r /requirements.txt", "-r /other.txt", "'pip install -r /other.txt' does not install"),
        ("-r /requirements.txt", "-r /requirements.txt boto3", "pip installs ['boto3'] besides"),
    ],
)
def test_dockerfile_checks_detect_breakage(
    dockerfile_text, requirements_text, python_spec, old, new, expected
):
    assert not find_dockerfile_problems(dockerfile_text, requirements_text, python_spec=python_spec), (
        "the real Dockerfile must be clean for this test"
    )
    assert old in dockerfile_text, f"test setup: {old!r} not found in the Dockerfile"
    broken = dockerfile_text.replace(old, new)
    problems = find_dockerfile_problems(broken, requirements_text, python_spec=python_spec)
    assert any(expected in problem for problem in problems), (
        f"expected a problem containing {expected!r}, got:{_report(problems) or ' none'}"
    )
