"""Backlog grouping: how many pending batches one stateless run claims."""

import pytest

from dataplatform.config import BacklogSettings
from dataplatform.reconciliation.backlog import claim_limit

pytestmark = pytest.mark.unit

DEFAULT = BacklogSettings(batches_per_run=2, growth=0.5, max_batches_per_run=24)


@pytest.mark.parametrize(
    ("pending", "limit"),
    [
        (0, 0),  # nothing pends: nothing to claim
        (1, 1),  # never more than pending
        (2, 2),
        (3, 2),  # 2 + floor(0.5 * 1)
        (4, 3),
        (10, 6),  # 2 + floor(0.5 * 8)
        (46, 24),  # 2 + 22
        (47, 24),  # 2 + floor(22.5)
        (1000, 24),  # capped
    ],
)
def test_limit_grows_with_the_backlog_up_to_the_maximum(pending, limit):
    assert claim_limit(pending, DEFAULT, None) == limit


def test_without_growth_a_run_takes_batches_per_run():
    flat = BacklogSettings(batches_per_run=3, growth=0, max_batches_per_run=10)
    assert [claim_limit(pending, flat) for pending in (0, 2, 3, 50)] == [0, 2, 3, 3]


def test_growth_is_exact_decimal_arithmetic():
    # In floats 0.29 * 100 == 28.999999999999996, which would floor to 28.
    settings = BacklogSettings(batches_per_run=1, growth=0.29, max_batches_per_run=1000)
    assert claim_limit(101, settings) == 1 + 29


def test_override_replaces_the_backlog_rule_but_not_the_pending_count():
    assert claim_limit(100, DEFAULT, 5) == 5
    assert claim_limit(100, DEFAULT, 60) == 60  # above max_batches_per_run: the operator asked for it
    assert claim_limit(3, DEFAULT, 60) == 3
    assert claim_limit(0, DEFAULT, 1) == 0


@pytest.mark.parametrize("override", [0, -1, True, 2.5])
def test_bad_override_names_the_param(override):
    with pytest.raises(ValueError, match="max_batches"):
        claim_limit(10, DEFAULT, override)


def test_negative_pending_is_rejected():
    with pytest.raises(ValueError, match="pending"):
        claim_limit(-1, DEFAULT)
