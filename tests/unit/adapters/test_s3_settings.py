"""How the S3 settings become a client: addressing style, and keys or AWS's chain."""

from __future__ import annotations

import pytest

from config import S3Settings
from pinapp.adapters.s3 import credential_source, s3_client


@pytest.mark.parametrize("style", ["path", "virtual", "auto"])
async def test_the_addressing_style_is_the_clients(style: str) -> None:
    async with s3_client(S3Settings(addressing_style=style)) as client:  # no request is made
        assert client.meta.config.s3["addressing_style"] == style


async def test_keys_in_the_settings_are_the_source_else_the_chain_names_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert await credential_source(S3Settings()) == "settings (s3.access_key_id)"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env-secret")
    chain = S3Settings(access_key_id="", secret_access_key="")
    assert await credential_source(chain) == "AWS credential chain: env"
