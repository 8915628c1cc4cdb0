"""Whether one stored object (any version of it) holds a subject, read straight from S3, whatever any
table's metadata says about it:

- a Parquet data file: its footer first (one ranged GET of the tail); when the footer's min/max
  statistics of the subject columns exclude every subject id, nothing more is read; otherwise only the
  subject columns' chunks are read, and their rows matched;
- an Iceberg manifest (Avro): every entry, DELETED ones included, whose lower or upper bound of a subject
  column is a subject id (the id in clear);
- a manifest list: partition summaries of identity partitions on a subject column;
- anything else (metadata JSON, statistics files): the id's UTF-8 bytes anywhere in the object.

Subject columns are matched in a Parquet file by Iceberg field id when the file carries field ids, by name
otherwise (files registered with ``add_files``, Hudi). ``ReadCounter`` counts what was read, for the
reports. Used by the erasure's sweep of the copies the metadata no longer reaches (``unreachable``) and by
the independent verification (``verify``). Nothing here changes anything.
"""

from __future__ import annotations

import bisect
import io
import threading
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.avro.file import AvroFile
from pyiceberg.conversions import from_bytes
from pyiceberg.manifest import (
    DEFAULT_READ_VERSION,
    MANIFEST_ENTRY_SCHEMAS,
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestEntry,
    ManifestEntryStatus,
    read_manifest_list,
)
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import StringType

from dataplatform.gdpr.iceberg_erasure import BufferInputFile, SubjectFilter
from dataplatform.s3.objects import ObjectVersion

# The tail fetched first: a footer larger than this costs one more GET.
FOOTER_READ = 64 * 1024
FIELD_ID = b"PARQUET:field_id"


@dataclass
class ReadCounter:
    """Objects (versions) read and bytes fetched, thread-safe."""

    objects: int = 0
    bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, objects: int = 0, n_bytes: int = 0) -> None:
        with self._lock:
            self.objects += objects
            self.bytes += n_bytes


def get_bytes(s3: Any, version: ObjectVersion, counter: ReadCounter, byte_range: str | None = None) -> bytes:
    kwargs: dict[str, Any] = {"Bucket": version.bucket, "Key": version.key}
    if version.version_id:
        kwargs["VersionId"] = version.version_id
    if byte_range:
        kwargs["Range"] = byte_range
    body = s3.get_object(**kwargs)["Body"].read()
    counter.add(n_bytes=len(body))
    return body


class RangedObject(io.RawIOBase):
    """One object version as a seekable file that fetches only the ranges read: the tail once (where a
    Parquet footer is), then whatever the reader asks for."""

    def __init__(self, s3: Any, version: ObjectVersion, counter: ReadCounter):
        super().__init__()
        self.s3, self.version, self.counter = s3, version, counter
        self.size, self.position = version.size, 0
        self.tail_start = max(0, self.size - FOOTER_READ)
        self.tail = get_bytes(s3, version, counter, f"bytes={self.tail_start}-") if self.size else b""
        counter.add(objects=1)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        end = min(self.size, self.position + len(buffer))
        if end <= self.position:
            return 0
        if self.position >= self.tail_start:
            data = self.tail[self.position - self.tail_start : end - self.tail_start]
        else:
            data = get_bytes(self.s3, self.version, self.counter, f"bytes={self.position}-{end - 1}")
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def by_column_name(columns: list[str], subject_ids: list[str]) -> SubjectFilter:
    """Subjects as strings in columns found by name: for tables without Iceberg metadata (Hudi)."""
    return SubjectFilter(
        tuple(columns),
        {column: {subject_id: subject_id for subject_id in subject_ids} for column in columns},
        {},
        dict.fromkeys(columns, StringType()),
    )


# -- Parquet data files -------------------------------------------------------------------------------------


def subject_columns_in(schema: pa.Schema, subjects: SubjectFilter) -> dict[str, str]:
    """Subject column -> its name in the file: by field id when the file has field ids, else by name."""
    ids = {int(f.metadata[FIELD_ID]): f.name for f in schema if f.metadata and FIELD_ID in f.metadata}
    found = {}
    for column in subjects.columns:
        field_id = subjects.field_ids.get(column)
        if ids and field_id is not None:
            if field_id in ids:
                found[column] = ids[field_id]
        elif column in schema.names:
            found[column] = column
    return found


def footer_may_hold(metadata: pq.FileMetaData, names: dict[str, str], subjects: SubjectFilter) -> bool:
    """Whether any row group's min/max of a subject column leaves room for a subject id (no statistics:
    yes)."""
    index = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for column, name in names.items():
            if name not in index:
                return True
            stats = row_group.column(index[name]).statistics
            if stats is None or not stats.has_min_max:
                return True
            low, high = stats.min, stats.max
            if isinstance(low, bytes) and isinstance(high, bytes):
                low, high = low.decode("utf-8", "replace"), high.decode("utf-8", "replace")
            ids = subjects.sorted_values[column]
            try:
                at = bisect.bisect_left(ids, low)
                if at < len(ids) and ids[at] <= high:
                    return True
            except TypeError:  # statistics of another type than the ids: read the column
                return True
    return False


def parquet_subject_rows(
    s3: Any, version: ObjectVersion, subjects: SubjectFilter, counter: ReadCounter
) -> int:
    """Rows of the subjects in one Parquet object version (0 without reading the columns when the
    footer's statistics exclude them). Raises when the object is not a readable Parquet file."""
    parquet = pq.ParquetFile(RangedObject(s3, version, counter))
    names = subject_columns_in(parquet.schema_arrow, subjects)
    if not names or not footer_may_hold(parquet.metadata, names, subjects):
        return 0
    rows = parquet.read(columns=sorted(set(names.values())))
    mask = None
    for column, name in names.items():
        values = rows[name]
        wanted = pa.array(list(subjects.values[column])).cast(values.type)
        matched = pc.fill_null(pc.is_in(values, value_set=wanted), False)
        mask = matched if mask is None else pc.or_(mask, matched)
    return int(pc.sum(mask).as_py() or 0)


# -- Iceberg metadata ---------------------------------------------------------------------------------------


def bound_names_subject(subjects: SubjectFilter, column: str, bound: bytes | None) -> bool:
    if bound is None:
        return False
    try:
        value = from_bytes(subjects.field_types[column], bound)
    except (ValueError, TypeError, UnicodeDecodeError):
        return False
    return value in subjects.values[column]


def manifest_entries_naming_subjects(location: str, content: bytes, subjects: SubjectFilter) -> int:
    """Entries of a manifest (DELETED ones included) whose lower or upper bound of a subject column is
    a subject id."""
    by_id = {field_id: column for column, field_id in subjects.field_ids.items()}
    holding = 0
    with AvroFile[ManifestEntry](
        BufferInputFile(location, content),
        MANIFEST_ENTRY_SCHEMAS[DEFAULT_READ_VERSION],
        read_types={-1: ManifestEntry, 2: DataFile},
        read_enums={0: ManifestEntryStatus, 101: FileFormat, 134: DataFileContent},
    ) as reader:
        for entry in reader:
            data_file = entry.data_file
            bounds = [data_file.lower_bounds or {}, data_file.upper_bounds or {}]
            if any(
                bound_names_subject(subjects, column, side.get(field_id))
                for field_id, column in by_id.items()
                for side in bounds
            ):
                holding += 1
    return holding


def manifest_list_naming_subjects(
    location: str, content: bytes, subjects: SubjectFilter, specs: dict[int, PartitionSpec]
) -> int:
    """Partition summaries in a manifest list whose bounds are a subject id (identity partitions on a
    subject column only: other transforms do not keep the id)."""
    by_source = {field_id: column for column, field_id in subjects.field_ids.items()}
    holding = 0
    for manifest in read_manifest_list(BufferInputFile(location, content)):
        spec = specs.get(manifest.partition_spec_id)
        if spec is None or not manifest.partitions:
            continue
        for spec_field, summary in zip(spec.fields, manifest.partitions, strict=False):
            column = by_source.get(spec_field.source_id)
            if column is None or not isinstance(spec_field.transform, IdentityTransform):
                continue
            if bound_names_subject(subjects, column, summary.lower_bound) or bound_names_subject(
                subjects, column, summary.upper_bound
            ):
                holding += 1
    return holding


def bytes_naming_subjects(content: bytes, subjects: SubjectFilter) -> int:
    """How many of the subject ids appear, as UTF-8, anywhere in ``content`` (metadata JSON, statistics
    files). Integer ids are not looked for this way: any number would match."""
    ids = {
        raw for values in subjects.values.values() for value, raw in values.items() if isinstance(value, str)
    }
    return sum(1 for raw in ids if raw.encode("utf-8") in content)


# -- any object ---------------------------------------------------------------------------------------------

DATA, MANIFEST, MANIFEST_LIST, METADATA, OTHER = "data", "manifest", "manifest_list", "metadata", "other"


def kind_of(key: str) -> str:
    """What an object under a table location is, by its name (Iceberg's and Hudi's naming)."""
    name = key.rsplit("/", 1)[-1]
    if name.endswith(".parquet"):
        return DATA
    if name.endswith(".avro"):
        return MANIFEST_LIST if name.startswith("snap-") else MANIFEST
    if name.endswith((".json", ".puffin", ".stats")):
        return METADATA
    return OTHER


def subject_hits(
    s3: Any,
    version: ObjectVersion,
    subjects: SubjectFilter,
    counter: ReadCounter,
    specs: dict[int, PartitionSpec] | None = None,
) -> int:
    """Rows (data files) or entries (metadata) of one object version that hold a subject; objects of
    kind ``other`` are not read (0). Raises when the object cannot be decoded as its kind."""
    kind = kind_of(version.key)
    if kind == DATA:
        return parquet_subject_rows(s3, version, subjects, counter)
    if kind == OTHER:
        return 0
    content = get_bytes(s3, version, counter)
    counter.add(objects=1)
    if kind == MANIFEST:
        return manifest_entries_naming_subjects(version.uri, content, subjects)
    if kind == MANIFEST_LIST:
        return manifest_list_naming_subjects(version.uri, content, subjects, specs or {})
    return bytes_naming_subjects(content, subjects)
