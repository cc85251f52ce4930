"""Signed statements bound to a model's root digest: model cards, evaluation results, provenance."""

from __future__ import annotations

__all__: list[str] = []
