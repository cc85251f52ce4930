"""Chat templates outside GGUF: ``tokenizer_config.json``, ``chat_template.json``,
``processor_config.json`` and ``*.jinja`` files of a model folder.

transformers renders these with Jinja2's ``ImmutableSandboxedEnvironment`` when a chat starts, so
the threat is the same as for GGUF templates (a sandbox escape through a known gadget), and they
are judged by the same judge (:mod:`weightvault.scan.formats.chat_template`), with the same
verdict classes. Only files with these names are parsed, so a folder scan does not JSON-parse
every ``.json`` it holds. A finding names the file and the JSON path of the template
(``chat_template[1].template``); malformed JSON is an error, as for other formats.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from weightvault.scan._engine import FileContext
from weightvault.scan._io import ByteReader
from weightvault.scan.policy import Severity

__all__ = ["TEMPLATE_JSON_NAMES", "is_template_file", "scan_template_file"]

#: JSON files whose ``chat_template`` key transformers renders (tokenizers, processors, and the
#: legacy processor template file).
TEMPLATE_JSON_NAMES = frozenset({"tokenizer_config.json", "processor_config.json",
                                 "chat_template.json"})
_MAX_TEMPLATE_FILE = 1 << 24


def is_template_file(name: str) -> bool:
    """Whether a file (or archive member) named ``name`` holds chat templates."""
    base = name.rpartition("/")[2].lower()
    return base in TEMPLATE_JSON_NAMES or base.endswith(".jinja")


def scan_template_file(ctx: FileContext, r: ByteReader, location: str, *, name: str) -> str:
    """Judge every chat template of the file; returns the format name for the report."""
    base = name.rpartition("/")[2]
    limit = min(_MAX_TEMPLATE_FILE, ctx.limits.max_json_bytes)
    data = r.peek(limit + 1)
    if len(data) > limit:
        ctx.error(location, f"{base}: larger than the {limit}-byte limit for a chat template file")
        return "chat-template"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        ctx.error(location, f"{base}: not UTF-8 text ({exc.reason} at byte {exc.start})")
        return "chat-template"
    if base.lower().endswith(".jinja"):
        _judge(ctx, base, "", text, location)
        return "chat-template"
    import json  # only folders with template files pay for it (a lone pickle scan stays lean)

    from weightvault._json import reject_duplicate_keys

    try:
        document = json.loads(text, object_pairs_hook=reject_duplicate_keys(base))
    except (ValueError, RecursionError) as exc:
        ctx.error(location, f"{base} is not valid JSON: {exc}")
        return "json"
    if not isinstance(document, dict):
        ctx.error(location, f"{base}: a JSON object was expected, found {type(document).__name__}")
        return "json"
    value = document.get("chat_template")
    if value is None:  # absent, or null as transformers writes for "no template"
        return "json"
    if not isinstance(value, str | list | dict):
        ctx.error(location, f"{base}: chat_template is neither a string nor a list of "
                  "{name, template} objects")
    for path, template in _templates(value, "chat_template"):
        if template is None:
            ctx.error(_where(location, path), f"{base}: {path} is not a string")
        else:
            _judge(ctx, base, path, template, location)
    return "chat-template"


def _templates(value: Any, path: str) -> Iterator[tuple[str, str | None]]:
    """``(JSON path, template)`` for every template of a ``chat_template`` value: a string, a
    list of ``{"name", "template"}`` objects, or a ``{name: template}`` object; ``None`` for an
    entry that is not a string (an error)."""
    if value is None:
        return
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for index, entry in enumerate(value):
            item = f"{path}[{index}]"
            if isinstance(entry, dict) and "template" in entry:
                template = entry["template"]
                yield f"{item}.template", template if isinstance(template, str) else None
            else:
                yield item, None
    elif isinstance(value, dict):
        for key, template in value.items():
            yield f"{path}.{key}", template if isinstance(template, str) else None


def _where(location: str, path: str) -> str:
    return f"{location}:{path}" if location and path else location or path


def _judge(ctx: FileContext, base: str, path: str, template: str, location: str) -> None:
    from weightvault.scan.formats.chat_template import judge_template

    where = _where(location, path)
    try:
        verdicts = judge_template(template)
    except ValueError as exc:
        ctx.error(where, f"{base}: {exc}")
        return
    label = f"{base}: {path}" if path else base
    for verdict in verdicts:
        ctx.find(Severity.DANGEROUS if verdict.dangerous else Severity.UNKNOWN, "template",
                 verdict.subject, f"{label}: {verdict.message}", where or ".")
