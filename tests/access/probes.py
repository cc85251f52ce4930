"""Entry points the sandbox tests run inside a confined worker instead of a job: each tries
something a job must not be able to do (or must), and reports what happened."""

from __future__ import annotations

import os
import socket
import time
from typing import Any


def _attempt(action: Any) -> str:
    try:
        action()
    except OSError as exc:
        return f"refused: {type(exc).__name__}"
    return "done"


def probe(message: dict[str, Any], files: dict[str, Any]) -> dict[str, Any]:
    """Run the attempts named in ``message["probe"]``; return what each did."""
    report: dict[str, Any] = {}
    args = message["probe"]
    if "connect" in args:
        report["connect"] = _attempt(
            lambda: socket.create_connection(("127.0.0.1", args["connect"]), timeout=2).close()
        )
    if "write_outside" in args:
        report["write_outside"] = _attempt(lambda: open(args["write_outside"], "w").close())
    if "read_other" in args:
        report["read_other"] = _attempt(lambda: open(args["read_other"], "rb").read(1))
    if "parent" in args:  # the service's memory and environment (data keys, KEK material)
        for name in ("mem", "environ"):
            path = f"/proc/{args['parent']}/{name}"
            report[f"parent_{name}"] = _attempt(lambda p=path: open(p, "rb").read(1))
    if "write_scratch" in args:
        path = os.path.join(message["scratch"], "note.txt")
        report["write_scratch"] = _attempt(lambda: open(path, "w").write("x"))
    if "read_given" in args:
        report["read_given"] = {name: f.read(0, 16).hex() for name, f in files.items()}
    if "spin" in args:
        while True:
            pass
    if "sleep" in args:
        time.sleep(args["sleep"])
    if "allocate" in args:
        report["allocated"] = len(bytearray(args["allocate"]))
    if "shout" in args:
        report["shout"] = "x" * args["shout"]
    return report
