"""``weightvault vault init``: one command makes a data folder the service runs on, with people.

What must hold: every token and approval key it writes works against the real service (and the
approval keys release a real grant); secrets are 0600 in a 0700 folder; each creation is in the
audit log; a second run is refused without ``--force`` and ``--force`` really replaces; a folder
that is not a custody folder is never deleted; and an init that fails or is interrupted, at any
step, leaves nothing at all.
"""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.custody.helpers import make_model, public_pem, sign_model, start_service

from weightvault.cli.app import run
from weightvault.crypt.recipients import X25519Identity
from weightvault.custody import bootstrap
from weightvault.custody.approvals import load_approval_signer
from weightvault.custody.audit import verify_audit
from weightvault.custody.client import ClientConfig, VaultClient


def _init(data: Path, *extra: str) -> int:
    return run(["vault", "init", "--data", str(data), *extra])


def _leftovers(parent: Path) -> list[str]:
    """Hidden staging or set-aside folders an init may have left beside its target."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_init_makes_people_the_running_service_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "custody"
    code = _init(data, "--owner", "olivia", "--approver", "alice", "--approver", "bob", "--json")
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    people = {p["name"]: p for p in doc["principals"]}
    assert [(p["name"], p["role"]) for p in doc["principals"]] == [
        ("admin", "admin"),
        ("olivia", "owner"),
        ("alice", "approver"),
        ("bob", "approver"),
    ]
    credentials = data / "credentials"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o700
    for person in people.values():
        assert stat.S_IMODE(Path(person["token_file"]).stat().st_mode) == 0o600
    for name in ("alice", "bob"):
        assert stat.S_IMODE(Path(people[name]["approval_key"]).stat().st_mode) == 0o600
    assert _leftovers(tmp_path) == []

    service = start_service(data, init_admin=False)
    try:
        tokens = {name: Path(p["token_file"]).read_text().strip() for name, p in people.items()}
        for name, person in people.items():
            with VaultClient(ClientConfig(service.url, tokens[name])) as client:
                me = client.whoami()
            assert (me["name"], me["roles"]) == (name, [person["role"]])
            assert me["approval_key_id"] == person["approval_key_id"]

        # The written approval keys release a real grant: push, request, approve, approve.
        signing_key = _release_key()
        model = make_model(tmp_path / "llama", megabytes=0.05)
        signature = sign_model(model, signing_key)
        policy = {
            "approvers": ["alice", "bob"],
            "approvals_required": 2,
            "signers": [{"name": "release", "public_key_pem": public_pem(signing_key)}],
        }
        with VaultClient(ClientConfig(service.url, tokens["olivia"])) as olivia:
            olivia.create_model("llama", policy)
            olivia.push("llama", "v1", model, signature.read_bytes(), ignore=(signature,))
        reader = X25519Identity.generate()
        with VaultClient(ClientConfig(service.url, tokens["admin"])) as admin:
            rita = admin.create_principal(
                "rita", ["reader"], recipient=reader.recipient().to_string()
            )
        with VaultClient(ClientConfig(service.url, rita["token"])) as client:
            request = client.request("llama", "v1", "evaluation", 600, 1 << 20)
        for name in ("alice", "bob"):
            signer = load_approval_signer(Path(people[name]["approval_key"]), None)
            with VaultClient(ClientConfig(service.url, tokens[name])) as client:
                result = client.decide(request["id"], signer, approver=name)
        assert result["status"] == "active"

        # Every creation is an audit entry, made by 'vault init', and the log verifies.
        with VaultClient(ClientConfig(service.url, tokens["admin"])) as admin:
            export = admin.audit_export()
        report = verify_audit(export, doc["audit_log_key"])
        assert report.size > 4
        events = [json.loads(entry) for entry in _entries(export)[:4]]
        assert [(e["action"], e["path"]) for e in events] == [
            ("principal.bootstrap", "vault init"),
            ("principal.create", "vault init"),
            ("principal.create", "vault init"),
            ("principal.create", "vault init"),
        ]
        assert [e["detail"]["name"] for e in events] == ["admin", "olivia", "alice", "bob"]
    finally:
        service.stop()


def _release_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _entries(export: bytes) -> list[bytes]:
    import base64

    return [base64.b64decode(e) for e in json.loads(export)["entries"]]


def test_second_init_is_refused_and_force_replaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "custody"
    assert _init(data, "--approver", "alice") == 0
    first_token = (data / "credentials" / "admin.token").read_bytes()
    first_kek = (data / "service-kek.keyring").read_bytes()
    capsys.readouterr()

    assert _init(data, "--approver", "alice") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already a custody data folder" in err
    assert "--force" in err and len(err.strip().splitlines()) == 1
    assert (data / "credentials" / "admin.token").read_bytes() == first_token

    assert _init(data, "--approver", "alice", "--force") == 0
    assert (data / "credentials" / "admin.token").read_bytes() != first_token
    assert (data / "service-kek.keyring").read_bytes() != first_kek
    assert _leftovers(tmp_path) == []


def test_a_folder_that_is_not_a_custody_folder_is_never_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("years of work")
    for extra in ((), ("--force",)):
        assert _init(busy, *extra) == 2
        assert "not empty and not a custody data folder" in capsys.readouterr().err
        assert sorted(p.name for p in busy.iterdir()) == ["thesis.tex"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert _init(a_file, "--force") == 2
    assert "is not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "x"
    # An empty folder is fine: it becomes the data folder.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _init(empty) == 0
    assert bootstrap.is_custody_folder(empty)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "names",
    [
        ("--approver", "../x"),
        ("--owner", "admin"),
        ("--approver", "bob", "--approver", "bob"),
        ("--admin", ""),
    ],
)
def test_bad_names_are_refused_before_anything_is_written(
    tmp_path: Path, names: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _init(tmp_path / "custody", *names) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_at_any_step_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail each secret-file write in turn (the steps that follow the database work): every
    time, neither the folder nor a staging folder remains."""
    from weightvault.keys import files

    real = files.write_secret_file
    writes = 0

    def counting(path: Path, text: str, *, force: bool = False) -> None:
        nonlocal writes
        writes += 1
        real(path, text, force=force)

    monkeypatch.setattr(files, "write_secret_file", counting)
    assert _init(tmp_path / "probe", "--approver", "alice", "--approver", "bob") == 0
    total = writes
    assert total >= 7  # 4 tokens + 2 approval keys + the service's own key files

    for failing in range(1, total + 1):
        calls = 0

        def failing_write(path: Path, text: str, *, force: bool = False) -> None:
            nonlocal calls
            calls += 1
            if calls == failing:
                raise KeyboardInterrupt  # what SIGINT raises, at this step
            real(path, text, force=force)

        monkeypatch.setattr(files, "write_secret_file", failing_write)
        target = tmp_path / f"custody-{failing}"
        with pytest.raises(KeyboardInterrupt):
            bootstrap.initialize_data_folder(target, approvers=["alice", "bob"])
        assert not target.exists()
    assert _leftovers(tmp_path) == []


def _init_process(target: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "weightvault", "vault", "init", "--data", str(target)]
    return subprocess.Popen(
        [*command, "--approver", "alice"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _wait_for_staging(parent: Path, process: subprocess.Popen[bytes]) -> None:
    """Until the init has started building (its handlers are installed by then)."""
    deadline = time.monotonic() + 30
    while not _leftovers(parent) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)


#: (signal, seconds after the build started): the first ones land in the database work, the
#: later ones in writing the credentials, the commit, or after it.
_SIGNAL_POINTS = [
    (signal.SIGINT, 0.0),
    (signal.SIGTERM, 0.05),
    (signal.SIGINT, 0.15),
    (signal.SIGTERM, 0.3),
    (signal.SIGINT, 0.6),
]


def test_a_signal_at_any_moment_leaves_all_or_nothing(tmp_path: Path) -> None:
    """Real processes, real SIGINT and SIGTERM, at moments spread over the build: afterwards
    the folder is either complete (the signal came after the commit) or absent, nothing else is
    left, and an interrupted run says so in one line with exit 130 or 143."""
    outcomes = []
    for step, (signum, delay) in enumerate(_SIGNAL_POINTS):
        parent = tmp_path / f"run-{step}"
        parent.mkdir()
        target = parent / "custody"
        process = _init_process(target)
        _wait_for_staging(parent, process)
        time.sleep(delay)
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
        if process.returncode == 0:
            outcomes.append("complete")
            assert bootstrap.is_custody_folder(target)
            assert (target / "credentials" / "alice.pem").exists()
        else:
            outcomes.append("interrupted")
            assert process.returncode == 128 + signum, err
            assert len(err.splitlines()) == 1 and b"interrupted" in err, err
            assert not target.exists(), err
        assert _leftovers(parent) == [], outcomes
    assert outcomes[:2] == ["interrupted", "interrupted"], outcomes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2M", 2 << 20),
        ("512K", 512 << 10),
        ("1G", 1 << 30),
        ("10g", 10 << 30),
        ("1T", 1 << 40),
        ("2MiB", 2 << 20),
        ("1048576", 1 << 20),
    ],
)
def test_sizes_take_suffixes(text: str, expected: int) -> None:
    from weightvault.cli.vault import _bytes

    assert _bytes(text, "--bytes") == expected


@pytest.mark.parametrize("text", ["lots", "2X", "-1", "1.5G", ""])
def test_malformed_sizes_are_usage_errors(text: str) -> None:
    from weightvault.cli.vault import _bytes
    from weightvault.errors import UsageError

    with pytest.raises(UsageError, match="--bytes"):
        _bytes(text, "--bytes")


def test_json_paths_point_at_the_written_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _init(Path("custody"), "--approver", "alice", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["data"] == "custody" and doc["credentials"] == "custody/credentials"
    alice = doc["principals"][-1]
    key = Path(alice["approval_key"])
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert Path(alice["approval_public_key"]).read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert Path(alice["token_file"]).read_text().startswith("wvt_")
