"""Sybil configuration for the documentation tests: the parsers and evaluators behind the
conventions described in ``tests/docs/conftest.py``."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown import CodeBlockParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, RawFencedCodeBlockLexer
from tests.docs import fixtures
from tests.docs.shell import REPO, ShellSession, StepFailure, parse_transcript

DOCUMENTS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
EXECUTED_LANGUAGES = frozenset({"console", "bash", "python"})
OTHER_LANGUAGES = frozenset({"text", "json"})


@dataclass(frozen=True)
class Directive:
    """``<!-- docs-test: ... -->``: skip the next block, give it a timeout, or set files up."""

    action: str
    reason: str = ""
    timeout_s: float | None = None
    fixtures: tuple[str, ...] = ()

    @classmethod
    def parse(cls, arguments: str) -> Directive:
        words = shlex.split(arguments)
        if not words:
            raise ValueError("empty docs-test directive")
        action, rest = words[0], words[1:]
        if action == "skip":
            options = dict(word.split("=", 1) for word in rest if "=" in word)
            if set(options) != {"reason"} or len(rest) != 1 or not options["reason"].strip():
                raise ValueError(f'docs-test: skip needs exactly reason="..."; got {arguments!r}')
            return cls("skip", reason=options["reason"])
        if action.startswith("timeout=") and not rest:
            return cls("timeout", timeout_s=float(action.split("=", 1)[1]))
        if action == "setup" and rest:
            unknown = [name for name in rest if name not in fixtures.FIXTURES]
            if unknown:
                raise ValueError(f"docs-test: setup: unknown fixture(s) {unknown}")
            return cls("setup", fixtures=tuple(rest))
        raise ValueError(f"unknown docs-test directive {arguments!r}")


@dataclass
class DocumentRun:
    """State shared by the blocks of one document while it runs."""

    session: ShellSession
    pending: Directive | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)
    ran: int = 0

    def take(self, example: Example) -> Directive | None:
        directive, self.pending = self.pending, None
        return directive


def _run(example: Example) -> DocumentRun:
    run = example.namespace["docs_run"]
    assert isinstance(run, DocumentRun)
    return run


def _line(document: Document, position: int) -> int:
    return document.text.count("\n", 0, position) + 1


class DirectiveParser:
    """Sybil parser for ``<!-- docs-test: ... -->`` comments (Sybil's HTML-comment lexer)."""

    def __init__(self) -> None:
        self.lexer = DirectiveInHTMLCommentLexer(directive="docs-test", arguments=".+?")

    def __call__(self, document: Document) -> Any:
        for lexed in self.lexer(document):
            directive = Directive.parse(lexed.lexemes["arguments"])
            yield Region(lexed.start, lexed.end, directive, self.evaluate)

    @staticmethod
    def evaluate(example: Example) -> str | None:
        run = _run(example)
        directive: Directive = example.parsed
        if directive.action == "setup":
            reason = fixtures.prepare(directive.fixtures, run.session)
            if reason:  # what the next block needs is absent here
                run.pending = Directive("skip", reason=reason)
            return None
        if run.pending is not None:
            return "two docs-test directives in a row: the first applies to no block"
        run.pending = directive
        return None


class _ExecutedBlockParser(CodeBlockParser):
    """A fenced (or Sybil ``invisible-code-block``) block of one executed language."""

    def evaluate(self, example: Example) -> str | None:
        run = _run(example)
        directive = run.take(example)
        if directive is not None and directive.action == "skip":
            run.skipped.append((example.line, directive.reason))
            return None
        timeout = directive.timeout_s if directive is not None else None
        run.ran += 1
        try:
            self.execute(run.session, example, timeout)
        except StepFailure as exc:
            return str(exc)
        return None

    def execute(self, session: ShellSession, example: Example, timeout_s: float | None) -> None:
        raise NotImplementedError


class ConsoleParser(_ExecutedBlockParser):
    language = "console"

    def __call__(self, document: Document) -> Any:
        for region in super().__call__(document):
            region.parsed = parse_transcript(str(region.parsed), _line(document, region.start) + 1)
            yield region

    def execute(self, session: ShellSession, example: Example, timeout_s: float | None) -> None:
        session.check_transcript(example.parsed, timeout_s)


class BashParser(_ExecutedBlockParser):
    language = "bash"

    def execute(self, session: ShellSession, example: Example, timeout_s: float | None) -> None:
        script = session.spool / f"block-{example.line}.sh"
        script.write_text(str(example.parsed), encoding="utf-8")
        session.check_script(f"bash '{script}'", example.line, timeout_s)


class PythonScriptParser(_ExecutedBlockParser):
    language = "python"

    def execute(self, session: ShellSession, example: Example, timeout_s: float | None) -> None:
        script = session.spool / f"block_{example.line}.py"
        script.write_text(str(example.parsed), encoding="utf-8")
        session.check_script(f"python '{script}'", example.line, timeout_s)


SYBIL = Sybil(
    parsers=[DirectiveParser(), ConsoleParser(), BashParser(), PythonScriptParser()],
    patterns=["*.md"],
)


def parse_document(path: Path) -> Document:
    return SYBIL.parse(path)


def run_document(path: Path, root: Path, *, timeout_s: float = 120.0) -> DocumentRun:
    """Run every example of the document at ``path`` in order, in one session under ``root``.

    Raises Sybil's failure (naming the document, the line and what differed) at the first
    example that does not do what the document says.
    """
    document = parse_document(path)
    session = ShellSession(root, timeout_s=timeout_s)
    run = DocumentRun(session)
    document.namespace["docs_run"] = run
    try:
        for example in document.examples():
            example.evaluate()
        if run.pending is not None:
            raise AssertionError(f"{path}: a docs-test directive at the end applies to no block")
    finally:
        session.close()
    return run


def fenced_block_languages(path: Path) -> list[tuple[int, str]]:
    """(line, info string) of every fenced block, found with Sybil's Markdown fence lexer."""
    document = Document(path.read_text(encoding="utf-8"), str(path))
    lexer = RawFencedCodeBlockLexer(info_pattern=re.compile(r"(?P<info>[^\n]*)$\n", re.MULTILINE))
    return [
        (_line(document, region.start), region.lexemes["info"].strip())
        for region in lexer(document)
    ]


def skipped_blocks() -> list[tuple[str, int, str]]:
    """(document, line, reason) of every block a skip directive names, for the report."""
    found = []
    for path in DOCUMENTS:
        for region in DirectiveParser()(Document(path.read_text(encoding="utf-8"), str(path))):
            if region.parsed.action == "skip":
                line = _line(Document(path.read_text(encoding="utf-8"), str(path)), region.start)
                found.append((path.relative_to(REPO).as_posix(), line, region.parsed.reason))
    return found
