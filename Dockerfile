# Local Airflow image: the official Airflow image plus a Java runtime (for local PySpark) and the
# project's pinned Python dependencies. DAGs, plugins and Spark jobs are NOT baked in: docker-compose.yaml
# mounts dags/, plugins/, spark_jobs/ and include/ and sets PYTHONPATH.
#
# The Airflow version here must equal the apache-airflow== pin in requirements.txt
# (tests/dags/test_compose.py checks it).
FROM apache/airflow:3.3.1-python3.11

USER root

# Spark 3.5 (pyspark in requirements.txt) needs a Java 8/11/17 runtime. The package installs into
# /usr/lib/jvm/java-17-openjdk-<arch>; the symlink gives JAVA_HOME an architecture-independent path.
# (man1 must exist or the JRE's update-alternatives step fails on slim Debian images.)
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /usr/lib/jvm/java-17-openjdk

ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk

USER airflow

# requirements.txt is the complete pinned lock (generated from requirements.in, including
# apache-airflow==<the version of the base image>). pip must not resolve anything here: every
# package, transitive ones included, is pinned, so this only installs the locked versions.
# Do not add unpinned packages to this step; change requirements.in and regenerate the lock instead.
COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir -r /requirements.txt
