"""The signing methods on the command line: one definition of their options and checks.

``sign``, ``verify``, ``attest`` and ``posture`` sign or verify with the same methods (key,
certificate, PKCS#11, Sigstore), so an attestation is made and checked with the same keys as the
model's signature. Their options, the rules on which go together, and how they become a
:class:`~weightvault.signing.Signer` or :class:`~weightvault.signing.Verifier` live here once, so
the commands cannot drift apart (a check added to one is a check on all).

Only Typer is imported at load time; the signing classes are imported when a method is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from weightvault.cli._groups import OptionGroup, option
from weightvault.cli.log import _verifier_key, _witness_policy
from weightvault.errors import UsageError

if TYPE_CHECKING:
    from weightvault.signing import Signer, Verifier
    from weightvault.tlog.checkpoint import WitnessPolicy
    from weightvault.tlog.note import VerifierKey

__all__ = [
    "LogRequirementOptions",
    "SignerOptions",
    "VerifierOptions",
    "build_signer",
    "build_verifier",
    "check_log_pair",
    "key_password",
]

_TRUST_CONFIG = option(
    None, "--trust-config", help="Sigstore client trust config (JSON), for offline use too."
)


@dataclass(frozen=True)
class SignerOptions(OptionGroup):
    """The signing method's options (``sign``, ``attest add``): exactly one of ``--key``
    (with ``--certificate``/``--chain`` for the certificate method), ``--pkcs11-uri`` or
    ``--sigstore``."""

    key: Path | None = field(metadata=option(None, "--key", help="EC private key (PEM)."))
    password: str | None = field(
        metadata=option(
            None, "--password", envvar="WEIGHTVAULT_KEY_PASSWORD", help="Private key password."
        )
    )
    password_file: Path | None = field(
        metadata=option(
            None, "--password-file", help="Read the private key password from this file."
        )
    )
    certificate: Path | None = field(
        metadata=option(None, "--certificate", help="Signing certificate (PEM) matching --key.")
    )
    chain: list[Path] = field(
        metadata=option([], "--chain", help="Intermediate certificates (PEM), repeatable.")
    )
    pkcs11_uri: str | None = field(
        metadata=option(
            None, "--pkcs11-uri", help="Sign with a key on a PKCS#11 token (RFC 7512 URI)."
        )
    )
    sigstore: bool = field(
        metadata=option(False, "--sigstore", help="Keyless signing via Sigstore.")
    )
    trust_config: Path | None = field(metadata=_TRUST_CONFIG)

    def build(self) -> Signer:
        """The signer these options name (reads the key, asks the token), or a usage error."""
        return build_signer(
            self.key,
            key_password(self.password, self.password_file),
            self.certificate,
            self.chain,
            self.pkcs11_uri,
            self.sigstore,
            self.trust_config,
        )


@dataclass(frozen=True)
class VerifierOptions(OptionGroup):
    """The verifying method's options (``verify``, ``attest verify``, ``attest rows``):
    exactly one of ``--key``, ``--trust-root``, ``--pkcs11-uri`` or ``--sigstore``, and the
    identity policy that goes with the last two."""

    key: Path | None = field(
        metadata=option(None, "--key", help="EC public key (PEM) of the signer.")
    )
    password: str | None = field(
        metadata=option(
            None,
            "--password",
            envvar="WEIGHTVAULT_KEY_PASSWORD",
            help="Password, if --key is an encrypted private key.",
        )
    )
    trust_root: Path | None = field(
        metadata=option(
            None, "--trust-root", help="Trusted root certificates (PEM) for the certificate method."
        )
    )
    identity: str | None = field(
        metadata=option(
            None, "--identity", help="Expected signer: certificate SAN/CN, or Sigstore identity."
        )
    )
    issuer: str | None = field(
        metadata=option(None, "--issuer", help="Expected Sigstore OIDC issuer.")
    )
    pkcs11_uri: str | None = field(
        metadata=option(None, "--pkcs11-uri", help="Verify with the public key on a PKCS#11 token.")
    )
    sigstore: bool = field(
        metadata=option(False, "--sigstore", help="Verify a Sigstore signature.")
    )
    trust_config: Path | None = field(metadata=_TRUST_CONFIG)
    unsafe_no_identity: bool = field(
        metadata=option(
            False,
            "--unsafe-no-identity",
            help=(
                "With --trust-root or --sigstore: accept any signer the roots vouch for "
                "(no --identity policy). Unsafe: anyone those roots certify passes."
            ),
        )
    )

    def build(self, password: str | None = None) -> Verifier:
        """The verifier these options name, or a usage error (``password``: one read from
        elsewhere, such as ``--password-file``, in place of ``--password``)."""
        return build_verifier(
            self.key,
            self.password if password is None else password,
            self.trust_root,
            self.identity,
            self.issuer,
            self.pkcs11_uri,
            self.sigstore,
            self.trust_config,
            self.unsafe_no_identity,
        )


@dataclass(frozen=True)
class LogRequirementOptions(OptionGroup):
    """``--require-log`` and what it needs: the log's key and, optionally, witnesses."""

    require_log: bool = field(
        metadata=option(
            False,
            "--require-log",
            help="Also require an inclusion proof in the log of --log-key (offline).",
        )
    )
    log_key: str | None = field(
        metadata=option(
            None, "--log-key", help="With --require-log: the log's public key (text or file)."
        )
    )
    witness_key: list[str] = field(
        metadata=option(
            [], "--witness-key", help="With --require-log: a witness public key, repeatable."
        )
    )
    min_witnesses: int = field(
        metadata=option(
            0, "--min-witnesses", min=0, help="Witness cosignatures needed (default: all given)."
        )
    )

    def requirement(self) -> tuple[VerifierKey, WitnessPolicy | None] | None:
        """The log's key and the witness policy, or None without ``--require-log``. The log
        options without ``--require-log`` are a usage error."""
        if self.require_log != (self.log_key is not None):
            raise UsageError("--require-log and --log-key go together")
        if (self.witness_key or self.min_witnesses) and not self.require_log:
            raise UsageError("--witness-key and --min-witnesses need --require-log")
        if self.log_key is None:
            return None
        key = _verifier_key(self.log_key, "--log-key")
        return key, _witness_policy(self.witness_key, self.min_witnesses)


def _method_unavailable(method: str, exc: ImportError) -> UsageError:
    return UsageError(
        f"the {method} method is unavailable in this installation ({exc})",
        hint=f"install weightvault[{method}]",
    )


def _pick_one(given: dict[str, bool], command: str) -> str:
    """The one method option given (``{"--key": key is not None, ...}``), or a usage error."""
    chosen = [flag for flag, present in given.items() if present]
    if len(chosen) != 1:
        what = ", ".join(chosen) if chosen else "none"
        raise UsageError(
            f"{command} needs exactly one signing method (given: {what})",
            hint="use one of --key, --certificate with --key, --pkcs11-uri, --sigstore"
            if command == "sign"
            else "use one of --key, --trust-root, --pkcs11-uri, --sigstore",
        )
    return chosen[0]


def build_signer(
    key: Path | None,
    password: str | None,
    certificate: Path | None,
    chain: list[Path],
    pkcs11_uri: str | None,
    sigstore: bool,
    trust_config: Path | None,
) -> Signer:
    """The signer the signing options name (exactly one method), or a usage error."""
    method = _pick_one(
        {"--key": key is not None, "--pkcs11-uri": pkcs11_uri is not None, "--sigstore": sigstore},
        "sign",
    )
    if (certificate is None) and chain:
        raise UsageError("--chain needs --certificate (the signing certificate)")
    if method != "--sigstore" and trust_config is not None:
        raise UsageError("--trust-config applies to --sigstore only")
    if method == "--key":
        assert key is not None
        if certificate is not None:
            from weightvault.signing.certificate import CertificateSigner

            return CertificateSigner.from_files(key, certificate, chain, password)
        from weightvault.signing.key import KeySigner

        return KeySigner.from_file(key, password)
    if method == "--pkcs11-uri":
        assert pkcs11_uri is not None
        if len(chain) > 1:
            raise UsageError("--pkcs11-uri takes at most one --chain file")
        try:
            from weightvault.signing.pkcs11 import Pkcs11Signer
        except ImportError as exc:
            raise _method_unavailable("pkcs11", exc) from exc
        return Pkcs11Signer.from_uri(
            pkcs11_uri, certificate=certificate, chain=chain[0] if chain else None
        )
    if certificate is not None:
        raise UsageError("--certificate does not apply to --sigstore (Fulcio issues one)")
    try:
        from weightvault.signing.sigstore import SigstoreSigner
    except ImportError as exc:
        raise _method_unavailable("sigstore", exc) from exc
    return SigstoreSigner(trust_config=trust_config)


def build_verifier(
    key: Path | None,
    password: str | None,
    trust_root: Path | None,
    identity: str | None,
    issuer: str | None,
    pkcs11_uri: str | None,
    sigstore: bool,
    trust_config: Path | None,
    unsafe_no_identity: bool = False,
) -> Verifier:
    """The verifier the verifying options name (exactly one method), or a usage error."""
    method = _pick_one(
        {
            "--key": key is not None,
            "--trust-root": trust_root is not None,
            "--pkcs11-uri": pkcs11_uri is not None,
            "--sigstore": sigstore,
        },
        "verify",
    )
    if identity is not None and method not in ("--trust-root", "--sigstore"):
        raise UsageError("--identity applies to --trust-root and --sigstore only")
    if unsafe_no_identity and method not in ("--trust-root", "--sigstore"):
        raise UsageError("--unsafe-no-identity applies to --trust-root and --sigstore only")
    if unsafe_no_identity and (identity is not None or issuer is not None):
        raise UsageError(
            "--unsafe-no-identity drops the identity policy; it cannot go with --identity or "
            "--issuer"
        )
    if issuer is not None and method != "--sigstore":
        raise UsageError("--issuer applies to --sigstore only")
    if trust_config is not None and method != "--sigstore":
        raise UsageError("--trust-config applies to --sigstore only")
    if method == "--key":
        assert key is not None
        from weightvault.signing.key import KeyVerifier

        return KeyVerifier.from_file(key, password)
    if method == "--trust-root":
        assert trust_root is not None
        from weightvault.signing.certificate import CertificateVerifier

        return CertificateVerifier.from_file(
            trust_root, identity=identity, unsafe_no_identity=unsafe_no_identity
        )
    if method == "--pkcs11-uri":
        assert pkcs11_uri is not None
        try:
            from weightvault.signing.pkcs11 import Pkcs11Verifier
        except ImportError as exc:
            raise _method_unavailable("pkcs11", exc) from exc
        return Pkcs11Verifier.from_uri(pkcs11_uri)
    if not unsafe_no_identity and (identity is None or issuer is None):
        raise UsageError(
            "--sigstore verification needs the expected --identity and --issuer",
            hint="for example --identity you@example.com --issuer https://accounts.google.com; "
            "--unsafe-no-identity accepts any signer the trusted root vouches for",
        )
    try:
        from weightvault.signing.sigstore import SigstoreVerifier
    except ImportError as exc:
        raise _method_unavailable("sigstore", exc) from exc
    return SigstoreVerifier(identity, issuer, trust_config, unsafe_no_identity=unsafe_no_identity)


def key_password(password: str | None, password_file: Path | None) -> str | None:
    """The key password: given, or the first line of ``--password-file`` (keeps it out of
    the process list and shell history)."""
    if password_file is None:
        return password
    if password is not None:
        raise UsageError("--password and --password-file are exclusive; pick one")
    from weightvault.signing.keygen import read_passphrase_file

    return read_passphrase_file(password_file).decode("utf-8")


def check_log_pair(log: str | None, log_key: str | None) -> tuple[str, str] | None:
    """``--log`` and ``--log-key`` as a pair (the log signs a checkpoint with that key), or
    None when neither is given; one without the other is a usage error."""
    if (log is None) != (log_key is None):
        raise UsageError("--log and --log-key go together: the log signs a checkpoint")
    if log is None or log_key is None:
        return None
    return log, log_key
