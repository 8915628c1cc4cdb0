"""One seeded lake for the whole bad-input directory (``tests/bad_input/lake.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def lake(moto_server, tmp_path_factory):
    """The seeded lake, shared by every test of this directory (seeded once)."""
    from tests.bad_input.lake import seeded_lake

    seeded = seeded_lake(moto_server, tmp_path_factory.mktemp("bad-input-landing"))
    yield seeded
    seeded.state.close()
