"""The one S3 client of the project, built from a conf/storage `s3` section (storage.config.S3Config).

Every field is honoured: endpoint, region, profile, addressing style, retries (attempts and mode),
connect/read timeouts, request/response checksum policies and the multipart transfer settings. The
checkpoint store, data reading (storage.files.Storage) and pretrained weights (via the store) all get
their client here. Credentials come from boto3's standard chain.
"""
from __future__ import annotations

from typing import Any

from storage.config import S3Config

MIB = 1024 * 1024
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
# Conditional writes: the precondition failed, or a concurrent conditional write to the same key won.
CONFLICT_CODES = frozenset({"412", "PreconditionFailed", "409", "ConditionalRequestConflict"})
_TRANSIENT_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
    "RequestTimeTooSkewed", "BadGateway", "GatewayTimeout",
})


class S3Access:
    """A boto3 S3 client and the matching s3transfer TransferConfig."""

    def __init__(self, settings: S3Config):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.settings = settings
        session = boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
        self.client: Any = session.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            config=Config(
                retries={"max_attempts": settings.max_attempts, "mode": settings.retry_mode},
                connect_timeout=settings.connect_timeout_s,
                read_timeout=settings.read_timeout_s,
                s3={"addressing_style": settings.addressing_style},
                request_checksum_calculation=settings.request_checksum_calculation,
                response_checksum_validation=settings.response_checksum_validation,
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold_mb * MIB,
            multipart_chunksize=settings.multipart_chunk_mb * MIB,
            max_concurrency=settings.max_concurrency,
            use_threads=settings.max_concurrency > 1,
        )


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError (e.g. "NoSuchKey", "PreconditionFailed"), else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code"))
    return None


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying later: a connection error, a timeout, a 5xx or a throttling reply."""
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
        HTTPClientError,
        IncompleteReadError,
        ResponseStreamingError,
    )

    if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError, ResponseStreamingError)):
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or error_code(exc) in _TRANSIENT_CODES
    return isinstance(exc, (ConnectionError, TimeoutError))
