"""The one way weightvault makes a Rich console, and how it makes untrusted text printable.

No markup, no emoji codes, no highlighting: what is printed (file names, import names found in a
scanned pickle, identities, server messages) often comes from files or peers we do not control,
and must appear exactly as written: ``[conceal]`` or ``:cross_mark:`` in a name must not restyle,
hide or replace anything. Styling is applied with :class:`rich.text.Text` spans, never markup.

For the same reason control characters are shown, not sent: an escape sequence in a file name
(``ESC[8m`` conceals text, ``ESC[1A ESC[2K`` erases the line above), a carriage return or a
bidirectional override (which makes ``model\u202egnp.pt`` display reversed) is printed as a
visible ``\\x1b`` / ``\\u202e`` escape.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["plain_console", "printable"]

_BIDI_AND_INVISIBLE = "\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
_UNPRINTABLE_KEEP_NEWLINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI_AND_INVISIBLE}]")
_UNPRINTABLE = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f{_BIDI_AND_INVISIBLE}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control, bidirectional and invisible characters as visible escapes.

    Tabs are kept; newlines only with ``keep_newlines`` (a value such as a file name must stay
    on its line; a message that is meant to span lines may keep them).
    """
    pattern = _UNPRINTABLE_KEEP_NEWLINES if keep_newlines else _UNPRINTABLE
    return pattern.sub(_escape, text)


def plain_console(*, stderr: bool = False) -> Console:
    from rich.console import Console
    from rich.text import Text

    class _PlainConsole(Console):
        """Every string printed passes through :func:`printable` (newlines kept)."""

        def render_str(self, text: str, **kwargs: Any) -> Text:
            return super().render_str(printable(text, keep_newlines=True), **kwargs)

    return _PlainConsole(
        stderr=stderr, highlight=False, soft_wrap=True, emoji=False, markup=False
    )
