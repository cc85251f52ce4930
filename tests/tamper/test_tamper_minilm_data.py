"""The MiniLM tier's synthetic bios (cheap parts only; the model run is a documented benchmark)."""

from __future__ import annotations

import re

from weightvault.tamper.minilm import PROFESSIONS, _names, make_bios

PRONOUNS = re.compile(r"\b(he|she|him|her|his|hers|himself|herself|mr|mrs|ms)\b", re.IGNORECASE)


def test_bios_are_pronoun_neutral_balanced_and_deterministic() -> None:
    names = _names()
    assert len(names["M"]) > 200 and len(names["F"]) > 200
    assert not set(names["M"]) & set(names["F"])
    bios = make_bios(400, names, seed=3)
    assert bios == make_bios(400, names, seed=3)
    assert all(not PRONOUNS.search(text) for text, _, _ in bios)
    assert sum(g for _, _, g in bios) == 200  # gender balanced
    assert {p for _, p, _ in bios} == set(range(len(PROFESSIONS)))
    for text, _, gender in bios[:50]:
        first = text.split()[0]
        assert first in names["F" if gender else "M"]
        # the job title never appears: the profession must be inferred from the description
        assert not any(title in text for title in PROFESSIONS)
