"""Keras models: the v3 ``.keras`` zip (``config.json``) and legacy HDF5 ``.h5`` (``model_config``).

Keras weights files hold no pickle; the code-execution path is the model config: ``Lambda``
layers carry marshalled Python bytecode, and ``module`` / ``registered_name`` entries make the
loader import arbitrary modules. HDF5 is read with ``h5py`` (the optional ``[scan]`` extra);
without it an ``.h5`` file is an error, never "clean".
"""

from __future__ import annotations

import json
import zipfile
import zlib
from typing import Any, BinaryIO

from weightvault.scan._engine import FileContext
from weightvault.scan.policy import Severity

__all__ = ["scan_hdf5", "scan_keras_config", "walk_config"]

_KERAS_MODULES = ("keras", "tf_keras", "tensorflow", "keras_nlp", "keras_hub", "keras_cv")
_MAX_DEPTH = 200


def walk_config(ctx: FileContext, config: Any, location: str) -> None:
    """Report Lambda layers, custom objects and function references in a Keras config."""
    seen: set[tuple[str, str]] = set()

    def report(severity: Severity, subject: str, message: str) -> None:
        if (subject, message) in seen:
            return
        seen.add((subject, message))
        ctx.find(severity, "config", subject, message, location)

    def visit(node: Any, depth: int) -> None:
        if depth > _MAX_DEPTH:
            ctx.error(location, "keras config nested too deeply")
            return
        if isinstance(node, list):
            for item in node:
                visit(item, depth + 1)
            return
        if not isinstance(node, dict):
            return
        class_name = node.get("class_name")
        if class_name in ("Lambda", "__lambda__"):
            report(Severity.DANGEROUS, "Lambda",
                   "Lambda layer: its serialized Python code runs when the model loads")
        elif class_name in ("TFOpLambda", "SlicingOpLambda"):
            report(Severity.UNKNOWN, str(class_name),
                   "layer calls a TensorFlow function chosen by name in the config")
        if node.get("function_type") == "lambda":
            report(Severity.DANGEROUS, "Lambda", "config holds a serialized lambda function")
        module = node.get("module")
        if isinstance(module, str):
            target = node.get("config") if class_name == "function" else class_name
            name = target if isinstance(target, str) else str(class_name)
            verdict = ctx.policy.classify(module, name)
            if verdict.severity == Severity.DANGEROUS:
                report(Severity.DANGEROUS, f"{module}.{name}",
                       f"config references {module}.{name}: {verdict.reason}")
            elif module.split(".")[0] not in _KERAS_MODULES and verdict.severity > Severity.SAFE:
                report(Severity.UNKNOWN, f"{module}.{name}",
                       "custom object: the loader imports this module")
        registered = node.get("registered_name")
        if isinstance(registered, str) and ">" in registered:
            package = registered.split(">", 1)[0]
            if package.split(".")[0] not in _KERAS_MODULES and package != "Custom":
                report(Severity.UNKNOWN, registered,
                       "custom registered object: needs code from outside Keras")
        for value in node.values():
            visit(value, depth + 1)

    visit(config, 0)


def _parse_json(ctx: FileContext, data: bytes | str, location: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        ctx.error(location, f"keras config is not valid JSON: {exc}")
        return None


def scan_keras_config(
    ctx: FileContext, archive: zipfile.ZipFile, info: zipfile.ZipInfo, location: str,
) -> None:
    if info.file_size > ctx.limits.max_json_bytes:
        ctx.error(location, "keras config.json is larger than the JSON limit")
        return
    try:
        with archive.open(info) as handle:
            data = handle.read(ctx.limits.max_json_bytes + 1)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError, ValueError,
            zlib.error) as exc:
        ctx.error(location, f"keras config.json unreadable: {exc}")
        return
    config = _parse_json(ctx, data, location)
    if config is not None:
        walk_config(ctx, config, location)


def scan_hdf5(ctx: FileContext, handle: BinaryIO, location: str) -> None:
    try:
        import h5py
    except ImportError:
        ctx.error(
            location,
            "HDF5 file not scanned: install the optional extra (pip install 'weightvault[scan]')",
        )
        return
    try:
        with h5py.File(handle, "r") as h5:
            for key in ("model_config", "training_config"):
                if key not in h5.attrs:
                    continue
                value = h5.attrs[key]
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                if not isinstance(value, str):
                    ctx.error(location, f"HDF5 attribute {key} is not a string")
                    continue
                if len(value) > ctx.limits.max_json_bytes:
                    ctx.error(location, f"HDF5 attribute {key} is larger than the JSON limit")
                    continue
                config = _parse_json(ctx, value, f"{location}#{key}" if location else key)
                if config is not None:
                    walk_config(ctx, config, f"{location}#{key}" if location else key)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        ctx.error(location, f"HDF5 unreadable: {' '.join(str(exc).split())}")
