"""Experiments: their definitions, and whether their live allocation matches them (sample ratio).

Design notes: docs/architecture.md, "pinapp/domain/experiments.py".
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pinapp.errors import ConfigError

__all__ = ["Experiment", "SrmVerdict", "load_experiments", "srm_test"]


@dataclass(frozen=True)
class Experiment:
    """One experiment: its groups' intended shares (summing to 1) and when it started (UTC)."""

    name: str
    shares: Mapping[str, float]
    start: datetime

    def group_of(self, point: float) -> str:
        """The group a user at ``point`` in [0, 1) of the allocation space falls in."""
        edge = 0.0
        for group, share in self.shares.items():
            edge += share
            if point < edge:
                return group
        return list(self.shares)[-1]  # the last group takes rounding's remainder


#: Bounds on a group's weight and share: the sample-ratio test needs finite, non-vanishing expectations.
MAX_WEIGHT: Final = 1e9
MIN_SHARE: Final = 1e-6


def _invalid(path: Path, what: str) -> ConfigError:
    return ConfigError(
        f'experiments.definitions_file={str(path)!r}: {what}; fix the file (see docs/operations.md, "Experiments")'
    )


def load_experiments(path: Path) -> tuple[Experiment, ...]:
    """The experiments defined in ``path`` (TOML), checked.

    Raises:
        ConfigError: naming the file and what is wrong with it, in one line.
    """
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise _invalid(path, f"cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise _invalid(path, f"is not TOML ({exc})") from None
    entries: Any = doc.get("experiment", [])
    if not isinstance(entries, list):
        raise _invalid(path, "`experiment` must be an array of tables ([[experiment]])")
    experiments: dict[str, Experiment] = {}
    for n, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise _invalid(path, f"experiment {n} must be a table ([[experiment]] with name, start and groups)")
        name, groups, start = entry.get("name"), entry.get("groups"), entry.get("start")
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise _invalid(path, f"experiment {n}: name must be a string of 1 to 64 characters")
        if name in experiments:
            raise _invalid(path, f"experiment {name!r} is defined twice")
        if not isinstance(groups, dict) or len(groups) < 2:
            raise _invalid(path, f"experiment {name!r}: groups must name two or more groups with their weights")
        weights = {}
        for group, weight in groups.items():
            # ``not 0 < w <= MAX`` also refuses nan; a bool is an int to isinstance
            if not 1 <= len(group) <= 64 or isinstance(weight, bool) or not isinstance(weight, int | float):
                raise _invalid(
                    path,
                    f"experiment {name!r}: group {group!r} needs a positive, finite weight and a 1-64 character name",
                )
            if not 0 < weight <= MAX_WEIGHT:
                raise _invalid(
                    path, f"experiment {name!r}: group {group!r} needs a positive, finite weight up to {MAX_WEIGHT:g}"
                )
            weights[group] = float(weight)
        if not isinstance(start, datetime) or start.tzinfo is None:
            raise _invalid(
                path, f"experiment {name!r}: start must be a date-time with a zone, e.g. 2026-12-01T00:00:00Z"
            )
        total = sum(weights.values())
        shares = {g: w / total for g, w in weights.items()}
        if min(shares.values()) < MIN_SHARE:
            raise _invalid(path, f"experiment {name!r}: each group's share must be at least {MIN_SHARE:g} of the total")
        experiments[name] = Experiment(name, shares, start.astimezone(UTC))
    return tuple(experiments.values())


@dataclass(frozen=True)
class SrmVerdict:
    """The sample-ratio test of one experiment's users per group."""

    users: Mapping[str, int]  # observed, every defined group included (0 if none)
    expected: Mapping[str, float]  # under the intended split
    p_value: float | None  # None: no verdict (too few users)
    mismatch: bool
    reason: str  # one line for a person


def srm_test(experiment: Experiment, users: Mapping[str, int], *, p_threshold: float, min_users: int) -> SrmVerdict:
    """Pearson's chi-square test of ``users`` per group against the experiment's intended split."""
    observed = {group: int(users.get(group, 0)) for group in experiment.shares}
    total = sum(observed.values())
    expected = {group: share * total for group, share in experiment.shares.items()}
    split = ", ".join(f"{g} {observed[g]:,} ({expected[g]:,.0f} expected)" for g in observed)
    strangers = {g: n for g, n in users.items() if g not in experiment.shares and n}
    if strangers:
        groups = ", ".join(f"{g} ({n:,})" for g, n in strangers.items())
        return SrmVerdict(observed, expected, 0.0, True, f"users in groups it does not define: {groups}")
    if total < min_users:
        return SrmVerdict(observed, expected, None, False, f"{total:,} users so far, too few to judge ({split})")
    from scipy.stats import chisquare  # here: scipy takes a second to import, and only this needs it

    p_value = float(chisquare(list(observed.values()), list(expected.values())).pvalue)
    if p_value < p_threshold:
        return SrmVerdict(observed, expected, p_value, True, f"sample ratio mismatch, p = {p_value:.2g}: {split}")
    return SrmVerdict(observed, expected, p_value, False, f"allocation as intended, p = {p_value:.2g}: {split}")
