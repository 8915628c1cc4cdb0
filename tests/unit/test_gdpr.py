"""Pure parts of GDPR erasure: subject id checks and HMACs, the subject filter, the dataset config, and
the DAG's param checks."""

from __future__ import annotations

import pyarrow as pa
import pytest
from airflow.sdk.exceptions import AirflowFailException
from pydantic import ValidationError
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, LongType, NestedField, StringType

from dataplatform.config import GdprDataset, GdprSettings, settings
from dataplatform.gdpr.iceberg_erasure import ErasureError, SubjectFilter
from dataplatform.gdpr.subjects import SubjectIdError, check_subject_id, subject_hmac
from dataplatform.operators.gdpr import check_datasets, check_subject_ids, manual_request_id

pytestmark = pytest.mark.unit

PATTERN = "^cust-[0-9]{6}$"


def test_a_subject_id_of_the_wrong_format_is_refused_without_repeating_it():
    assert check_subject_id("cust-000001", PATTERN) == "cust-000001"
    for bad in ("jane.doe@example.com", "cust-1", "cust-000001\n", ""):
        with pytest.raises(SubjectIdError) as refused:
            check_subject_id(bad, PATTERN)
        assert bad.strip() == "" or bad.strip() not in str(refused.value)
    with pytest.raises(SubjectIdError, match="must be a string"):
        check_subject_id(42, PATTERN)


def test_the_hmac_is_stable_keyed_and_hides_the_id():
    one = subject_hmac(b"key-1", "cust-000001")
    assert one == subject_hmac(b"key-1", "cust-000001")
    assert one != subject_hmac(b"key-2", "cust-000001") != subject_hmac(b"key-1", "cust-000002")
    assert one.startswith("hmac-sha256:") and len(one) == len("hmac-sha256:") + 64
    assert "000001" not in one
    with pytest.raises(ValueError, match="empty"):
        subject_hmac(b"", "cust-000001")


SCHEMA = Schema(
    NestedField(1, "payer_id", StringType(), required=False),
    NestedField(2, "payee_id", StringType(), required=False),
    NestedField(3, "account", LongType(), required=False),
    NestedField(4, "amount", DoubleType(), required=False),
)


def test_the_filter_matches_rows_naming_a_subject_in_any_column_and_counts_each_subject():
    flt = SubjectFilter.build(SCHEMA, ["payer_id", "payee_id"], ["cust-000001", "cust-000002"])
    rows = pa.table(
        {
            "payer_id": ["cust-000001", "cust-000003", None, "cust-000002", "cust-000004"],
            "payee_id": ["cust-000009", "cust-000001", "cust-000002", "cust-000001", None],
        }
    )

    assert flt.mask(rows).to_pylist() == [True, True, True, True, False]
    # The fourth row names both subjects: it counts for each.
    assert flt.rows_per_subject(rows.filter(flt.mask(rows))) == {"cust-000001": 3, "cust-000002": 2}
    assert str(flt.expression).startswith("Or(")


def test_the_filter_converts_ids_to_the_column_type_and_refuses_what_cannot_hold_them():
    assert SubjectFilter.build(SCHEMA, ["account"], ["42"]).values == {"account": {42: "42"}}
    with pytest.raises(ErasureError, match="not an integer"):
        SubjectFilter.build(SCHEMA, ["account"], ["cust-000001"])
    with pytest.raises(ErasureError, match="type DoubleType"):
        SubjectFilter.build(SCHEMA, ["amount"], ["1"])
    with pytest.raises(ErasureError, match="'email' is not in the table's schema"):
        SubjectFilter.build(SCHEMA, ["email"], ["cust-000001"])


HUDI = {
    "format": "hudi",
    "database": "lake",
    "table": "app_logs",
    "location": "s3://lake/hudi/app_logs/",
    "subject_columns": ["user_id"],
    "partition_column": "log_date",
    "record_key": "log_id",
    "precombine_field": "event_ts",
    "engine": "spark",
}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"engine": "pyiceberg"}, "needs engine 'spark'"),
        ({"record_key": None}, "needs record_key"),
        ({"partition_column": None, "precombine_field": None}, "needs precombine_field, partition_column"),
        ({"format": "iceberg"}, "location, record_key, precombine_field: hudi datasets only"),
        ({"subject_columns": []}, "at least 1 item"),
        ({"subject_columns": ["User-Id"]}, "lower-case identifiers"),
        ({"table": "App Logs"}, "lower-case Glue identifier"),
        ({"pinned_refs": "ignore"}, "'fail' or 'drop'"),
    ],
)
def test_a_bad_dataset_is_refused_at_load_naming_what_is_wrong(overrides, message):
    GdprDataset.model_validate(HUDI)
    with pytest.raises(ValidationError, match=message):
        GdprDataset.model_validate({**HUDI, **overrides})


def test_the_subject_id_pattern_must_be_an_anchored_regex():
    base = {"work_uri": "s3://b/gdpr/", "datasets": {"logs": HUDI}}
    assert GdprSettings.model_validate(base).subject_id_pattern.startswith("^")
    with pytest.raises(ValidationError, match="anchored"):
        GdprSettings.model_validate({**base, "subject_id_pattern": "cust-[0-9]+"})
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        GdprSettings.model_validate({**base, "subject_id_pattern": "^(cust$"})
    with pytest.raises(ValidationError, match="must be an s3:// URI"):
        GdprSettings.model_validate({**base, "work_uri": "file:///tmp/gdpr/"})


def test_params_are_checked_before_anything_is_submitted():
    config = settings().gdpr
    assert check_datasets([], config) == list(config.datasets)
    assert check_datasets("payments", config) == ["payments"]
    with pytest.raises(AirflowFailException, match=r"unknown dataset\(s\) \['nope'\]"):
        check_datasets(["payments", "nope"], config)
    assert check_subject_ids(["cust-000001", "cust-000001"], config) == ["cust-000001"]
    with pytest.raises(AirflowFailException, match="#1: subject id of 4 characters") as refused:
        check_subject_ids(["cust-000001", "jane"], config)
    assert "jane" not in str(refused.value)
    with pytest.raises(AirflowFailException, match="must be a list"):
        check_subject_ids("cust-000001", config)


def test_requests_from_the_trigger_form_are_named_after_the_run():
    assert (
        manual_request_id("manual__2024-05-01T12:00:00+00:00", 3) == "manual__2024-05-01T12:00:00-00:00-0003"
    )


def test_a_file_is_read_only_when_its_bounds_leave_room_for_a_subject():
    from pyiceberg.conversions import to_bytes
    from pyiceberg.manifest import DataFile

    flt = SubjectFilter.build(SCHEMA, ["payer_id", "payee_id"], ["cust-000100", "cust-000777"])

    def data_file(payer: tuple[str, str] | None, payee: tuple[str, str]) -> DataFile:
        lower, upper = {2: to_bytes(StringType(), payee[0])}, {2: to_bytes(StringType(), payee[1])}
        if payer:
            lower[1], upper[1] = to_bytes(StringType(), payer[0]), to_bytes(StringType(), payer[1])
        return DataFile.from_args(lower_bounds=lower, upper_bounds=upper)

    nobody = ("cust-000000", "cust-000099")
    assert not flt.may_hold(data_file(nobody, nobody))
    assert flt.may_hold(data_file(("cust-000050", "cust-000150"), nobody))
    assert flt.may_hold(data_file(("cust-000100", "cust-000100"), nobody))
    # The other subject column's bounds admit cust-000777.
    assert flt.may_hold(data_file(nobody, ("cust-000700", "cust-000800")))
    # No statistics for a subject column: the file must be read.
    assert flt.may_hold(data_file(None, nobody))
    assert SubjectFilter.build(SCHEMA, ["account"], ["5"]).may_hold(
        DataFile.from_args(lower_bounds={}, upper_bounds={})
    )


# -- what a stored object is, and whether its Parquet footer can hold a subject -------------------------


def test_objects_under_a_table_location_are_told_apart_by_name():
    from dataplatform.gdpr.subject_files import DATA, MANIFEST, MANIFEST_LIST, METADATA, OTHER, kind_of

    assert kind_of("t/data/country=de/00000-0-abc.parquet") == DATA
    assert kind_of("t/metadata/abc-m0.avro") == MANIFEST
    assert kind_of("t/metadata/snap-123-1-abc.avro") == MANIFEST_LIST
    assert kind_of("t/metadata/00003-abc.metadata.json") == METADATA
    assert kind_of("t/metadata/123-abc.stats") == METADATA
    assert kind_of("t/.hoodie/20240305100000000.commit") == OTHER


def parquet_metadata(table: pa.Table, **options):
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return pq.ParquetFile(io.BytesIO(sink.getvalue()))


@pytest.mark.parametrize(
    "ids, statistics, may_hold",
    [
        (["cust-000010", "cust-000019"], True, True),  # inside the file's min/max
        (["cust-000009"], True, False),  # below its minimum
        (["cust-000020"], True, False),  # above its maximum
        (["cust-000009"], False, True),  # no statistics: the column must be read
    ],
)
def test_footer_statistics_decide_whether_the_subject_column_is_read(ids, statistics, may_hold):
    from dataplatform.gdpr.subject_files import by_column_name, footer_may_hold, subject_columns_in

    rows = pa.table({"customer_id": [f"cust-{n:06d}" for n in range(10, 20)], "n": list(range(10))})
    parquet = parquet_metadata(rows, write_statistics=statistics)
    subjects = by_column_name(["customer_id"], ids)
    names = subject_columns_in(parquet.schema_arrow, subjects)

    assert names == {"customer_id": "customer_id"}
    assert footer_may_hold(parquet.metadata, names, subjects) is may_hold


def test_subject_columns_are_found_by_field_id_when_the_file_has_field_ids():
    from dataplatform.gdpr.subject_files import subject_columns_in

    schema = Schema(NestedField(7, "customer_id", StringType()), NestedField(8, "email", StringType()))
    subjects = SubjectFilter.build(schema, ["customer_id"], ["cust-000001"])
    renamed = pa.schema(
        [
            pa.field("old_customer", pa.string(), metadata={b"PARQUET:field_id": b"7"}),
            pa.field("customer_id", pa.string(), metadata={b"PARQUET:field_id": b"9"}),
        ]
    )

    # The column was renamed since the file was written: the id, not the name, says which it is.
    assert subject_columns_in(renamed, subjects) == {"customer_id": "old_customer"}


def test_an_audit_record_of_a_large_sweep_stays_under_dynamodbs_item_limit():
    import json

    from dataplatform.gdpr.audit import AuditRecord
    from dataplatform.gdpr.erasure import AUDIT_LIST_LIMIT, audit_details

    uris = [
        f"s3://lake/warehouse/db/table/data/part={n:05d}/00000-{n}-{'a' * 36}.parquet" for n in range(5000)
    ]
    details = audit_details({"unreachable_files_deleted": uris, "files_deleted": 3})
    record = AuditRecord(
        "r-1", "hmac", "d", "run", 1, "verified", 1, 1, "1", [], [], {}, "t0", "t1", None, details
    )

    assert details["unreachable_files_deleted"] == uris[:AUDIT_LIST_LIMIT]
    assert details["unreachable_files_deleted_count"] == 5000 and details["files_deleted"] == 3
    assert len(json.dumps(record.item())) < 400_000
    assert audit_details({"unreachable_files_deleted": uris[:3]})["unreachable_files_deleted"] == uris[:3]


def test_hudi_runs_on_a_transient_emr_cluster_in_aws_and_locally_on_the_local_backend():
    from dataplatform.config import SparkSettings
    from dataplatform.operators.gdpr_spark import group_retries, spark_settings_for

    hudi = settings().gdpr.datasets["app_logs"]
    iceberg = GdprDataset.model_validate(
        {"format": "iceberg", "database": "d", "table": "t", "subject_columns": ["c"], "engine": "spark"}
    )
    local = SparkSettings(backend="local")
    emr = SparkSettings(backend="emr", code_uri="s3://code/", emr={"cluster_id": "j-SHARED"})
    serverless = SparkSettings(
        backend="emr_serverless",
        code_uri="s3://code/",
        emr_serverless={"application_id": "a", "execution_role_arn": "arn:aws:iam::1:role/r"},
    )
    assert spark_settings_for(hudi, local) == local
    for configured in (emr, serverless):
        transient = spark_settings_for(hudi, configured)
        assert (transient.backend, transient.emr.cluster_id) == ("emr", None)
        assert spark_settings_for(iceberg, configured) == configured
    # A retried EMR step reruns the whole job on a billed cluster; a local retry costs nothing.
    assert group_retries(spark_settings_for(hudi, emr)) == {"retries": 0}
    assert group_retries(local)["retries"] == 1
