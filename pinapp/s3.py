"""S3 clients (aiobotocore) built from settings: moto's server locally, AWS in production."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config

from config import S3Settings

__all__ = ["s3_client"]


def s3_client(s3: S3Settings) -> AbstractAsyncContextManager[Any]:
    """An async S3 client context manager; retries with backoff are botocore's own."""
    return get_session().create_client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id.get_secret_value(),
        aws_secret_access_key=s3.secret_access_key.get_secret_value(),
        config=Config(retries={"max_attempts": 5, "mode": "adaptive"}, s3={"addressing_style": "path"}),
    )
