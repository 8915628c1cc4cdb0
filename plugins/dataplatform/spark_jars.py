"""The JVM jars of the local Spark backend: pinned in ``include/spark/jars.lock.json``, fetched once into an
ignored cache, checked before any Spark starts.

EMR ships Hudi's Spark bundle, Iceberg's Spark runtime (with the AWS SDK) and S3A on every cluster; the
local backend gets the same pieces from Maven Central: ``make jars`` (a prerequisite of ``make demo``,
``make up`` and ``make test``) runs ``python -m dataplatform.spark_jars fetch``, which copies each locked
artifact with ``mvn dependency:copy`` (Maven's own repository ``~/.m2`` caches it for every checkout) or,
on a machine without Maven, downloads it from Maven Central over HTTPS, and checks its sha256.

``jar_path(name)`` is what everything else calls: the path of a verified jar, or ``JarError`` naming the
artifact and the command that fixes it. Hashing 500 MB of jars on every job start would cost seconds, so a
jar verified once leaves a stamp (size, mtime, sha256) beside it; a jar changed since is hashed again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from dataplatform.config import REPO_ROOT

LOCK_PATH = REPO_ROOT / "include" / "spark" / "jars.lock.json"
CACHE_ENV = "DATAPLATFORM_JAR_CACHE"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
_HASH_CHUNK = 8 * 1024 * 1024


class JarError(RuntimeError):
    """A locked jar is missing, corrupt or could not be fetched (the message names the artifact)."""


@dataclass(frozen=True)
class LockedJar:
    name: str
    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def coordinates(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    @property
    def url(self) -> str:
        return (
            f"{MAVEN_CENTRAL}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.file_name}"
        )


def cache_dir() -> Path:
    """``$DATAPLATFORM_JAR_CACHE`` or ``.cache/jars`` in the checkout."""
    return Path(os.environ.get(CACHE_ENV) or REPO_ROOT / ".cache" / "jars").resolve()


@cache
def locked_jars() -> dict[str, LockedJar]:
    """The lock's jars by name, in lock order."""
    entries = json.loads(LOCK_PATH.read_text())["jars"]
    return {entry["name"]: LockedJar(**entry) for entry in entries}


def locked(name: str) -> LockedJar:
    try:
        return locked_jars()[name]
    except KeyError:
        raise JarError(f"no jar named {name!r} in {LOCK_PATH} (known: {sorted(locked_jars())})") from None


# -- checking --------------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def _verify(jar: LockedJar, path: Path) -> None:
    """Raise JarError unless ``path`` holds ``jar``'s bytes; remember a pass in the stamp file."""
    stamp = _stamp_path(path)
    expected = f"{_stamp(path)} {jar.sha256}"
    if stamp.is_file() and stamp.read_text() == expected:
        return
    actual = sha256_of(path)
    if actual != jar.sha256:
        raise JarError(
            f"jar {jar.coordinates} at {path} is corrupt: sha256 {actual}, the lock ({LOCK_PATH}) pins "
            f"{jar.sha256}. Delete it and run `make jars`."
        )
    stamp.write_text(expected)


def jar_path(name: str) -> Path:
    """The verified local path of the locked jar ``name``; JarError (naming it) when missing or corrupt."""
    jar = locked(name)
    path = cache_dir() / jar.file_name
    if not path.is_file():
        raise JarError(
            f"jar {jar.coordinates} ({name}) is not in {cache_dir()}: run `make jars` "
            "(it fetches every jar in include/spark/jars.lock.json from Maven Central)"
        )
    _verify(jar, path)
    return path


def jar_paths(names: list[str] | tuple[str, ...]) -> list[str]:
    return [str(jar_path(name)) for name in names]


# -- fetching --------------------------------------------------------------------------------------------


def _fetch_with_maven(jar: LockedJar, directory: Path) -> None:
    command = [
        "mvn",
        "-B",
        "-q",
        "dependency:copy",
        f"-Dartifact={jar.coordinates}:jar",
        f"-DoutputDirectory={directory}",
        "-Dmdep.overWriteReleases=true",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=directory)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise JarError(
            f"could not fetch jar {jar.coordinates} with Maven (`{' '.join(command)}` exited "
            f"{done.returncode}):\n" + "\n".join(output)
        )


def _fetch_over_https(jar: LockedJar, directory: Path) -> None:
    partial = directory / (jar.file_name + ".partial")
    try:
        with urllib.request.urlopen(jar.url, timeout=120) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, _HASH_CHUNK)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise JarError(f"could not fetch jar {jar.coordinates} from {jar.url}: {exc}") from None
    partial.replace(directory / jar.file_name)


def fetch(names: list[str] | None = None, log=print) -> list[Path]:
    """Fetch the locked jars not yet in the cache (all, or ``names``), verify each; return their paths.

    A jar whose download does not match the lock is deleted again, so a later run does not trust it."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or list(locked_jars()):
        jar = locked(name)
        path = directory / jar.file_name
        try:
            paths.append(jar_path(name))
            continue
        except JarError:
            path.unlink(missing_ok=True)
            _stamp_path(path).unlink(missing_ok=True)
        how = "mvn dependency:copy" if shutil.which("mvn") else jar.url
        log(f"fetching {jar.coordinates} ({how})")
        if shutil.which("mvn"):
            _fetch_with_maven(jar, directory)
        else:
            _fetch_over_https(jar, directory)
        if not path.is_file():
            raise JarError(f"fetching jar {jar.coordinates} left no {path}")
        try:
            paths.append(jar_path(name))
        except JarError:
            path.unlink(missing_ok=True)
            raise
        log(f"  {path.name}: {path.stat().st_size / 1e6:.1f} MB, sha256 matches the lock")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dataplatform.spark_jars", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch and verify every locked jar not yet in the cache")
    sub.add_parser("check", help="verify every locked jar in the cache, fetch nothing")
    args = parser.parse_args(argv)
    try:
        paths = fetch() if args.command == "fetch" else [jar_path(name) for name in locked_jars()]
    except JarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(paths)} jars verified in {cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
