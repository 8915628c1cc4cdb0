"""Landing manifests, tampered one field (or one byte of data) at a time: ``read_and_verify`` (what
``register_batches`` runs on every landed batch) refuses each with a ManifestError naming the field, and
reading changes nothing."""

from __future__ import annotations

import pytest

from tests.bad_input.lake import refuse
from tests.bad_input.tampered import CASES, folder, landing_of

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def landing(lake):
    from dataplatform import aws
    from dataplatform.config import settings
    from spark_jobs.common.storage import Storage

    return Storage(aws.client("s3")), settings().reconciliation.landing_uri, f"file://{lake.local_landing}/"


@pytest.mark.bad_input
@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_manifest_is_refused_naming_the_field(lake, landing, case):
    from dataplatform.reconciliation.manifests import ManifestError, read_and_verify

    storage, s3_landing, local_landing = landing
    uri = landing_of(case, s3_landing, local_landing)
    refuse(lake, lambda: read_and_verify(storage, uri, folder(case)), CASES[case].names, ManifestError)


def test_the_untampered_batches_are_accepted(lake, landing):
    """The control: the seeded good batches verify (the cases above fail for their tampering alone)."""
    from dataplatform.reconciliation.manifests import discover_batches, read_and_verify

    storage, uri, _ = landing
    good = [batch for batch, _ in discover_batches(storage, uri) if not batch.startswith("tamper-")]
    assert len(good) == 2
    assert [read_and_verify(storage, uri, batch).batch_id for batch in good] == good
