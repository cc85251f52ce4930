"""The release policy's strict parsing and the offline decision's refusals, without a service."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from tests.custody.helpers import public_pem

from weightvault.custody.gates_policy import ReleasePolicy, decide, parse_evidence
from weightvault.custody.policy import ModelPolicy
from weightvault.errors import FormatError

KEY = public_pem(ec.generate_private_key(ec.SECP256R1()))


def good() -> dict[str, Any]:
    return {
        "evaluations": [
            {
                "name": "uplift",
                "suite": "bio-v2",
                "thresholds": {"uplift": {"max": 0.2}},
                "signers": ["custody", {"name": "evals", "public_key_pem": KEY}],
                "external_allowed": True,
                "max_age_s": 86400,
                "after_enhancement": True,
                "inputs_digest": "sha256:" + "a" * 64,
            }
        ],
        "risk_assessment": {"signers": [{"name": "board", "public_key_pem": KEY}]},
        "auditor": {"signers": [{"name": "audit", "public_key_pem": KEY}], "max_age_s": 10},
    }


def test_a_release_policy_round_trips_inside_the_model_policy() -> None:
    policy = ModelPolicy.from_dict({"approvers": ["a", "b"], "release": good()})
    assert policy.release is not None and len(policy.release.requirements) == 3
    again = ModelPolicy.from_json(policy.to_json())
    assert again == policy
    assert json.loads(policy.to_json())["release"]["evaluations"][0]["inputs_digest"].startswith(
        "sha256:"
    )


def _broken(change: Any) -> str:
    doc = good()
    change(doc)
    with pytest.raises(FormatError) as refused:
        ReleasePolicy.from_dict(doc)
    return refused.value.message


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.update(extra=1), "policy.release: unknown field extra"),
        (lambda d: d["evaluations"][0].update(thresholds={"x": {"above": 1}}), "thresholds.x"),
        (lambda d: d["evaluations"][0].update(thresholds={"x": {"max": True}}), "thresholds.x.max"),
        (lambda d: d["evaluations"][0].update(max_age_s=True), "evaluations[0].max_age_s"),
        (lambda d: d["evaluations"][0].update(external_allowed="yes"), "external_allowed"),
        (lambda d: d["evaluations"][0].update(signers=[]), "evaluations[0].signers"),
        (lambda d: d["evaluations"][0].update(inputs_digest="md5:1"), "inputs_digest"),
        (lambda d: d["evaluations"].append(dict(d["evaluations"][0])), "a name is used twice"),
        (lambda d: d["risk_assessment"].update(signers=["custody"]), "only evaluations"),
        (
            lambda d: d["auditor"]["signers"][0].update(identity="x@example.com"),
            "exactly one of public_key_pem, identity or sigstore",
        ),
        (
            lambda d: d["auditor"]["signers"][0].update(
                public_key_pem=public_pem(ed25519.Ed25519PrivateKey.generate())
            ),
            "expected an EC public key",
        ),
        (
            lambda d: d["evaluations"][0].update(
                external_allowed=False, signers=[{"name": "evals", "public_key_pem": KEY}]
            ),
            "only 'custody' can sign",
        ),
        (lambda d: d.clear(), "names no requirement"),
    ],
)
def test_strict_parsing_names_the_field(change: Any, named: str) -> None:
    assert named in _broken(change)


def test_anything_but_an_evaluation_assessment_or_audit_is_refused_as_evidence() -> None:
    with pytest.raises(FormatError):
        parse_evidence(b"not json")
    with pytest.raises(FormatError) as other:
        parse_evidence(
            json.dumps({"payloadType": "x", "payload": "e30=", "signatures": []}).encode()
        )
    assert "not a custody job result" in other.value.message


def test_without_any_evidence_every_requirement_is_missing() -> None:
    policy = ReleasePolicy.from_dict(good())
    decision = decide(policy, "sha256:" + "1" * 64, [], now=dt.datetime.now(dt.UTC))
    assert not decision.allowed and decision.relied_on == []
    assert [f.failure for f in decision.findings] == ["missing"] * 3
    assert decision.refusal_lines()[0].startswith(
        "evaluation 'uplift' (suite bio-v2 after enhancement): missing"
    )


def test_an_auditor_named_by_certificate_identity(tmp_path: Path) -> None:
    """An external auditor listed by identity under a trust root: their certificate counts; a
    certificate from another root, or for another identity, does not."""
    from tests.signing._pki import build_pki

    from weightvault.attest import Subject, make_statement, sign_attestation
    from weightvault.custody.gates_policy import AUDIT_STATEMENT
    from weightvault.signing import CertificateSigner

    pki = build_pki(tmp_path / "pki")
    root = "sha256:" + "2" * 64
    statement = make_statement(
        Subject("model", bytes.fromhex(root.removeprefix("sha256:"))),
        AUDIT_STATEMENT,
        {
            "summary": "no objection to deployment",
            "auditor": pki.email,
            "auditedOn": "2026-12-01T00:00:00Z",
            "conclusion": "no-objection",
        },
    )

    def policy(identity: str) -> ReleasePolicy:
        signer = {"name": "acme", "identity": identity, "trust_root_pem": pki.root.read_text()}
        return ReleasePolicy.from_dict({"auditor": {"signers": [signer]}})

    now = dt.datetime.now(dt.UTC)
    good_bundle = sign_attestation(
        statement, CertificateSigner.from_files(pki.leaf_key, pki.leaf, [pki.chain])
    )
    evidence = [parse_evidence(good_bundle)]
    allowed = decide(policy(pki.email), root, evidence, now=now)
    assert allowed.allowed and allowed.findings[0].signer == "acme"
    assert allowed.relied_on == [evidence[0].digest]
    other_identity = decide(policy("mallory@example.com"), root, evidence, now=now)
    assert [f.failure for f in other_identity.findings] == ["unlisted-signer"]
    foreign = sign_attestation(
        statement, CertificateSigner.from_files(pki.other_key, pki.other_leaf, [pki.other_chain])
    )
    refused = decide(policy(pki.email), root, [parse_evidence(foreign)], now=now)
    assert not refused.allowed
    assert refused.findings[0].failure in ("unlisted-signer", "bad-signature")


def _edited(bundle: bytes) -> bytes:
    """The bundle with one fact of its signed statement changed (signature left as it was)."""
    import base64

    doc = json.loads(bundle)
    envelope = doc["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    predicate = statement["predicate"]
    if "metrics" in predicate:
        predicate["metrics"]["uplift"] = 0.0
    else:
        predicate["summary"] = "nothing to see here"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(doc).encode()


@pytest.mark.parametrize("which", [0, 1, 2], ids=["evaluation", "risk-assessment", "audit"])
@pytest.mark.parametrize(
    "defect", ["missing", "bad-signature", "expired", "unlisted-signer", "wrong-subject"]
)
def test_any_one_attestation_removed_altered_expired_or_resigned_refuses_naming_it(
    which: int, defect: str
) -> None:
    """Each of the three attestations in turn, each defect in turn: the gate refuses, and
    names exactly that requirement and that failure (the other two still pass)."""
    from tests.custody.test_gates import (
        NOW,
        Keys,
        audit_statement,
        evaluation,
        release_policy,
        risk_assessment,
    )

    keys = Keys(*(ec.generate_private_key(ec.SECP256R1()) for _ in range(4)))
    root, other = "sha256:" + "5" * 64, "sha256:" + "6" * 64
    policy = ReleasePolicy.from_dict(release_policy(keys))
    makers = [
        lambda digest, key, old: evaluation(digest, key or keys.evals, age_days=45 if old else 1),
        lambda digest, key, old: risk_assessment(
            digest, key or keys.board, expires=NOW - dt.timedelta(hours=1) if old else None
        ),
        lambda digest, key, old: (
            _expired_audit(digest, key or keys.auditor)
            if old
            else audit_statement(digest, key or keys.auditor)
        ),
    ]
    offered = [make(root, None, False) for make in makers]
    assert decide(policy, root, [parse_evidence(b) for b in offered], now=NOW).allowed
    if defect == "missing":
        del offered[which]
    elif defect == "bad-signature":
        offered[which] = _edited(offered[which])
    elif defect == "expired":
        offered[which] = makers[which](root, None, True)
    elif defect == "unlisted-signer":
        offered[which] = makers[which](root, keys.stranger, False)
    else:
        offered[which] = makers[which](other, None, False)
    decision = decide(policy, root, [parse_evidence(b) for b in offered], now=NOW)
    assert not decision.allowed
    failing = [f for f in decision.findings if not f.ok]
    assert [f.failure for f in failing] == [defect], decision.refusal_lines()
    named = ["evaluation 'bio-uplift'", "risk-assessment", "audit-statement"][which]
    assert failing[0].requirement.startswith(named)
    assert len(decision.relied_on) == 2


def _expired_audit(root: str, key: Any) -> bytes:
    """An audit statement whose own ``expires`` has passed."""
    from weightvault.attest import Subject, make_statement, sign_attestation
    from weightvault.custody.gates_policy import AUDIT_STATEMENT
    from weightvault.signing import KeySigner

    statement = make_statement(
        Subject("model", bytes.fromhex(root.removeprefix("sha256:"))),
        AUDIT_STATEMENT,
        {
            "summary": "third-party pre-deployment audit",
            "auditor": "acme-audit",
            "auditedOn": "2026-01-01T00:00:00Z",
            "conclusion": "no-objection",
            "expires": "2026-02-01T00:00:00Z",
        },
    )
    return sign_attestation(statement, KeySigner(key))
