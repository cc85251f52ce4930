"""The worker process of one job: limits, then the encrypted files, then confinement, then work.

Run as ``python -m weightvault.access.worker LIMITS_JSON`` by :func:`~.sandbox.run_worker`, with
the job message (JSON) on standard input. Order matters:

1. resource limits on itself (hard = soft, so nothing it runs can raise them), core dumps off;
2. read the message; open each stored ciphertext file with its data key (header MAC checked);
3. Landlock: read only the Python installation, write only the scratch folder (refusing to run if
   an allowed root would expose a path the service named as forbidden, such as its data folder);
4. run the entry (``module:function(message, files) -> outputs``) and print one JSON report.

Plaintext exists only in this process's memory: files are decrypted range by range from the
open ciphertext (:class:`~weightvault.crypt.EncryptedFile`), never written.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

__all__ = ["MEMORY_LIMIT", "main", "open_file"]

MEMORY_LIMIT = "memory limit reached"
"""The report's error when an allocation failed under the address-space limit."""
_OUT_OF_MEMORY = ("can't allocate memory", "Cannot allocate memory", "failed to map segment")


def _set_limits(limits: dict[str, Any]) -> None:
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    scratch = int(limits["scratch_bytes"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (scratch, scratch))


def open_file(blob: str, dek: bytes, name: str) -> Any:
    """A random-access reader of one stored ciphertext file, given its data key."""
    from weightvault.crypt.envelope import Unlocked, cannot_decrypt, read_file_header
    from weightvault.crypt.format import header_mac_matches, plaintext_size_for
    from weightvault.crypt.reader import EncryptedFile

    header, size = read_file_header(Path(blob), name)
    if not header_mac_matches(dek, header):
        raise cannot_decrypt(name)
    body_size = size - header.size
    plaintext = plaintext_size_for(body_size)
    assert plaintext is not None  # read_file_header checked it
    return EncryptedFile(Unlocked(Path(blob), name, header, dek, size, body_size, plaintext))


def _python_roots() -> list[str]:
    """What the interpreter and its libraries need to read (and nothing of the service's)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.update(p for p in sys.path if p and os.path.isabs(p))
    roots.update(("/usr", "/lib", "/lib64", "/bin", "/etc", "/proc", "/sys/devices/system/cpu"))
    roots.update(("/dev/null", "/dev/urandom", "/dev/zero"))
    return sorted(r for r in roots if os.path.exists(r))


def _confine(scratch: str, forbidden: list[str]) -> int:
    from weightvault.access import _landlock

    roots = _python_roots()
    for secret in forbidden:
        secret_real = os.path.realpath(secret)
        for root in roots:
            real = os.path.realpath(root)
            if secret_real == real or secret_real.startswith(real.rstrip("/") + "/"):
                raise PermissionError(
                    f"the worker would be allowed to read {root}, which holds {secret}"
                )
    if _landlock.abi_version() < 1:
        return 0
    return _landlock.restrict(roots, [scratch])


def _environment(landlock_abi: int) -> dict[str, Any]:
    versions: dict[str, str] = {}
    for name in ("torch", "transformers", "safetensors", "numpy"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "?"))
    return {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "packages": versions,
        "landlock_applied": landlock_abi,
        "network": _network_view(),
    }


def _network_view() -> list[str]:
    """Interfaces this process can see (a fresh namespace shows only ``lo``)."""
    try:
        return sorted(name for _index, name in __import__("socket").if_nameindex())
    except OSError:
        return []


def main() -> int:
    limits = json.loads(sys.argv[1])
    _set_limits(limits)
    landlock_abi = 0
    try:
        message = json.loads(sys.stdin.buffer.read(64 << 20))
        files = {
            item["path"]: open_file(item["blob"], base64.b64decode(item["dek"]), item["path"])
            for item in message.get("files", [])
        }
        landlock_abi = _confine(message["scratch"], list(message.get("forbidden", [])))
        module_name, _, function_name = str(limits["entry"]).partition(":")
        function = getattr(importlib.import_module(module_name), function_name)
        outputs = function(message, files)
        environment = _environment(landlock_abi)
        environment["timings"] = message.get("timings", {})
        report = {"ok": True, "outputs": outputs, "environment": environment}
    except MemoryError:
        report = {"ok": False, "error": MEMORY_LIMIT, "environment": {}}
    except Exception as exc:  # the report names the failure; the parent decides
        text = str(getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
        if any(sign in text for sign in _OUT_OF_MEMORY):  # PyTorch's allocator, the loader
            text = MEMORY_LIMIT
        report = {"ok": False, "error": text[:500], "environment": _environment(landlock_abi)}
    sys.stdout.buffer.write(json.dumps(report, sort_keys=True).encode("utf-8"))
    sys.stdout.flush()
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
