"""Client IP -> location, from any MaxMind-format database (GeoLite2, DB-IP, IPinfo).

The default database is GeoLite2 City as bundled in the PyPI package
``maxminddb-geolite2`` (2018 data; see the README for MaxMind's attribution). Point
``pipeline.geoip_db_path`` at a current ``.mmdb`` for real use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import maxminddb

from pinapp.errors import ConfigError

__all__ = ["GeoLocation", "GeoLocator", "default_database_path"]


@dataclass(frozen=True, slots=True)
class GeoLocation:
    """Where an IP is. Every field is ``None`` when the database does not know."""

    country: str | None = None
    region: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None


UNKNOWN = GeoLocation()


def default_database_path() -> Path:
    """The GeoLite2 City database shipped in ``maxminddb-geolite2``."""
    import _maxminddb_geolite2  # the package's data module; no public accessor

    return Path(_maxminddb_geolite2.geolite2_database())


def _english(record: dict[str, Any] | None) -> str | None:
    if not record:
        return None
    names = record.get("names") or {}
    return names.get("en")


class GeoLocator:
    """Looks IPs up in one MMDB file; results are cached (IPs repeat a lot)."""

    def __init__(self, path: Path | None = None, *, cache_size: int = 200_000) -> None:
        self.path = path or default_database_path()
        try:
            self._reader = maxminddb.open_database(str(self.path))
        except (OSError, maxminddb.InvalidDatabaseError) as exc:
            raise ConfigError(
                f"pipeline.geoip_db_path: cannot open {self.path} ({exc}); set "
                "PINAPP_PIPELINE__GEOIP_DB_PATH to a MaxMind-format .mmdb, or unset it for the "
                "bundled GeoLite2 City."
            ) from None
        self._cached_lookup = lru_cache(maxsize=cache_size)(self._lookup)

    def lookup(self, ip: str) -> GeoLocation:
        """Locate ``ip``; unknown, private or malformed addresses give all-``None``."""
        return self._cached_lookup(ip)

    def _lookup(self, ip: str) -> GeoLocation:
        try:
            record: Any = self._reader.get(ip)  # maxminddb types it as a union of every record shape
        except ValueError:  # not an address; validation normally catches this first
            return UNKNOWN
        if not isinstance(record, dict):
            return UNKNOWN
        location = record.get("location") or {}
        subdivisions = record.get("subdivisions") or [None]
        return GeoLocation(
            country=(record.get("country") or {}).get("iso_code"),
            region=_english(subdivisions[0]),
            city=_english(record.get("city")),
            latitude=location.get("latitude"),
            longitude=location.get("longitude"),
        )

    def resolvable(self, ip: str) -> bool:
        """True when the database places ``ip`` in a country with coordinates."""
        loc = self._lookup(ip)
        return loc.country is not None and loc.latitude is not None

    def close(self) -> None:
        self._reader.close()
