"""The house rules of docs/architecture.md that ``lint-imports`` cannot check by itself.

import-linter (``[tool.importlinter]`` in pyproject.toml, run by scripts/test.sh) sees which
*modules* import which. It cannot see a private *name* taken from another package's module
(``from weightvault.cli.log import _FORCE``), and it does not compare its contracts with the
document that explains them. These tests do both.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from tests.paths import REPO

SRC = REPO / "src"
ARCHITECTURE = REPO / "docs" / "architecture.md"


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(dotted: str, src: Path) -> bool:
    return (src.joinpath(*dotted.split(".")) / "__init__.py").is_file()


def _imported_names(path: Path, src: Path) -> list[tuple[int, str]]:
    """Every ``weightvault`` name ``path`` imports, anywhere in it (inside functions too), fully
    qualified: ``from weightvault.cli import _exit`` gives ``weightvault.cli._exit``."""
    module = _module_name(path, src)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            found += [(node.lineno, f"{source}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "weightvault"]


def _private_owner(dotted: str, src: Path = SRC) -> str | None:
    """The package that keeps the first private part of ``dotted`` to itself, or ``None`` if no
    part is private. A private module or name belongs to the package holding it: the package
    itself for ``pkg._name``, the module's package for ``pkg.module._name``."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            holder = ".".join(parts[:i])
            return holder if _is_package(holder, src) else holder.rpartition(".")[0]
    return None


def private_imports_across_packages(src: Path = SRC) -> list[str]:
    """``file:line: name`` for each private name imported from outside the package that holds
    it. The shared base modules (``weightvault._b64``, ``._json``, ``._fs``, ``._console``,
    ``._interrupt``) belong to ``weightvault`` itself, so every weightvault package may use them."""
    offenders = []
    for path in sorted((src / "weightvault").rglob("*.py")):
        importer = _module_name(path, src)
        for line, name in _imported_names(path, src):
            owner = _private_owner(name, src)
            if owner is not None and importer != owner and not importer.startswith(owner + "."):
                offenders.append(f"{path.relative_to(src)}:{line}: {name}")
    return offenders


def test_no_private_name_is_imported_across_packages() -> None:
    assert private_imports_across_packages() == []


def test_the_private_import_check_finds_what_it_forbids(tmp_path: Path) -> None:
    """The rule catches a private module or name of another package, relative imports and
    imports inside functions, and lets a package use its own and the shared base modules."""
    assert _private_owner("weightvault.cli._exit.fail") == "weightvault.cli"
    assert _private_owner("weightvault.cli.log._FORCE") == "weightvault.cli"
    assert _private_owner("weightvault.crypt.recipients._x") == "weightvault.crypt.recipients"
    assert _private_owner("weightvault._b64.decode") == "weightvault"
    assert _private_owner("weightvault.signing.key.KeySigner") is None
    for package in ("weightvault", "weightvault/cli", "weightvault/scan", "weightvault/signing"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    cases = {
        "from weightvault.cli._exit import fail": True,
        "from ..cli.log import _FORCE": True,
        "def f():\n    from weightvault.signing import _model": True,
        "import weightvault.signing._model": True,
        "from weightvault import _b64": False,
        "from weightvault.scan._io import read": False,
        "from . import _engine": False,
        "from weightvault.signing import verify": False,
    }
    probe = tmp_path / "weightvault" / "scan" / "probe.py"
    for code, forbidden in cases.items():
        probe.write_text(code + "\n", encoding="utf-8")
        found = private_imports_across_packages(tmp_path)
        assert bool(found) is forbidden, (code, found)


def _contract_layers() -> list[list[str]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (layers,) = [c for c in contracts if c["type"] == "layers"]
    assert layers["containers"] == ["weightvault"]
    return [[name.strip() for name in re.split(r"[|:]", layer)] for layer in layers["layers"]]


def test_the_architecture_picture_is_the_layers_contract() -> None:
    """docs/architecture.md draws the layers top to bottom, one line a layer (its packages, then
    at least two spaces and what they are for), between two ``<!-- layers -->`` comments. The
    picture must be the contract: a new package, or a moved one, is drawn where it is checked."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    picture = text.split("<!-- layers -->")[1]
    drawn = [
        [name.strip() for name in re.split(r"\s{2,}", line)[0].split("|")]
        for line in picture.splitlines()
        if line.strip() and not line.startswith(("```", " "))
    ]
    assert drawn == _contract_layers()


#: docs/architecture.md: a module that grows past this is split along its seams.
MAX_MODULE_LINES = 600


def test_no_module_is_over_the_size_limit() -> None:
    too_long = {
        str(path.relative_to(SRC)): count
        for path in sorted(SRC.rglob("*.py"))
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}, f"split these along their seams (over {MAX_MODULE_LINES} lines)"
