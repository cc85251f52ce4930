"""The certificate method: an EC key with an X.509 signing certificate and its chain.

Signing puts the leaf and the chain (DER, leaf first) into the bundle's
``x509CertificateChain``, as model-signing does. Verification does real path validation with
``cryptography.x509.verification`` against the trust roots the verifier gives:

1. build a chain from the leaf through the bundle's intermediates to a trust root;
2. every certificate valid at the validation time, which is **now** (injectable); the peer checks
   at the leaf's notBefore instead, which lets an expired certificate sign forever: weightvault
   does not;
3. the leaf must carry the code-signing extended key usage (and ``digitalSignature`` if it has a
   key-usage extension); CA certificates follow the Web PKI profile. The leaf may lack a SAN and
   may assert ``cA`` (model-signing's own test PKI does both);
4. the DSSE signature under the leaf's key;
5. optionally, an expected identity: a SAN value (email, URI, DNS name) or the subject CN.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from weightvault.errors import KeyMaterialError, UsageError, VerificationError
from weightvault.oms.bundle import certificate_bundle_json
from weightvault.oms.dsse import pae
from weightvault.signing._base import Signer, SignerIdentity, VerifiedPayload, Verifier
from weightvault.signing._pem import (
    ecdsa_hash_for,
    load_certificates,
    load_ec_private_key,
)
from weightvault.signing.key import check_envelope_signature, parse_bundle_of

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["CertificateSigner", "CertificateVerifier", "certificate_identities"]


def certificate_identities(certificate: x509.Certificate) -> list[str]:
    """Identities a certificate vouches for: SAN emails, URIs, DNS names, then subject CNs."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    names: list[str] = []
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for kind in (x509.RFC822Name, x509.UniformResourceIdentifier, x509.DNSName):
            names.extend(str(v) for v in san.get_values_for_type(kind))
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value
        names.append(value if isinstance(value, str) else value.decode("utf-8", "replace"))
    return names


def _describe(certificate: x509.Certificate) -> str:
    identities = certificate_identities(certificate)
    return identities[0] if identities else certificate.subject.rfc4514_string()


def _has_code_signing(certificate: x509.Certificate) -> bool:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CODE_SIGNING in eku


class CertificateSigner(Signer):
    """Signs with an EC private key whose public half is in ``certificate``."""

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
        *,
        now: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        ecdsa_hash_for(private_key.curve)
        if certificate.public_key() != private_key.public_key():
            raise KeyMaterialError(
                "the signing certificate does not belong to the private key",
                hint="give the private key and the certificate issued for it",
                remedy="key-and-certificate",
            )
        if not _has_code_signing(certificate):
            raise KeyMaterialError(
                "the signing certificate lacks the code-signing extended key usage; verifiers"
                " would reject it"
            )
        moment = (now or _utcnow)()
        if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
            raise KeyMaterialError(
                "the signing certificate is not valid now (expired or not yet valid)"
            )
        self._private_key = private_key
        self._certificate = certificate
        self._chain = list(chain)

    @classmethod
    def from_files(
        cls,
        key_path: str | os.PathLike[str],
        certificate_path: str | os.PathLike[str],
        chain_paths: Iterable[str | os.PathLike[str]] = (),
        password: str | bytes | None = None,
    ) -> CertificateSigner:
        private_key = load_ec_private_key(key_path, password)
        leaf = load_certificates(certificate_path, "certificate")
        if len(leaf) != 1:
            raise KeyMaterialError(
                f"{certificate_path}: expected exactly one certificate",
                hint="put the other certificates in the chain",
                remedy="chain",
            )
        chain: list[x509.Certificate] = []
        for path in chain_paths:
            chain.extend(load_certificates(path, "certificate chain"))
        return cls(private_key, leaf[0], chain)

    @property
    def identity(self) -> SignerIdentity:
        return SignerIdentity(
            "certificate",
            _describe(self._certificate),
            issuer=self._certificate.issuer.rfc4514_string(),
        )

    def sign(self, payload_type: str, payload: bytes) -> bytes:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        algorithm = ec.ECDSA(ecdsa_hash_for(self._private_key.curve))
        signature = self._private_key.sign(pae(payload_type, payload), algorithm)
        chain = [self._certificate, *self._chain]
        der = [c.public_bytes(serialization.Encoding.DER) for c in chain]
        return certificate_bundle_json(payload_type, payload, signature, der)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CertificateVerifier(Verifier):
    """Verifies certificate bundles against trust roots, with real X.509 path validation.

    ``identity`` is the expected signer (a SAN e-mail, URI or DNS name, or the subject CN). A
    trust root usually vouches for many code-signing certificates, so accepting any of them takes
    the explicit ``unsafe_no_identity=True`` (as sigstore-python's ``UnsafeNoOp``).
    """

    def __init__(
        self,
        trust_roots: Sequence[x509.Certificate],
        *,
        identity: str | None = None,
        unsafe_no_identity: bool = False,
        now: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        if not trust_roots:
            raise UsageError("at least one trust root certificate is needed")
        if identity is not None and not identity.strip():
            raise UsageError("the expected identity is empty")
        if identity is not None and unsafe_no_identity:
            raise UsageError("an expected identity and unsafe_no_identity exclude each other")
        if identity is None and not unsafe_no_identity:
            raise UsageError(
                "no identity policy: any code-signing certificate under the trust roots would be"
                " accepted",
                hint="give the expected signer's identity, or accept any signer explicitly",
                remedy="identity-policy",
            )
        self._roots = list(trust_roots)
        self._identity = identity
        self._now = now or _utcnow

    @classmethod
    def from_file(
        cls,
        trust_root_path: str | os.PathLike[str],
        *,
        identity: str | None = None,
        unsafe_no_identity: bool = False,
        now: Callable[[], datetime.datetime] | None = None,
    ) -> CertificateVerifier:
        return cls(
            load_certificates(trust_root_path, "trust root"),
            identity=identity,
            unsafe_no_identity=unsafe_no_identity,
            now=now,
        )

    def _validate_chain(
        self, leaf: x509.Certificate, intermediates: list[x509.Certificate]
    ) -> None:
        from cryptography import x509
        from cryptography.x509.oid import ExtendedKeyUsageOID
        from cryptography.x509.verification import (
            Criticality,
            ExtensionPolicy,
            PolicyBuilder,
            Store,
        )
        from cryptography.x509.verification import (
            VerificationError as X509VerificationError,
        )

        def require_code_signing(
            _policy: object, _cert: object, eku: x509.ExtendedKeyUsage
        ) -> None:
            if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
                raise ValueError("leaf certificate lacks the code-signing extended key usage")

        def require_digital_signature(
            _policy: object, _cert: object, usage: x509.KeyUsage | None
        ) -> None:
            if usage is not None and not usage.digital_signature:
                raise ValueError("leaf certificate key usage lacks digitalSignature")

        ee_policy = (
            ExtensionPolicy.webpki_defaults_ee()
            .require_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, require_code_signing)
            .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, require_digital_signature)
            .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
            .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        )
        verifier = (
            PolicyBuilder()
            .store(Store(self._roots))
            .time(self._now())
            .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
            .build_client_verifier()
        )
        try:
            verifier.verify(leaf, intermediates)
        except X509VerificationError as exc:
            detail = " ".join(str(exc).split())
            detail = detail.split(" (encountered processing")[0]
            raise VerificationError(
                f"certificate chain does not validate against the trust roots: {detail}"
            ) from exc

    def verify(self, bundle_json: bytes) -> VerifiedPayload:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec

        bundle = parse_bundle_of(bundle_json, "certificate")
        material = bundle.verification_material
        try:
            chain = [x509.load_der_x509_certificate(der) for der in material.certificates]
        except ValueError as exc:
            raise VerificationError(
                "verificationMaterial: a certificate in the bundle is malformed"
            ) from exc
        leaf, intermediates = chain[0], chain[1:]
        # Steps 1-3: path validation, validity now, key usages.
        self._validate_chain(leaf, intermediates)
        public_key = leaf.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise VerificationError("the signing certificate does not hold an EC key")
        # Step 4: the DSSE signature.
        check_envelope_signature(bundle, public_key)
        # Step 5: the expected identity.
        identities = certificate_identities(leaf)
        if self._identity is not None and self._identity not in identities:
            raise VerificationError(
                f"signed by {', '.join(identities) or leaf.subject.rfc4514_string()}, not by the"
                f" expected identity {self._identity}"
            )
        return VerifiedPayload(
            bundle.payload_type,
            bundle.payload,
            SignerIdentity("certificate", _describe(leaf), issuer=leaf.issuer.rfc4514_string()),
        )
