"""A release policy naming a Sigstore (keyless) signer: an external auditor's statement signed
through a private Sigstore deployment run inside the test (the stand-in Fulcio and Rekor of
tests/signing) counts only for the identity and OIDC issuer the policy pins, and only under the
trusted root it names."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.custody.helpers import World
from tests.custody.test_gates import (
    Keys,
    attach,
    evaluation,
    new_model,
    release_policy,
    request_deploy,
    risk_assessment,
)
from tests.signing.test_sigstore_private_deployment import (
    IDENTITY,
    ISSUER,
    _token,
    deployment,  # noqa: F401 (the fixture)
)

from weightvault.attest import Subject, make_statement, sign_attestation
from weightvault.custody.client import VaultHTTPError
from weightvault.custody.gates_policy import AUDIT_STATEMENT, ReleasePolicy, decide, parse_evidence
from weightvault.custody.policy import ModelPolicy
from weightvault.errors import FormatError
from weightvault.signing.sigstore import SigstoreSigner

ROOT = "sha256:" + "3" * 64


def _statement(root: str = ROOT) -> Any:
    return make_statement(
        Subject("model", bytes.fromhex(root.removeprefix("sha256:"))),
        AUDIT_STATEMENT,
        {
            "summary": "third-party pre-deployment audit: no objection",
            "auditor": IDENTITY,
            "auditedOn": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "conclusion": "no-objection",
        },
    )


def _policy(identity: str, issuer: str, trust_config: dict[str, Any] | None) -> ReleasePolicy:
    sigstore: dict[str, Any] = {"identity": identity, "issuer": issuer}
    if trust_config is not None:
        sigstore["trust_config"] = trust_config
    return ReleasePolicy.from_dict(
        {"auditor": {"signers": [{"name": "acme", "sigstore": sigstore}]}}
    )


def test_a_sigstore_auditor_counts_only_for_the_pinned_identity_and_issuer(
    deployment: tuple[object, Path],  # noqa: F811
) -> None:
    _state, trust_path = deployment
    config = json.loads(trust_path.read_text())
    signer = SigstoreSigner(_token(), trust_config=trust_path, use_ambient_credentials=False)
    evidence = [parse_evidence(sign_attestation(_statement(), signer))]
    now = dt.datetime.now(dt.UTC)

    allowed = decide(_policy(IDENTITY, ISSUER, config), ROOT, evidence, now=now)
    assert allowed.allowed, allowed.refusal_lines()
    assert allowed.findings[0].signer == "acme" and allowed.relied_on == [evidence[0].digest]

    # An unlisted identity (the policy names another), another issuer, another trusted root.
    for policy, failure in (
        (_policy("mallory@example.com", ISSUER, config), "unlisted-signer"),
        (_policy(IDENTITY, "https://accounts.google.com", config), "unlisted-signer"),
        (_policy(IDENTITY, ISSUER, None), "unlisted-signer"),  # the public-good root
    ):
        refused = decide(policy, ROOT, evidence, now=now)
        assert not refused.allowed
        assert [f.failure for f in refused.findings] == [failure], refused.refusal_lines()
        assert refused.relied_on == []

    # Signed by another identity of the same deployment: refused though the policy's own
    # signer is listed, and the refusal names who signed.
    mallory = SigstoreSigner(
        _token("mallory@example.com"), trust_config=trust_path, use_ambient_credentials=False
    )
    theirs = [parse_evidence(sign_attestation(_statement(), mallory))]
    refused = decide(_policy(IDENTITY, ISSUER, config), ROOT, theirs, now=now)
    assert [f.failure for f in refused.findings] == ["unlisted-signer"]
    assert "mallory@example.com" in refused.findings[0].message

    # About another version: wrong-subject, whoever signed it.
    other = [parse_evidence(sign_attestation(_statement("sha256:" + "4" * 64), signer))]
    refused = decide(_policy(IDENTITY, ISSUER, config), ROOT, other, now=now)
    assert [f.failure for f in refused.findings] == ["wrong-subject"]


def test_a_sigstore_signer_round_trips_and_is_parsed_strictly(
    deployment: tuple[object, Path],  # noqa: F811
) -> None:
    _state, trust_path = deployment
    config = json.loads(trust_path.read_text())
    release = _policy(IDENTITY, ISSUER, config).to_dict()
    model = ModelPolicy.from_dict({"approvers": ["a", "b"], "release": release})
    assert ModelPolicy.from_json(model.to_json()) == model
    signer = json.loads(model.to_json())["release"]["auditor"]["signers"][0]
    assert signer["sigstore"]["trust_config"] == config

    def broken(sigstore: dict[str, Any]) -> str:
        doc = {"auditor": {"signers": [{"name": "acme", "sigstore": sigstore}]}}
        with pytest.raises(FormatError) as refused:
            ReleasePolicy.from_dict(doc)
        return refused.value.message

    assert "sigstore.issuer: expected a non-empty string" in broken({"identity": IDENTITY})
    assert "https:// URL" in broken({"identity": IDENTITY, "issuer": "accounts.google.com"})
    assert "one exact identity" in broken({"identity": "*@example.com", "issuer": ISSUER})
    assert "unknown field regexp" in broken(
        {"identity": IDENTITY, "issuer": ISSUER, "regexp": ".*"}
    )
    assert "client trust config" in broken(
        {"identity": IDENTITY, "issuer": ISSUER, "trust_config": {"mediaType": "x"}}
    )
    both = {"name": "acme", "public_key_pem": "x", "sigstore": {"identity": IDENTITY}}
    with pytest.raises(FormatError, match="exactly one of"):
        ReleasePolicy.from_dict({"auditor": {"signers": [both]}})
    stray = {
        "name": "acme",
        "trust_root_pem": "-----BEGIN CERTIFICATE-----",
        "sigstore": {"identity": IDENTITY, "issuer": ISSUER},
    }
    with pytest.raises(FormatError, match=r"signers\[0\]\.trust_root_pem: not used with sigstore"):
        ReleasePolicy.from_dict({"auditor": {"signers": [stray]}})


def test_a_trust_config_sigstore_python_refuses_is_never_a_pass(
    deployment: tuple[object, Path],  # noqa: F811
) -> None:
    _state, trust_path = deployment
    config = json.loads(trust_path.read_text())
    signer = SigstoreSigner(_token(), trust_config=trust_path, use_ambient_credentials=False)
    evidence = [parse_evidence(sign_attestation(_statement(), signer))]
    config["trustedRoot"] = {"mediaType": "not a trusted root"}
    refused = decide(_policy(IDENTITY, ISSUER, config), ROOT, evidence, now=dt.datetime.now(dt.UTC))
    assert [f.failure for f in refused.findings] == ["signer-unusable"]
    assert "signer acme:" in refused.findings[0].message


def test_the_service_grants_deploy_on_a_sigstore_auditors_statement_and_names_a_stranger(
    deployment: tuple[object, Path],  # noqa: F811
    world: World,
) -> None:
    """Through custody: the policy (with its inline trust config) is stored and enforced; the
    statement of an identity the policy does not list is refused at the request, named."""
    _state, trust_path = deployment
    config = json.loads(trust_path.read_text())
    keys = Keys(*(ec.generate_private_key(ec.SECP256R1()) for _ in range(4)))
    policy = release_policy(keys)
    policy["auditor"] = {
        "signers": [
            {
                "name": "acme-ci",
                "sigstore": {"identity": IDENTITY, "issuer": ISSUER, "trust_config": config},
            }
        ]
    }
    for model, token in (
        ("gated-sigstore", _token()),
        ("gated-sigstore-x", _token("eve@example.com")),
    ):
        root = new_model(world, model, policy)
        signer = SigstoreSigner(token, trust_config=trust_path, use_ambient_credentials=False)
        attach(
            world,
            model,
            evaluation(root, keys.evals),
            risk_assessment(root, keys.board),
            sign_attestation(_statement(root), signer),
        )
    request = request_deploy(world, "gated-sigstore")
    audit = next(f for f in request["gate"]["findings"] if f["requirement"] == "audit-statement")
    assert request["gate"]["allowed"] and audit["signer"] == "acme-ci"
    with pytest.raises(VaultHTTPError) as refused:
        request_deploy(world, "gated-sigstore-x")
    assert "audit-statement: unlisted-signer: signed by eve@example.com" in refused.value.message
