"""Where the client finds the service and its token.

In order: explicit arguments (command-line flags), the environment (``WEIGHTVAULT_URL``,
``WEIGHTVAULT_TOKEN``), then ``$WEIGHTVAULT_HOME/vault.json`` (written by ``weightvault vault
login``, mode 0600).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from weightvault.errors import InputError, UsageError

__all__ = [
    "CONFIG_FILE",
    "TOKEN_ENV",
    "URL_ENV",
    "ClientConfig",
    "config_path",
    "resolve_config",
    "save_config",
]

URL_ENV = "WEIGHTVAULT_URL"
TOKEN_ENV = "WEIGHTVAULT_TOKEN"  # noqa: S105 - the variable's name, not a token
CONFIG_FILE = "vault.json"


def config_path() -> Path:
    from weightvault.crypt.recipients.keyring import weightvault_home

    return weightvault_home() / CONFIG_FILE


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str

    def __repr__(self) -> str:
        return f"ClientConfig(url={self.url!r})"


def resolve_config(url: str | None = None, token: str | None = None) -> ClientConfig:
    """Flags, then environment, then the config file."""
    url = url or os.environ.get(URL_ENV)
    token = token or os.environ.get(TOKEN_ENV)
    if not url or not token:
        path = config_path()
        if path.is_file():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: not a valid vault config ({exc})") from exc
            if isinstance(doc, dict):
                url = url or doc.get("url")
                token = token or doc.get("token")
    if not url:
        raise UsageError(
            "no server URL",
            hint="set WEIGHTVAULT_URL, or save one with a login",
            remedy="server-url",
        )
    if not token:
        raise UsageError(
            "no token",
            hint="set WEIGHTVAULT_TOKEN, or save one with a login",
            remedy="server-token",
        )
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"{url!r}: the server URL must start with http:// or https://")
    return ClientConfig(url.rstrip("/"), token)


def save_config(config: ClientConfig) -> Path:
    """Write ``vault.json`` (0600) under ``$WEIGHTVAULT_HOME``."""
    from weightvault.keys.files import write_secret_file

    path = config_path()
    write_secret_file(
        path, json.dumps({"url": config.url, "token": config.token}) + "\n", force=True
    )
    return path
