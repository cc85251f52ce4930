"""A schema-based fuzzer (schemathesis) against the service's own OpenAPI spec finds no 500s,
and every fuzzed request still lands in an audit log that verifies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.custody.helpers import build_world, start_service

from weightvault.custody.audit import verify_audit


def test_schemathesis_finds_no_server_errors(tmp_path: Path) -> None:
    service = start_service(tmp_path / "data")
    try:
        world = build_world(tmp_path, service)
        grant_id = world.granted("rita")
        st = Path(sys.executable).parent / "st"
        for who in ("admin", "rita"):
            result = subprocess.run(
                [
                    str(st),
                    "run",
                    f"{service.url}/openapi.json",
                    "--checks",
                    "not_a_server_error",
                    "--max-examples",
                    "8",
                    "--seed",
                    "20261123",
                    "--phases",
                    "coverage,fuzzing",
                    "-H",
                    f"Authorization: Bearer {world.people[who].token}",
                ],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert result.returncode == 0, result.stdout[-4000:]
            assert "passed" in result.stdout
            assert "500" not in result.stdout.split("SUMMARY")[-1]
        with world.client("audrey") as auditor:
            report = verify_audit(auditor.audit_export(), auditor.audit_key()["log_key"])
        assert report.size > 300
        assert report.denied > 100
        assert "unexpected error" not in service.log_path.read_text()
        assert grant_id
    finally:
        service.stop()
