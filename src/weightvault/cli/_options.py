"""Options many commands share, defined once: JSON output and the custody service's address.

A flag that several commands take is one definition here, so its name and help cannot drift
between commands. Single options are :data:`typing.Annotated` aliases (``as_json: Json =
False``); options that go together, and what they are used for, are option groups
(:mod:`weightvault.cli._groups`): :class:`Connection` is ``--url`` and ``--token`` with the
client they open, :class:`Client` adds ``--json`` and prints a result as JSON or as lines.

Only Typer is imported at load time; the HTTP client comes in when a command opens it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from weightvault.cli._groups import OptionGroup, option

if TYPE_CHECKING:
    from weightvault.custody.client import VaultClient

__all__ = ["Client", "Connection", "show"]  # option groups, and how they print
__all__ += ["ForceFile", "ForceOutput", "Json", "JsonResult", "ModelName"]  # single options

R = TypeVar("R")

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
"""``--json``: print the result as one JSON document instead of lines of text."""

JsonResult = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
"""``--json`` worded for commands whose text output is a report."""

ForceOutput = Annotated[
    bool, typer.Option("--force", help="Overwrite the output file if it exists.")
]
"""``--force`` of commands that write one output file."""

ForceFile = Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")]
"""``--force`` of commands that create one file (``x25519-keygen``, ``vault job result``)."""

ModelName = Annotated[str, typer.Argument(help="Model name.")]
"""The argument naming a model in custody (``risk``, ``vault model``)."""


def show(document: Any, as_json: bool, lines: Iterable[str], *, console: bool = False) -> None:
    """Print ``document`` as JSON (``--json``), else ``lines``, one a line: as they are, or with
    ``console`` through the Rich console of standard output (which shows control characters
    in names from files or servers as escapes)."""
    from weightvault.cli._ui import emit_json, out_console

    if as_json:
        emit_json(document)
        return
    for line in lines:
        if console:
            out_console().print(line)
        else:
            typer.echo(line)


@dataclass(frozen=True)
class Connection(OptionGroup):
    """Where the custody service is and who asks: ``--url`` and ``--token``, each falling back
    to its environment variable, then to what ``vault login`` saved."""

    url: str | None = field(
        metadata=option(None, "--url", help="Server URL (else WEIGHTVAULT_URL, else vault login).")
    )
    token: str | None = field(
        metadata=option(None, "--token", help="API token (else WEIGHTVAULT_TOKEN, else login).")
    )

    def client(self) -> VaultClient:
        """The service's client for these options (a context manager: it closes the session)."""
        from weightvault.custody.client import VaultClient, resolve_config

        return VaultClient(resolve_config(self.url, self.token))


@dataclass(frozen=True)
class Client(Connection):
    """A service command's options: the connection, and ``--json`` for how it prints."""

    as_json: bool = field(metadata=option(False, "--json", help="Print JSON."))

    def show(self, document: Any, lines: Iterable[str]) -> None:
        """Print the service's answer: ``document`` with ``--json``, else ``lines``."""
        show(document, self.as_json, lines)

    def call(self, request: Callable[[VaultClient], R], lines: Callable[[R], Iterable[str]]) -> R:
        """Make one ``request`` of the service, close the connection, print the answer (JSON,
        or ``lines(answer)``) and return it."""
        with self.client() as client:
            answer = request(client)
        self.show(answer, lines(answer))
        return answer

    def listing(
        self,
        request: Callable[[VaultClient], list[dict[str, Any]]],
        line: Callable[[dict[str, Any]], str],
        empty: str | None,
    ) -> None:
        """Ask the service for a list and print it: JSON, or ``line(row)`` for each row
        (``empty``, if given, for an empty list)."""
        self.call(request, lambda rows: [line(row) for row in rows] or ([empty] if empty else []))
