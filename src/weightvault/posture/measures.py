"""The measure table (``measures.toml``): which measure sits at which level, and what shows it.

The table is data so that a reviewer can read, diff and argue with the mapping without reading
code. Loading is strict: unknown keys, a measure with both or neither of ``check`` and
``attest``, an unknown check id, a level outside 1-5 or a duplicate id are refused.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightvault._dataclass_json import field_dict
from weightvault.errors import FormatError

__all__ = ["LEVELS", "MEASURES_PATH", "Measure", "level_name", "load_measures"]

MEASURES_PATH = Path(__file__).with_name("measures.toml")
LEVELS = (1, 2, 3, 4, 5)
_KEYS = {"id", "level", "category", "description", "check", "attest", "params"}


def level_name(level: int) -> str:
    """``SL3``; ``below SL1`` for 0."""
    return f"SL{level}" if level else "below SL1"


@dataclass(frozen=True)
class Measure:
    """One security measure at one level, shown by a check or by a person's attestation."""

    id: str
    level: int
    category: str
    description: str
    check: str | None = None
    attest: str | None = None
    params: dict[str, int] = field(default_factory=dict)

    @property
    def check_key(self) -> str:
        """The check with its parameters, e.g. ``grant-expiry(max_hours=24)``: one run each."""
        if self.check is None:
            return ""
        if not self.params:
            return self.check
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.check}({inner})"

    def to_json(self) -> dict[str, Any]:
        return {**field_dict(self), "params": dict(self.params)}


def load_measures(path: Path = MEASURES_PATH, *, known_checks: frozenset[str]) -> list[Measure]:
    """Parse a measure table; ``known_checks`` are the check ids that exist."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FormatError(f"{path}: cannot read the measure table ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise FormatError(f"{path}: not valid TOML ({exc})") from exc
    if set(doc) != {"measure"} or not isinstance(doc["measure"], list):
        raise FormatError(f"{path}: expected only [[measure]] tables")
    measures: list[Measure] = []
    seen: set[str] = set()
    for index, entry in enumerate(doc["measure"]):
        where = f"{path.name}: measure[{index}]"
        extra = set(entry) - _KEYS
        if extra:
            raise FormatError(f"{where}: unknown key {sorted(extra)[0]}")
        measure_id = entry.get("id")
        if not isinstance(measure_id, str) or not measure_id or measure_id in seen:
            raise FormatError(f"{where}.id: missing or repeated")
        seen.add(measure_id)
        level = entry.get("level")
        if isinstance(level, bool) or level not in LEVELS:
            raise FormatError(f"{where}.level: expected 1 to 5")
        for key in ("category", "description"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise FormatError(f"{where}.{key}: expected a non-empty string")
        check, attest = entry.get("check"), entry.get("attest")
        if (check is None) == (attest is None):
            raise FormatError(f"{where}: give exactly one of check and attest")
        if check is not None and check not in known_checks:
            raise FormatError(f"{where}.check: unknown check {check!r}")
        if attest is not None and (not isinstance(attest, str) or not attest):
            raise FormatError(f"{where}.attest: expected a control id")
        params = entry.get("params", {})
        if not isinstance(params, dict) or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in params.values()
        ):
            raise FormatError(f"{where}.params: expected non-negative integers")
        if attest is not None and params:
            raise FormatError(f"{where}.params: only checks take parameters")
        measures.append(
            Measure(
                id=measure_id,
                level=level,
                category=entry["category"],
                description=entry["description"],
                check=check,
                attest=attest,
                params=dict(params),
            )
        )
    return measures
