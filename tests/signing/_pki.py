"""Test PKI and keys made with ``cryptography``: root -> intermediate -> code-signing leaf.

Also the bad cases: an expired leaf, a leaf without the code-signing EKU, and a second root that
nobody trusts. All files are written as PEM into a folder so the CLI and the peer can read them.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)



def key_usage(*, ca: bool) -> x509.KeyUsage:
    """KeyUsage of a CA (certificate and CRL signing) or of a signing leaf (digital signature)."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )

def write_private(
    path: Path, key: ec.EllipticCurvePrivateKey, password: bytes | None = None
) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return path


def write_public(path: Path, key: ec.EllipticCurvePublicKey) -> Path:
    path.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def write_certs(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(
    cn: str,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    issuer_cert: x509.Certificate | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    signer_key = issuer_key or key
    issuer_name = issuer_cert.subject if issuer_cert else _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=3650))
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            key_usage(ca=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
    return key, builder.sign(signer_key, hashes.SHA256())


def make_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    email: str = "signer@example.com",
    eku: list[x509.ObjectIdentifier] | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    curve: ec.EllipticCurve | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("model signer"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - datetime.timedelta(days=1))
        .not_valid_after(not_after or NOW + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage(ca=False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(eku if eku is not None else [ExtendedKeyUsageOID.CODE_SIGNING]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    return key, builder.sign(ca_key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    """Paths of a test PKI's PEM files."""

    root: Path
    chain: Path
    """The intermediate CA certificate."""
    leaf: Path
    leaf_key: Path
    expired_leaf: Path
    expired_key: Path
    wrong_eku_leaf: Path
    wrong_eku_key: Path
    other_root: Path
    other_chain: Path
    other_leaf: Path
    other_key: Path
    email: str


def build_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    root_key, root_cert = make_ca("test root")
    int_key, int_cert = make_ca("test intermediate", root_key, root_cert)
    leaf_key, leaf_cert = make_leaf(int_key, int_cert)
    exp_key, exp_cert = make_leaf(
        int_key,
        int_cert,
        not_before=NOW - datetime.timedelta(days=400),
        not_after=NOW - datetime.timedelta(days=35),
    )
    eku_key, eku_cert = make_leaf(int_key, int_cert, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    o_root_key, o_root_cert = make_ca("untrusted root")
    o_int_key, o_int_cert = make_ca("untrusted intermediate", o_root_key, o_root_cert)
    o_leaf_key, o_leaf_cert = make_leaf(o_int_key, o_int_cert)
    return Pki(
        root=write_certs(folder / "root.pem", root_cert),
        chain=write_certs(folder / "chain.pem", int_cert),
        leaf=write_certs(folder / "leaf.pem", leaf_cert),
        leaf_key=write_private(folder / "leaf-key.pem", leaf_key),
        expired_leaf=write_certs(folder / "expired.pem", exp_cert),
        expired_key=write_private(folder / "expired-key.pem", exp_key),
        wrong_eku_leaf=write_certs(folder / "wrong-eku.pem", eku_cert),
        wrong_eku_key=write_private(folder / "wrong-eku-key.pem", eku_key),
        other_root=write_certs(folder / "other-root.pem", o_root_cert),
        other_chain=write_certs(folder / "other-chain.pem", o_int_cert),
        other_leaf=write_certs(folder / "other-leaf.pem", o_leaf_cert),
        other_key=write_private(folder / "other-key.pem", o_leaf_key),
        email="signer@example.com",
    )
