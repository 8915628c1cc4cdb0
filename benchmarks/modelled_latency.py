"""Modelled AWS request latency for the benchmarks that run on moto.

moto answers a request in about a millisecond of its server's CPU, where S3 (or SQS) takes 10-30 ms of
waiting that parallel requests overlap. A benchmark on moto alone therefore rewards saving moto's CPU and
hides what a design does about round trips. ``add_latency`` makes every HTTP request of one boto3 client
first sleep ``latency_s`` (a botocore ``before-send`` hook: retries sleep again, as they would wait again),
so sequential calls pay it in full and concurrent ones overlap it, as in AWS.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import boto3
from botocore.config import Config

REGION = "us-east-1"
# The production retry config (dataplatform.aws.RETRY_CONFIG), plus a pool as large as the thread count.
CLIENT_CONFIG = {"retries": {"mode": "adaptive", "max_attempts": 10}, "max_pool_connections": 64}
DEFAULT_LATENCY_MS = 20.0


def add_latency(client, latency_s: float):
    """Make each request of ``client`` (any service) wait ``latency_s`` before it is sent; returns it."""
    if latency_s > 0:
        service = client.meta.service_model.service_name

        def modelled_latency(**_):
            time.sleep(latency_s)  # returning None lets the request go on

        client.meta.events.register(f"before-send.{service}", modelled_latency)
    return client


def count_calls(client, calls: Counter):
    """Count the API calls ``client`` makes in ``calls``, by operation name (thread-safe); returns it."""
    lock = threading.Lock()
    service = client.meta.service_model.service_name

    def count(event_name: str, **_):
        with lock:
            calls[event_name.rsplit(".", 1)[-1]] += 1

    client.meta.events.register(f"before-call.{service}", count)
    return client


def s3_client(url: str, latency_s: float, calls: Counter | None = None):
    """A boto3 S3 client on moto whose every HTTP request first sleeps ``latency_s`` (modelled S3
    latency); ``calls`` counts the API calls it makes, by operation."""
    client = boto3.client(
        "s3",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(**CLIENT_CONFIG),
    )
    add_latency(client, latency_s)
    if calls is not None:
        count_calls(client, calls)
    return client
