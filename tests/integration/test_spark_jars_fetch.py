"""``make jars`` when an artifact cannot be had: the error names it, and nothing unverified stays in the
cache (Maven Central for real, through ``mvn`` as ``make jars`` runs it)."""

from __future__ import annotations

import json
import re

import pytest

from dataplatform import spark_jars

pytestmark = pytest.mark.integration


@pytest.fixture
def lock_of(tmp_path, monkeypatch):
    def write(*entries: dict):
        lock = tmp_path / "jars.lock.json"
        lock.write_text(json.dumps({"jars": list(entries)}))
        monkeypatch.setattr(spark_jars, "LOCK_PATH", lock)
        monkeypatch.setenv(spark_jars.CACHE_ENV, str(tmp_path / "cache"))
        spark_jars.locked_jars.cache_clear()
        return tmp_path / "cache"

    yield write
    spark_jars.locked_jars.cache_clear()


def test_an_artifact_the_registry_does_not_serve_is_named(lock_of):
    lock_of(
        {
            "name": "nowhere",
            "group": "org.example.none",
            "artifact": "no-such-jar",
            "version": "0.0.1",
            "sha256": "0" * 64,
        }
    )
    with pytest.raises(
        spark_jars.JarError, match=re.escape("could not fetch jar org.example.none:no-such-jar:0.0.1")
    ):
        spark_jars.fetch()


def test_a_download_that_does_not_match_the_lock_is_named_and_not_kept(lock_of):
    hadoop_aws = spark_jars.locked("hadoop-aws")
    cache = lock_of({**hadoop_aws.__dict__, "sha256": "f" * 64})
    with pytest.raises(spark_jars.JarError) as error:
        spark_jars.fetch()
    assert "org.apache.hadoop:hadoop-aws:3.3.4" in str(error.value) and "corrupt" in str(error.value)
    assert not (cache / hadoop_aws.file_name).exists()
