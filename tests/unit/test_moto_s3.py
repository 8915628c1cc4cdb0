"""The local endpoint's S3 listing (``devstack/moto_s3.py``) answers as moto's own does."""

import boto3
import pytest
from moto import mock_aws

from dataplatform.devstack.moto_s3 import speed_up_s3_listing

pytestmark = pytest.mark.unit

KEYS = [
    "t/dt=2024-03-05/hour=00/part-0.json",
    "t/dt=2024-03-05/hour=00/_SUCCESS",
    "t/dt=2024-03-05/hour=01/part-0.json",
    "t/dt=2024-03-05/hour=01/_temporary/0/x",
    "t/dt=2024-03-06/hour=00/part-0.json",
    "t/dt=2024-03-06_$folder$",
    "t/x",
    "t0",
    "u/a",
    "top",
]
LISTINGS = [
    {},
    {"Prefix": "t/"},
    {"Prefix": "t/", "Delimiter": "/"},
    {"Prefix": "t/dt=2024-03-05/", "MaxKeys": 2},
    {"Prefix": "t/dt=2024-03-05/", "StartAfter": "t/dt=2024-03-05/hour=000"},
    {"Delimiter": "/"},
    {"Prefix": "t/dt=2024-03-05/hour=01/", "Delimiter": "/"},
    {"Prefix": "nothing/"},
]


def conversation(versioned: bool) -> list:
    """Listings between puts, overwrites and deletes (delete markers when versioned)."""
    answers = []
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="bkt")
        if versioned:
            s3.put_bucket_versioning(Bucket="bkt", VersioningConfiguration={"Status": "Enabled"})

        def listings():
            for listing in LISTINGS:
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket="bkt", **listing)
                answers.append(
                    [
                        (
                            [o["Key"] for o in p.get("Contents", [])],
                            [c["Prefix"] for c in p.get("CommonPrefixes", [])],
                        )
                        for p in pages
                    ]
                )
            answers.append(
                [
                    o["Key"]
                    for o in s3.list_objects(Bucket="bkt", Prefix="t/", Marker="t/dt").get("Contents", [])
                ]
            )

        for key in KEYS:
            s3.put_object(Bucket="bkt", Key=key, Body=b"1")
        listings()
        s3.put_object(Bucket="bkt", Key=KEYS[0], Body=b"22")  # a new version of a listed name
        s3.delete_object(Bucket="bkt", Key=KEYS[2])
        s3.delete_objects(Bucket="bkt", Delete={"Objects": [{"Key": KEYS[4]}, {"Key": "t0"}]})
        s3.put_object(Bucket="bkt", Key="t/dt=2024-03-04/hour=23/part-0.json", Body=b"3")
        listings()
    return answers


@pytest.mark.parametrize("versioned", [False, True])
def test_listings_answer_as_motos_own(monkeypatch, versioned):
    own = conversation(versioned)
    speed_up_s3_listing(monkeypatch.setattr)
    from moto.s3.models import S3Backend

    assert S3Backend.list_objects.__module__ == "dataplatform.devstack.moto_s3"
    faster = conversation(versioned)
    assert faster == own
    assert own[1][0][0][:2] == ["t/dt=2024-03-05/hour=00/_SUCCESS", "t/dt=2024-03-05/hour=00/part-0.json"]
