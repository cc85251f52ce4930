"""No misspellings in what users read: messages and help in ``src/``, README.md and ``docs/``.

The checker is codespell (its default dictionaries of common misspellings). The ignore list
below holds only words it flags that are right here, each with the reason.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO

CHECKED = ("src", "README.md", "docs")

#: Words codespell flags that are correct where they appear.
FALSE_POSITIVES = {
    "datas": "tamper grid field: the list of attack data variants (harmful, benign-then-harmful)",
    "modelin": "pydantic request model ModelIn (the body of POST /v1/models) in custody.app",
    "requestin": "pydantic request model RequestIn (the body of POST /v1/requests)",
    "sav": "the .sav file suffix (joblib/pickle files named so by scikit-learn users)",
}
#: Not text (binary fixtures, lock files): codespell would only find noise in them.
SKIPPED = ("*.png", "*.safetensors", "*.bin", "*.pkl", "*.pt", "*.gz")


def _codespell(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codespell_lib", "--skip", ",".join(SKIPPED), *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


def test_user_facing_text_has_no_misspellings() -> None:
    result = _codespell("--ignore-words-list", ",".join(FALSE_POSITIVES), *CHECKED)
    assert result.returncode == 0, (
        "misspellings (fix them, or add a true false positive to FALSE_POSITIVES with why):\n"
        + result.stdout
        + result.stderr
    )


def test_the_checker_finds_a_misspelling(tmp_path: Path) -> None:
    """The test above can fail: a planted misspelling in a message is reported, with its line."""
    sample = tmp_path / "message.py"
    sample.write_text('raise InputError("cannot recieve the file")\n')
    result = _codespell(str(sample))
    assert result.returncode != 0
    assert "message.py:1: recieve ==> receive" in result.stdout


def test_every_ignored_word_still_occurs() -> None:
    """A word that no longer appears must leave the ignore list, so it cannot hide a typo."""
    text = "\n".join(
        path.read_text(errors="replace").lower()
        for root in CHECKED
        for path in ([REPO / root] if (REPO / root).is_file() else (REPO / root).rglob("*"))
        if path.is_file() and path.suffix in {".py", ".md", ".json", ".toml", ".txt", ""}
    )
    for word in FALSE_POSITIVES:
        assert re.search(rf"\b{word}\b", text), f"{word!r} no longer occurs; drop it"
