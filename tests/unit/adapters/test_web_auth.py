"""The token a worker sends its peers never crosses the network in clear."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from yarl import URL

from config import WorkerSettings
from pinapp.adapters.web_auth import InsecureForward, peer_headers

BEHIND_PROXY = WorkerSettings(web_host="0.0.0.0", web_token=SecretStr("s3cret"), web_behind_tls_proxy=True)


def test_a_loopback_worker_sends_no_token() -> None:
    assert peer_headers(WorkerSettings(), URL("http://10.0.0.7:6066/dedup/local")) == {}


@pytest.mark.parametrize("target", ["https://10.0.0.7:6066/pins/p1", "http://127.0.0.1:6067/pins/p1"])
def test_the_token_goes_over_tls_or_stays_on_the_machine(target: str) -> None:
    assert peer_headers(BEHIND_PROXY, URL(target)) == {"Authorization": "Bearer s3cret"}


def test_behind_a_tls_proxy_the_token_is_not_sent_to_another_host_over_plain_http() -> None:
    with pytest.raises(InsecureForward, match="web_tls_cert_file") as info:
        peer_headers(BEHIND_PROXY, URL("http://10.0.0.7:6066/dedup/local"))
    assert "s3cret" not in str(info.value)
