"""The one way weightvault makes a Rich console.

No markup, no emoji codes, no highlighting: what is printed (file names, import names found in a
scanned pickle, identities, server messages) often comes from files or peers we do not control,
and must appear exactly as written: ``[conceal]`` or ``:cross_mark:`` in a name must not restyle,
hide or replace anything. Styling is applied with :class:`rich.text.Text` spans, never markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["plain_console"]


def plain_console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False, markup=False)
