"""Checks of DAG params shared by several DAGs. They run in the first task, before anything is read or
changed, and fail it with AirflowFailException (no retries: a retry cannot fix a bad param)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airflow.sdk.exceptions import AirflowFailException


def configured_names(value: Any, configured: Iterable[str], param: str, what: str) -> list[str]:
    """The configured names a run covers: ``value`` empty means all of them; a comma-separated string is
    accepted (the CLI's ``-c '{"tables": "a,b"}'``); an unknown name fails, listing the configured ones."""
    configured = list(configured)
    if value in (None, "", []):
        return configured
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",") if name.strip()]
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise AirflowFailException(f"param {param} must be a list of {what} names, got {value!r}")
    unknown = sorted(set(value) - set(configured))
    if unknown:
        raise AirflowFailException(
            f"param {param}: unknown {what}(s) {unknown}; configured: {sorted(configured)}"
        )
    return list(dict.fromkeys(value))
