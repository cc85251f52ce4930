"""Structured access: jobs that run next to the weights in an isolated worker (query, evaluate, finetune, inspect)."""

from __future__ import annotations

__all__: list[str] = []
