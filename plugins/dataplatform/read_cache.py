"""Values read from what cannot change under its key (an Iceberg metadata file by its location, an S3
object by its ETag), kept by a long-lived reader such as the lake-health page's process, so that a reload
reads only what changed. Bounded (the oldest entries go first) and shared safely between threads."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any


class ReadCache:
    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self._values: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            return self._values.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            while len(self._values) >= self.max_entries:
                self._values.pop(next(iter(self._values)))
            self._values[key] = value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
