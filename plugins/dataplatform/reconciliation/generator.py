"""Deterministic landing batches of synthetic financial events, for tests, demos and benchmarks.

Realistic in the ways that stress the pipeline, and nothing else:
- key choice is Zipf-skewed (a few hot keys get a large share of the events, most keys get a few);
- receivables are paid by remittances of exactly the open amount (sometimes more: overpayment), so many
  keys end RECONCILED, some stay OPEN and some end OVERPAID;
- redeliveries: a line already sent is sent again, byte for byte (same event_id), in a later batch and a
  few times within the same batch;
- late corrections: signed ``correction`` events whose event_time lies before the batch window;
- malformed rows of every quarantine reason, in turn, at ``malformed_share`` of the lines.

Plain Python (no numpy here), about 3 µs an event. The same config always gives the same bytes: batch
``i`` depends on the batches before it (open balances, redelivery pool), so writing batch ``i`` alone
replays ``0 .. i-1`` in memory first and writes nothing for them.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dataplatform.reconciliation.manifests import MANIFEST_NAME, as_utc, format_utc
from spark_jobs.common.storage import Storage, join

EVENT_FIELDS = ("event_id", "artifact_key", "entity", "event_type", "amount", "currency", "event_time")
ENTITIES = ("AMZN_US", "AMZN_UK", "AMZN_DE", "AMZN_JP", "AMZN_FR", "AUDIBLE_US", "AWS_US", "AWS_EU")
CURRENCIES = ("USD", "USD", "USD", "EUR", "GBP", "JPY", "CAD")  # USD twice: most keys are in dollars
INFORMATIONAL_TYPES = ("payable", "royalty", "amortization")  # do not move the balance
MALFORMED_KINDS = (
    "not_json",
    *(f"missing_{name}" for name in EVENT_FIELDS),
    "unknown_event_type",
    "amount_not_integer",
    "negative_amount",
    "bad_currency",
    "bad_event_time",
)
# Values no reasonable parser accepts, so every consumer agrees these rows are bad.
_BAD_CURRENCIES = ("usd", "US", "DOLLAR", "U$D")
_BAD_TIMES = ("not-a-time", "2024-13-45T99:99:99.000Z", 1709632992)
_UNKNOWN_TYPES = ("refund", "chargeback", "adjustment")


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 7
    n_keys: int = 1_000
    events_per_batch: int = 1_000  # lines per batch, malformed and redelivered ones included
    files_per_batch: int = 2
    zipf_exponent: float = 1.1
    malformed_share: float = 0.01
    redelivery_share: float = 0.02
    same_batch_redelivery_share: float = 0.25  # of the redeliveries
    redelivery_lookback_batches: int = 3  # stays well inside the dedup horizon
    correction_share: float = 0.03
    settle_share: float = 0.1  # lines that pay off a random open key (so cold keys get paid too)
    overpay_share: float = 0.15  # of the remittances
    max_correction_lateness_minutes: int = 48 * 60

    def __post_init__(self) -> None:
        for name in ("n_keys", "files_per_batch", "redelivery_lookback_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"GeneratorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.events_per_batch < 0:
            raise ValueError(f"GeneratorConfig.events_per_batch must be >= 0, got {self.events_per_batch}")
        shares = ("malformed_share", "redelivery_share", "correction_share", "settle_share")
        for name in (*shares, "same_batch_redelivery_share", "overpay_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"GeneratorConfig.{name} must be within [0, 1], got {getattr(self, name)}")
        if self.malformed_share + self.redelivery_share + self.settle_share > 1:
            raise ValueError("GeneratorConfig: malformed + redelivery + settle shares exceed 1")


@dataclass
class GeneratedBatch:
    """One batch's lines (without newlines) and what went into them."""

    index: int
    batch_id: str
    window_start: datetime
    window_end: datetime
    lines: list[str]
    malformed: dict[str, int] = field(default_factory=dict)  # intended quarantine reason -> rows
    redelivered: int = 0


def batch_id_for(window_start: datetime) -> str:
    return as_utc(window_start).strftime("%Y%m%dT%H%M")


def iter_batches(
    config: GeneratorConfig | None = None,
    *,
    batches: int,
    start: datetime,
    batch_minutes: int = 10,
    first_index: int = 0,
) -> Iterator[GeneratedBatch]:
    """Batches ``first_index .. first_index + batches - 1`` of the series whose batch 0 starts at
    ``start``; batch ``i`` covers ``[start + i * batch_minutes, start + (i + 1) * batch_minutes)``."""
    if batches < 0 or first_index < 0 or batch_minutes < 1:
        raise ValueError(f"bad series: batches={batches} first_index={first_index} minutes={batch_minutes}")
    generator = _EventGenerator(config or GeneratorConfig())
    start = as_utc(start)
    for index in range(first_index + batches):
        window_start = start + timedelta(minutes=batch_minutes * index)
        batch = generator.next_batch(index, window_start, window_start + timedelta(minutes=batch_minutes))
        if index >= first_index:
            yield batch


def generate_batches(
    config: GeneratorConfig | None = None,
    *,
    batches: int,
    start: datetime,
    batch_minutes: int = 10,
    first_index: int = 0,
) -> list[GeneratedBatch]:
    """``iter_batches`` as a list: the raw lines of every batch, e.g. for an independent oracle."""
    return list(
        iter_batches(
            config, batches=batches, start=start, batch_minutes=batch_minutes, first_index=first_index
        )
    )


def write_batches(
    storage: Storage,
    landing_uri: str,
    config: GeneratorConfig | None = None,
    *,
    batches: int,
    start: datetime,
    batch_minutes: int = 10,
    first_index: int = 0,
) -> list[dict[str, Any]]:
    """Write batches ``first_index ..`` of the series to ``landing_uri`` (earlier ones are replayed in
    memory, not rewritten) and return their manifests. Batches are streamed: one in memory at a time."""
    config = config or GeneratorConfig()
    return [
        write_batch(storage, landing_uri, batch, config.files_per_batch)
        for batch in iter_batches(
            config, batches=batches, start=start, batch_minutes=batch_minutes, first_index=first_index
        )
    ]


def write_batch(storage: Storage, landing_uri: str, batch: GeneratedBatch, files: int = 2) -> dict[str, Any]:
    """The part files, then ``_manifest.json`` (last: its presence says the batch is complete)."""
    digest = hashlib.sha256()
    names = []
    for number, chunk in enumerate(_split(batch.lines, files)):
        data = "".join(line + "\n" for line in chunk).encode()
        name = f"part-{number:05d}.jsonl"
        storage.write_bytes(join(landing_uri, batch.batch_id, name), data)
        digest.update(data)
        names.append(name)
    manifest = {
        "batch_id": batch.batch_id,
        "window_start": format_utc(batch.window_start),
        "window_end": format_utc(batch.window_end),
        "rows": len(batch.lines),
        "files": names,
        "sha256": digest.hexdigest(),
    }
    storage.write_json(join(landing_uri, batch.batch_id, MANIFEST_NAME), manifest)
    return manifest


def _split(lines: list[str], parts: int) -> list[list[str]]:
    """``parts`` contiguous chunks of near-equal size (at least one chunk, possibly empty)."""
    parts = max(1, min(parts, len(lines)))
    size, extra = divmod(len(lines), parts)
    chunks, begin = [], 0
    for number in range(parts):
        end = begin + size + (1 if number < extra else 0)
        chunks.append(lines[begin:end])
        begin = end
    return chunks


def _format_ms(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


class _EventGenerator:
    """The series' state: open balance per key, keys waiting to be paid, recent lines to redeliver."""

    def __init__(self, config: GeneratorConfig):
        self.config = config
        keys_rng = random.Random(f"keys:{config.seed}")
        n = config.n_keys
        self.keys = [f"ORD-{i:07d}" for i in range(n)]
        self.entity = [keys_rng.choice(ENTITIES) for _ in range(n)]
        self.currency = [keys_rng.choice(CURRENCIES) for _ in range(n)]
        # A line is assembled from pieces fixed per key (the hot loop only joins strings). Every value is
        # plain ASCII without quotes or backslashes, so no JSON escaping is needed.
        self.line_middle = [
            f'", "artifact_key": "{key}", "entity": "{entity}", "event_type": "'
            for key, entity in zip(self.keys, self.entity, strict=True)
        ]
        self.line_currency = [f', "currency": "{currency}", "event_time": "' for currency in self.currency]
        # Zipf: key i has weight 1 / (i + 1) ** s; bisect over the cumulative weights picks a key.
        self.cumulative = list(
            itertools.accumulate(1.0 / (rank**config.zipf_exponent) for rank in range(1, n + 1))
        )
        self.outstanding = [0] * n  # receivable - remittance + correction of the events sent so far
        self.open_keys: list[int] = []  # keys with outstanding > 0 (some may be paid since: re-checked)
        self.is_listed_open = [False] * n
        self.recent: deque[list[str]] = deque(maxlen=config.redelivery_lookback_batches)
        self.rng = random.Random(config.seed)
        self.malformed_count = 0

    def next_batch(self, index: int, window_start: datetime, window_end: datetime) -> GeneratedBatch:
        config, random_ = self.config, self.rng.random
        outstanding, cumulative = self.outstanding, self.cumulative
        total_weight, last_key = self.cumulative[-1], config.n_keys - 1
        window_ms = int((window_end - window_start).total_seconds() * 1000)
        # "2024-03-05T10:03:12." per second of the window, then "123Z": no datetime work per event.
        second_prefix = [
            (window_start + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S.")
            for s in range(window_ms // 1000 + 1)
        ]
        pool = [line for earlier in self.recent for line in earlier]
        sent: list[str] = []  # valid first deliveries of this batch
        lines: list[str] = []
        malformed: dict[str, int] = {}
        redelivered = 0
        malformed_cut = config.malformed_share
        redelivery_cut = malformed_cut + config.redelivery_share
        settle_cut = redelivery_cut + config.settle_share
        id_prefix = f"e-{config.seed}-{index}-"
        for number in range(config.events_per_batch):
            event_id = f"{id_prefix}{number}"
            draw = random_()
            if draw < malformed_cut:
                kind, line = self._malformed(event_id, window_start)
                malformed[kind] = malformed.get(kind, 0) + 1
                lines.append(line)
                continue
            if draw < redelivery_cut and (pool or sent):
                use_same = sent and (not pool or random_() < config.same_batch_redelivery_share)
                source = sent if use_same else pool
                lines.append(source[int(random_() * len(source))])
                redelivered += 1
                continue
            key = self._pop_open_key() if draw < settle_cut else None
            if key is not None:
                event_type, amount = "remittance", self._remittance_amount(key)
            else:
                key = min(bisect.bisect_left(cumulative, random_() * total_weight), last_key)
                if random_() < config.correction_share:
                    line = self._late_correction(event_id, key, window_start)
                    sent.append(line)
                    lines.append(line)
                    continue
                owed, choice = outstanding[key], random_()
                if owed > 0 and choice < 0.5:
                    event_type, amount = "remittance", self._remittance_amount(key)
                elif choice < (0.7 if owed > 0 else 0.25):
                    event_type = INFORMATIONAL_TYPES[int(random_() * 3)]
                    amount = 100 + int(random_() * 50_000)
                else:
                    event_type, amount = "receivable", 100 + int(random_() * 500_000)
                    self._owe(key, amount)
            offset = int(random_() * window_ms)
            line = (
                f'{{"event_id": "{event_id}{self.line_middle[key]}{event_type}", "amount": {amount}'
                f'{self.line_currency[key]}{second_prefix[offset // 1000]}{offset % 1000:03d}Z"}}'
            )
            sent.append(line)
            lines.append(line)
        self.recent.append(sent)
        return GeneratedBatch(
            index=index,
            batch_id=batch_id_for(window_start),
            window_start=window_start,
            window_end=window_end,
            lines=lines,
            malformed=malformed,
            redelivered=redelivered,
        )

    # -- valid events ----------------------------------------------------------------------------------

    def _remittance_amount(self, key: int) -> int:
        """The open amount exactly, or (``overpay_share``) a bit more; the key's balance follows."""
        amount = self.outstanding[key]
        if self.rng.random() < self.config.overpay_share:
            amount += 1 + int(self.rng.random() * max(1, amount // 5))
        self._owe(key, -amount)
        return amount

    def _late_correction(self, event_id: str, key: int, window_start: datetime) -> str:
        random_ = self.rng.random
        owed = self.outstanding[key]
        # Half write the open amount off exactly (the key reconciles); the rest adjust either way.
        amount = -owed if owed > 0 and random_() < 0.5 else int(random_() * 20_001) - 10_000
        lateness_ms = 1 + int(random_() * self.config.max_correction_lateness_minutes * 60_000)
        self._owe(key, amount)
        event_time = _format_ms(window_start - timedelta(milliseconds=lateness_ms))
        return (
            f'{{"event_id": "{event_id}{self.line_middle[key]}correction", "amount": {amount}'
            f'{self.line_currency[key]}{event_time}"}}'
        )

    def _owe(self, key: int, amount: int) -> None:
        self.outstanding[key] += amount
        if self.outstanding[key] > 0 and not self.is_listed_open[key]:
            self.is_listed_open[key] = True
            self.open_keys.append(key)

    def _pop_open_key(self) -> int | None:
        """A random key that still has an open balance, or None (O(1): swap with the last, pop)."""
        open_keys = self.open_keys
        while open_keys:
            at = int(self.rng.random() * len(open_keys))
            open_keys[at], open_keys[-1] = open_keys[-1], open_keys[at]
            key = open_keys.pop()
            self.is_listed_open[key] = False
            if self.outstanding[key] > 0:
                return key
        return None

    # -- malformed rows --------------------------------------------------------------------------------

    def _malformed(self, event_id: str, window_start: datetime) -> tuple[str, str]:
        """One bad row of the next kind in turn, so every quarantine reason shows up; balances unchanged."""
        kind = MALFORMED_KINDS[self.malformed_count % len(MALFORMED_KINDS)]
        self.malformed_count += 1
        rng = self.rng
        key = int(rng.random() * self.config.n_keys)
        event: dict[str, Any] = {
            "event_id": event_id,
            "artifact_key": self.keys[key],
            "entity": self.entity[key],
            "event_type": "receivable",
            "amount": 100 + int(rng.random() * 10_000),
            "currency": self.currency[key],
            "event_time": _format_ms(window_start + timedelta(milliseconds=int(rng.random() * 60_000))),
        }
        variant = int(rng.random() * 3)
        if kind == "not_json":
            text = json.dumps(event)
            return kind, (text[: len(text) // 2] if variant else f"this is not json ({event_id})")
        if kind.startswith("missing_"):
            del event[kind.removeprefix("missing_")]
        elif kind == "unknown_event_type":
            event["event_type"] = _UNKNOWN_TYPES[variant]
        elif kind == "amount_not_integer":
            event["amount"] = event["amount"] + 0.25 + variant * 0.25
        elif kind == "negative_amount":
            event["amount"] = -event["amount"]
            event["event_type"] = ("receivable", "remittance", "royalty")[variant]
        elif kind == "bad_currency":
            event["currency"] = _BAD_CURRENCIES[variant]
        elif kind == "bad_event_time":
            event["event_time"] = _BAD_TIMES[variant]
        return kind, json.dumps(event)
