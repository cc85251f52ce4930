"""Paths the tests share: the checkout and the fixtures that live beside it (not in git).

``shared/fixtures`` sits next to the checkout (``../shared/fixtures``); tests that need it skip
with a reason naming the path when it is absent.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MODEL_SIGNING_HISTORY", "OFFLINE_TRUST_CONFIG", "REPO", "SHARED_FIXTURES"]

REPO = Path(__file__).resolve().parents[1]
"""The checkout's root (the folder holding ``src`` and ``tests``)."""

SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"

MODEL_SIGNING_HISTORY = SHARED_FIXTURES / "model-signing-history"
"""Signatures model-signing produced over its releases, with their models, keys and certificates."""

OFFLINE_TRUST_CONFIG = MODEL_SIGNING_HISTORY / "offline_prod_trust_config.json"
"""Sigstore's production trust root as a client trust config, for verifying offline."""
