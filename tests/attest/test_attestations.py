"""Attestations bound to a model's root digest: each refusal has its named reason."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from tests.attest.conftest import eval_predicate, provenance_predicate
from tests.signing._pki import Pki
from tests.softhsm import SoftHsmToken

from weightvault.attest import (
    EVAL_RESULTS,
    MODEL_CARD,
    TRAINING_PROVENANCE,
    AttestationError,
    AttestationFailure,
    check_attestations,
    digest_subject,
    list_attestations,
    log_attestation,
    make_statement,
    parse_statement,
    require_attestations,
    sign_attestation,
    store_attestation,
    verify_attestation,
)
from weightvault.errors import FormatError
from weightvault.oms.bundle import public_key_hint
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE
from weightvault.signing import KeySigner, KeyVerifier, sign
from weightvault.signing.certificate import CertificateSigner, CertificateVerifier

NOW = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)


def _signed_eval(model: Path, key: Path, **overrides: object) -> bytes:
    statement = make_statement(digest_subject(model), "eval-results", eval_predicate(**overrides))
    return sign_attestation(statement, KeySigner.from_file(key))


def _refusal(bundle: bytes, **keywords: object) -> AttestationFailure:
    with pytest.raises(AttestationError) as caught:
        verify_attestation(bundle, **keywords)  # type: ignore[arg-type]
    assert caught.value.one_line().startswith(f"attestation refused ({caught.value.failure})")
    return caught.value.failure


def test_subject_is_the_digest_sign_writes(model: Path, keys: tuple[Path, Path]) -> None:
    signed = sign(model, KeySigner.from_file(keys[0]), hash_type="blake2")
    subject = digest_subject(model)  # takes blake2 from the signature beside it
    assert subject.digest == signed.manifest.root_digest
    assert subject.serialization is not None and subject.serialization.hash_type == "blake2"
    bundle = _signed_eval(model, keys[0])
    record = verify_attestation(
        bundle,
        verifier=KeyVerifier.from_file(keys[1]),
        expected_subject_digest=signed.manifest.root_digest,
        expected_predicate_type="eval-results",
        now=NOW,
    )
    assert record.kind == "eval-results" and record.predicate_type == EVAL_RESULTS
    assert record.predicate["metrics"] == {"accuracy": 0.91, "refusal_rate": 0.02}
    assert record.signer.key_fingerprint is not None
    assert record.subject.name == "tiny-model" and record.subject.role == "model"
    assert record.expires == datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    # The payload is the statement the verifier parsed, byte for byte.
    envelope = json.loads(bundle)["dsseEnvelope"]
    assert envelope["payloadType"] == INTOTO_PAYLOAD_TYPE
    assert parse_statement(base64.b64decode(envelope["payload"])) == record.statement


def test_altered_predicate_is_a_bad_signature(model: Path, keys: tuple[Path, Path]) -> None:
    bundle = json.loads(
        _signed_eval(model, keys[0], metrics={"accuracy": 0.41, "refusal_rate": 0.0})
    )
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload["predicate"]["metrics"]["accuracy"] = 0.99
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    altered = json.dumps(bundle).encode()
    failure = _refusal(
        altered,
        verifier=KeyVerifier.from_file(keys[1]),
        expected_subject_digest=digest_subject(model).digest,
        now=NOW,
    )
    assert failure is AttestationFailure.BAD_SIGNATURE


def test_every_flipped_payload_byte_is_refused(model: Path, keys: tuple[Path, Path]) -> None:
    bundle = json.loads(_signed_eval(model, keys[0]))
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    verifier = KeyVerifier.from_file(keys[1])
    digest = digest_subject(model).digest
    for position in range(0, len(payload), 7):
        flipped = bytearray(payload)
        flipped[position] ^= 0x01
        bundle["dsseEnvelope"]["payload"] = base64.b64encode(bytes(flipped)).decode()
        with pytest.raises(AttestationError) as caught:
            verify_attestation(
                json.dumps(bundle).encode(),
                verifier=verifier,
                expected_subject_digest=digest,
                now=NOW,
            )
        assert caught.value.failure is AttestationFailure.BAD_SIGNATURE


def test_wrong_subject_digest(model: Path, keys: tuple[Path, Path]) -> None:
    bundle = _signed_eval(model, keys[0])
    (model / "weights.bin").write_bytes(b"swapped weights")
    failure = _refusal(
        bundle,
        verifier=KeyVerifier.from_file(keys[1]),
        expected_subject_digest=digest_subject(model).digest,
        now=NOW,
    )
    assert failure is AttestationFailure.WRONG_SUBJECT
    # The stored attestation, checked against the model as it is now, says the same.
    store_attestation(model, bundle, "eval-results")
    [check] = check_attestations(model, verifier=KeyVerifier.from_file(keys[1]), now=NOW)
    assert not check.ok and check.failure is AttestationFailure.WRONG_SUBJECT


def test_wrong_predicate_type(model: Path, keys: tuple[Path, Path]) -> None:
    bundle = _signed_eval(model, keys[0])
    failure = _refusal(
        bundle,
        verifier=KeyVerifier.from_file(keys[1]),
        expected_subject_digest=digest_subject(model).digest,
        expected_predicate_type=MODEL_CARD,
        now=NOW,
    )
    assert failure is AttestationFailure.WRONG_PREDICATE_TYPE


def test_signer_not_listed_key_method(
    model: Path, keys: tuple[Path, Path], other_keys: tuple[Path, Path]
) -> None:
    bundle = _signed_eval(model, keys[0])
    digest = digest_subject(model).digest
    other_hint = public_key_hint(load_pem_public_key(other_keys[1].read_bytes()))
    # A valid signature by a key the caller does not list.
    failure = _refusal(
        bundle,
        verifier=KeyVerifier.from_file(keys[1]),
        expected_subject_digest=digest,
        signers=[other_hint],
        now=NOW,
    )
    assert failure is AttestationFailure.UNLISTED_SIGNER
    # Verified with another key and no list: the signature does not verify.
    failure = _refusal(
        bundle, verifier=KeyVerifier.from_file(other_keys[1]), expected_subject_digest=digest
    )
    assert failure is AttestationFailure.BAD_SIGNATURE


def test_signer_not_listed_certificate_method(model: Path, pki: Pki) -> None:
    statement = make_statement(digest_subject(model), "eval-results", eval_predicate())
    signer = CertificateSigner.from_files(pki.leaf_key, pki.leaf, [pki.chain])
    bundle = sign_attestation(statement, signer)
    digest = digest_subject(model).digest
    good = CertificateVerifier.from_file(pki.root, identity=pki.email)
    assert verify_attestation(bundle, verifier=good, expected_subject_digest=digest, now=NOW)
    wrong_identity = CertificateVerifier.from_file(pki.root, identity="mallory@example.com")
    failure = _refusal(bundle, verifier=wrong_identity, expected_subject_digest=digest, now=NOW)
    assert failure is AttestationFailure.UNLISTED_SIGNER
    failure = _refusal(
        bundle,
        verifier=good,
        expected_subject_digest=digest,
        signers=["mallory@example.com"],
        now=NOW,
    )
    assert failure is AttestationFailure.UNLISTED_SIGNER
    other_root = CertificateVerifier.from_file(pki.other_root, identity=pki.email)
    failure = _refusal(bundle, verifier=other_root, expected_subject_digest=digest, now=NOW)
    assert failure is AttestationFailure.UNLISTED_SIGNER


def test_expired(model: Path, keys: tuple[Path, Path]) -> None:
    bundle = _signed_eval(model, keys[0], expires="2027-01-01T00:00:00Z")
    verifier = KeyVerifier.from_file(keys[1])
    digest = digest_subject(model).digest
    before = datetime.datetime(2026, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
    assert verify_attestation(bundle, verifier=verifier, expected_subject_digest=digest, now=before)
    failure = _refusal(bundle, verifier=verifier, expected_subject_digest=digest, now=NOW)
    assert failure is AttestationFailure.EXPIRED
    failure = _refusal(bundle, verifier=verifier, expected_subject_digest=digest, now=lambda: NOW)
    assert failure is AttestationFailure.EXPIRED
    with pytest.raises(ValueError, match="aware datetime"):
        verify_attestation(
            bundle,
            verifier=verifier,
            expected_subject_digest=digest,
            now=datetime.datetime(2027, 1, 1),
        )


def test_malformed(model: Path, keys: tuple[Path, Path]) -> None:
    verifier = KeyVerifier.from_file(keys[1])
    digest = digest_subject(model).digest
    assert _refusal(b"{not json", verifier=verifier, expected_subject_digest=digest) is (
        AttestationFailure.MALFORMED
    )
    # A validly signed statement whose predicate lacks a required field.
    statement = json.loads(
        make_statement(digest_subject(model), "eval-results", eval_predicate()).to_payload()
    )
    del statement["predicate"]["evaluator"]
    bundle = KeySigner.from_file(keys[0]).sign(INTOTO_PAYLOAD_TYPE, json.dumps(statement).encode())
    with pytest.raises(AttestationError) as caught:
        verify_attestation(bundle, verifier=verifier, expected_subject_digest=digest)
    assert caught.value.failure is AttestationFailure.MALFORMED
    assert "predicate.evaluator: missing" in caught.value.message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("kind", "change", "field"),
    [
        ("eval-results", {"metrics": {"accuracy": True}}, "predicate.metrics.accuracy"),
        ("eval-results", {"metrics": {}}, "predicate.metrics"),
        ("eval-results", {"evaluatedOn": "yesterday"}, "predicate.evaluatedOn"),
        ("eval-results", {"expires": "2026-01-01T00:00:00Z"}, "predicate.expires"),
        ("eval-results", {"thresholds": {"bleu": {"min": 1}}}, "predicate.thresholds.bleu"),
        ("eval-results", {"extra": 1}, "predicate.extra"),
    ],
)
def test_predicate_fields_are_checked_when_made(
    model: Path, kind: str, change: dict[str, object], field: str
) -> None:
    with pytest.raises(FormatError, match=field.replace(".", r"\.")):
        make_statement(digest_subject(model), kind, eval_predicate(**change))


def test_slsa_provenance_binds_model_and_dataset(
    model: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    dataset = tmp_path / "corpus"
    dataset.mkdir()
    (dataset / "train.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    data_subject = digest_subject(dataset, role="dataset")
    statement = make_statement(
        digest_subject(model),
        "training-provenance",
        provenance_predicate(),
        datasets=[data_subject],
    )
    assert statement.predicate_type == TRAINING_PROVENANCE == "https://slsa.dev/provenance/v1"
    [dependency] = statement.predicate["buildDefinition"]["resolvedDependencies"]
    assert dependency["digest"] == {"sha256": data_subject.digest.hex()}
    bundle = sign_attestation(statement, KeySigner.from_file(keys[0]))
    verifier = KeyVerifier.from_file(keys[1])
    by_dataset = verify_attestation(
        bundle, verifier=verifier, expected_subject_digest=data_subject.digest
    )
    assert by_dataset.subject.role == "dataset"
    by_model = verify_attestation(
        bundle,
        verifier=verifier,
        expected_subject_digest=digest_subject(model).digest,
        expected_predicate_type="training-provenance",
    )
    assert by_model.subject.role == "model"
    assert set(by_model.subject_digests) == {"tiny-model", "corpus"}
    # SLSA's shape is enforced (the bindings refuse unknown fields; SLSA's required ones).
    broken = provenance_predicate()
    broken["runDetails"] = {"builder": {}}
    with pytest.raises(FormatError, match=r"runDetails\.builder\.id"):
        make_statement(digest_subject(model), "training-provenance", broken)
    broken = provenance_predicate()
    broken["buildDefinition"]["buildTyp"] = "x"
    with pytest.raises(FormatError, match="SLSA provenance"):
        make_statement(digest_subject(model), "training-provenance", broken)


def test_required_attestations(model: Path, keys: tuple[Path, Path]) -> None:
    verifier = KeyVerifier.from_file(keys[1])
    with pytest.raises(AttestationError) as caught:
        require_attestations(model, ["eval-results"], verifier=verifier, now=NOW)
    assert caught.value.failure is AttestationFailure.MISSING
    low = _signed_eval(model, keys[0], metrics={"accuracy": 0.5, "refusal_rate": 0.0})
    low_path = store_attestation(model, low, "eval-results")
    with pytest.raises(AttestationError) as caught:
        require_attestations(model, ["eval-results"], verifier=verifier, now=NOW)
    assert caught.value.failure is AttestationFailure.FAILED_THRESHOLDS
    assert "accuracy 0.5 < min 0.9" in caught.value.message
    good = store_attestation(model, _signed_eval(model, keys[0]), "eval-results")
    found = require_attestations(model, ["eval-results"], verifier=verifier, now=NOW)
    assert found["eval-results"].predicate["metrics"]["accuracy"] == 0.91
    with pytest.raises(AttestationError) as caught:
        require_attestations(model, ["eval-results", "model-card"], verifier=verifier, now=NOW)
    assert caught.value.failure is AttestationFailure.MISSING
    # Only an expired one left: refused as expired, not as missing.
    good.unlink()
    low_path.unlink()
    expired = _signed_eval(model, keys[0], expires="2026-12-31T00:00:00Z")
    store_attestation(model, expired, "eval-results")
    with pytest.raises(AttestationError) as caught:
        require_attestations(model, ["eval-results"], verifier=verifier, now=NOW)
    assert caught.value.failure is AttestationFailure.EXPIRED


def test_storage_leaves_the_model_and_its_signature_alone(
    model: Path, keys: tuple[Path, Path]
) -> None:
    import model_signing

    signed = sign(model, KeySigner.from_file(keys[0]))
    path = store_attestation(model, _signed_eval(model, keys[0]), "eval-results")
    assert path.parent == model.parent / "tiny-model.attestations"
    assert path.name.startswith("eval-results-") and path.name.endswith(".sigstore.json")
    assert digest_subject(model).digest == signed.manifest.root_digest
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys[1]).verify(
        model, signed.signature_path
    )
    # Stored twice: one file.
    assert store_attestation(model, path.read_bytes(), "eval-results") == path
    [listed] = list_attestations(model)
    assert listed.kind == "eval-results" and listed.error is None
    assert listed.subjects[0].digest == signed.manifest.root_digest


def test_logged_attestation_carries_an_inclusion_proof(
    model: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    from weightvault.tlog import Ed25519NoteSigner, TransparencyLog, verify_bundle_log_entry

    origin = "example.com/attest-log"
    log_key = Ed25519NoteSigner.generate(origin)
    key_file = tmp_path / "log.key"
    key_file.write_text(log_key.to_text())
    database = tmp_path / "log.db"
    TransparencyLog.create(database, origin).close()
    logged = log_attestation(_signed_eval(model, keys[0]), str(database), str(key_file))
    proof = verify_bundle_log_entry(logged, log_key.verifier_key)
    assert proof.index == 0
    record = verify_attestation(
        logged,
        verifier=KeyVerifier.from_file(keys[1]),
        expected_subject_digest=digest_subject(model).digest,
    )
    assert record.kind == "eval-results"


def test_pkcs11_signed_attestation(model: Path, token: SoftHsmToken, tmp_path: Path) -> None:
    """A key on a real SoftHSM2 token signs; the token's public key (or a PEM of it) verifies."""
    from weightvault.signing.pkcs11 import Pkcs11Signer, Pkcs11Verifier

    uri = token.generate_ec_key("attester", curve="P-384")
    bundle = sign_attestation(
        make_statement(digest_subject(model), "eval-results", eval_predicate()),
        Pkcs11Signer.from_uri(uri),
    )
    digest = digest_subject(model).digest
    record = verify_attestation(
        bundle, verifier=Pkcs11Verifier.from_uri(uri), expected_subject_digest=digest, now=NOW
    )
    assert record.signer.method in ("key", "pkcs11")
    pem = Pkcs11Verifier.from_public_key_pem(token.public_key_pem("attester"))
    assert verify_attestation(bundle, verifier=pem, expected_subject_digest=digest, now=NOW)
    other = token.generate_ec_key("other", curve="P-384")
    failure = _refusal(
        bundle, verifier=Pkcs11Verifier.from_uri(other), expected_subject_digest=digest, now=NOW
    )
    assert failure is AttestationFailure.BAD_SIGNATURE


def test_another_packages_predicate_type(model: Path, keys: tuple[Path, Path]) -> None:
    """Other packages (structured-access results, incident reports) sign their own statements
    through the same API, under their own predicate type URI."""
    uri = "https://weightvault.dev/attestation/example-result/v1"
    statement = make_statement(digest_subject(model), uri, {"job": "eval-17", "outputs": 3})
    bundle = sign_attestation(statement, KeySigner.from_file(keys[0]))
    verifier = KeyVerifier.from_file(keys[1])
    digest = digest_subject(model).digest
    record = verify_attestation(
        bundle, verifier=verifier, expected_subject_digest=digest, expected_predicate_type=uri
    )
    assert record.kind is None and record.predicate == {"job": "eval-17", "outputs": 3}
    failure = _refusal(
        bundle,
        verifier=verifier,
        expected_subject_digest=digest,
        expected_predicate_type="eval-results",
    )
    assert failure is AttestationFailure.WRONG_PREDICATE_TYPE
    with pytest.raises(ValueError, match="unknown attestation kind"):
        make_statement(digest_subject(model), "benchmark", {})


def test_a_required_log_entry(model: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    from weightvault.attest import LogCheck
    from weightvault.tlog import Ed25519NoteSigner, TransparencyLog

    origin = "example.com/attest-log"
    log_key = Ed25519NoteSigner.generate(origin)
    (tmp_path / "log.key").write_text(log_key.to_text())
    TransparencyLog.create(tmp_path / "log.db", origin).close()
    bundle = _signed_eval(model, keys[0])
    logged = log_attestation(bundle, str(tmp_path / "log.db"), str(tmp_path / "log.key"))
    verifier = KeyVerifier.from_file(keys[1])
    digest = digest_subject(model).digest
    check = LogCheck(log_key.verifier_key)
    assert verify_attestation(logged, verifier=verifier, expected_subject_digest=digest, log=check)
    failure = _refusal(bundle, verifier=verifier, expected_subject_digest=digest, log=check)
    assert failure is AttestationFailure.NOT_LOGGED
    other = LogCheck(Ed25519NoteSigner.generate(origin).verifier_key)
    failure = _refusal(logged, verifier=verifier, expected_subject_digest=digest, log=other)
    assert failure is AttestationFailure.NOT_LOGGED
