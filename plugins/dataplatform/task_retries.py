"""How every task retries: the one place the DAGs' ``default_args`` get their retry settings from.

``DATAPLATFORM_RETRY_DELAY_SCALE`` (a factor, default 1) shortens every retry delay for one run, never the
number of retries: ``make chaos`` sets it to 0.01 so a DAG run under injected faults retries after seconds
instead of minutes and the chaos run finishes in minutes, with the same retries a deployment would make.
It is read when the DAG file is parsed; nothing in a deployment sets it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

DELAY_SCALE_ENV = "DATAPLATFORM_RETRY_DELAY_SCALE"


def delay_scale() -> float:
    raw = os.environ.get(DELAY_SCALE_ENV, "1")
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{DELAY_SCALE_ENV} must be a number between 0 and 1, got {raw!r}") from None
    if not 0 < scale <= 1:
        raise ValueError(f"{DELAY_SCALE_ENV} must be a number between 0 and 1, got {raw!r}")
    return scale


def retry_args(retries: int, delay: timedelta, exponential: bool = True) -> dict[str, Any]:
    """``default_args`` entries: ``retries`` retries, the first after ``delay`` (times the scale), each
    next one twice as late when ``exponential``."""
    return {
        "retries": retries,
        "retry_delay": delay * delay_scale(),
        "retry_exponential_backoff": exponential,
    }
