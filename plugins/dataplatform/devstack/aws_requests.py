"""Which AWS service and API operation an HTTP request to the local AWS endpoint is.

The fault injector uses it to pick the faults a request can get (a TransactionConflict only for
TransactWriteItems), the request log to name each call, and the IAM check to map calls to actions. Every
client reaches the endpoint (boto3, pyarrow's and Spark's S3 clients), so the answer comes from the wire,
not from a client hook: the service from the SigV4 credential scope, the operation from the JSON
protocol's ``X-Amz-Target``, the query protocol's ``Action``, or, for REST protocols (S3, EMR Serverless,
Batch), the botocore service model's HTTP method, URI template and required query/header members.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

# SigV4 signing names whose botocore model name differs.
_MODEL_OF_SIGNING_NAME = {"elasticmapreduce": "emr", "monitoring": "cloudwatch", "email": "ses"}

_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request")


@dataclass(frozen=True)
class AwsRequest:
    service: str  # the SigV4 signing name: s3, dynamodb, glue, elasticmapreduce, emr-serverless, ...
    region: str
    operation: str  # PutObject, TransactWriteItems, ... ("" when the model has no match)


def signing_scope(authorization: str, query: str) -> tuple[str, str] | None:
    """(service, region) of a SigV4-signed request (header or presigned URL), None when unsigned."""
    match = _CREDENTIAL_SCOPE.search(authorization or "")
    if match:
        return match.group(2), match.group(1)
    credential = parse_qs(query or "").get("X-Amz-Credential")
    if credential:
        parts = credential[0].split("/")
        if len(parts) >= 5:
            return parts[3], parts[2]
    return None


def identify(
    method: str, path: str, query: str, headers: dict[str, str], body: bytes | None = None
) -> AwsRequest | None:
    """The AWS request this HTTP request is, or None for what is not a signed AWS call (moto's API).

    ``headers`` keys are lower case; ``body`` is only needed for the query protocol's form posts.
    """
    scope = signing_scope(headers.get("authorization", ""), query)
    if scope is None:
        return None
    service, region = scope
    target = headers.get("x-amz-target", "")
    if target:
        return AwsRequest(service, region, target.rsplit(".", 1)[-1])
    action = parse_qs(query or "").get("Action")
    if not action and body and "x-www-form-urlencoded" in headers.get("content-type", ""):
        action = parse_qs(body.decode("utf-8", "replace")).get("Action")
    if action:
        return AwsRequest(service, region, action[0])
    return AwsRequest(service, region, rest_operation(service, method, path, query, headers))


@dataclass(frozen=True)
class _RestRoute:
    operation: str
    method: str
    path: re.Pattern
    query: tuple[tuple[str, str | None], ...]  # required keys, with the value the URI fixes (list-type=2)
    headers: tuple[str, ...]  # required header names, lower case (x-amz-copy-source)
    deprecated: bool  # PutBucketLifecycle shares its route with PutBucketLifecycleConfiguration

    def matches(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> bool:
        if method != self.method or not self.path.fullmatch(path):
            return False
        for key, value in self.query:
            if key not in query or (value is not None and value not in query[key]):
                return False
        return all(name in headers for name in self.headers)

    @property
    def specificity(self) -> tuple[int, bool]:
        return len(self.query) + len(self.headers), not self.deprecated


def rest_operation(service: str, method: str, path: str, query: str, headers: dict[str, str]) -> str:
    """The most specific operation of a REST-protocol service whose route the request satisfies."""
    parsed = parse_qs(query or "", keep_blank_values=True)
    candidates = [r for r in _rest_routes(service) if r.matches(method, path or "/", parsed, headers)]
    if not candidates:
        return ""
    return max(candidates, key=lambda route: route.specificity).operation


@functools.cache
def _rest_routes(service: str) -> tuple[_RestRoute, ...]:
    import botocore.session

    try:
        model = botocore.session.get_session().get_service_model(_MODEL_OF_SIGNING_NAME.get(service, service))
    except Exception:  # an unknown service: no operation names, the request still goes through
        return ()
    routes = []
    for name in model.operation_names:
        operation = model.operation_model(name)
        http = operation.http
        if "requestUri" not in http:
            continue
        routes.append(_route(operation, http["method"], http["requestUri"]))
    return tuple(routes)


def _route(operation, method: str, request_uri: str) -> _RestRoute:
    input_shape = operation.input_shape
    uri_path, _, uri_query = request_uri.partition("?")
    query: list[tuple[str, str | None]] = []
    for item in filter(None, uri_query.split("&")):
        key, has_value, value = item.partition("=")
        query.append((key, value if has_value else None))
    header_names: list[str] = []
    if input_shape is not None:
        for member in input_shape.required_members:
            shape = input_shape.members[member]
            location = shape.serialization.get("location")
            location_name = shape.serialization.get("name", member)
            if location == "querystring" and location_name not in dict(query):
                query.append((location_name, None))
            elif location == "header":
                header_names.append(location_name.lower())
    return _RestRoute(
        operation.name,
        method,
        _path_pattern(uri_path),
        tuple(query),
        tuple(header_names),
        operation.deprecated,
    )


def _path_pattern(uri_path: str) -> re.Pattern:
    """``/{Bucket}/{Key+}`` -> a regex: ``{X}`` one path segment, ``{X+}`` the rest (slashes included)."""
    pattern = ""
    for piece in re.split(r"(\{[^}]+\})", uri_path):
        if piece.startswith("{") and piece.endswith("+}"):
            pattern += ".+"
        elif piece.startswith("{"):
            pattern += "[^/]+"
        else:
            pattern += re.escape(piece)
    # ListObjects on "/bucket/" and "/bucket" alike.
    return re.compile(pattern + "/?")


@functools.cache
def protocol_of(service: str) -> str:
    """The botocore protocol of a signing name (``rest-xml`` for S3, ``json`` for DynamoDB, ...)."""
    import botocore.session

    try:
        model = botocore.session.get_session().get_service_model(_MODEL_OF_SIGNING_NAME.get(service, service))
    except Exception:
        return "json"
    return model.protocol
