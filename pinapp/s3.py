"""S3 clients (aiobotocore) built from settings: moto's server locally, AWS in production."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config

from config import S3Settings

__all__ = ["s3_client"]


def s3_client(s3: S3Settings, *, max_attempts: int = 5) -> AbstractAsyncContextManager[Any]:
    """An async S3 client context manager.

    Retries with backoff are botocore's own, ``max_attempts`` per call. The archiver passes 1:
    it retries whole cuts itself, pausing the partition and logging each failure.
    """
    return get_session().create_client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id.get_secret_value(),
        aws_secret_access_key=s3.secret_access_key.get_secret_value(),
        config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}, connect_timeout=5,
                      read_timeout=30, s3={"addressing_style": "path"}),
    )
