"""Posture and inventory over a deployment whose database and audit log are in PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from tests.custody.helpers import build_world, start_service
from tests.postgres import PostgresServer

from weightvault.custody.config import ServiceConfig
from weightvault.inventory import custody_references, take_inventory
from weightvault.posture import Deployment, Status, assess


def test_a_postgresql_deployment_is_read_where_it_lives(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    dsn = postgres.create_database()
    service = start_service(tmp_path / "custody", args=("--database", dsn))
    try:
        world = build_world(tmp_path, service)
        world.granted()
        with service.admin as admin:
            admin.audit_export()  # signs a checkpoint
    finally:
        service.stop()
    assert not (tmp_path / "custody" / "custody.db").exists()
    config = ServiceConfig(data_dir=tmp_path / "custody", database=dsn)
    report = assess(Deployment(config))
    results = {r.measure.id: r for r in report.results}
    for measure in ("sl1.audit-trail", "sl1.encrypted-at-rest", "sl1.signed-versions"):
        assert results[measure].status is Status.PASS, results[measure].evidence
    assert "1 grants live now" in results["sl3.no-standing-access"].evidence[0]
    assert results["sl2.tls"].status is Status.FAIL

    copy = tmp_path / "laptop" / "model.safetensors"
    copy.parent.mkdir()
    assert world.model_dir is not None
    copy.write_bytes((world.model_dir / "model.safetensors").read_bytes())
    found = take_inventory([copy.parent], custody_references(config))
    assert [(f.kind, f.matches[0]["model"]) for f in found.findings] == [("exact-copy", "llama")]
