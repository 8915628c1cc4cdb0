"""moto's S3 listing made proportional to what it lists, in the local endpoint, answers unchanged.

moto (5.2) answers ListObjects(V2) by walking every key of the bucket (a copy of its dict, each key's
newest version looked up) and keeping those under the prefix. A listing therefore costs O(bucket): about
50 ms of the server's CPU per call in a bucket of 20,000 objects, so the 422 listings of a 10,000-partition
table take 20 s on moto where S3 answers each in tens of milliseconds whatever the bucket holds. Here the
bucket's key names are kept sorted (rebuilt only after a name is added or removed, which listings never
do) and a listing walks just the names under its prefix; everything after that walk is moto's own code.
``tests/unit/test_moto_s3.py`` compares the answers with moto's own on the same calls.
"""

from __future__ import annotations

import bisect
import threading


def speed_up_s3_listing(set_attribute=setattr) -> None:
    """Patch moto's key store and ``list_objects`` (``set_attribute``: how, e.g. a test's monkeypatch)."""
    from moto.s3 import models
    from moto.s3.exceptions import MethodNotAllowed
    from moto.s3.models import FakeDeleteMarker, FakeTableStorageBucket
    from moto.s3.utils import _VersionedKeyStore

    lock = threading.Lock()
    store_setitem, store_setlist, store_pop = (
        _VersionedKeyStore.__setitem__,
        _VersionedKeyStore.setlist,
        _VersionedKeyStore.pop,
    )

    def names_changed(store) -> None:
        # After the change and under the lock that a rebuild holds: a rebuild that read the names before
        # the change has stored its list by now and is discarded here; one after it sees the change.
        with lock:
            store.__dict__["_sorted_names"] = None

    def setitem(self, key, value):
        new_name = not dict.__contains__(self, key)
        result = store_setitem(self, key, value)
        if new_name:
            names_changed(self)
        return result

    def setlist(self, key, list_):
        new_name = not dict.__contains__(self, key)
        result = store_setlist(self, key, list_)
        if new_name:
            names_changed(self)
        return result

    def pop(self, key):
        try:
            return store_pop(self, key)
        finally:
            names_changed(self)

    def delitem(self, key):
        try:
            return dict.__delitem__(self, key)
        finally:
            names_changed(self)

    def sorted_names(store) -> list[str]:
        names = store.__dict__.get("_sorted_names")
        if names is None:
            with lock:
                names = sorted(dict.keys(store))
                store.__dict__["_sorted_names"] = names
        return names

    def under(store, prefix: str):
        """(name, newest version) of every key starting with ``prefix``, in name order."""
        names = sorted_names(store)
        for position in range(bisect.bisect_left(names, prefix), len(names)):
            name = names[position]
            if not name.startswith(prefix):
                return
            versions = dict.get(store, name)
            if versions:
                yield name, versions[-1]

    def list_objects(self, bucket, prefix, delimiter, marker, max_keys):
        if isinstance(bucket, FakeTableStorageBucket):
            raise MethodNotAllowed()
        key_results = set()
        folder_results = set()
        # From here to the end, moto's own list_objects, walking ``under(prefix)`` instead of every key.
        for key_name, key in under(bucket.keys, prefix or ""):
            key_without_prefix = key_name.replace(prefix, "", 1) if prefix else key_name
            if delimiter and delimiter in key_without_prefix:
                key_without_delimiter = key_without_prefix.split(delimiter)[0]
                folder_results.add(f"{prefix or ''}{key_without_delimiter}{delimiter}")
            else:
                key_results.add(key)
        key_results = filter(lambda key: not isinstance(key, FakeDeleteMarker), key_results)
        key_results = sorted(key_results, key=lambda key: key.name)
        folder_results = sorted(folder_results)
        if marker:
            limit = self._pagination_tokens.get(marker) or marker
            key_results = self._get_results_from_token(key_results, limit)
        if max_keys is not None:
            key_results, is_truncated, next_marker = self._truncate_result(key_results, max_keys)
        else:
            is_truncated = False
            next_marker = None
        return key_results, folder_results, is_truncated, next_marker

    set_attribute(_VersionedKeyStore, "__setitem__", setitem)
    set_attribute(_VersionedKeyStore, "setlist", setlist)
    set_attribute(_VersionedKeyStore, "pop", pop)
    set_attribute(_VersionedKeyStore, "__delitem__", delitem)
    set_attribute(models.S3Backend, "list_objects", list_objects)
