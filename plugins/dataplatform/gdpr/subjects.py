"""Subject ids: their format check and the HMAC that stands in for them in logs, reports and the audit.

A subject id is personal data: once a request is accepted, nothing this package writes outside the
request record and the Spark job spec (which the job needs to find the rows) holds it raw. Everything
else names the subject by ``subject_hmac``, a keyed hash: stable (the audit of one person's requests can
be joined), not reversible without the key, and not guessable from a list of known ids without it (a
plain hash of a customer number would be).
"""

from __future__ import annotations

import hashlib
import hmac
import re

HMAC_PREFIX = "hmac-sha256:"


class SubjectIdError(ValueError):
    """A subject id does not have the configured format. The message never contains the id."""


def check_subject_id(subject_id: object, pattern: str) -> str:
    if not isinstance(subject_id, str):
        raise SubjectIdError(f"a subject id must be a string, got {type(subject_id).__name__}")
    if not re.fullmatch(pattern, subject_id):
        # The id itself stays out of the message: it may be a mistyped e-mail address.
        raise SubjectIdError(
            f"subject id of {len(subject_id)} characters does not match the configured pattern {pattern}"
        )
    return subject_id


def subject_hmac(key: bytes, subject_id: str) -> str:
    if not key:
        raise ValueError("the HMAC key is empty")
    digest = hmac.new(key, subject_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return HMAC_PREFIX + digest
