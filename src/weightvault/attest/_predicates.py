"""The predicate types weightvault signs, with their required fields, checked strictly.

Each kind has a ``predicateType`` URI (versioned: a change to the fields is a new URI) and a
checker that refuses a predicate missing a required field, holding an unknown one, or holding a
value of the wrong type, naming the field (``predicate.metrics.accuracy: expected a number``).
Training provenance is SLSA Provenance v1; its shape is checked with the ``in-toto-attestation``
bindings (their protobuf message refuses unknown fields) and SLSA's required fields on top.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Mapping
from typing import Any

from weightvault.errors import FormatError

__all__ = [
    "EVAL_RESULTS",
    "KINDS",
    "MODEL_CARD",
    "ROW_GROUPS",
    "TRAINING_PROVENANCE",
    "check_predicate",
    "format_time",
    "kind_of",
    "metric_misses",
    "parse_time",
    "predicate_expiry",
    "predicate_type_for",
    "threshold_failures",
]

MODEL_CARD = "https://weightvault.dev/attestation/model-card/v1"
EVAL_RESULTS = "https://weightvault.dev/attestation/eval-results/v1"
TRAINING_PROVENANCE = "https://slsa.dev/provenance/v1"
ROW_GROUPS = "https://weightvault.dev/attestation/row-groups/v1"

#: Short names (the command line's ``--predicate``) and their ``predicateType`` URIs.
KINDS: dict[str, str] = {
    "model-card": MODEL_CARD,
    "eval-results": EVAL_RESULTS,
    "training-provenance": TRAINING_PROVENANCE,
    "row-groups": ROW_GROUPS,
}


def predicate_type_for(kind: str) -> str:
    """The URI of a short name; a URI (another package's predicate type) is returned as it is."""
    if kind in KINDS:
        return KINDS[kind]
    if "://" in kind:
        return kind
    raise ValueError(f"unknown attestation kind {kind!r} (expected one of {', '.join(KINDS)})")


def kind_of(predicate_type: str) -> str | None:
    """The short name of a known predicate type, ``None`` for another one."""
    for kind, uri in KINDS.items():
        if uri == predicate_type:
            return kind
    return None


def parse_time(value: Any, where: str) -> datetime.datetime:
    """An RFC 3339 time with its offset (``2026-12-06T06:00:00Z``), as an aware datetime."""
    if not isinstance(value, str):
        raise FormatError(f"{where}: expected an RFC 3339 time string")
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError as exc:
        raise FormatError(f"{where}: not an RFC 3339 time ({value!r})") from exc
    if "T" not in value or parsed.tzinfo is None:
        raise FormatError(f"{where}: an RFC 3339 time needs a date, a time and an offset")
    return parsed


def format_time(moment: datetime.datetime) -> str:
    """``moment`` in UTC as RFC 3339 with a ``Z`` (whole seconds)."""
    if moment.tzinfo is None:
        raise ValueError("a time zone is needed (use an aware datetime)")
    utc = moment.astimezone(datetime.UTC).replace(microsecond=0)
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fields(predicate: Any, required: set[str], optional: set[str], where: str) -> dict[str, Any]:
    if not isinstance(predicate, dict):
        raise FormatError(f"{where}: expected an object")
    for name in sorted(required):
        if name not in predicate:
            raise FormatError(f"{where}.{name}: missing")
    for name in predicate:
        if name not in required | optional:
            raise FormatError(f"{where}.{name}: unknown field")
    return predicate


def _text(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj[name]
    if not isinstance(value, str) or not value.strip():
        raise FormatError(f"{where}.{name}: expected a non-empty string")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FormatError(f"{where}: expected a number")
    if not math.isfinite(value):
        raise FormatError(f"{where}: not a finite number")
    return float(value)


def _optional_texts(obj: dict[str, Any], names: tuple[str, ...], where: str) -> None:
    for name in names:
        if name in obj:
            _text(obj, name, where)


def _check_model_card(predicate: Any, where: str) -> None:
    """``content`` (the card, usually Markdown) and its ``mediaType``; the rest optional."""
    optional = {"name", "version", "license", "intendedUse", "limitations", "expires"}
    card = _fields(predicate, {"content", "mediaType"}, optional, where)
    _text(card, "content", where)
    _text(card, "mediaType", where)
    _optional_texts(card, ("name", "version", "license", "intendedUse", "limitations"), where)
    if "expires" in card:
        parse_time(card["expires"], f"{where}.expires")


def _check_eval_results(predicate: Any, where: str) -> None:
    """``suite``, ``metrics`` (name -> number), ``evaluator``, ``evaluatedOn``; optional
    ``thresholds`` (name -> ``{"min", "max"}``, names among the metrics), ``suiteVersion``,
    ``notes`` and ``expires`` (after ``evaluatedOn``)."""
    optional = {"thresholds", "suiteVersion", "notes", "expires"}
    results = _fields(predicate, {"suite", "metrics", "evaluator", "evaluatedOn"}, optional, where)
    _text(results, "suite", where)
    _text(results, "evaluator", where)
    _optional_texts(results, ("suiteVersion", "notes"), where)
    evaluated_on = parse_time(results["evaluatedOn"], f"{where}.evaluatedOn")
    metrics = results["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        raise FormatError(f"{where}.metrics: expected a non-empty object of name: number")
    for name, value in metrics.items():
        if not name:
            raise FormatError(f"{where}.metrics: empty metric name")
        _number(value, f"{where}.metrics.{name}")
    thresholds = results.get("thresholds", {})
    if not isinstance(thresholds, dict):
        raise FormatError(f"{where}.thresholds: expected an object of name: {{min, max}}")
    for name, bounds in thresholds.items():
        at = f"{where}.thresholds.{name}"
        if name not in metrics:
            raise FormatError(f"{at}: no metric of that name")
        if not isinstance(bounds, dict) or not bounds or set(bounds) - {"min", "max"}:
            raise FormatError(f"{at}: expected an object with min and/or max")
        for bound in bounds:
            _number(bounds[bound], f"{at}.{bound}")
    if "expires" in results:
        expires = parse_time(results["expires"], f"{where}.expires")
        if expires <= evaluated_on:
            raise FormatError(f"{where}.expires: not after evaluatedOn")


def _check_training_provenance(predicate: Any, where: str) -> None:
    """SLSA Provenance v1: the bindings' message shape, then SLSA's required fields
    (``buildDefinition.buildType``, ``buildDefinition.externalParameters``,
    ``runDetails.builder.id``)."""
    from google.protobuf import json_format  # type: ignore[import-untyped]
    from in_toto_attestation.predicates.provenance.v1 import (  # type: ignore[import-untyped]
        provenance_pb2,
    )

    if not isinstance(predicate, dict):
        raise FormatError(f"{where}: expected an object")
    try:
        json_format.ParseDict(predicate, provenance_pb2.Provenance())
    except json_format.ParseError as exc:
        raise FormatError(f"{where}: not an SLSA provenance v1 predicate ({exc})") from exc
    definition = _fields(
        predicate.get("buildDefinition"),
        {"buildType", "externalParameters"},
        {"internalParameters", "resolvedDependencies"},
        f"{where}.buildDefinition",
    )
    _text(definition, "buildType", f"{where}.buildDefinition")
    if not isinstance(definition["externalParameters"], dict):
        raise FormatError(f"{where}.buildDefinition.externalParameters: expected an object")
    run = _fields(
        predicate.get("runDetails"), {"builder"}, {"metadata", "byproducts"}, f"{where}.runDetails"
    )
    builder = run["builder"]
    if not isinstance(builder, dict):
        raise FormatError(f"{where}.runDetails.builder: expected an object")
    if "id" not in builder:
        raise FormatError(f"{where}.runDetails.builder.id: missing")
    _text(builder, "id", f"{where}.runDetails.builder")
    for index, dependency in enumerate(definition.get("resolvedDependencies", [])):
        at = f"{where}.buildDefinition.resolvedDependencies[{index}]"
        if not any(dependency.get(k) for k in ("name", "uri", "digest")):
            raise FormatError(f"{at}: needs a name, a uri or a digest")


def _check_row_groups(predicate: Any, where: str) -> None:
    from weightvault.attest._rowgroups import check_row_groups_predicate

    check_row_groups_predicate(predicate, where)


_CHECKERS: dict[str, Callable[[Any, str], None]] = {
    MODEL_CARD: _check_model_card,
    EVAL_RESULTS: _check_eval_results,
    TRAINING_PROVENANCE: _check_training_provenance,
    ROW_GROUPS: _check_row_groups,
}


def check_predicate(predicate_type: str, predicate: Any, where: str = "predicate") -> None:
    """Refuse a predicate of a known type that lacks a required field or holds a wrong one
    (:class:`FormatError` naming it); a predicate of another type only has to be an object."""
    checker = _CHECKERS.get(predicate_type)
    if checker is not None:
        checker(predicate, where)
    elif not isinstance(predicate, dict):
        raise FormatError(f"{where}: expected an object")


def predicate_expiry(predicate_type: str, predicate: dict[str, Any]) -> datetime.datetime | None:
    """When a (checked) predicate stops vouching: its ``expires``, if its type has one."""
    if predicate_type in (MODEL_CARD, EVAL_RESULTS) and "expires" in predicate:
        return parse_time(predicate["expires"], "predicate.expires")
    return None


def threshold_failures(predicate: dict[str, Any]) -> list[str]:
    """The metrics of (checked) evaluation results outside their own thresholds, one line
    each (``accuracy 0.41 < min 0.5``); empty when every threshold holds."""
    return metric_misses(predicate.get("thresholds", {}), predicate.get("metrics", {}))


def metric_misses(
    thresholds: Mapping[str, Mapping[str, float]], metrics: Mapping[str, float]
) -> list[str]:
    """Each way ``metrics`` miss ``thresholds`` (name -> ``{"min", "max"}``), one line each in
    name order: ``no metric accuracy``, ``accuracy 0.41 < min 0.5``; empty when all hold.

    One wording for every place that holds results to thresholds: evaluation results to their
    own, and a release gate's requirement to the results it relies on."""
    misses: list[str] = []
    for name, bounds in sorted(thresholds.items()):
        if name not in metrics:
            misses.append(f"no metric {name}")
            continue
        value = metrics[name]
        if "min" in bounds and value < bounds["min"]:
            misses.append(f"{name} {value} < min {bounds['min']}")
        if "max" in bounds and value > bounds["max"]:
            misses.append(f"{name} {value} > max {bounds['max']}")
    return misses
