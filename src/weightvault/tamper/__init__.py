"""Tamper-resistance lab: red-team a released model with fine-tuning attacks; train defenses.

Public API (needs the ``[tamper]`` extra: torch, numpy, scikit-learn, matplotlib, safetensors;
names resolve lazily, so importing :mod:`weightvault.tamper.spec` alone does not load torch):

* specs and grids: :class:`AttackSpec`, :class:`ProbeSpec`, :class:`SearchSpec`,
  :class:`AttackSuite`, :func:`preset_suite`, :class:`AttackGrid` (split before training),
  :func:`default_grid`, :func:`evaluation_suite`;
* testbeds and adapters: :class:`Testbed` (bring your own), :class:`TamperModel`,
  :class:`TamperData`, :class:`Split`, :func:`load_adapter`, :func:`save_model`,
  :func:`load_model`;
* attacks and evaluation: :func:`run_attack`, :func:`run_suite`, :class:`SuiteResult`;
* defenses: :func:`defend`, :func:`train_defense`, :class:`MLACConfig`,
  :class:`TARConfig`, :class:`DefenseRecord`;
* defaults (read from a file written before evaluation): :class:`LabDefaults`,
  :func:`load_defaults`, :func:`tune`;
* the whole lab: :func:`run_lab`;
* reports: :func:`summarize`, :func:`write_report`.

What it measures is a *cost*: how many steps and examples an attacker needs to get the harmful
capability back. It never certifies a model as tamper-proof.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "AttackRun": "weightvault.tamper.runs",
    "run_attack": "weightvault.tamper.attacks",
    "DefenseRecord": "weightvault.tamper.defenses",
    "MLACConfig": "weightvault.tamper.defenses",
    "TARConfig": "weightvault.tamper.defenses",
    "defend": "weightvault.tamper.defenses",
    "train_defense": "weightvault.tamper.defenses",
    "SuiteResult": "weightvault.tamper.evaluate",
    "run_suite": "weightvault.tamper.evaluate",
    "AttackGrid": "weightvault.tamper.grid",
    "default_grid": "weightvault.tamper.grid",
    "evaluation_suite": "weightvault.tamper.grid",
    "LabDefaults": "weightvault.tamper.defaults",
    "load_defaults": "weightvault.tamper.defaults",
    "tune": "weightvault.tamper.defaults",
    "run_lab": "weightvault.tamper.lab",
    "summarize": "weightvault.tamper.summary",
    "write_report": "weightvault.tamper.report",
    "AttackSpec": "weightvault.tamper.spec",
    "AttackSuite": "weightvault.tamper.spec",
    "ProbeSpec": "weightvault.tamper.spec",
    "SearchSpec": "weightvault.tamper.spec",
    "preset_suite": "weightvault.tamper.spec",
    "Split": "weightvault.tamper.base",
    "TamperData": "weightvault.tamper.base",
    "TamperModel": "weightvault.tamper.base",
    "Testbed": "weightvault.tamper.base",
    "load_adapter": "weightvault.tamper.testbed",
    "load_model": "weightvault.tamper.base",
    "save_model": "weightvault.tamper.base",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'weightvault.tamper' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
