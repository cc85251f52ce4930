"""Entry point of the ``weightvault`` command.

Command modules live beside this one (``cli/<group>.py``); each defines ``register(app)`` and an
integer ``ORDER`` for its place in ``--help``. They are discovered, not listed, so capabilities
plug in without editing this file. Modules import only Typer at load time: heavy libraries are
imported inside the command functions, which keeps ``weightvault --help`` fast.

Every failure becomes one line on standard error and an exit code (:mod:`weightvault.cli._exit`):
library errors keep theirs, operating-system errors exit 2 naming the path and the option that
gave it, and an unexpected exception exits 3 (``WEIGHTVAULT_DEBUG=1`` prints the traceback).
Shell completion is Typer's (``--install-completion``, ``--show-completion``).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from types import ModuleType

import typer

from weightvault import __version__

__all__ = ["app", "main", "run"]


def _new_app() -> typer.Typer:
    application = typer.Typer(
        name="weightvault",
        help=(
            "Keep model weights from being stolen, tampered with or misused.\n\n"
            "Exit codes: 0 success, 1 the check failed (mismatch, finding, denial), "
            "2 the check could not run (usage or input error, or the system refused: "
            "a read-only folder, a full disk, a port in use), 3 a bug in weightvault."
        ),
        epilog=(
            "Errors are one line. Set WEIGHTVAULT_DEBUG=1 to also print the traceback "
            "(please include it when reporting an exit 3)."
        ),
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    application.callback()(_root)
    return application


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"weightvault {__version__}")
        raise typer.Exit(0)


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Keep model weights from being stolen, tampered with or misused."""


def _command_modules() -> list[ModuleType]:
    import weightvault.cli as cli_package

    modules = []
    for info in pkgutil.iter_modules(cli_package.__path__):
        if info.name.startswith("_") or info.name == "app":
            continue
        module = importlib.import_module(f"weightvault.cli.{info.name}")
        if hasattr(module, "register"):
            modules.append(module)
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def _top_level_names(module: ModuleType) -> set[str]:
    """The commands and groups a module registers (registration is cheap; conversion is not)."""
    scratch = typer.Typer()
    module.register(scratch)
    names: set[str] = {info.name for info in scratch.registered_commands if info.name}
    for group in scratch.registered_groups:
        name = group.name or (group.typer_instance.info.name if group.typer_instance else None)
        if isinstance(name, str):
            names.add(name)
    return names


_MODULES = _command_modules()

app = _new_app()
"""The whole command line (every command); :func:`run` may use a slimmer copy, see there."""
for _module in _MODULES:
    _module.register(app)


def _app_for(argv: list[str]) -> typer.Typer:
    """``app``, or a copy holding only the module that owns the command ``argv`` names.

    Typer converts every registered command into click objects on each call (about 30 ms for
    all of ours); a command only needs its own. Help, ``--version``, no command or an unknown
    one get the whole application, so listings and "no such command" read the same.
    """
    if not argv or argv[0].startswith("-"):
        return app
    for module in _MODULES:
        if argv[0] in _top_level_names(module):
            slim = _new_app()
            module.register(slim)
            return slim
    return app


def _value_options(application: typer.Typer, args: list[str]) -> set[str]:
    """The options of the command ``args`` invokes that take a value (``--out``, ``-o``).

    Used only after a failure, to tell which option named a path (click's objects are built
    here, not on the success path).
    """
    import click

    command: click.Command = typer.main.get_command(application)
    names: set[str] = set()
    rest = list(args)
    while True:
        for param in command.params:
            if isinstance(param, click.Option) and not param.is_flag and not param.count:
                names.update(param.opts)
                names.update(param.secondary_opts)
        if not isinstance(command, click.Group):
            return names
        sub = next((a for a in rest if not a.startswith("-")), None)
        if sub is None or sub not in command.commands:
            return names
        child = command.commands[sub]
        rest = rest[rest.index(sub) + 1 :]
        command = child


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (the testable core of :func:`main`)."""
    import click

    from weightvault.cli._exit import fail, report_exception

    args = list(sys.argv[1:] if argv is None else argv)
    application = app
    try:
        application = _app_for(args)
        result = application(args=args, prog_name="weightvault", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        # Usage errors (unknown option, bad value): keep the parser's message, point at --help.
        return fail(f"{' '.join(exc.format_message().split())} (see --help)", 2)
    except click.exceptions.Abort:
        return fail("aborted", 130)
    except (Exception, KeyboardInterrupt) as exc:  # the last line of defence: never a traceback
        return report_exception(exc, args, lambda: _value_options(application, args))
    return int(result) if isinstance(result, int) else 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
