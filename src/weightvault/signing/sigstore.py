"""The Sigstore (keyless) signing method, through sigstore-python (the ``[sigstore]`` extra).

Signing: an OIDC identity token (given, from ``SIGSTORE_ID_TOKEN``, or detected from the CI
environment) is exchanged at Fulcio for a short-lived certificate over an ephemeral key; the DSSE
envelope is signed with that key and logged in Rekor; the bundle holds the certificate, the
Rekor entry (inclusion proof and promise) and the envelope. This is the bundle ``model-signing``'s
Sigstore method writes, produced by the same library.

Verification checks, with sigstore-python's :class:`sigstore.verify.Verifier`: the certificate
chains to a Fulcio root of the trusted root and carries an SCT from a trusted CT log; the
certificate's identity (SAN) and OIDC issuer match the expected ones exactly; the signature covers
the envelope; the Rekor entry matches the envelope and its inclusion proof/checkpoint and promise
verify under the trusted log keys, at a time inside the certificate's validity. All of it works
offline given a trust configuration (``--trust-config``) or the trusted root sigstore-python
ships; only signing needs the network (Fulcio, Rekor, and an OIDC issuer).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from weightvault._fs import read_small_file
from weightvault.errors import (
    FormatError,
    KeyMaterialError,
    UsageError,
    VerificationError,
)
from weightvault.oms.bundle import parse_bundle
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE
from weightvault.signing._base import Signer, SignerIdentity, VerifiedPayload, Verifier

__all__ = ["IDENTITY_TOKEN_ENV", "SigstoreSigner", "SigstoreVerifier"]

IDENTITY_TOKEN_ENV = "SIGSTORE_ID_TOKEN"  # noqa: S105 - a variable name, not a secret
"""The environment variable sigstore-python's own CLI reads an identity token from."""

_MAX_TRUST_CONFIG_BYTES = 8 * 1024 * 1024
_MAX_MESSAGE = 300


def _import_sigstore() -> Any:
    try:
        import sigstore.dsse
        import sigstore.errors
        import sigstore.models
        import sigstore.oidc
        import sigstore.sign
        import sigstore.verify
    except ImportError:
        raise KeyMaterialError(
            "Sigstore support is not installed", hint="pip install 'weightvault[sigstore]'"
        ) from None
    return sigstore


def _short(exc: BaseException) -> str:
    """One line of an upstream message, cut to a readable length (never holds a token)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _load_trust_config(path: Path) -> Any:
    sigstore = _import_sigstore()
    data = read_small_file(path, "trust config", _MAX_TRUST_CONFIG_BYTES)
    try:
        return sigstore.models.ClientTrustConfig.from_json(data.decode("utf-8"))
    except Exception as exc:  # pydantic, JSON and sigstore errors alike: all mean "malformed"
        raise KeyMaterialError(
            f"trust config {str(path)!r} is not a Sigstore client trust config: {_short(exc)}",
            hint="expected application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
        ) from None


class SigstoreSigner(Signer):
    """Keyless signing: OIDC identity → Fulcio certificate → DSSE signature → Rekor entry.

    The identity token comes from ``identity_token``, else ``SIGSTORE_ID_TOKEN``, else ambient
    CI credentials (GitHub Actions, GitLab, Buildkite, CircleCI, Google Cloud), else, when
    ``interactive``, a browser OAuth flow. The token is checked (audience, expiry, identity claim)
    when the signer is built, before any model is hashed.
    """

    def __init__(
        self,
        identity_token: str | None = None,
        trust_config: Path | None = None,
        *,
        use_ambient_credentials: bool = True,
        interactive: bool = False,
        client_id: str = "sigstore",
        oidc_issuer: str | None = None,
    ) -> None:
        sigstore = _import_sigstore()
        # The token first: a missing or expired token is the likeliest mistake and needs no
        # network to report.
        token = self._identity_token(
            identity_token, use_ambient_credentials=use_ambient_credentials, client_id=client_id
        )
        if token is None and not interactive:
            raise KeyMaterialError(
                "Sigstore signing needs an OIDC identity token and none was found",
                hint=(
                    f"set {IDENTITY_TOKEN_ENV} (or pass identity_token), or run in a CI job with "
                    "an OIDC identity (e.g. GitHub Actions with id-token: write)"
                ),
            )
        if trust_config is not None:
            config = _load_trust_config(trust_config)
        else:
            try:
                config = sigstore.models.ClientTrustConfig.production()
            except Exception as exc:
                raise KeyMaterialError(
                    f"cannot fetch Sigstore's production trust root: {_short(exc)}",
                    hint="give a client trust config when offline",
                    remedy="trust-config",
                ) from None
        try:
            self._context = sigstore.sign.SigningContext.from_trust_config(config)
        except Exception as exc:
            raise KeyMaterialError(
                f"the trust config has no usable signing services: {_short(exc)}",
                hint="the client trust config must list Fulcio (caUrls) and Rekor URLs",
            ) from None
        if token is None:
            try:
                issuer_url = oidc_issuer or config.signing_config.get_oidc_url()
                token = sigstore.oidc.Issuer(issuer_url).identity_token(client_id=client_id)
            except Exception as exc:
                raise KeyMaterialError(f"interactive OIDC sign-in failed: {_short(exc)}") from None
        self._token = token

    @staticmethod
    def _identity_token(
        explicit: str | None, *, use_ambient_credentials: bool, client_id: str
    ) -> Any:
        """The checked token from the argument, the environment or the CI, or None."""
        sigstore = _import_sigstore()
        oidc = sigstore.oidc
        raw = explicit or os.environ.get(IDENTITY_TOKEN_ENV) or None
        source = "the identity token" if explicit else IDENTITY_TOKEN_ENV
        if raw is None and use_ambient_credentials:
            try:
                raw = oidc.detect_credential(client_id)
            except Exception as exc:
                raise KeyMaterialError(
                    f"ambient OIDC credential detection failed: {_short(exc)}"
                ) from None
            source = "the ambient CI credential"
        if raw is None:
            return None
        try:
            return oidc.IdentityToken(raw.strip(), client_id)
        except Exception as exc:
            raise KeyMaterialError(
                f"{source} is not usable: {_short(exc)}",
                hint=f"get a fresh token whose audience is {client_id!r}",
            ) from None

    @property
    def identity(self) -> SignerIdentity:
        return SignerIdentity(
            method="sigstore",
            subject=str(self._token.identity),
            issuer=str(self._token.federated_issuer),
        )

    def sign(self, payload_type: str, payload: bytes) -> bytes:
        sigstore = _import_sigstore()
        if payload_type != INTOTO_PAYLOAD_TYPE:
            raise ValueError(f"Sigstore DSSE signing takes {INTOTO_PAYLOAD_TYPE} payloads only")
        try:
            statement = sigstore.dsse.Statement(payload)
        except Exception as exc:
            raise FormatError(f"payload is not an in-toto statement: {_short(exc)}") from None
        fulcio_url = getattr(self._context._fulcio, "url", "Fulcio")
        try:
            with self._context.signer(self._token, cache=True) as signer:
                bundle = signer.sign_dsse(statement)
        except sigstore.oidc.ExpiredIdentity:
            raise KeyMaterialError(
                "the OIDC identity token expired before signing", hint="get a fresh token"
            ) from None
        except Exception as exc:
            raise KeyMaterialError(
                f"Sigstore signing failed (Fulcio {fulcio_url}, Rekor): {_short(exc)}",
                hint="check network access to the Sigstore services in the trust config",
            ) from None
        return str(bundle.to_json()).encode("utf-8")


class SigstoreVerifier(Verifier):
    """Verifies a Sigstore bundle offline against a trusted root and an identity policy.

    ``identity`` must equal the certificate's SAN (an e-mail address or a workflow URI) and
    ``issuer`` the OIDC issuer recorded in it; both are required. Accepting any signer the trusted
    root vouches for (anyone with an OIDC account can get such a certificate) takes the explicit
    ``unsafe_no_identity=True`` (sigstore-python's ``UnsafeNoOp`` policy); the signer is then
    read from the certificate and reported, not checked.
    With ``trust_config`` the trusted root comes from that file; without it, ``offline=True`` uses
    the production root sigstore-python ships, and ``offline=False`` refreshes it over TUF.
    """

    def __init__(
        self,
        identity: str | None,
        issuer: str | None,
        trust_config: Path | None = None,
        offline: bool = True,
        *,
        unsafe_no_identity: bool = False,
    ) -> None:
        if unsafe_no_identity and (identity or issuer):
            raise UsageError("an identity policy and unsafe_no_identity exclude each other")
        if not unsafe_no_identity and (not identity or not issuer):
            raise UsageError(
                "Sigstore verification needs both the expected identity and the OIDC issuer",
                hint="give the signer's identity (e-mail or URI) and OIDC issuer",
                remedy="sigstore-identity",
            )
        sigstore = _import_sigstore()
        self._identity = identity
        self._issuer = issuer
        if trust_config is not None:
            config = _load_trust_config(trust_config)
            self._verifier = sigstore.verify.Verifier(trusted_root=config.trusted_root)
        else:
            # sigstore-python logs a warning on every offline load; it is expected here.
            tuf_logger = logging.getLogger("sigstore._internal.tuf")
            previous = tuf_logger.level
            tuf_logger.setLevel(logging.ERROR)
            try:
                self._verifier = sigstore.verify.Verifier.production(offline=offline)
            except Exception as exc:
                raise KeyMaterialError(
                    f"cannot load Sigstore's production trusted root: {_short(exc)}",
                    hint="give a client trust config",
                    remedy="trust-config",
                ) from None
            finally:
                tuf_logger.setLevel(previous)
        self._policy: Any = (
            sigstore.verify.policy.UnsafeNoOp()
            if unsafe_no_identity
            else sigstore.verify.policy.Identity(identity=identity, issuer=issuer)
        )

    def verify(self, bundle_json: bytes) -> VerifiedPayload:
        sigstore = _import_sigstore()
        # 1. Strict structural parse first (duplicate keys, unknown fields, bad base64), so
        #    malformed input fails the same way for every method and names the field.
        parsed = parse_bundle(bundle_json)
        material = parsed.verification_material
        if not material.certificates:
            raise FormatError(
                "verificationMaterial: this bundle carries a public key (the key method), not "
                "a Sigstore certificate",
                hint="verify it with the key method and the signer's public key",
                remedy="verify-with-key",
            )
        if not material.tlog_entries:
            raise FormatError(
                "verificationMaterial.tlogEntries: empty; a Sigstore bundle must carry its "
                "transparency-log entry"
            )
        if len(parsed.signatures) != 1:
            raise FormatError(
                f"dsseEnvelope.signatures: expected exactly one signature, found "
                f"{len(parsed.signatures)}"
            )
        # 2. sigstore-python's own model of the bundle (checks its invariants).
        try:
            bundle = sigstore.models.Bundle.from_json(bundle_json)
        except Exception as exc:
            raise FormatError(f"not a valid Sigstore bundle: {_short(exc)}") from None
        # 3. Certificate chain + SCT, identity policy, signature, Rekor entry (inclusion proof,
        #    checkpoint, promise), all against the trusted root.
        try:
            payload_type, payload = self._verifier.verify_dsse(bundle, self._policy)
        except sigstore.errors.VerificationError as exc:
            raise VerificationError(f"Sigstore signature rejected: {_short(exc)}") from None
        except Exception as exc:
            raise VerificationError(f"Sigstore signature rejected: {_short(exc)}") from None
        # 4. The verified bytes must be the envelope's bytes (they are; checked, not assumed).
        if payload != parsed.payload or payload_type != parsed.payload_type:
            raise VerificationError("Sigstore verification returned a different payload")
        subject, issuer = self._identity, self._issuer
        if subject is None:  # no policy: report who signed, as the certificate says
            from weightvault.signing.certificate import certificate_identities

            names = certificate_identities(bundle.signing_certificate)
            subject = f"{', '.join(names) or 'unknown'} (identity not checked)"
        return VerifiedPayload(
            payload_type=str(payload_type),
            payload=bytes(payload),
            signer=SignerIdentity(method="sigstore", subject=subject, issuer=issuer),
        )
