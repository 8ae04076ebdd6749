"""S3 clients (aiobotocore) built from settings: moto's server locally, AWS in production.

Access keys in the settings are used as given; empty ones leave the credentials to botocore's
standard chain (environment variables, the shared config and credentials files, web identity,
container and instance roles), as every AWS tool does.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config

from config import S3Settings

__all__ = ["credential_source", "s3_client"]


def _keys(s3: S3Settings) -> tuple[str | None, str | None]:
    key, secret = s3.access_key_id.get_secret_value(), s3.secret_access_key.get_secret_value()
    return (key, secret) if key else (None, None)


async def credential_source(s3: S3Settings) -> str:
    """Where the S3 credentials come from, never what they are: ``settings``, or the name
    botocore gives the source that answered in its chain (``env``, ``shared-credentials-file``,
    ``iam-role``, ``container-role``, ``assume-role-with-web-identity``...), or ``none``."""
    if _keys(s3)[0]:
        return "settings (s3.access_key_id)"
    credentials = await get_session().get_credentials()
    return f"AWS credential chain: {credentials.method}" if credentials is not None else "none found"


def s3_client(s3: S3Settings, *, max_attempts: int = 5) -> AbstractAsyncContextManager[Any]:
    """An async S3 client context manager.

    Retries with backoff are botocore's own, ``max_attempts`` per call. The archiver passes 1:
    it retries whole cuts itself, pausing the partition and logging each failure.
    """
    return get_session().create_client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=_keys(s3)[0],
        aws_secret_access_key=_keys(s3)[1],
        config=Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            s3={"addressing_style": s3.addressing_style},
        ),
    )
