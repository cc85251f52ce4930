"""Inventory: find copies of custody models (exact, re-saved, encrypted) and stray weight files.

Public API::

    from weightvault.inventory import custody_references, take_inventory
    refs = custody_references(ServiceConfig(data_dir=Path("custody")))
    report = take_inventory([Path("/srv"), Path("/home")], refs, approved=[Path("/srv/models")],
                            home=Path("custody"))
    report.stray_copies, report.findings, report.to_json()

The references are the custody deployment's own records (file digests, header contexts, and
tensor digests computed from the stored ciphertext with the service KEK); the walk hashes with
the parallel hashing engine, like signing.
"""

from __future__ import annotations

from weightvault.inventory.references import (
    ReferenceFile,
    References,
    add_signed_manifest,
    custody_references,
    tensor_digest,
)
from weightvault.inventory.walk import (
    INVENTORY_FORMAT,
    WEIGHT_FORMATS,
    Finding,
    InventoryReport,
    sniff,
    take_inventory,
)

__all__ = [
    "INVENTORY_FORMAT",
    "WEIGHT_FORMATS",
    "Finding",
    "InventoryReport",
    "ReferenceFile",
    "References",
    "add_signed_manifest",
    "custody_references",
    "sniff",
    "take_inventory",
    "tensor_digest",
]
