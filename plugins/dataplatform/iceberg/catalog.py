"""The pyiceberg Glue catalog, configured from plain connection facts (region, endpoint, credentials).

Locally the endpoint is the moto server for both Glue and S3; in AWS it is ``None`` and pyiceberg and
boto3 use the default credential chain (the MWAA execution role), so nothing here holds a secret.
"""

from __future__ import annotations

from dataclasses import dataclass

CATALOG_NAME = "glue"


@dataclass(frozen=True)
class AwsAccess:
    region: str
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None


def catalog_properties(access: AwsAccess) -> dict[str, str]:
    """pyiceberg properties for a Glue catalog whose tables live in S3."""
    props = {"type": "glue", "glue.region": access.region, "s3.region": access.region}
    if access.endpoint_url:
        props["glue.endpoint"] = access.endpoint_url
        props["s3.endpoint"] = access.endpoint_url
    for prefix in ("glue", "s3"):
        if access.access_key_id and access.secret_access_key:
            props[f"{prefix}.access-key-id"] = access.access_key_id
            props[f"{prefix}.secret-access-key"] = access.secret_access_key
        if access.session_token:
            props[f"{prefix}.session-token"] = access.session_token
    return props


def load_glue_catalog(access: AwsAccess):
    from pyiceberg.catalog import load_catalog

    return load_catalog(CATALOG_NAME, **catalog_properties(access))
