"""Inventory: find copies of custody models (exact, re-saved, encrypted) and stray weight files."""

from __future__ import annotations

__all__: list[str] = []
