import pytest

from dataplatform.config import CONFIG_DIR, ConfigError, load_settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("env", ["local", "aws"])
def test_every_shipped_environment_loads(env):
    settings = load_settings(CONFIG_DIR / f"{env}.yaml")
    assert settings.env == env
    assert settings.glue.tables, "each environment configures at least one Glue table"
    for table in settings.glue.tables.values():
        assert table.location.endswith("/")


def _write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


BASE = (CONFIG_DIR / "local.yaml").read_text()


def test_missing_key_is_named(tmp_path):
    path = _write(tmp_path, BASE.replace("  region: us-east-1\n", "", 1))
    with pytest.raises(ConfigError, match=r"aws\.region: missing"):
        load_settings(path)


def test_unknown_key_is_named(tmp_path):
    path = _write(tmp_path, BASE.replace("      granularity: hour", "      granularty: hour", 1))
    with pytest.raises(ConfigError, match=r"glue\.tables\.web_events\.granularty: unknown key"):
        load_settings(path)


def test_invalid_value_is_named(tmp_path):
    path = _write(tmp_path, BASE.replace("backend: local", "backend: yarn", 1))
    with pytest.raises(ConfigError, match=r"spark\.backend"):
        load_settings(path)


def test_template_must_use_exactly_the_partition_keys(tmp_path):
    path = _write(tmp_path, BASE.replace('"{year}/{month}/{day}"', '"{year}/{month}"', 1))
    with pytest.raises(ConfigError, match=r"glue\.tables\.cloudtrail.*path_template fields"):
        load_settings(path)


def test_location_must_be_a_uri(tmp_path):
    path = _write(
        tmp_path, BASE.replace("location: s3://dataplatform-local-lake/web_events/", "location: lake/web", 1)
    )
    with pytest.raises(ConfigError, match=r"glue\.tables\.web_events\.location"):
        load_settings(path)


def test_identifiers_that_reach_sql_are_validated(tmp_path):
    path = _write(tmp_path, BASE.replace("table: web_events", "table: web_events`; DROP", 1))
    with pytest.raises(ConfigError, match=r"glue\.tables\.web_events\.table"):
        load_settings(path)


def test_missing_file_names_the_environment(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


def test_emr_serverless_backend_needs_its_application(tmp_path):
    text = BASE.replace("backend: local", "backend: emr_serverless\n  code_uri: s3://code/", 1)
    with pytest.raises(ConfigError, match=r"spark\.emr_serverless\.application_id"):
        load_settings(_write(tmp_path, text))
