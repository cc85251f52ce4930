"""The library pipeline (sign_model / check_model / digest_model) and the typed options.

What the command line used to orchestrate (scan, hash, log, write) is one library call that
lists the model once; these tests hold it to that, and to giving the same signatures as the
step-by-step API.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import weightvault.signing._model as signing_model
from weightvault.errors import InputError, Reason, UnsafeFileError, VerificationError
from weightvault.hashing import HashAlgorithm, ProgressCallback, ProgressDisplay
from weightvault.pipeline import (
    LogRequirement,
    LogTarget,
    ScanPolicy,
    check_model,
    digest_model,
    sign_model,
)
from weightvault.signing import (
    KeySigner,
    KeyVerifier,
    ManifestOptions,
    check,
    compute_manifest,
    digest,
    plan_model,
)
from weightvault.tlog import Ed25519NoteSigner, TransparencyLog
from weightvault.tree import walk_model


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every model listing signing makes (the roots it walked)."""
    seen: list[Path] = []
    real = signing_model.walk_model

    def counting(root: Path, **kwargs: object) -> object:
        seen.append(Path(root))
        return real(root, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(signing_model, "walk_model", counting)
    return seen


def _display(opened: list[int], advanced: list[int]) -> ProgressDisplay:
    @contextmanager
    def display(total: int) -> Iterator[ProgressCallback]:
        opened.append(total)
        yield advanced.append

    return display


def test_sign_model_lists_the_model_once_scans_hashes_and_writes(
    model: Path, keypair: tuple[Path, Path], walks: list[Path]
) -> None:
    old_signature = model / "model.sig"
    sign_model(model, KeySigner.from_file(keypair[0]))
    old_signature.rename(model / "old.sig")  # a signature under another name: left out
    walks.clear()
    opened: list[int] = []
    advanced: list[int] = []
    result = sign_model(
        model,
        KeySigner.from_file(keypair[0]),
        scan_policy=ScanPolicy(),
        options=ManifestOptions(serialization="shards", shard_size=4096),
        progress_display=_display(opened, advanced),
    )
    assert walks == [model]  # once, though a signature file had to be left out
    assert result.left_out == ("old.sig",)
    assert "old.sig" in (result.manifest.serialization.ignore_paths or ())
    files = walk_model(model, ignore_paths=["old.sig", "model.sig"]).files
    assert opened == [sum(f.size for f in files)] and sum(advanced) == opened[0]
    # the same manifest as the step-by-step API
    manifest = compute_manifest(
        model, signature_path=model / "model.sig", serialization="shards", shard_size=4096
    )
    assert result.manifest == manifest
    assert check(model, None, KeyVerifier.from_file(keypair[1])).ok


def test_a_scan_finding_stops_signing_before_anything_is_written(
    model: Path, keypair: tuple[Path, Path]
) -> None:
    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, ("true",))

    (model / "payload.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UnsafeFileError, match=r"payload\.pkl"):
        sign_model(model, KeySigner.from_file(keypair[0]), scan_policy=ScanPolicy("dangerous"))
    assert not (model / "model.sig").exists()
    # ignored files are neither signed nor scanned
    sign_model(
        model,
        KeySigner.from_file(keypair[0]),
        scan_policy=ScanPolicy(),
        ignore_paths=[model / "payload.pkl"],
    )
    assert (model / "model.sig").exists()


def test_an_existing_signature_is_refused_before_any_work(
    model: Path, keypair: tuple[Path, Path], walks: list[Path]
) -> None:
    (model / "model.sig").write_text("not a signature")
    with pytest.raises(InputError) as caught:
        sign_model(model, KeySigner.from_file(keypair[0]))
    assert caught.value.reason is Reason.EXISTS and walks == []
    sign_model(model, KeySigner.from_file(keypair[0]), force=True)
    assert json.loads((model / "model.sig").read_bytes())["mediaType"].startswith(
        "application/vnd.dev.sigstore.bundle"
    )


def test_logged_signatures_carry_a_proof_the_check_requires(
    model: Path, keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    log_signer = Ed25519NoteSigner.generate("example.com/pipeline-log")
    key_file = tmp_path / "log.key"
    key_file.write_text(log_signer.to_text())
    TransparencyLog.create(tmp_path / "log.db", "example.com/pipeline-log").close()
    sign_model(
        model,
        KeySigner.from_file(keypair[0]),
        log=LogTarget(str(tmp_path / "log.db"), str(key_file)),
    )
    verifier = KeyVerifier.from_file(keypair[1])
    required = LogRequirement(log_signer.verifier_key)
    assert check_model(model, verifier, log=required).ok
    other = LogRequirement(Ed25519NoteSigner.generate("example.com/pipeline-log").verifier_key)
    with pytest.raises(VerificationError):
        check_model(model, verifier, log=other)
    sign_model(model, KeySigner.from_file(keypair[0]), force=True)  # not logged this time
    with pytest.raises(VerificationError):
        check_model(model, verifier, log=required)
    (model / "config.json").write_text("{}")
    result = check_model(model, verifier)
    assert not result.ok and result.changed == ("config.json",)


def test_digest_model_is_digest_with_a_display(model: Path) -> None:
    opened: list[int] = []
    advanced: list[int] = []
    manifest = digest_model(model, hash_type="blake2", progress_display=_display(opened, advanced))
    assert manifest == digest(model, hash_type="blake2")
    assert opened == [sum(advanced)] and opened[0] > 0


def test_options_and_keywords_are_one_vocabulary(model: Path) -> None:
    options = ManifestOptions(hash_type=HashAlgorithm.BLAKE2, serialization="shards")
    assert digest(model, options=options) == digest(
        model, hash_type="blake2", serialization="shards"
    )
    # keywords apply over the options object
    assert digest(model, options=options, hash_type="sha256") == digest(
        model, serialization="shards"
    )
    assert ManifestOptions(hash_type="blake3").hash_type is HashAlgorithm.BLAKE3  # type: ignore[arg-type]
    # BLAKE3 models are recorded as files whatever was asked (as model-signing does)
    blake3_shards = ManifestOptions(hash_type=HashAlgorithm.BLAKE3, serialization="shards")
    assert (blake3_shards.method, blake3_shards.recorded_shard_size) == ("files", None)
    assert ManifestOptions(serialization="shards").recorded_shard_size == 1_000_000_000
    for bad in (
        {"hash_type": "md5"},
        {"serialization": "tensors"},
        {"serialization": "shards", "shard_size": 0},
    ):
        with pytest.raises(ValueError):
            ManifestOptions(**bad)  # type: ignore[arg-type]
    plan = plan_model(model, options=options)
    assert plan.options == options and plan.total_size == walk_model(model).total_size
