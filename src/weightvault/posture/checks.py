"""The checks posture runs on a custody deployment, each a pure reading of what is there.

Nothing here writes: the data folder is opened as it is (no key file is created, no schema
migrated, no checkpoint signed), the database and the audit log are only read, and the KEK on a
token is asked for its attributes, never used. Each check returns :class:`CheckResult`: pass,
fail or not applicable, with the evidence a reviewer needs to agree (counts, paths, modes,
attribute values). A check that cannot read what it needs fails and says why: an unknown is
never a pass.

What a check reads (:class:`Deployment`, opened as ``Facts``) and what it returns
(:class:`CheckResult`) are defined in :mod:`weightvault.posture._deployment` and named here too.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import ssl
import stat
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightvault.errors import InputError, WeightvaultError
from weightvault.posture._deployment import CheckResult, Deployment, Facts, Status

if TYPE_CHECKING:
    from weightvault.custody.policy import ModelPolicy

__all__ = ["CHECKS", "CheckResult", "Deployment", "Status", "run_check"]


def _passed(*evidence: str) -> CheckResult:
    return CheckResult(Status.PASS, evidence)


def _failed(*evidence: str) -> CheckResult:
    return CheckResult(Status.FAIL, evidence)


def _not_applicable(*evidence: str) -> CheckResult:
    return CheckResult(Status.NOT_APPLICABLE, evidence)


# -- the checks ---------------------------------------------------------------------------------


def _audit_log_intact(facts: Facts, params: dict[str, int]) -> CheckResult:
    """Every entry of the audit log matches the log's signed checkpoints (offline verification
    of a full export with the log's own key)."""
    from weightvault.custody.audit import verify_audit

    log = facts.log()
    if log.latest_checkpoint() is None:
        return _failed("the audit log has no signed checkpoint yet: nothing vouches for it")
    key = facts.log_key()
    try:
        result = verify_audit(log.export().to_json(), key.to_text())
    except WeightvaultError as exc:
        return _failed(f"the audit log does not verify: {exc.one_line()}")
    return _passed(
        f"{result.size} entries of {result.origin} verified against the log key {key.to_text()}",
        f"{log.size() - result.size} entries appended after the latest signed checkpoint",
        "requests fail (503) when their entry cannot be written: the service fails closed",
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _file_permissions(facts: Facts, params: dict[str, int]) -> CheckResult:
    """The data folder and the secret key files allow no group or other access, and belong to
    the account that runs posture (the service account)."""
    from weightvault.custody.config import HMAC_KEY_FILE, KEK_FILE, LOG_KEY_FILE

    data = facts.config.data_dir
    problems: list[str] = []
    seen: list[str] = []
    candidates = [data, data / LOG_KEY_FILE, data / HMAC_KEY_FILE, data / KEK_FILE]
    kek = facts.config.kek_spec
    if kek.startswith("keyring:"):
        candidates.append(Path(kek[len("keyring:") :]))
    blobs = facts.config.blobs
    if blobs and "://" not in blobs:
        candidates.append(Path(blobs))  # a blob folder outside the data folder
    for path in dict.fromkeys(candidates):
        if not path.exists():
            continue
        mode = _mode(path)
        seen.append(f"{path}: {mode:04o}")
        if mode & 0o077:
            problems.append(f"{path} is {mode:04o}: group or others have access")
        if path.stat().st_uid != os.getuid():
            problems.append(f"{path} belongs to uid {path.stat().st_uid}, not {os.getuid()}")
    if problems:
        return _failed(*problems)
    return _passed(*seen)


def _encryption_at_rest(facts: Facts, params: dict[str, int]) -> CheckResult:
    """Every stored file of every version starts with a well-formed weightvault header and has
    the size its row records."""
    from sqlalchemy import select

    from weightvault.crypt import parse_header
    from weightvault.custody.blobs import open_blob_store
    from weightvault.custody.store import VersionFile

    blobs = open_blob_store(facts.config.blobs, facts.config.data_dir)
    with facts.session() as session:
        files = session.scalars(select(VersionFile)).all()
    if not files:
        return _not_applicable("no model version is stored")
    problems: list[str] = []
    stanza_types: set[str] = set()
    for vfile in files:
        where = f"{vfile.model}: {vfile.path} ({vfile.blob_key})"
        try:
            size = blobs.size(vfile.blob_key)
            head = b"".join(blobs.read_range(vfile.blob_key, 0, min(size, vfile.header_size)))
            header = parse_header(head, where)
        except (WeightvaultError, OSError) as exc:
            message = exc.one_line() if isinstance(exc, WeightvaultError) else str(exc)
            problems.append(f"{where}: not a weightvault ciphertext ({message})")
            continue
        if size != vfile.header_size + vfile.body_size:
            problems.append(
                f"{where}: {size} bytes stored, {vfile.header_size + vfile.body_size} recorded"
            )
        stanza_types.update(type(s).__name__ for s in header.recipients)
    if problems:
        return _failed(*problems)
    return _passed(
        f"{len(files)} stored files are weightvault ciphertext in {blobs.describe()}",
        f"data keys wrapped by: {', '.join(sorted(stanza_types))}",
    )


def _signing_required(facts: Facts, params: dict[str, int]) -> CheckResult:
    """Every model names at least one signer, and every stored version's signature verifies
    with a key its model's policy names today (a signer removed from the policy flags the
    versions it signed)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from sqlalchemy import select

    from weightvault.custody.store import ModelVersion
    from weightvault.signing import KeyVerifier

    models = facts.models()
    if not models:
        return _not_applicable("no model is registered")
    problems: list[str] = []
    verified = 0
    with facts.session() as session:
        for name, policy in models:
            if not policy.signers:
                problems.append(f"{name}: the policy names no signer")
                continue
            verifiers = []
            for rule in policy.signers:
                key = serialization.load_pem_public_key(rule.public_key_pem.encode("ascii"))
                if isinstance(key, ec.EllipticCurvePublicKey):
                    verifiers.append(KeyVerifier(key))
            versions = session.scalars(select(ModelVersion).where(ModelVersion.model == name))
            for version in versions:
                if not any(_verifies(v, version.signature) for v in verifiers):
                    problems.append(
                        f"{name}@{version.version}: its signature does not verify with any "
                        "signer the policy names now"
                    )
                else:
                    verified += 1
    if problems:
        return _failed(*problems)
    return _passed(
        f"{len(models)} models name their signers; {verified} stored versions carry a "
        "signature by one of them",
        "uploads without a valid signature are refused by the service",
    )


def _verifies(verifier: Any, bundle: bytes) -> bool:
    try:
        verifier.verify(bundle)
    except WeightvaultError:
        return False
    return True


_WEIGHT_FORMATS = frozenset(
    {"safetensors", "pytorch-zip", "pytorch-legacy", "pickle", "numpy", "gguf", "keras", "onnx"}
)


def _no_plaintext_weights(facts: Facts, params: dict[str, int]) -> CheckResult:
    """Nothing is left in staging, and no file outside the blob store is a weight file."""
    from weightvault.custody.config import HMAC_KEY_FILE, KEK_FILE, LOG_KEY_FILE
    from weightvault.scan import scan_file

    data = facts.config.data_dir
    blob_dir = data / "blobs"
    # The service's own files, by exact name (a weight file renamed to look like one is sniffed).
    own = {
        data / name
        for base in ("custody.db", "audit.tlog")
        for name in (base, f"{base}-wal", f"{base}-shm", f"{base}-journal")
    } | {data / LOG_KEY_FILE, data / HMAC_KEY_FILE, data / KEK_FILE}
    problems: list[str] = []
    staged = [p for p in (data / "staging").rglob("*") if p.is_file()]
    if staged:
        problems.append(f"{len(staged)} files left in {data / 'staging'} (e.g. {staged[0]})")
    checked = 0
    for path in sorted(data.rglob("*")):
        if not path.is_file() or path.is_symlink() or blob_dir in path.parents or path in own:
            continue
        checked += 1
        result = scan_file(path)
        if result.format in _WEIGHT_FORMATS:
            problems.append(f"{path}: a plaintext {result.format} file")
    if problems:
        return _failed(*problems)
    return _passed(f"no plaintext weight file in {data} ({checked} other files sniffed)")


def _scan_policy(facts: Facts, params: dict[str, int]) -> CheckResult:
    """The organisation's scan policy file, if any, trusts nothing beyond the knowledge base
    (entries that only make verdicts stricter are fine)."""
    from weightvault.scan import make_policy

    uploads = "the service scans every upload with the built-in policy"
    path = facts.deployment.scan_policy
    if path is None:
        return _passed(uploads, "no other scan policy file in use")
    try:
        policy = make_policy(policy_file=path)
    except (WeightvaultError, ValueError) as exc:
        message = exc.one_line() if isinstance(exc, WeightvaultError) else str(exc)
        return _failed(f"{path}: cannot be read as a scan policy ({message})")
    trusted = [e.pattern for e in policy.user_entries if e.klass.startswith("safe")]
    if trusted:
        return _failed(f"{path} trusts imports the knowledge base does not: {', '.join(trusted)}")
    return _passed(uploads, f"{path}: {len(policy.user_entries)} entries, none trusts more")


def _tls(facts: Facts, params: dict[str, int]) -> CheckResult:
    """The service's address is https, and a TLS 1.2+ handshake verifies its certificate."""
    url = facts.deployment.service_url
    if not url:
        return _failed("no service address given: TLS cannot be shown")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return _failed(f"{url}: clients reach the service without TLS")
    ca_file = facts.deployment.ca_file
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        return _failed(f"{ca_file}: cannot be used as CA certificates ({exc})")
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        with (
            socket.create_connection((parts.hostname, parts.port or 443), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
        ):
            version = tls.version()
            cipher = tls.cipher()
            cert = tls.getpeercert() or {}
    except (OSError, ssl.SSLError) as exc:
        return _failed(f"{url}: TLS handshake failed ({exc})")
    expires = str(cert.get("notAfter", "?"))
    return _passed(
        f"{url}: {version}, {cipher[0] if cipher else '?'}, certificate verified",
        f"certificate valid until {expires}",
    )


_KID_RE = re.compile(r"^# keyring kid: ([0-9a-f]{16})$", re.MULTILINE)


def _breakglass_split(facts: Facts, params: dict[str, int]) -> CheckResult:
    """A keyring KEK has a break-glass split (k of n, k >= ``min_threshold``) whose share names
    the KEK in use; a KEK on a token is out of scope (it cannot be split)."""
    from weightvault.crypt.recipients.keyring import load_keyring
    from weightvault.custody.breakglass import Share
    from weightvault.keys.files import key_lines

    spec = facts.config.kek_spec
    if spec.startswith("pkcs11:"):
        return _not_applicable("the KEK is on a PKCS#11 token: it cannot be split or copied")
    kek_path = Path(spec[len("keyring:") :])
    share_path = facts.deployment.breakglass_share
    if share_path is None:
        return _failed(f"no break-glass share shown for the KEK {kek_path}")
    try:
        keyring = load_keyring(kek_path)
        text = share_path.read_text(encoding="utf-8")
        lines = key_lines(text)
        if len(lines) != 1:
            raise InputError(f"{share_path}: expected one share line")
        share = Share.from_text(lines[0])
    except WeightvaultError as exc:
        return _failed(f"break-glass share cannot be read: {exc.one_line()}")
    except (OSError, UnicodeDecodeError) as exc:
        return _failed(f"{share_path}: cannot be read ({exc})")
    match = _KID_RE.search(text)
    problems = []
    if match is None or match.group(1) != keyring.kid:
        problems.append(f"{share_path}: the share is not of the KEK in use ({keyring.kid})")
    if share.threshold < params.get("min_threshold", 2):
        problems.append(
            f"{share_path}: {share.threshold} of {share.count} shares rebuild the KEK; "
            f"at least {params.get('min_threshold', 2)} wanted"
        )
    data = facts.config.data_dir.resolve()
    if data in share_path.resolve().parents:
        problems.append(f"{share_path}: a share is kept in the data folder, not offline")
    if problems:
        return _failed(*problems)
    return _passed(f"KEK {keyring.kid} split {share.threshold} of {share.count}")


def _credentials_removed(facts: Facts, params: dict[str, int]) -> CheckResult:
    """The credentials ``vault init`` wrote for handing out are gone from the host."""
    from weightvault.custody.bootstrap import CREDENTIALS_DIR

    folder = facts.config.data_dir / CREDENTIALS_DIR
    left = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if left:
        return _failed(f"{folder} still holds {len(left)} credentials: {', '.join(left)}")
    return _passed(f"no setup credentials in {folder}")


def _kek_hsm(facts: Facts, params: dict[str, int]) -> CheckResult:
    """The KEK is a key on a PKCS#11 token that is sensitive and was never extractable."""
    from weightvault.keys.pkcs11 import Pkcs11Session, redacted_uri

    spec = facts.config.kek_spec
    if not spec.startswith("pkcs11:"):
        return _failed(f"the KEK is a software key file ({spec}): whoever reads it holds it")
    shown = redacted_uri(spec)
    try:
        with Pkcs11Session(spec) as session:
            protection = session.key_protection()
    except WeightvaultError as exc:
        return _failed(f"KEK {shown}: attributes cannot be read ({exc.one_line()})")
    attributes = (
        f"CKA_EXTRACTABLE={protection.extractable}, CKA_SENSITIVE={protection.sensitive}, "
        f"CKA_NEVER_EXTRACTABLE={protection.never_extractable}, "
        f"CKA_ALWAYS_SENSITIVE={protection.always_sensitive}"
    )
    if not protection.non_exportable:
        return _failed(f"KEK {shown} can leave the token: {attributes}")
    return _passed(f"KEK {shown}: {attributes}")


def _policy_problems(
    facts: Facts, breaks: Callable[[ModelPolicy], bool], problem: Callable[[ModelPolicy], str]
) -> tuple[list[tuple[str, ModelPolicy]], list[str]]:
    """The registered models, and ``name: problem`` for each whose policy ``breaks`` the
    measure's limit (the policy-limit checks differ only in the limit and its wording)."""
    models = facts.models()
    return models, [f"{name}: {problem(policy)}" for name, policy in models if breaks(policy)]


def _approvals(facts: Facts, params: dict[str, int]) -> CheckResult:
    """Every model needs at least ``min_approvals`` distinct approvers (never the requester)."""
    wanted = params.get("min_approvals", 2)
    models, problems = _policy_problems(
        facts,
        lambda policy: policy.approvals_required < wanted,
        lambda policy: (
            f"{policy.approvals_required} of {len(policy.approvers)} approvals release it"
        ),
    )
    if not models:
        return _not_applicable("no model is registered")
    if problems:
        return _failed(*problems)
    least = min(policy.approvals_required for _, policy in models)
    return _passed(f"{len(models)} models need at least {least} approvals from distinct people")


def _grant_expiry(facts: Facts, params: dict[str, int]) -> CheckResult:
    """Model policies cap grants at ``max_hours``, and no active grant outlives that."""
    from sqlalchemy import select

    from weightvault.custody.store import GrantRequest

    limit_s = params.get("max_hours", 168) * 3600
    models, problems = _policy_problems(
        facts,
        lambda policy: policy.max_grant_duration_s > limit_s,
        lambda policy: f"grants may last {policy.max_grant_duration_s / 3600:g} h",
    )
    if not models:
        return _not_applicable("no model is registered")
    now = facts.deployment.now
    with facts.session() as session:
        active = session.scalars(select(GrantRequest).where(GrantRequest.status == "active")).all()
    live = 0
    for grant in active:
        if grant.grant_expires_at is None:
            problems.append(f"grant {grant.id} ({grant.model}) is active with no expiry")
        elif grant.grant_expires_at > now:
            live += 1
            if grant.grant_expires_at - (grant.activated_at or now) > dt.timedelta(seconds=limit_s):
                problems.append(f"grant {grant.id} ({grant.model}) lasts over {limit_s // 3600} h")
    if problems:
        return _failed(*problems)
    return _passed(
        f"{len(models)} models cap grants at {limit_s // 3600} h or less; {live} grants live now"
    )


def _time_to_exfiltrate(facts: Facts, params: dict[str, int]) -> CheckResult:
    """At each model's egress budget, its largest version takes at least ``min_hours`` to leave
    (size / (budget / window): the figure ``vault inventory`` shows)."""
    from sqlalchemy import func, select

    from weightvault.custody.store import ModelVersion

    wanted_s = params.get("min_hours", 24) * 3600
    window = facts.config.window_s
    rows: list[tuple[str, int, float]] = []
    with facts.session() as session:
        for name, policy in facts.models():
            size = session.scalar(
                select(func.max(ModelVersion.size)).where(ModelVersion.model == name)
            )
            if size:
                rate = policy.egress_bytes_per_window / window  # every principal together
                rows.append((name, int(size), size / rate))
    if not rows:
        return _not_applicable("no model version is stored")
    short = [
        f"{name}: {size} bytes leave in {seconds / 3600:.2f} h at its budget"
        for name, size, seconds in rows
        if seconds < wanted_s
    ]
    if short:
        return _failed(*short)
    slowest = min(seconds for _, _, seconds in rows)
    return _passed(
        f"{len(rows)} models: the quickest whole copy takes {slowest / 3600:.1f} h at the budgets"
    )


def _audit_witnessed(facts: Facts, params: dict[str, int]) -> CheckResult:
    """The newest checkpoint carrying cosignatures has at least ``min_witnesses`` from the
    witness keys given (verified, not just present)."""
    from weightvault.tlog import verify_checkpoint

    wanted = params.get("min_witnesses", 1)
    keys = facts.deployment.witness_keys
    if not keys:
        return _failed("no witness keys given: nobody outside the service vouches for the log")
    log = facts.log()
    log_key = facts.log_key()
    for note in reversed(log.checkpoints()):
        try:
            verified = verify_checkpoint(note, log_key, extra_witness_keys=keys)
        except (WeightvaultError, ValueError):
            continue
        if verified.witnesses:
            size = verified.checkpoint.size
            names = ", ".join(sorted(verified.witnesses))
            lag = f"{log.size() - size} entries since the cosigned checkpoint (size {size})"
            if len(verified.witnesses) < wanted:
                return _failed(
                    f"{len(verified.witnesses)} of {wanted} witnesses cosigned: {names}", lag
                )
            return _passed(f"{len(verified.witnesses)} witnesses cosigned: {names}", lag)
    return _failed("no checkpoint of the audit log carries a cosignature by the given witnesses")


CHECKS: dict[str, Callable[[Facts, dict[str, int]], CheckResult]] = {
    "audit-log-intact": _audit_log_intact,
    "file-permissions": _file_permissions,
    "encryption-at-rest": _encryption_at_rest,
    "signing-required": _signing_required,
    "no-plaintext-weights": _no_plaintext_weights,
    "scan-policy": _scan_policy,
    "tls": _tls,
    "breakglass-split": _breakglass_split,
    "credentials-removed": _credentials_removed,
    "kek-hsm": _kek_hsm,
    "approvals": _approvals,
    "grant-expiry": _grant_expiry,
    "time-to-exfiltrate": _time_to_exfiltrate,
    "audit-witnessed": _audit_witnessed,
}
"""Check id -> check; ids are what ``measures.toml`` names."""


def run_check(facts: Facts, check: str, params: dict[str, int]) -> CheckResult:
    """Run one check; a library error while reading becomes a failure that says what broke."""
    try:
        return CHECKS[check](facts, params)
    except WeightvaultError as exc:
        return _failed(f"could not be checked: {exc.one_line()}")
    except OSError as exc:  # a file that vanished or cannot be read while checking
        return _failed(f"could not be checked: {exc.filename or ''}: {exc.strerror or exc}")


def open_facts(deployment: Deployment) -> Facts:
    """The deployment opened for reading (raises :class:`InputError` if it is not one)."""
    return Facts(deployment)


def describe_checks() -> Sequence[tuple[str, str]]:
    """``(check id, first line of its docstring)`` for documentation."""
    return [(name, (fn.__doc__ or "").split("\n")[0]) for name, fn in CHECKS.items()]
