"""Synthetic engagement traffic, deterministic for a seed, with its own ground truth.

Just over 400 lines on purpose: the traffic model (the mix, the catalogue, each kind of bad input,
trends, experiments) reads as one, and every record it makes is counted in the truth beside it.

Design notes: docs/architecture.md, "pinapp/tools/generator.py".
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from itertools import accumulate
from pathlib import Path
from typing import Any, Final

import orjson

from pinapp.adapters.files import write_atomically
from pinapp.domain.events import EventType, routing_key
from pinapp.domain.experiments import Experiment
from pinapp.domain.geo import GeoLocator

__all__ = [
    "CATEGORIES",
    "GeneratedRecord",
    "GeneratorConfig",
    "GroundTruth",
    "TrafficGenerator",
    "Trend",
    "sample_ip_pool",
]

CATEGORIES: Final = (
    "art",
    "beauty",
    "cars",
    "diy_crafts",
    "education",
    "fashion",
    "food_drink",
    "gardening",
    "health",
    "history",
    "home_decor",
    "humor",
    "kids",
    "outdoors",
    "pets",
    "photography",
    "quotes",
    "science",
    "sports",
    "technology",
    "travel",
    "weddings",
)
DEFAULT_MIX: Final = {
    EventType.PIN: 0.10,
    EventType.REPIN: 0.35,
    EventType.LIKE: 0.30,
    EventType.COMMENT: 0.10,
    EventType.LOGIN: 0.15,
}
MALFORMED_KINDS: Final = (
    "not_json",
    "not_object",
    "missing_field",
    "unknown_type",
    "bad_timestamp",
    "naive_timestamp",
    "too_large",
    "bad_ip",
    "wrong_type",
)
_WORDS: Final = (
    "cozy",
    "summer",
    "vintage",
    "minimal",
    "rustic",
    "easy",
    "healthy",
    "modern",
    "classic",
    "tiny",
    "bold",
    "weekend",
    "budget",
    "quick",
    "garden",
    "kitchen",
    "loft",
    "trail",
    "recipe",
)


@dataclass(frozen=True)
class Trend:
    """From ``after_s`` seconds of event time on, ``share`` of pin engagement goes to one pin
    (the newest then), or to the pins of ``category``."""

    after_s: float
    share: float = 0.05
    category: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError(f"a trend's share is a fraction in (0, 1], got {self.share}")
        if self.category is not None and self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}; one of: {', '.join(CATEGORIES)}")


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 42
    users: int = 5_000
    duplicate_ratio: float = 0.02
    malformed_ratio: float = 0.01
    zipf_s: float = 1.0
    repin_carries_pin: float = 0.3
    iso_ts_ratio: float = 0.1
    start_ms: int | None = None  # event time of the first event; default: now
    step_ms: float = 1.0  # event-time spacing (1000 / rate when a rate is set)
    max_event_bytes: int = 16_384
    ip_pool_size: int = 2_000
    mix: dict[EventType, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    trend: Trend | None = None
    experiments: tuple[Experiment, ...] = ()
    enrolled: float = 0.5  # the share of users in each experiment
    leaks: dict[str, float] = field(default_factory=dict)  # experiment -> share of its last group logged in its first


@dataclass(frozen=True, slots=True)
class GeneratedRecord:
    """One Kafka record (or log line) to send."""

    key: bytes
    value: bytes
    kind: str  # "valid", "duplicate" or "malformed"
    event_type: str | None = None
    event_id: str | None = None


@dataclass
class GroundTruth:
    """What a correct pipeline must end up with, for the records generated so far."""

    seed: int
    generated: int = 0
    duplicates: int = 0
    malformed: int = 0
    malformed_by_kind: Counter[str] = field(default_factory=Counter)
    event_ids: dict[str, list[str]] = field(default_factory=lambda: {t.value: [] for t in EventType})
    keep_ids: bool = True
    unique_counts: Counter[str] = field(default_factory=Counter)
    trend: dict[str, Any] | None = None  # the injected trend, once it started: pin_id or category, from_ms

    def add(self, record: GeneratedRecord) -> None:
        self.generated += 1
        if record.kind == "duplicate":
            self.duplicates += 1
        elif record.kind == "malformed":
            self.malformed += 1
        else:
            assert record.event_type is not None and record.event_id is not None
            self.unique_counts[record.event_type] += 1
            if self.keep_ids:
                self.event_ids[record.event_type].append(record.event_id)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "seed": self.seed,
            "generated": self.generated,
            "valid_unique": {t.value: self.unique_counts[t.value] for t in EventType},
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "malformed_by_kind": dict(self.malformed_by_kind),
        }
        if self.trend is not None:
            doc["trend"] = self.trend
        if self.keep_ids:
            doc["event_ids"] = self.event_ids
        return doc

    def write(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a file."""
        write_atomically(path, orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2))


def _unit(text: str) -> float:
    """A point in [0, 1) from ``text``: the same for the same text, spread evenly."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def sample_ip_pool(geo: GeoLocator, rng: random.Random, size: int) -> list[str]:
    """Client IPs the geo database places in a country with coordinates: many countries.

    Random public IPv4 addresses are drawn and kept when they resolve, plus IPv6 ones from
    a few large allocations; deterministic for the rng's seed and the database.
    """
    pool: list[str] = []
    v6_prefixes = ("2001:4860", "2a00:1450", "2400:cb00", "2c0f:fb50", "2804:14c", "2a02:2e0")
    attempts = 0
    while len(pool) < size and attempts < size * 50:
        attempts += 1
        if rng.random() < 0.05:
            prefix = rng.choice(v6_prefixes)
            ip = str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(prefix + "::")) | rng.getrandbits(64)))
        else:
            ip = str(ipaddress.IPv4Address(rng.getrandbits(32)))
            if not ipaddress.IPv4Address(ip).is_global:
                continue
        if geo.resolvable(ip):
            pool.append(ip)
    return pool


class TrafficGenerator:
    """An endless, deterministic stream of :class:`GeneratedRecord`."""

    def __init__(self, config: GeneratorConfig, geo: GeoLocator, *, keep_ids: bool = True) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.truth = GroundTruth(seed=config.seed, keep_ids=keep_ids)
        self.ip_pool = sample_ip_pool(geo, self.rng, config.ip_pool_size)
        if not self.ip_pool:
            raise ValueError("the geo database resolved no sampled IP; is it a City database?")
        self.user_ips = [self.rng.choice(self.ip_pool) for _ in range(config.users)]
        self.start_ms = config.start_ms if config.start_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
        self._types = list(config.mix)
        self._type_cum = list(accumulate(config.mix.values()))
        self._pins: list[dict[str, Any]] = []
        self._pin_cum: list[float] = []
        self._recent: deque[GeneratedRecord] = deque(maxlen=1_000)
        self._n = 0
        self._trend_pins: list[dict[str, Any]] | None = None  # once the trend started: the pins it favours
        self._groups: dict[str, dict[str, str]] = {}  # user -> experiment -> group

    def __iter__(self) -> Iterator[GeneratedRecord]:
        return self

    def __next__(self) -> GeneratedRecord:
        rng = self.rng
        roll = rng.random()
        if roll < self.config.malformed_ratio:
            record = self._malformed()
        elif roll < self.config.malformed_ratio + self.config.duplicate_ratio and self._recent:
            original = rng.choice(self._recent)
            record = GeneratedRecord(original.key, original.value, "duplicate", original.event_type, original.event_id)
        else:
            record = self._valid()
            self._recent.append(record)
        self._n += 1
        self.truth.add(record)
        return record

    # -- valid events -----------------------------------------------------------------

    def _ts_ms(self) -> int:
        return self.start_ms + int(self._n * self.config.step_ms)

    def _ts_field(self, ts_ms: int) -> int | str:
        if self.rng.random() >= self.config.iso_ts_ratio:
            return ts_ms
        zone = timezone(timedelta(hours=self.rng.choice((0, 1, -5, 5.5, 9))))
        return datetime.fromtimestamp(ts_ms / 1000, tz=zone).isoformat(timespec="milliseconds")

    def _user(self) -> tuple[str, str]:
        n = self.rng.randrange(self.config.users)
        ip = self.user_ips[n] if self.rng.random() < 0.9 else self.rng.choice(self.ip_pool)
        return f"u{n}", ip

    def _experiments_of(self, user_id: str) -> dict[str, str]:
        """The groups ``user_id`` is in: by hashes of the user and each experiment, not the rng."""
        groups = self._groups.get(user_id)
        if groups is None:
            groups = {}
            for experiment in self.config.experiments:
                if _unit(f"enrolled:{experiment.name}:{user_id}") >= self.config.enrolled:
                    continue
                group = experiment.group_of(_unit(f"group:{experiment.name}:{user_id}"))
                names = list(experiment.shares)
                leak = self.config.leaks.get(experiment.name, 0.0)
                if group == names[-1] and _unit(f"leak:{experiment.name}:{user_id}") < leak:
                    group = names[0]
                groups[experiment.name] = group
            self._groups[user_id] = groups
        return groups

    def _title(self) -> str:
        return " ".join(self.rng.choice(_WORDS) for _ in range(self.rng.randint(2, 5)))

    def _new_pin(self, user_id: str, ts_ms: int) -> dict[str, Any]:
        pin = {
            "pin_id": f"p{self.config.seed}-{len(self._pins)}",
            "board_id": f"b{self.rng.randrange(self.config.users * 3)}",
            "user_id": user_id,
            "title": self._title(),
            "category": self.rng.choice(CATEGORIES),
            "created_at": ts_ms,
        }
        weight = self.rng.paretovariate(1.0 / self.config.zipf_s)
        self._pins.append(pin)
        self._pin_cum.append(weight + (self._pin_cum[-1] if self._pin_cum else 0.0))
        return pin

    def _popular_pin(self) -> dict[str, Any]:
        return self.rng.choices(self._pins, cum_weights=self._pin_cum, k=1)[0]

    def _trend_pin(self, ts_ms: int) -> dict[str, Any] | None:
        """The trending pin for this engagement event, if the trend has started and the event is its share."""
        trend = self.config.trend
        if trend is None or ts_ms < self.start_ms + trend.after_s * 1000:
            return None
        if self._trend_pins is None:
            if trend.category is None:
                self._trend_pins = [self._pins[-1]]
                self.truth.trend = {"pin_id": self._pins[-1]["pin_id"], "from_ms": ts_ms}
            else:
                self._trend_pins = [p for p in self._pins if p["category"] == trend.category]
                self.truth.trend = {"category": trend.category, "from_ms": ts_ms}
        if not self._trend_pins or self.rng.random() >= trend.share:
            return None
        return self.rng.choice(self._trend_pins)

    def _valid(self) -> GeneratedRecord:
        rng = self.rng
        event_type = rng.choices(self._types, cum_weights=self._type_cum, k=1)[0]
        if event_type is not EventType.LOGIN and event_type is not EventType.PIN and not self._pins:
            event_type = EventType.PIN  # pins are created before anything refers to them
        user_id, ip = self._user()
        ts_ms = self._ts_ms()
        event_id = f"e{self.config.seed}-{self._n}"
        doc: dict[str, Any] = {
            "event_id": event_id,
            "event_type": event_type.value,
            "ts": self._ts_field(ts_ms),
            "user_id": user_id,
            "ip": ip,
        }
        if self.config.experiments and (groups := self._experiments_of(user_id)):
            doc["experiments"] = groups
        if event_type is EventType.PIN:
            pin = self._new_pin(user_id, ts_ms)
            doc["pin_id"] = pin["pin_id"]
            doc["pin"] = pin
        elif event_type is not EventType.LOGIN:
            pin = self._trend_pin(ts_ms) or self._popular_pin()
            doc["pin_id"] = pin["pin_id"]
            if event_type is EventType.REPIN:
                doc["board_id"] = f"b{rng.randrange(self.config.users * 3)}"
                if rng.random() < self.config.repin_carries_pin:
                    doc["pin"] = pin
            elif event_type is EventType.COMMENT:
                doc["text"] = f"{self._title()}!"
        key = routing_key(event_type.value, doc.get("pin_id"), user_id).encode()
        return GeneratedRecord(key, orjson.dumps(doc), "valid", event_type.value, event_id)

    # -- malformed inputs ---------------------------------------------------------------

    def _malformed(self) -> GeneratedRecord:
        rng = self.rng
        kind = rng.choice(MALFORMED_KINDS)
        user_id, ip = self._user()
        doc: dict[str, Any] = {
            "event_id": f"bad{self.config.seed}-{self._n}",
            "event_type": "login",
            "ts": self._ts_ms(),
            "user_id": user_id,
            "ip": ip,
        }
        value: bytes
        if kind == "not_json":
            value = orjson.dumps(doc)[: rng.randint(5, 30)]
        elif kind == "not_object":
            value = orjson.dumps([doc])
        elif kind == "missing_field":
            del doc[rng.choice(("event_id", "user_id", "ts", "ip"))]
            value = orjson.dumps(doc)
        elif kind == "unknown_type":
            doc["event_type"] = "share"
            value = orjson.dumps(doc)
        elif kind == "bad_timestamp":
            doc["ts"] = doc["ts"] // 1000  # seconds where ms are expected
            value = orjson.dumps(doc)
        elif kind == "naive_timestamp":
            doc["ts"] = "2024-05-01T12:00:00"
            value = orjson.dumps(doc)
        elif kind == "too_large":
            doc["padding"] = "x" * (self.config.max_event_bytes + 1)
            value = orjson.dumps(doc)
        elif kind == "bad_ip":
            doc["ip"] = "999.12.1.1"
            value = orjson.dumps(doc)
        else:  # wrong_type: an id must be a string or an integer; a float is neither
            doc["user_id"] = 12345.0
            value = orjson.dumps(doc)
        self.truth.malformed_by_kind[kind] += 1
        return GeneratedRecord(user_id.encode(), value, "malformed")
