"""Structured access: jobs that run next to the weights in an isolated worker.

Kinds: query, evaluate, finetune, inspect (:mod:`.spec`); the worker and its isolation
(:mod:`.sandbox`, :mod:`.worker`); signed results that verify offline (:mod:`.result`).
"""

from __future__ import annotations

__all__: list[str] = []
