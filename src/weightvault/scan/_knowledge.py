"""Where entries come from: the shipped knowledge base (``knowledge.toml``) and user policy files.

The knowledge base is read on first use, without a TOML parser (start-up matters: see
:func:`parse_knowledge`); policy files are TOML read strictly, each error naming the key.
"""

from __future__ import annotations

import functools
import os
import re
from typing import NamedTuple

from weightvault.scan._patterns import (
    CLASSES,
    USER_CLASSES,
    Entry,
    PatternIndex,
    expand_braces,
    parse_pattern,
)

__all__ = ["KNOWLEDGE_PATH", "Knowledge", "knowledge", "load_policy_file", "parse_knowledge"]

KNOWLEDGE_PATH = os.path.join(os.path.dirname(__file__), "knowledge.toml")
_LINE = re.compile(r'"([^"\\]*)" = "([^"\\]*)"')
_ATTRIBUTE_SECTION = "dangerous-attribute"
_ALIAS_SECTION = "alias-attribute"


class Knowledge(NamedTuple):
    """The knowledge base as read: its entries, indexed, and the attribute names it lists."""

    entries: tuple[Entry, ...]
    attributes: dict[str, Entry]
    """``[dangerous-attribute]``: attribute names dangerous in any module; and
    ``[alias-attribute]`` (class ``unknown``): names libraries import from elsewhere (``F``,
    ``np``, ``ABCMeta``), which a *pattern* never makes safe (an exact entry can)."""
    modules: dict[str, Entry]
    """Top-level modules declared dangerous as a whole (``os.*``): reaching one through an
    attribute (``mypkg.os.system``, ``mypkg._os``) is dangerous too."""
    lookup: PatternIndex


def parse_knowledge(text: str, source: str = "kb") -> tuple[list[Entry], dict[str, Entry]]:
    """Read the knowledge-base format: TOML restricted to ``[section]`` headers and
    ``"pattern" = "evidence"`` lines (no escapes), so that no TOML parser is needed at start-up.

    Raises ``ValueError`` naming the line for anything else.
    """
    entries: list[Entry] = []
    attributes: dict[str, Entry] = {}
    section = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line[1:-1] if line.endswith("]") else ""
            if section not in CLASSES and section not in (_ATTRIBUTE_SECTION, _ALIAS_SECTION):
                raise ValueError(f"line {number}: unknown section {line!r}")
            continue
        match = _LINE.fullmatch(line)
        if match is None or not section:
            raise ValueError(f'line {number}: expected "pattern" = "evidence" inside a section')
        key, evidence = match.group(1), match.group(2)
        if section in (_ATTRIBUTE_SECTION, _ALIAS_SECTION):
            dangerous = section == _ATTRIBUTE_SECTION
            for name in expand_braces(key):
                if not name.isidentifier():
                    raise ValueError(f"line {number}: {name!r} is not an attribute name")
                attributes[name] = Entry(
                    key, "dangerous" if dangerous else "unknown", evidence,
                    "kb-attribute" if dangerous else "kb-alias",
                )
            continue
        entries.append(Entry(key, section, evidence, source))  # patterns: checked by PatternIndex
    return entries, attributes



@functools.cache
def knowledge() -> Knowledge:
    """The shipped knowledge base, read on first use (a scan without pickles never reads it)."""
    with open(KNOWLEDGE_PATH, encoding="utf-8") as handle:
        entries, attributes = parse_knowledge(handle.read())
    index = PatternIndex(entries)
    modules = {
        head: item.entry for head, item in index.subtree.items()
        if "." not in head and item.entry.klass == "dangerous"
    }
    return Knowledge(tuple(entries), attributes, modules, index)


_MAX_POLICY_BYTES = 1 << 20


def load_policy_file(path: str | os.PathLike[str]) -> list[Entry]:
    """Read a policy file (TOML): sections ``safe``, ``safe-reference``, ``unknown`` and
    ``dangerous``, each a table of ``"pattern" = "evidence"``. Strict: any other key or value
    type is an error naming it (:class:`~weightvault.errors.FormatError`); an unreadable file
    is an :class:`~weightvault.errors.InputError`."""
    import tomllib

    from weightvault.errors import FormatError, InputError

    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read(_MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{name}: cannot read the policy file: {exc.strerror or exc}") from exc
    if len(data) > _MAX_POLICY_BYTES:
        raise FormatError(f"{name}: policy file larger than {_MAX_POLICY_BYTES} bytes")
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FormatError(f"{name}: policy file is not UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise FormatError(f"{name}: not valid TOML: {exc}") from exc
    expected = ", ".join(USER_CLASSES)
    entries: list[Entry] = []
    for section, table in document.items():
        if section not in USER_CLASSES:
            raise FormatError(f"{name}: unknown key {section!r} (expected tables: {expected})")
        if not isinstance(table, dict):
            raise FormatError(f"{name}: {section}: expected a table of \"pattern\" = \"evidence\"")
        for pattern, evidence in table.items():
            where = f"{name}: {section}.{pattern!r}"
            if not isinstance(evidence, str) or not evidence.strip():
                raise FormatError(f"{where}: the value must be a non-empty string (the evidence)")
            if "\n" in evidence:
                raise FormatError(f"{where}: the evidence must be one line")
            try:
                parse_pattern(pattern)
            except ValueError as exc:
                raise FormatError(f"{where}: {exc}") from exc
            entries.append(Entry(pattern, section, evidence.strip(), "policy"))
    return entries
