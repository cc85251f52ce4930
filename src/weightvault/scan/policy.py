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

The module's helpers: :mod:`._patterns` (entries, the pattern grammar and its index) and
:mod:`._knowledge` (reading the knowledge base and policy files).
"""

from __future__ import annotations

import _compat_pickle
from collections.abc import Iterable
from enum import IntEnum
from typing import NamedTuple

from weightvault.scan._knowledge import (
    KNOWLEDGE_PATH,
    Knowledge,
    knowledge,
    load_policy_file,
    parse_knowledge,
)
from weightvault.scan._patterns import (
    CLASSES,
    RANK,
    USER_CLASSES,
    Entry,
    IndexItem,
    PatternIndex,
    parse_pattern,
)

__all__ = [
    "CLASSES",
    "DEFAULT_POLICY",
    "KNOWLEDGE_PATH",
    "USER_CLASSES",
    "Entry",
    "Judgement",
    "Knowledge",
    "Policy",
    "Severity",
    "Verdict",
    "knowledge",
    "load_policy_file",
    "parse_knowledge",
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
        self._user = PatternIndex(self.user_entries) if self.user_entries else None
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
                if RANK[other.klass] > RANK[result.klass]:
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


def _judgement(full: str, item: IndexItem) -> Judgement:
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
