"""Verdicts for the globals a model file imports: *safe*, *unknown* or *dangerous*, by evidence.

A deny-list alone is never complete (every public scanner has been bypassed through a callable it
did not list), and an allow-list that fails on everything else is unusable unless it covers what
mainstream libraries really write. So the verdict comes from a knowledge base
(``knowledge.toml``, one line of evidence per entry) that says what each callable *does*:

* **safe** - constructs data only (tensor and array rebuilds, containers, dtypes, paths, dates,
  estimator classes restored through ``__setstate__``); some entries are safe only as
  *references* (pure tensor functions kept as module attributes), and calling them at load time
  is unknown;
* **dangerous** - executes code, imports by name, reads or writes files, opens sockets or URLs,
  spawns processes, or reaches attributes by name; judged for every private helper and submodule
  path too (dotted names, aliases such as ``mypkg._os.system``, dunder attributes);
* **unknown** - everything else, named, so a user can trust it (``--allow``, a policy file).

Every verdict carries the evidence and the entry that decided it (``kb:os.*``,
``policy:acme.*``, ``rule:dunder-attribute``), and says whether the global was *called* or only
*referenced*: a dangerous callable stays dangerous when merely referenced (the code that uses the
model may call it later).

Names are classified the way CPython resolves them: ``module`` is imported, then each dotted
component of ``name`` is an attribute lookup, so ``pathlib`` + ``os.system`` reaches
``os.system``. Python 2 names are remapped as the unpickler does (``_compat_pickle``; it is
data, not code from the scanned file).
"""

from __future__ import annotations

import _compat_pickle
import os
import re
from collections.abc import Iterable
from enum import IntEnum
from typing import NamedTuple

__all__ = [
    "DEFAULT_POLICY",
    "Entry",
    "Judgement",
    "Policy",
    "Severity",
    "Verdict",
    "load_policy_file",
    "parse_pattern",
    "remap_python2",
]


class Severity(IntEnum):
    """How bad a finding is; ordered, so ``max()`` and comparisons work.

    ``CLEAN`` and ``SUSPICIOUS`` are the names of earlier versions (aliases of ``SAFE`` and
    ``UNKNOWN``), kept so that code and scripts written for them keep working.
    """

    SAFE = 0
    UNKNOWN = 1
    DANGEROUS = 2
    CLEAN = 0
    SUSPICIOUS = 1

    @property
    def label(self) -> str:
        return self.name.lower()

    def at_least(self, threshold: Severity) -> bool:
        """True when this severity meets or exceeds ``threshold`` (the ``--fail-on`` test)."""
        return self >= threshold

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Parse ``safe`` / ``unknown`` / ``dangerous`` (case-insensitive); the old names
        ``clean`` and ``suspicious`` are accepted as aliases."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown severity {text!r}; use unknown or dangerous (suspicious is the old "
                "name of unknown)"
            ) from None


class Verdict(NamedTuple):
    """The classification of one global as used: severity, evidence, and the deciding entry."""

    severity: Severity
    reason: str
    rule: str = ""


#: Knowledge-base classes, least to most severe (a tie between equally specific entries goes
#: to the later one).
CLASSES = ("safe", "safe-reference", "calls-arguments", "loader", "unknown", "dangerous")
_RANK = {name: rank for rank, name in enumerate(CLASSES)}
#: What a user policy file may declare (the others need the scanner's own handling).
USER_CLASSES = ("safe", "safe-reference", "unknown", "dangerous")
_ATTRIBUTE_SECTION = "dangerous-attribute"
_ALIAS_SECTION = "alias-attribute"


class Entry(NamedTuple):
    """One knowledge-base or policy line: a pattern, its class and the evidence for it."""

    pattern: str
    klass: str
    evidence: str
    source: str = "kb"
    """``kb`` (the shipped knowledge base), ``policy`` (a policy file) or ``--allow``."""

    @property
    def rule(self) -> str:
        return f"{self.source}:{self.pattern}"


class Judgement(NamedTuple):
    """What is known about one global before its use is known: its class and evidence."""

    full: str
    """The effective dotted name (after Python 2 remapping): what ``--allow`` takes."""
    klass: str
    evidence: str
    rule: str

    def verdict(self, called: bool) -> Verdict:
        """The severity of this global when ``called`` (REDUCE, NEWOBJ, INST, OBJ, BUILD) or
        only referenced (pushed and stored)."""
        klass = self.klass
        if klass == "safe":
            return Verdict(Severity.SAFE, self.evidence, self.rule)
        if klass == "safe-reference":
            if not called:
                return Verdict(Severity.SAFE, self.evidence, self.rule)
            return Verdict(
                Severity.UNKNOWN,
                f"{self.evidence}; here it is called while the file loads, which benign files "
                "do not do (they keep it as an attribute)", self.rule,
            )
        if klass == "calls-arguments":
            if called:
                return Verdict(Severity.SAFE, self.evidence, self.rule)
            return Verdict(
                Severity.UNKNOWN,
                f"{self.evidence}; kept as a reference, it would call whatever it is given later",
                self.rule,
            )
        if klass == "loader":
            return Verdict(
                Severity.DANGEROUS,
                f"{self.evidence}; here it is not called on a literal blob that can be scanned, "
                "so it could load any pickle", self.rule,
            )
        if klass == "unknown":
            return Verdict(Severity.UNKNOWN, self.evidence, self.rule)
        return Verdict(Severity.DANGEROUS, self.evidence, self.rule)


# -- patterns ------------------------------------------------------------------------------------

_GLOB_CHARS = re.compile(r"[*?\[]")


_BRACES = re.compile(r"\{([^{}]*)\}")


def _expand_braces(text: str) -> list[str]:
    """``a.{b,c}.d`` -> ``a.b.d``, ``a.c.d`` (several groups multiply; no nesting)."""
    if "{" not in text and "}" not in text:
        return [text]
    pieces = _BRACES.split(text)
    literals = pieces[0::2]
    if any("{" in piece or "}" in piece for piece in literals):
        raise ValueError("unbalanced or nested braces")
    results = [literals[0]]
    for group, literal in zip(pieces[1::2], literals[1:], strict=True):
        options = group.split(",")
        if "" in options:
            raise ValueError("empty alternative in braces")
        results = [f"{done}{option}{literal}" for done in results for option in options]
    return results


def _segment_regex(segment: str) -> str:
    if not _GLOB_CHARS.search(segment):
        return re.escape(segment)
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            out.append(r"[^.]*")
        elif char == "?":
            out.append(r"[^.]")
        elif char == "[":
            close = segment.find("]", i + 2)
            if close < 0:
                raise ValueError("unclosed '[' in a pattern")
            body = segment[i + 1 : close]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = close
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


class _Compiled(NamedTuple):
    text: str
    """One expansion of the pattern (what a report names as the deciding entry)."""
    kind: str
    """``exact`` (no wildcard), ``subtree`` (literal segments, then ``.*``) or ``glob``."""
    head: str
    """The literal segments before the first wildcard: where the index files the pattern."""
    regex: str
    """For a glob, the text its regex is built from (when first used)."""
    specificity: tuple[int, int, int]
    """(literal segments, whether the last one is literal, segments that match exactly one
    segment): more is more specific, so ``sklearn.**.ABCMeta`` beats ``sklearn.tree.**.[A-Z]*``."""


_PATTERN_CHARS = re.compile(r"^[\w*?\[\]!{},.-]+$")


def parse_pattern(pattern: str) -> list[_Compiled]:
    """Parse one pattern (with its brace alternatives). Raises ``ValueError`` when malformed.

    Grammar: dotted segments; in a segment ``*``, ``?`` and ``[A-Z]`` match as file globs do,
    ``{a,b}`` lists alternatives (they may contain dots); a ``**`` segment matches any number
    of segments; a trailing ``*`` segment matches the object before it and everything below it.
    """
    if not pattern or not _PATTERN_CHARS.match(pattern):
        raise ValueError("empty pattern, or characters other than names, dots and wildcards")
    compiled: list[_Compiled] = []
    for text in _expand_braces(pattern):
        if text.startswith(".") or text.endswith(".") or ".." in text or "." not in text:
            raise ValueError("expected module.name or module.*")
        wild = "*" in text or "?" in text or "[" in text or "]" in text
        if not wild:  # the common case: a plain path
            count = text.count(".") + 1
            compiled.append(_Compiled(text, "exact", text, "", (count, 1, count)))
            continue
        head_text = text[:-2]
        if text.endswith(".*") and not (
            "*" in head_text or "?" in head_text or "[" in head_text or "]" in head_text
        ):
            count = head_text.count(".") + 1
            compiled.append(_Compiled(text, "subtree", head_text, "", (count, 0, count)))
            continue
        compiled.append(_parse_glob(text))
    return compiled


def _parse_glob(text: str) -> _Compiled:
    """File a glob by its literal head and specificity; its regex is built when first used."""
    segments = text.split(".")
    if _GLOB_CHARS.search(segments[0]) or "]" in segments[0] or segments[0] == "**":
        raise ValueError("a pattern must start with a module name")
    head: list[str] = []
    literal = 0
    fixed = 0
    in_head = True
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            if last:
                raise ValueError("end a pattern with '.*' rather than '.**'")
            in_head = False
        elif segment == "*" and last:
            pass
        elif "**" in segment:
            raise ValueError("'**' must be a whole segment")
        else:
            fixed += 1
            if "*" in segment or "?" in segment or "[" in segment or "]" in segment:
                in_head = False
                if "[" in segment and "]" not in segment[segment.index("[") + 2 :]:
                    raise ValueError("unclosed '[' in a pattern")
            else:
                literal += 1
                if in_head:
                    head.append(segment)
    final = segments[-1]
    last_literal = int(not ("*" in final or "?" in final or "[" in final or "]" in final))
    return _Compiled(text, "glob", ".".join(head), text, (literal, last_literal, fixed))


def _glob_regex(text: str) -> re.Pattern[str]:
    """The regex of a glob pattern, matched against the dotted path plus a final dot."""
    segments = text.split(".")
    parts: list[str] = []
    for index, segment in enumerate(segments):
        if segment == "**" or (segment == "*" and index == len(segments) - 1):
            parts.append(r"(?:[^.]+\.)*")
        else:
            parts.append(_segment_regex(segment) + r"\.")
    return re.compile("".join(parts))


class _Item(NamedTuple):
    entry: Entry
    rule: str
    rank: tuple[int, int, int, int]
    """The pattern's specificity, then its class's severity rank (ties go to the stricter)."""
    regex: str


class _Index:
    """Entries filed for lookup: exact paths, literal subtrees (``os.*``) and globs, each glob
    under its literal head; glob regexes are compiled the first time a path under their head is
    looked up (start-up reads the whole knowledge base, a scan meets a few names)."""

    __slots__ = ("_compiled", "exact", "globs", "subtree")

    def __init__(self, entries: Iterable[Entry]) -> None:
        self.exact: dict[str, Entry] = {}
        self.subtree: dict[str, _Item] = {}
        self.globs: dict[str, list[_Item]] = {}
        self._compiled: dict[str, re.Pattern[str]] = {}
        exact = self.exact
        for entry in entries:
            pattern = entry.pattern
            if not _PATTERN_CHARS.match(pattern):
                raise ValueError(f"{pattern!r}: characters other than names, dots and wildcards")
            for text in _expand_braces(pattern):
                if text.endswith(".*"):
                    head = text[:-2]
                    if not ("*" in head or "?" in head or "[" in head or "]" in head):
                        if head.startswith(".") or head.endswith(".") or ".." in head:
                            raise ValueError(f"{pattern!r}: expected module.name or module.*")
                        count = head.count(".") + 1
                        rank = (count, 0, count, _RANK[entry.klass])
                        old_item = self.subtree.get(head)
                        if old_item is None or rank[3] >= old_item.rank[3]:
                            self.subtree[head] = _Item(entry, f"{entry.source}:{text}", rank, "")
                        continue
                if "*" in text or "?" in text or "[" in text or "]" in text:
                    item = parse_pattern(text)[0]
                    rank = (*item.specificity, _RANK[entry.klass])
                    filed = _Item(entry, f"{entry.source}:{text}", rank, item.regex)
                    if item.kind == "glob":
                        self.globs.setdefault(item.head, []).append(filed)
                    else:
                        old_item = self.subtree.get(item.head)
                        if old_item is None or rank[3] >= old_item.rank[3]:
                            self.subtree[item.head] = filed
                    continue
                if text.startswith(".") or text.endswith(".") or ".." in text or (
                    "." not in text
                ):
                    raise ValueError(f"{pattern!r}: expected module.name or module.*")
                old = exact.get(text)
                if old is None or _RANK[entry.klass] >= _RANK[old.klass]:
                    exact[text] = entry

    def lookup(self, path: str, *, exact_only: bool = False, safe_globs: bool = True) -> (
        _Item | None
    ):
        """The most specific entry matching ``path`` (an exact entry first)."""
        entry = self.exact.get(path)
        if entry is not None:
            count = path.count(".") + 1
            rank = (count, 1, count, _RANK[entry.klass])
            return _Item(entry, f"{entry.source}:{path}", rank, "")
        if exact_only:
            return None
        best: _Item | None = None
        subject = path + "."
        prefix = ""
        for part in path.split("."):
            prefix = f"{prefix}.{part}" if prefix else part
            for item in (self.subtree.get(prefix), *self.globs.get(prefix, ())):
                if item is None or (best is not None and item.rank <= best.rank):
                    continue
                if not safe_globs and item.rank[3] < _RANK["unknown"]:
                    continue
                if item.regex:
                    regex = self._compiled.get(item.regex)
                    if regex is None:
                        regex = self._compiled[item.regex] = _glob_regex(item.regex)
                    if regex.fullmatch(subject) is None:
                        continue
                best = item
        return best


# -- the knowledge base --------------------------------------------------------------------------

_KNOWLEDGE_PATH = os.path.join(os.path.dirname(__file__), "knowledge.toml")
_LINE = re.compile(r'"([^"\\]*)" = "([^"\\]*)"')


class Knowledge(NamedTuple):
    entries: tuple[Entry, ...]
    attributes: dict[str, Entry]
    """``[dangerous-attribute]``: attribute names dangerous in any module; and
    ``[alias-attribute]`` (class ``unknown``): names libraries import from elsewhere (``F``,
    ``np``, ``ABCMeta``), which a *pattern* never makes safe (an exact entry can)."""
    modules: dict[str, Entry]
    """Top-level modules declared dangerous as a whole (``os.*``): reaching one through an
    attribute (``mypkg.os.system``, ``mypkg._os``) is dangerous too."""
    lookup: _Index


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
            for name in _expand_braces(key):
                if not name.isidentifier():
                    raise ValueError(f"line {number}: {name!r} is not an attribute name")
                attributes[name] = Entry(
                    key, "dangerous" if dangerous else "unknown", evidence,
                    "kb-attribute" if dangerous else "kb-alias",
                )
            continue
        entries.append(Entry(key, section, evidence, source))  # patterns: checked by _Index
    return entries, attributes


_knowledge: Knowledge | None = None


def knowledge() -> Knowledge:
    """The shipped knowledge base, read on first use (a scan without pickles never reads it)."""
    global _knowledge
    if _knowledge is None:
        with open(_KNOWLEDGE_PATH, encoding="utf-8") as handle:
            entries, attributes = parse_knowledge(handle.read())
        index = _Index(entries)
        modules = {
            head: item.entry for head, item in index.subtree.items()
            if "." not in head and item.entry.klass == "dangerous"
        }
        _knowledge = Knowledge(tuple(entries), attributes, modules, index)
    return _knowledge


# -- user policy files ---------------------------------------------------------------------------

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


# -- the policy ----------------------------------------------------------------------------------


def remap_python2(module: str, name: str) -> tuple[str, str]:
    """Apply the unpickler's Python 2 -> 3 renaming (protocols 0-2 with ``fix_imports``)."""
    mapped = _compat_pickle.NAME_MAPPING.get((module, name))
    if mapped is not None:
        return mapped
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _is_dunder(part: str) -> bool:
    return len(part) > 4 and part.startswith("__") and part.endswith("__")


_ALLOW_EVIDENCE = "allowed by the caller"


class Policy:
    """Classifies globals with the knowledge base plus the user's entries.

    User entries (``--allow``, a policy file) decide wherever the knowledge base and its dotted-
    name rules do not say *dangerous*: they can trust an unknown class, or make anything
    stricter, but never downgrade a dangerous verdict.
    """

    __slots__ = ("_cache", "_user", "user_entries")

    def __init__(self, user_entries: Iterable[Entry] = ()) -> None:
        self.user_entries: tuple[Entry, ...] = tuple(user_entries)
        for entry in self.user_entries:
            if entry.klass not in CLASSES:
                raise ValueError(f"unknown class {entry.klass!r} for {entry.pattern!r}")
        self._user = _Index(self.user_entries) if self.user_entries else None
        self._cache: dict[tuple[str, str, bool], Judgement] = {}

    def __reduce__(self) -> tuple[type[Policy], tuple[tuple[Entry, ...]]]:
        return (Policy, (self.user_entries,))

    @property
    def allow(self) -> frozenset[str]:
        """The ``--allow`` patterns (as given)."""
        return frozenset(e.pattern for e in self.user_entries if e.source == "--allow")

    @classmethod
    def with_allowed(cls, allowed: Iterable[str], *, extra: Iterable[Entry] = ()) -> Policy:
        """A policy trusting ``allowed`` (``module.name`` or ``module.*`` patterns) on top of
        ``extra`` entries (a policy file's). Raises ``ValueError`` for a malformed pattern."""
        entries = list(extra)
        for text in allowed:
            pattern = text.strip()
            try:
                parse_pattern(pattern)
            except ValueError:
                raise ValueError(
                    f"allowed import {text!r}: expected module.name or module.*"
                ) from None
            entries.append(Entry(pattern, "safe", _ALLOW_EVIDENCE, "--allow"))
        return cls(entries)

    # -- classification ---------------------------------------------------------------------------
    def judge(self, module: str, name: str, protocol: int = 4) -> Judgement:
        """What ``module`` + ``name`` resolves to, as the unpickler of ``protocol`` would import
        it (Python 2 names remapped below protocol 3)."""
        key = (module, name, protocol < 3)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if protocol < 3:
            mapped_module, mapped_name = remap_python2(module, name)
            result = self._judge(mapped_module, mapped_name)
        else:
            result = self._judge(module, name)
            mapped = remap_python2(module, name)
            if mapped != (module, name):
                # A loader that remaps at every protocol (torch's weights-only unpickler) reads
                # the Python 3 name: the worse of the two readings counts.
                other = self._judge(*mapped)
                if _RANK[other.klass] > _RANK[result.klass]:
                    result = other
        if len(self._cache) < 100_000:
            self._cache[key] = result
        return result

    def classify(self, module: str, name: str, *, called: bool = True) -> Verdict:
        """The verdict for ``module`` + ``name`` (no remapping), called or only referenced."""
        return self.judge(module, name).verdict(called)

    def _judge(self, module: str, name: str) -> Judgement:
        full = f"{module}.{name}"
        builtin = _judge_builtin(module, name, full)
        if builtin.klass == "dangerous" or self._user is None:
            return builtin
        found = self._user.lookup(full)
        if found is None:
            return builtin
        return _judgement(full, found)


def _judgement(full: str, item: _Item) -> Judgement:
    return Judgement(full, item.entry.klass, item.entry.evidence, item.rule)


def _judge_builtin(module: str, name: str, full: str) -> Judgement:
    """The knowledge base's verdict, with the dotted-name rules."""
    kb = knowledge()
    parts = name.split(".")
    if not module or not all(p.isidentifier() for p in module.split(".")) or not all(
        p.isidentifier() for p in parts
    ):
        return Judgement(
            full, "unknown",
            "not a valid module and attribute path: no loader can import it under this name",
            "rule:malformed-name",
        )
    # 1. An exact entry is vetted: it decides.
    found = kb.lookup.lookup(full, exact_only=True)
    if found is not None:
        return _judgement(full, found)
    dotted = len(parts) > 1
    best = kb.lookup.lookup(full, safe_globs=not dotted)
    if best is not None and best.entry.klass == "dangerous":
        return _judgement(full, best)
    # 2. Attribute paths: dunders, modules reached through attributes, dangerous names.
    for part in parts:
        if _is_dunder(part):
            return Judgement(
                full, "dangerous",
                f"attribute {part!r} reaches interpreter internals (functions' globals and "
                "code, classes, the import system)", "rule:dunder-attribute",
            )
    for part in parts:
        target = kb.modules.get(part) or kb.modules.get(part.lstrip("_"))
        if target is not None:
            return Judgement(
                full, "dangerous",
                f"attribute {part!r} is (or is named like) module {part.lstrip('_')!r}: "
                f"{target.evidence}", "rule:module-alias",
            )
    if dotted:
        for start in range(len(parts) - 1):
            candidate = kb.lookup.lookup(".".join(parts[start:]))
            if candidate is not None and candidate.entry.klass == "dangerous":
                return Judgement(
                    full, "dangerous",
                    f"the attribute path {'.'.join(parts[start:])!r} names a dangerous "
                    f"object: {candidate.entry.evidence}", "rule:module-alias",
                )
    for part in parts:
        attribute = kb.attributes.get(part)
        if attribute is not None and attribute.klass == "dangerous":
            return Judgement(full, "dangerous", attribute.evidence, f"kb-attribute:{part}")
    # 3. Patterns (a pattern never makes a re-exported name safe); then nothing is known.
    if best is not None:
        alias = kb.attributes.get(parts[-1])
        if alias is not None and best.entry.klass not in ("unknown", "dangerous"):
            return Judgement(full, "unknown", alias.evidence, f"kb-alias:{parts[-1]}")
        return _judgement(full, best)
    return Judgement(
        full, "unknown",
        "not in the knowledge base: not known to only construct data",
        "default:unknown",
    )


DEFAULT_POLICY = Policy()
