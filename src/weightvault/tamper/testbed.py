"""Testbeds by name: the built-in ones (``digits``, ``bios``, ``minilm``) and your own adapters.

This module sits above :mod:`weightvault.tamper.base` (the adapter interface, see its docstring
and ``docs/tamper.md``) and the built-in testbeds, which depend only on that base; it re-exports
the base names so that ``weightvault.tamper.testbed`` stays the one place adapters import from.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from weightvault.errors import InputError, UsageError
from weightvault.tamper.base import (
    METADATA_KEY,
    Split,
    TamperData,
    TamperModel,
    Testbed,
    load_model,
    random_init_model,
    read_metadata,
    save_model,
)
from weightvault.tamper.bios import BiosTestbed
from weightvault.tamper.digits import DigitsTestbed
from weightvault.tamper.minilm import MiniLMTestbed

__all__ = [
    "BUILTIN_TESTBEDS",
    "METADATA_KEY",
    "Split",
    "TamperData",
    "TamperModel",
    "Testbed",
    "load_adapter",
    "load_model",
    "random_init_model",
    "read_metadata",
    "save_model",
]

BUILTIN_TESTBEDS: dict[str, Callable[[], Testbed]] = {
    "digits": DigitsTestbed,
    "bios": BiosTestbed,
    "bios-small": lambda: BiosTestbed("bios-small"),
    "bios-base": lambda: BiosTestbed("bios-base"),
    "minilm": MiniLMTestbed,
}
"""The testbeds :func:`load_adapter` knows by name (each built with its defaults)."""


def load_adapter(reference: str) -> Testbed:
    """Build a testbed from built-in names (``digits``, ``bios``, ``bios-small``, ``bios-base``,
    ``minilm``) or
    ``module:callable``.

    ``module:callable`` is imported and called with no arguments; it must return an object
    satisfying :class:`Testbed`.
    """
    builtin = BUILTIN_TESTBEDS.get(reference)
    if builtin is not None:
        return builtin()
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(
            f"testbed {reference!r}: use digits, bios, bios-small, bios-base, minilm or "
            "module:callable for your own adapter"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"testbed {reference!r}: cannot import ({exc})") from exc
    testbed = factory()
    if not isinstance(testbed, Testbed):
        raise InputError(
            f"testbed {reference!r}: object does not implement the Testbed interface "
            "(name, feature_dim, make_trunk, release, data, extra_references)"
        )
    return testbed
