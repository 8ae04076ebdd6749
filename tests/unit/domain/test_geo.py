"""Geo enrichment against the bundled GeoLite2 City database."""

from __future__ import annotations

from pathlib import Path

import pytest

from pinapp.domain.geo import GeoLocator
from pinapp.errors import ConfigError


@pytest.fixture(scope="module")
def geo() -> GeoLocator:
    return GeoLocator()


def test_known_ip_resolves_to_its_city(geo: GeoLocator) -> None:
    # 81.2.69.160 is MaxMind's documented test address (London, GB).
    loc = geo.lookup("81.2.69.160")
    assert (loc.country, loc.region, loc.city) == ("GB", "England", "Willesden")
    assert loc.latitude == pytest.approx(51.53, abs=0.01)
    assert loc.longitude == pytest.approx(-0.23, abs=0.01)


def test_ipv6_resolves(geo: GeoLocator) -> None:
    assert geo.lookup("2001:4860::1").country == "US"


@pytest.mark.parametrize("ip", ["10.1.2.3", "192.168.0.1", "203.0.113.5", "::1", "not-an-ip"])
def test_unresolvable_ips_give_nulls_not_errors(geo: GeoLocator, ip: str) -> None:
    loc = geo.lookup(ip)
    assert (loc.country, loc.region, loc.city, loc.latitude, loc.longitude) == (None,) * 5


def test_a_bad_database_path_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PINAPP_PIPELINE__GEOIP_DB_PATH"):
        GeoLocator(tmp_path / "missing.mmdb")
