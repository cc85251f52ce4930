"""Knowledge-base entries and the patterns that name globals: grammar, specificity and lookup.

An entry says what a global (or a family of globals) does: its pattern, its class and one line
of evidence. Patterns are dotted paths with file-glob segments (``torch.nn.modules.**.[A-Z]*``);
the most specific matching entry decides, and a tie goes to the stricter class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

__all__ = [
    "CLASSES",
    "RANK",
    "USER_CLASSES",
    "Entry",
    "IndexItem",
    "PatternIndex",
    "expand_braces",
    "parse_pattern",
]

#: Knowledge-base classes, least to most severe (a tie between equally specific entries goes
#: to the later one).
CLASSES = ("safe", "safe-reference", "calls-arguments", "loader", "unknown", "dangerous")
RANK = {name: rank for rank, name in enumerate(CLASSES)}
#: What a user policy file may declare (the others need the scanner's own handling).
USER_CLASSES = ("safe", "safe-reference", "unknown", "dangerous")


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


_GLOB_CHARS = re.compile(r"[*?\[]")


_BRACES = re.compile(r"\{([^{}]*)\}")


def expand_braces(text: str) -> list[str]:
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
    for text in expand_braces(pattern):
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


class IndexItem(NamedTuple):
    entry: Entry
    rule: str
    rank: tuple[int, int, int, int]
    """The pattern's specificity, then its class's severity rank (ties go to the stricter)."""
    regex: str


class PatternIndex:
    """Entries filed for lookup: exact paths, literal subtrees (``os.*``) and globs, each glob
    under its literal head; glob regexes are compiled the first time a path under their head is
    looked up (start-up reads the whole knowledge base, a scan meets a few names)."""

    __slots__ = ("_compiled", "exact", "globs", "subtree")

    def __init__(self, entries: Iterable[Entry]) -> None:
        self.exact: dict[str, Entry] = {}
        self.subtree: dict[str, IndexItem] = {}
        self.globs: dict[str, list[IndexItem]] = {}
        self._compiled: dict[str, re.Pattern[str]] = {}
        exact = self.exact
        for entry in entries:
            pattern = entry.pattern
            if not _PATTERN_CHARS.match(pattern):
                raise ValueError(f"{pattern!r}: characters other than names, dots and wildcards")
            for text in expand_braces(pattern):
                if text.endswith(".*"):
                    head = text[:-2]
                    if not ("*" in head or "?" in head or "[" in head or "]" in head):
                        if head.startswith(".") or head.endswith(".") or ".." in head:
                            raise ValueError(f"{pattern!r}: expected module.name or module.*")
                        count = head.count(".") + 1
                        rank = (count, 0, count, RANK[entry.klass])
                        old_item = self.subtree.get(head)
                        if old_item is None or rank[3] >= old_item.rank[3]:
                            self.subtree[head] = IndexItem(
                                entry, f"{entry.source}:{text}", rank, ""
                            )
                        continue
                if "*" in text or "?" in text or "[" in text or "]" in text:
                    item = parse_pattern(text)[0]
                    rank = (*item.specificity, RANK[entry.klass])
                    filed = IndexItem(entry, f"{entry.source}:{text}", rank, item.regex)
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
                if old is None or RANK[entry.klass] >= RANK[old.klass]:
                    exact[text] = entry

    def lookup(self, path: str, *, exact_only: bool = False, safe_globs: bool = True) -> (
        IndexItem | None
    ):
        """The most specific entry matching ``path`` (an exact entry first)."""
        entry = self.exact.get(path)
        if entry is not None:
            count = path.count(".") + 1
            rank = (count, 1, count, RANK[entry.klass])
            return IndexItem(entry, f"{entry.source}:{path}", rank, "")
        if exact_only:
            return None
        best: IndexItem | None = None
        subject = path + "."
        prefix = ""
        for part in path.split("."):
            prefix = f"{prefix}.{part}" if prefix else part
            for item in (self.subtree.get(prefix), *self.globs.get(prefix, ())):
                if item is None or (best is not None and item.rank <= best.rank):
                    continue
                if not safe_globs and item.rank[3] < RANK["unknown"]:
                    continue
                if item.regex:
                    regex = self._compiled.get(item.regex)
                    if regex is None:
                        regex = self._compiled[item.regex] = _glob_regex(item.regex)
                    if regex.fullmatch(subject) is None:
                        continue
                best = item
        return best
