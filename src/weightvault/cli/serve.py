"""``weightvault serve``: run the custody service (FastAPI + uvicorn).

Checks what can be checked before anything is created (the data folder, the address to listen
on), so a bad option fails with its name and leaves nothing behind. Only Typer is imported at
load time; the service comes in inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from weightvault.cli.vault import _bytes

ORDER = 60


def _check_data_folder(data: Path) -> None:
    """``--data`` names a folder (created if missing), never a file."""
    from weightvault.errors import InputError

    if data.exists() and not data.is_dir():
        raise InputError(f"--data must be a folder: {data} is not one")


def _check_listen(host: str, port: int) -> None:
    """Fail before anything is created when the service could not listen on ``host:port``.

    Binds and closes a probe socket with the options uvicorn uses (``SO_REUSEADDR``), so a port
    held by another server is refused here, with the option to change, not deep in uvicorn.
    """
    import errno
    import socket

    from weightvault.errors import FileSystemError, UsageError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: not an address or host name ({exc.strerror})") from exc
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            hint = {
                errno.EADDRINUSE: (f"port {port} on {host} is already in use", "--port"),
                errno.EACCES: (f"port {port} on {host} needs privileges to listen on", "--port"),
                errno.EADDRNOTAVAIL: (f"{host} is not an address of this machine", "--host"),
            }.get(exc.errno or 0)
            if hint is None:
                raise FileSystemError.from_os_error(exc) from exc
            raise FileSystemError(
                hint[0], errno=exc.errno, hint=f"choose another with {hint[1]}"
            ) from exc


def _hours(text: str) -> tuple[int, int]:
    """``8-18`` -> (8, 18): UTC hours, end exclusive; ``22-6`` wraps midnight."""
    from weightvault.errors import UsageError

    start, _, end = text.partition("-")
    if not (start.isdigit() and end.isdigit() and int(start) < 24 and 0 < int(end) <= 24):
        raise UsageError(f"--working-hours: expected UTC hours like 8-18, not {text!r}")
    return int(start), int(end)


def serve(
    data: Path = typer.Option(..., "--data", help="Data folder (keys, SQLite, blobs)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8443, "--port", min=1, max=65535, help="TCP port."),
    database: str = typer.Option("", "--database", help="postgresql://... (default: SQLite)."),
    blobs: str = typer.Option("", "--blobs", help="Folder or s3://BUCKET/PREFIX."),
    kek: str = typer.Option("", "--kek", help="keyring:PATH or a pkcs11: URI for the KEK."),
    log: str = typer.Option("", "--log", help="Audit log location (default: beside the data)."),
    webhook: str | None = typer.Option(None, "--webhook", help="POST alerts to this URL."),
    replica: str = typer.Option("", "--replica", help="This replica's name (in audit entries)."),
    window: int = typer.Option(86400, "--window-s", help="Egress budget window in seconds."),
    principal_budget: str = typer.Option(
        "1T", "--principal-budget", help="Egress per principal per window (e.g. 100G)."
    ),
    init_admin: str | None = typer.Option(
        None, "--init-admin", help="Create this admin on an empty database; print its token."
    ),
    admin_token_file: Path | None = typer.Option(
        None, "--admin-token-file", help="Write the new admin's token here (0600)."
    ),
    ready_file: Path | None = typer.Option(
        None, "--ready-file", help="Touch this file once the service listens."
    ),
    working_hours: str | None = typer.Option(
        None, "--working-hours", help="UTC hours when pulls are expected (e.g. 8-18); others alert."
    ),
) -> None:
    """Run the custody service (FastAPI + uvicorn)."""
    from weightvault import _interrupt
    from weightvault.custody.config import ServiceConfig
    from weightvault.custody.server import run_server
    from weightvault.errors import FileSystemError

    _check_data_folder(data)
    principal_bytes = _bytes(principal_budget, "--principal-budget")
    _check_listen(host, port)
    config = ServiceConfig(
        data_dir=data,
        database=database,
        blobs=blobs,
        kek=kek,
        log=log,
        webhook_url=webhook,
        replica=replica,
        window_s=window,
        principal_egress_bytes_per_window=principal_bytes,
        working_hours_utc=_hours(working_hours) if working_hours else None,
    )
    created = not data.exists()
    started: list[bool] = []
    _interrupt.release()  # SIGINT/SIGTERM stop the service gracefully (uvicorn, run_server)

    def on_ready() -> None:
        started.append(True)
        if ready_file is not None:
            ready_file.touch()

    try:
        run_server(
            config,
            host=host,
            port=port,
            init_admin=init_admin,
            admin_token_file=admin_token_file,
            on_ready=on_ready,
        )
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind (taken since the probe)
        if exc.code in (0, None):
            raise
        raise FileSystemError(
            f"the service could not listen on {host}:{port}", hint="choose another with --port"
        ) from exc
    except BaseException:
        if created and not started:  # a start that failed (full disk...) leaves no half folder
            import shutil

            shutil.rmtree(data, ignore_errors=True)
        raise


def register(app: typer.Typer) -> None:
    app.command("serve", help="Run the custody service.")(serve)
