"""Option groups: several command-line options handed to a command as one typed object.

Typer maps one function parameter to one option, so commands that share a set of options
(the signing methods of ``sign`` and ``attest add``; the verifying methods of ``verify``,
``attest verify`` and ``attest rows``) would each repeat the same parameters, and drift. A
group is a frozen dataclass of :class:`OptionGroup` whose fields have Typer options as their
defaults; a command decorated with :func:`with_option_groups` declares one parameter of that
type, and Typer sees the group's fields in its place (same names, types and options, in that
position of ``--help``). The command receives the dataclass, built from what was given.

A field is an option in one of two spellings: ``name: T = field(metadata=option(...))``
(``typer.Option``'s default-first form), or ``name: Annotated[T, typer.Option(...)] = default``
(Typer's annotated form). Either way a group object is always built from every option's value.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar, cast

import typer

__all__ = ["GROUP", "OPTION", "OptionGroup", "command_group", "option", "with_option_groups"]

F = TypeVar("F", bound=Callable[..., Any])

OPTION = "weightvault.cli.option"
"""The metadata key of a group field's option (for one built elsewhere: ``{OPTION: ...}``)."""

GROUP: Any = None
"""The default to write for a group parameter (it is never used: the decorator replaces it)."""


class OptionGroup:
    """Base of option groups (subclasses are frozen dataclasses whose fields are options)."""


def option(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """A group field's metadata: the ``typer.Option(*args, **kwargs)`` it stands for."""
    return {OPTION: typer.Option(*args, **kwargs)}


def _group_type(annotation: Any) -> type[OptionGroup] | None:
    if isinstance(annotation, type) and issubclass(annotation, OptionGroup):
        return annotation
    return None


def _default(field: dataclasses.Field[Any]) -> Any:
    """What Typer gets as a group field's default: its option, or (Annotated form) its value."""
    if OPTION in field.metadata:
        return field.metadata[OPTION]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def with_option_groups(command: F) -> F:
    """``command`` with each :class:`OptionGroup` parameter spread into the group's options.

    Raises :class:`TypeError` (a programming error) when a group's field has the name of
    another parameter of the command.
    """
    hints = typing.get_type_hints(command, include_extras=True)
    signature = inspect.signature(command)
    parameters: list[inspect.Parameter] = []
    groups: dict[str, tuple[type[OptionGroup], tuple[str, ...]]] = {}
    for parameter in signature.parameters.values():
        group = _group_type(hints.get(parameter.name))
        if group is None:
            parameters.append(parameter.replace(annotation=hints.get(parameter.name, Any)))
            continue
        field_types = typing.get_type_hints(group, include_extras=True)
        fields = dataclasses.fields(cast("Any", group))
        for field in fields:
            parameters.append(
                inspect.Parameter(
                    field.name,
                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                    default=_default(field),
                    annotation=field_types[field.name],
                )
            )
        groups[parameter.name] = (group, tuple(field.name for field in fields))
    names = [parameter.name for parameter in parameters]
    if len(set(names)) != len(names):
        raise TypeError(f"{command.__name__}: an option group repeats a parameter name")

    @functools.wraps(command)
    def run(**given: Any) -> Any:
        for name, (group, fields) in groups.items():
            given[name] = group(**{field: given.pop(field) for field in fields})
        return command(**given)

    spread = signature.replace(parameters=parameters, return_annotation=hints.get("return"))
    run.__signature__ = spread  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    return cast("F", run)


class _GroupedTyper(typer.Typer):
    """A Typer command group whose commands may take option groups."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = super().command(*args, **kwargs)

        def decorator(command: F) -> F:
            return register(with_option_groups(command))

        return decorator


def command_group(name: str, help_text: str) -> typer.Typer:
    """A command group (``weightvault NAME ...``): without a command it prints its help, and its
    commands' :class:`OptionGroup` parameters are spread (no :func:`with_option_groups` to
    forget on one of them)."""
    return _GroupedTyper(name=name, help=help_text, no_args_is_help=True)
