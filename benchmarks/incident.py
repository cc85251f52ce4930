"""Incident timeline benchmark: verify a big custody audit export and build one model's timeline.

Usage::

    .venv/bin/python benchmarks/incident.py            # 100,000 entries, 1 in 10 about the model
    .venv/bin/python benchmarks/incident.py --entries 1000000

The log is a real transparency log (SQLite) holding custody-format pull entries, signed once and
exported; the run times (1) the export's full verification plus the proof index
(:func:`weightvault.incident.evidence.evidence_from_export`) and (2) the timeline of one model with
an inclusion proof computed and checked for every line, and reports the peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10, help="1 entry in N is about the model")
    args = parser.parse_args()

    from weightvault._json import canonical
    from weightvault.incident.evidence import evidence_from_export
    from weightvault.incident.timeline import build_timeline
    from weightvault.tlog import Ed25519NoteSigner, TransparencyLog

    print(f"load before the run: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")
    key = Ed25519NoteSigner.generate("weightvault.custody/audit")
    with tempfile.TemporaryDirectory() as folder:
        log = TransparencyLog.create(str(Path(folder) / "audit.tlog"), "weightvault.custody/audit")
        batch: list[bytes] = []
        for i in range(args.entries):
            model = "llama" if i % args.every == 0 else "other"
            grant = f"{i:032x}"
            batch.append(
                canonical(
                    {
                        "format": "weightvault.dev/custody-audit@v1",
                        "action": "pull",
                        "client": "10.0.0.7",
                        "detail": {"file": "model.safetensors", "grant_id": grant, "model": model,
                                   "range": [0, 1 << 20], "total": 1 << 20},
                        "method": "GET",
                        "outcome": "allowed",
                        "path": f"/v1/grants/{grant}/files/0",
                        "principal": "rita",
                        "replica": "",
                        "request_id": grant,
                        "time": "2026-12-06T06:38:56Z",
                        "token": None,
                    }
                )
            )  # fmt: skip
            if len(batch) == 10_000:
                log.append_many(batch)
                batch = []
        if batch:
            log.append_many(batch)
        log.sign_checkpoint(key)
        export = log.export().to_json()
        log.close()
    started = time.perf_counter()
    evidence = evidence_from_export(export, key.verifier_key, source="benchmark")
    verified = time.perf_counter()
    timeline = build_timeline(evidence, "llama")
    built = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.entries} entries, export {len(export) / 1e6:.1f} MB")
    print(f"verify the export and index its proofs: {verified - started:.2f} s")
    print(
        f"timeline of {len(timeline.events)} events, a checked inclusion proof each: "
        f"{built - verified:.2f} s"
    )
    print(f"peak resident memory: {peak_mb:.0f} MB")
    print(f"load after the run: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
