"""Security posture: a deployment checked against the RAND SL1-SL5 measures software can check.

Public API::

    from weightvault.posture import Deployment, assess
    report = assess(Deployment(ServiceConfig(data_dir=Path("custody"), kek="pkcs11:...")),
                    attestation=Path("attestation.yaml"), attestation_verifier=KeyVerifier(...))
    report.level, report.gaps(), report.to_markdown(), report.to_html(), report.to_json()

The measure table is data (``measures.toml``); the checks read the deployment and never write
it; controls no software can see come from a signed attestation and stay marked *attested*.
"""

from __future__ import annotations

from weightvault.posture.attestation import (
    Attestation,
    load_attestation,
    parse_attestation,
    sign_attestation,
    signature_path_for,
)
from weightvault.posture.checks import CHECKS, CheckResult, Deployment, Status
from weightvault.posture.measures import MEASURES_PATH, Measure, level_name, load_measures
from weightvault.posture.report import MeasureResult, PostureReport, assess, parse_level

__all__ = [
    "CHECKS",
    "MEASURES_PATH",
    "Attestation",
    "CheckResult",
    "Deployment",
    "Measure",
    "MeasureResult",
    "PostureReport",
    "Status",
    "assess",
    "level_name",
    "load_attestation",
    "load_measures",
    "parse_attestation",
    "parse_level",
    "sign_attestation",
    "signature_path_for",
]
