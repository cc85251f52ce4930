"""Benchmark: PKCS#11 (SoftHSM2) operations against the same operations in-process.

Run: ``.venv/bin/python benchmarks/pkcs11_ops.py`` (needs softhsm2). Creates a throw-away token in
a temp folder, then times, in one run: opening a logged-in session; ECDSA P-256/P-384 and Ed25519
signatures on the token vs ``cryptography`` with a key in memory; AES key wrap/unwrap of a 32-byte
DEK on the token vs ``cryptography.hazmat.primitives.keywrap``; a whole PKCS#11 OMS signature
(one session, sign, self-check, bundle) vs the in-memory key doing the same; and offline Sigstore
verification of the peer's real bundle. Prints per-operation latency and the ratio token/in-memory.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes, keywrap  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: E402
from tests.softhsm import make_token  # noqa: E402

from weightvault.keys.pkcs11 import Pkcs11Session, load_public_key  # noqa: E402
from weightvault.oms.bundle import key_bundle_json  # noqa: E402
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE, pae  # noqa: E402
from weightvault.signing.pkcs11 import Pkcs11Signer  # noqa: E402


def per_call(function: Callable[[], object], *, seconds: float = 0.6) -> float:
    """Median seconds per call over a few batches lasting about ``seconds`` in total."""
    function()
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < 0.05:
        function()
        calls += 1
    batch = max(1, int(calls * seconds / 5 / 0.05))
    samples = []
    for _ in range(5):
        begin = time.perf_counter()
        for _ in range(batch):
            function()
        samples.append((time.perf_counter() - begin) / batch)
    return statistics.median(samples)


def row(name: str, token_s: float, memory_s: float | None) -> None:
    ratio = f"{token_s / memory_s:8.1f}x" if memory_s else "        -"
    memory = f"{memory_s * 1e6:10.1f}" if memory_s else "         -"
    print(f"{name:44} {token_s * 1e6:10.1f} {memory} {ratio}")


def main() -> None:
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    statement = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "model", "digest": {"sha256": "ab" * 32}}],
            "predicateType": "https://model_signing/signature/v1.0",
            "predicate": {
                "resources": [
                    {
                        "name": f"model-{i:05d}.safetensors",
                        "digest": "cd" * 32,
                        "algorithm": "sha256",
                    }
                    for i in range(40)
                ],
                "serialization": {"method": "files", "hash_type": "sha256"},
            },
        }
    ).encode()
    message = pae(INTOTO_PAYLOAD_TYPE, statement)
    with tempfile.TemporaryDirectory() as folder:
        token = make_token(Path(folder))
        p256 = token.generate_ec_key("p256", curve="P-256")
        p384 = token.generate_ec_key("p384", curve="P-384")
        ed = token.generate_ed25519_key("ed")
        kek = token.generate_aes_kek("kek")
        memory_p256 = ec.generate_private_key(ec.SECP256R1())
        memory_p384 = ec.generate_private_key(ec.SECP384R1())
        memory_ed = ed25519.Ed25519PrivateKey.generate()
        memory_kek = os.urandom(32)
        dek = os.urandom(32)

        print(
            f"{'operation (microseconds per call)':44} {'token':>10} {'in-memory':>10} {'ratio':>9}"
        )

        def open_session() -> None:
            with Pkcs11Session(p256):
                pass

        row("open + log in + close a session", per_call(open_session), None)
        with (
            Pkcs11Session(p256) as s256,
            Pkcs11Session(p384) as s384,
            Pkcs11Session(ed) as sed,
            Pkcs11Session(kek) as skek,
        ):
            row(
                "ECDSA P-256 sign (SHA-256 of a 3 KB PAE)",
                per_call(lambda: s256.sign_ecdsa(message)),
                per_call(lambda: memory_p256.sign(message, ec.ECDSA(hashes.SHA256()))),
            )
            row(
                "ECDSA P-384 sign (SHA-384 of a 3 KB PAE)",
                per_call(lambda: s384.sign_ecdsa(message)),
                per_call(lambda: memory_p384.sign(message, ec.ECDSA(hashes.SHA384()))),
            )
            row(
                "Ed25519 sign (100-byte checkpoint)",
                per_call(lambda: sed.sign_ed25519(message[:100])),
                per_call(lambda: memory_ed.sign(message[:100])),
            )
            row(
                "AES-256 key wrap, 32-byte DEK (RFC 5649)",
                per_call(lambda: skek.wrap_key(dek)),
                per_call(lambda: keywrap.aes_key_wrap_with_padding(memory_kek, dek)),
            )
            wrapped = skek.wrap_key(dek)
            wrapped_memory = keywrap.aes_key_wrap_with_padding(memory_kek, dek)
            row(
                "AES-256 key unwrap, 32-byte DEK (RFC 5649)",
                per_call(lambda: skek.unwrap_key(wrapped)),
                per_call(lambda: keywrap.aes_key_unwrap_with_padding(memory_kek, wrapped_memory)),
            )
        signer = Pkcs11Signer.from_uri(p256)
        public = load_public_key(p256)
        assert isinstance(public, ec.EllipticCurvePublicKey)

        def memory_oms() -> bytes:
            signature = memory_p256.sign(message, ec.ECDSA(hashes.SHA256()))
            memory_p256.public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))
            return key_bundle_json(INTOTO_PAYLOAD_TYPE, statement, signature, public)

        row(
            "whole OMS signature (session, sign, check)",
            per_call(lambda: signer.sign(INTOTO_PAYLOAD_TYPE, statement)),
            per_call(memory_oms),
        )
    fixtures = ROOT.parent / "shared" / "fixtures" / "model-signing-history"
    if (fixtures / "offline_prod_trust_config.json").is_file():
        from weightvault.signing.sigstore import SigstoreVerifier

        verifier = SigstoreVerifier(
            "stefanb@us.ibm.com",
            "https://sigstore.verify.ibm.com/oauth2",
            trust_config=fixtures / "offline_prod_trust_config.json",
        )
        bundle = (fixtures / "v1.1.0-sigstore" / "model.sig").read_bytes()
        row(
            "Sigstore bundle verify, offline (peer v1.1.0)",
            per_call(lambda: verifier.verify(bundle)),
            None,
        )


if __name__ == "__main__":
    main()
