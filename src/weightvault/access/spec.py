"""Job requests: what a researcher or auditor asks to run next to the weights, parsed strictly.

A request names a model version, a job kind and the kind's parameters and inputs. Parsing fills
every default in, so the canonical JSON of the parsed request (:meth:`JobRequest.to_json`) is
exactly what runs, and its SHA-256 (:meth:`JobRequest.digest`) is what approvals bind and the
log records. Inputs are token ids (the model's own vocabulary) and datasets in JSON Lines:

* one row per line, a JSON object ``{"input_ids": [int, ...]}`` (language models: loss, perplexity
  and next-token accuracy are measured on it), or ``{"input_ids": [...], "label": int}``
  (sequence classifiers: accuracy and loss), or ``{"features": [number, ...], "label": int}``
  (a tamper-lab testbed whose inputs are numbers, such as ``digits``: accuracy and loss);
* at most :data:`MAX_DATASET_BYTES` bytes and :data:`MAX_ROWS` rows, at most
  :data:`MAX_SEQUENCE` ids a row.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from weightvault._dataclass_json import field_dict
from weightvault._json import canonical, load_object
from weightvault.errors import FormatError

__all__ = [
    "KINDS",
    "MAX_DATASET_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_ROWS",
    "MAX_SEQUENCE",
    "JobRequest",
    "parse_dataset",
    "parse_job_request",
]

KINDS = ("query", "evaluate", "finetune", "inspect")
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_DATASET_BYTES = 1024 * 1024
MAX_ROWS = 10_000
MAX_SEQUENCE = 512
_MAX_PROMPTS = 64
_MAX_INSPECT_PROMPTS = 8
_MAX_INSPECT_TOKENS = 64
_MAX_TOKEN_ID = 1 << 24
MAX_FEATURES = 4096
"""Numbers in one ``features`` row (a tamper-lab testbed's input, such as 64 pixels)."""


def _integer(low: int, high: int) -> Callable[[object, str], int]:
    def check(value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise FormatError(f"{where}: expected an integer from {low} to {high}")
        return value

    return check


def _number(low: float, high: float) -> Callable[[object, str], float]:
    def check(value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FormatError(f"{where}: expected a number")
        number = float(value)
        if not math.isfinite(number) or not low <= number <= high:
            raise FormatError(f"{where}: expected a number from {low} to {high}")
        return number

    return check


def _boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise FormatError(f"{where}: expected true or false")
    return value


def _text(limit: int) -> Callable[[object, str], str]:
    def check(value: object, where: str) -> str:
        if not isinstance(value, str) or not value or len(value) > limit:
            raise FormatError(f"{where}: expected a non-empty string of at most {limit} characters")
        return value

    return check


def _ids(value: object, where: str, limit: int = MAX_SEQUENCE) -> list[int]:
    if not isinstance(value, list) or not 1 <= len(value) <= limit:
        raise FormatError(f"{where}: expected a list of 1 to {limit} token ids")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < _MAX_TOKEN_ID:
            raise FormatError(f"{where}[{i}]: expected a non-negative token id")
    return list(value)


def _features(value: object, where: str) -> list[float]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_FEATURES:
        raise FormatError(f"{where}: expected a list of 1 to {MAX_FEATURES} numbers")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise FormatError(f"{where}[{i}]: expected a finite number")
        if abs(item) > 1e6:
            raise FormatError(f"{where}[{i}]: expected a number from -1e6 to 1e6")
    return [float(item) for item in value]


def _feature_rows(value: object, where: str) -> list[list[float]]:
    if not isinstance(value, list) or not 1 <= len(value) <= _MAX_PROMPTS:
        raise FormatError(f"{where}: expected a list of 1 to {_MAX_PROMPTS} rows of numbers")
    return [_features(row, f"{where}[{i}]") for i, row in enumerate(value)]


def _prompts(count: int, length: int) -> Callable[[object, str], list[list[int]]]:
    def check(value: object, where: str) -> list[list[int]]:
        if not isinstance(value, list) or not 1 <= len(value) <= count:
            raise FormatError(f"{where}: expected a list of 1 to {count} prompts")
        return [_ids(p, f"{where}[{i}]", length) for i, p in enumerate(value)]

    return check


def parse_dataset(value: object, where: str) -> list[dict[str, Any]]:
    """Rows of a JSON Lines dataset (see the module docstring); blank lines are skipped."""
    if not isinstance(value, str) or len(value.encode("utf-8")) > MAX_DATASET_BYTES:
        raise FormatError(f"{where}: expected JSON Lines text of at most {MAX_DATASET_BYTES} bytes")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(value.splitlines(), 1):
        if not line.strip():
            continue
        at = f"{where} line {number}"
        doc = load_object(line, at)
        if "features" in doc:
            if set(doc) != {"features", "label"}:
                raise FormatError(f"{at}: expected features and label")
            row: dict[str, Any] = {"features": _features(doc["features"], f"{at}.features")}
        elif {"input_ids"} <= set(doc) <= {"input_ids", "label"}:
            row = {"input_ids": _ids(doc["input_ids"], f"{at}.input_ids")}
        else:
            raise FormatError(f"{at}: expected input_ids and, for classifiers, label")
        if "label" in doc:
            row["label"] = _integer(0, 1 << 16)(doc["label"], f"{at}.label")
        rows.append(row)
        if len(rows) > MAX_ROWS:
            raise FormatError(f"{where}: more than {MAX_ROWS} rows")
    if not rows:
        raise FormatError(f"{where}: no rows")
    return rows


Field = tuple[Callable[[object, str], Any], Any]
"""A field's check and its default (``...``: required)."""

_PARAMETERS: dict[str, dict[str, Field]] = {
    "query": {
        "max_new_tokens": (_integer(1, 256), 16),
        "temperature": (_number(0.0, 10.0), 0.0),
        "top_k": (_integer(0, 100_000), 0),
        "top_p": (_number(0.0, 1.0), 1.0),
        "seed": (_integer(0, (1 << 63) - 1), 0),
    },
    "evaluate": {"evaluation": (_text(128), "builtin:dataset")},
    "finetune": {
        "steps": (_integer(1, 1000), 20),
        "learning_rate": (_number(1e-7, 1.0), 1e-3),
        "batch_size": (_integer(1, 64), 8),
        "seed": (_integer(0, (1 << 63) - 1), 0),
    },
    "inspect": {
        "statistics": (_boolean, True),
        "logit_lens_top_k": (_integer(0, 10), 0),
    },
}
_INPUTS: dict[str, dict[str, Field]] = {
    "query": {
        "prompts": (_prompts(_MAX_PROMPTS, MAX_SEQUENCE), None),
        "features": (_feature_rows, None),
    },
    "evaluate": {"dataset": (parse_dataset, None)},
    "finetune": {"train": (parse_dataset, ...), "eval": (parse_dataset, None)},
    "inspect": {"prompts": (_prompts(_MAX_INSPECT_PROMPTS, _MAX_INSPECT_TOKENS), ...)},
}


def _fields(doc: object, fields: dict[str, Field], where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise FormatError(f"{where}: expected an object")
    extra = set(doc) - set(fields)
    if extra:
        raise FormatError(f"{where}: unknown field {sorted(extra)[0]}")
    out: dict[str, Any] = {}
    for name, (check, default) in fields.items():
        if name in doc:
            check(doc[name], f"{where}.{name}")
            out[name] = doc[name]  # the submitted spelling (datasets stay text)
        elif default is ...:
            raise FormatError(f"{where}: missing field {name}")
        elif default is not None:
            out[name] = default
    return out


@dataclass(frozen=True)
class JobRequest:
    """One job as it will run: kind, model version, every parameter (defaults filled in), inputs."""

    kind: str
    model: str
    version: str
    parameters: dict[str, Any]
    inputs: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return field_dict(self, sort_keys=True)

    def to_json(self) -> bytes:
        """Canonical JSON: the bytes :meth:`digest` hashes."""
        return canonical(self.to_dict(), ascii_only=True)

    def digest(self) -> str:
        """``sha256:<hex>`` of :meth:`to_json` (what approvals bind and the log records)."""
        return "sha256:" + hashlib.sha256(self.to_json()).hexdigest()

    def inputs_digest(self) -> str:
        return "sha256:" + hashlib.sha256(canonical(self.inputs, ascii_only=True)).hexdigest()

    @classmethod
    def from_json(cls, data: bytes | str) -> JobRequest:
        return parse_job_request(load_object(data, "job", max_bytes=MAX_REQUEST_BYTES))


def parse_job_request(doc: object, *, where: str = "job") -> JobRequest:
    """Check a request document (``kind``, ``model``, ``version``, ``parameters``, ``inputs``)."""
    if not isinstance(doc, dict):
        raise FormatError(f"{where}: expected an object")
    extra = set(doc) - {"kind", "model", "version", "parameters", "inputs"}
    if extra:
        raise FormatError(f"{where}: unknown field {sorted(extra)[0]}")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise FormatError(f"{where}.kind: expected one of {', '.join(KINDS)}")
    model = _text(128)(doc.get("model"), f"{where}.model")
    version = _text(64)(doc.get("version"), f"{where}.version")
    parameters = _fields(doc.get("parameters", {}), _PARAMETERS[kind], f"{where}.parameters")
    inputs = _fields(doc.get("inputs", {}), _INPUTS[kind], f"{where}.inputs")
    if kind == "query" and len(inputs) != 1:
        raise FormatError(
            f"{where}.inputs: missing field prompts (or features, for a tamper-lab testbed)"
            if not inputs
            else f"{where}.inputs: expected prompts or features, not both"
        )
    if (
        kind == "evaluate"
        and parameters["evaluation"] == "builtin:dataset"
        and "dataset" not in inputs
    ):
        raise FormatError(f"{where}.inputs: the builtin:dataset evaluation needs a dataset")
    return JobRequest(kind, model, version, parameters, inputs)
