"""A writer process for the concurrency and kill -9 tests (run as a script, not collected).

Usage: python tlog_writer_process.py LOCATION PREFIX COUNT BATCH
Appends COUNT entries ``PREFIX-<n>`` in batches of BATCH (COUNT 0 = forever) and prints
``ack <index> <entry>`` for each entry after its transaction committed.
"""

from __future__ import annotations

import sys

from weightvault.tlog import TransparencyLog


def main() -> None:
    location, prefix, count, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    log = TransparencyLog.open(location)
    written = 0
    while count == 0 or written < count:
        entries = [f"{prefix}-{written + i}".encode() for i in range(batch)]
        first = log.append_many(entries)
        sys.stdout.write("".join(f"ack {first + i} {e.decode()}\n" for i, e in enumerate(entries)))
        sys.stdout.flush()
        written += batch


if __name__ == "__main__":
    main()
