"""Security posture: a deployment checked against the RAND SL1-SL5 measures software can check."""

from __future__ import annotations

__all__: list[str] = []
