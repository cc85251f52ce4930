"""Leak attribution: keyed per-recipient marks in released weights, and tracing a leaked copy."""

from __future__ import annotations

__all__: list[str] = []
