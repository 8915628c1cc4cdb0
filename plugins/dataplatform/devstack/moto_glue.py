"""Glue's optimistic concurrency on UpdateTable, which moto (5.2) does not check, in the local endpoint.

Iceberg's Glue catalogs (pyiceberg's and Iceberg Java's) commit by ``UpdateTable`` with the ``VersionId``
of the table they read: Glue refuses the update with ``ConcurrentModificationException`` when the table
moved to another version since, and the writer retries on fresh metadata. moto ignores ``VersionId``, so
two commits that race both succeed and the second silently drops the first (a lost update: Iceberg logs
"Failed to load committed snapshot"; found when Spark's ``rewrite_data_files`` committed two file groups
at once and one group's rewrite vanished). Here an update naming a version other than the current one is
refused as Glue refuses it; the check and the update are one step under a lock. Updates without
``VersionId`` are applied as before.
"""

from __future__ import annotations

import threading


def check_table_versions(set_attribute=setattr) -> None:
    """Patch moto's ``GlueResponse.update_table`` (``set_attribute``: how, e.g. a test's monkeypatch)."""
    from moto.core.responses import EmptyResult
    from moto.glue.exceptions import GlueClientError
    from moto.glue.responses import GlueResponse

    lock = threading.Lock()

    class ConcurrentModificationException(GlueClientError):
        def __init__(self, message: str):
            super().__init__("ConcurrentModificationException", message)

    def update_table(self):
        database_name = self.parameters.get("DatabaseName")
        table_input = self.parameters.get("TableInput")
        table_name = table_input.get("Name")
        expected = self.parameters.get("VersionId")
        with lock:
            if expected is not None:
                current = self.glue_backend.get_table(database_name, table_name).as_dict()["VersionId"]
                if str(expected) != str(current):
                    raise ConcurrentModificationException(
                        f"Update table failed due to concurrent modifications: table {database_name}."
                        f"{table_name} is at version {current}, not {expected}"
                    )
            self.glue_backend.update_table(database_name, table_name, table_input)
        return EmptyResult()

    set_attribute(GlueResponse, "update_table", update_table)
