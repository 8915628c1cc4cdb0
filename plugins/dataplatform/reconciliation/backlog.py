"""How many pending batches one stateless run claims (the reference's backlog grouping).

With no backlog a run takes ``batches_per_run`` batches, which keeps latency low. When batches pile up
(an outage, a burst) each run takes more, so fewer, larger Spark jobs drain the backlog: the fixed cost of
a job is paid once per group instead of once per batch. ``max_batches_per_run`` bounds a run's size.
"""

from __future__ import annotations

import math
from fractions import Fraction

from dataplatform.config import BacklogSettings

# The ``max_batches`` param's bound (the DAG's Param schema says the same): a run claims a handful of
# batches; a thousand is already a backlog drain.
MAX_BATCHES_LIMIT = 1000


def check_max_batches(value: object) -> int | None:
    """The ``max_batches`` override: None, or an integer in [1, MAX_BATCHES_LIMIT]; ValueError naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCHES_LIMIT:
        raise ValueError(f"max_batches must be an integer from 1 to {MAX_BATCHES_LIMIT}, got {value!r}")
    return value


def claim_limit(pending: int, backlog: BacklogSettings, override: int | None = None) -> int:
    """Batches to claim now: ``override`` when given (the ``max_batches`` param), else
    ``min(max_batches_per_run, batches_per_run + floor(growth * (pending - batches_per_run)))``;
    never more than ``pending``."""
    if isinstance(pending, bool) or not isinstance(pending, int) or pending < 0:
        raise ValueError(f"pending must be a non-negative integer, got {pending!r}")
    if check_max_batches(override) is not None:
        return min(override, pending)
    excess = max(0, pending - backlog.batches_per_run)
    # Exact decimal arithmetic: 0.29 * 100 is 28.999999999999996 in floats, and floor would lose a batch.
    growth = math.floor(Fraction(repr(backlog.growth)) * excess)
    return min(backlog.max_batches_per_run, backlog.batches_per_run + growth, pending)
