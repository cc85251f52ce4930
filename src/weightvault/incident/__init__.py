"""Incident response over custody's records: timelines with proofs, shareable reports, suspect files."""

from __future__ import annotations

__all__: list[str] = []
