"""The log and witness commands, in-process, end to end; PKCS#11 checkpoint signing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests.softhsm import make_token

from weightvault.cli.app import run
from weightvault.tlog import LogExport, verify_checkpoint
from weightvault.tlog.note import VerifierKey

ORIGIN = "example.com/cli-log"


def _ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = run(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _fails(capsys: pytest.CaptureFixture[str], code: int, *argv: str) -> str:
    got = run(list(argv))
    out, err = capsys.readouterr()
    assert got == code, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_full_cli_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path
    key, db = d / "log.key", str(d / "log.db")
    vkey = _ok(capsys, "log", "keygen", "--name", ORIGIN, "--out", str(key)).splitlines()[-1]
    assert VerifierKey.from_text(vkey).name == ORIGIN
    assert (d / "log.key").stat().st_mode & 0o777 == 0o600
    assert _ok(capsys, "log", "vkey", "--key", str(key)).strip() == vkey
    _ok(capsys, "log", "init", db, "--origin", ORIGIN)
    (d / "e0").write_bytes(b"\x00binary entry\xff")
    out = _ok(capsys, "log", "append", db, str(d / "e0"), "--text", "second", "--json")
    assert json.loads(out) == {"indices": [0, 1], "size": 2}
    _ok(capsys, "log", "checkpoint", db, "--key", str(key), "--out", str(d / "cp1"))
    _ok(capsys, "log", "append", db, "--text", "third")
    _ok(capsys, "log", "checkpoint", db, "--key", str(key), "--out", str(d / "cp2"))
    _ok(capsys, "log", "prove", db, "--index", "0", "--out", str(d / "p0.tlog-proof"))
    out = _ok(
        capsys,
        "log",
        "verify-proof",
        str(d / "p0.tlog-proof"),
        "--entry",
        str(d / "e0"),
        "--key",
        str(d / "log.key.pub"),
        "--json",
    )
    assert json.loads(out)["tree_size"] == 3
    (d / "wrong").write_bytes(b"second")
    err = _fails(
        capsys,
        1,
        "log",
        "verify-proof",
        str(d / "p0.tlog-proof"),
        "--entry",
        str(d / "wrong"),
        "--key",
        vkey,
    )
    assert "inclusion proof failed" in err
    _ok(capsys, "log", "export", db, "--out", str(d / "export.json"))
    out = _ok(
        capsys,
        "log",
        "verify",
        str(d / "export.json"),
        "--key",
        vkey,
        "--trusted-checkpoint",
        str(d / "cp1"),
    )
    assert "OK: 3 entries" in out and "trusted checkpoint at size 2" in out
    # Tamper with entry 1 of the export: exit 1, the bad index named.
    exported = LogExport.from_json((d / "export.json").read_bytes())
    tampered = LogExport(
        exported.origin,
        exported.checkpoints,
        (exported.entries[0], b"SECOND", exported.entries[2]),
        exported.leaf_hashes,
    )
    (d / "tampered.json").write_bytes(tampered.to_json())
    err = _fails(
        capsys,
        1,
        "log",
        "verify",
        str(d / "tampered.json"),
        "--key",
        vkey,
        "--trusted-checkpoint",
        str(d / "cp1"),
    )
    assert "entry 1: changed, removed, reordered or inserted" in err
    _ok(capsys, "log", "import", str(d / "export.json"), str(d / "copy.db"), "--key", vkey)
    err = _fails(
        capsys, 1, "log", "import", str(d / "tampered.json"), str(d / "copy2.db"), "--key", vkey
    )
    assert not (d / "copy2.db").exists()
    # Witness: keygen, first cosign (trust on first use), then a consistency-checked one.
    wkey = d / "w1.key"
    _ok(capsys, "witness", "keygen", "--name", "witness.example/w1", "--out", str(wkey))
    state = str(d / "w1.state")
    _ok(
        capsys,
        "witness",
        "cosign",
        str(d / "cp1"),
        "--key",
        str(wkey),
        "--log-key",
        vkey,
        "--state",
        state,
        "--out",
        str(d / "cp1.cosigned"),
    )
    err = _fails(
        capsys,
        2,
        "witness",
        "cosign",
        str(d / "cp2"),
        "--key",
        str(wkey),
        "--log-key",
        vkey,
        "--state",
        state,
    )
    assert "--from-size 2" in err
    _ok(capsys, "log", "prove", db, "--from-size", "2", "--out", str(d / "c23"))
    _ok(
        capsys,
        "witness",
        "cosign",
        str(d / "cp2"),
        "--key",
        str(wkey),
        "--log-key",
        vkey,
        "--state",
        state,
        "--proof",
        str(d / "c23"),
        "--out",
        str(d / "cp2.cosigned"),
    )
    out = _ok(
        capsys,
        "witness",
        "verify",
        str(d / "cp2.cosigned"),
        "--log-key",
        vkey,
        "--witness-key",
        str(d / "w1.key.pub"),
    )
    assert "cosigned by witness.example/w1" in out
    _ok(
        capsys,
        "log",
        "prove",
        db,
        "--index",
        "2",
        "--checkpoint",
        str(d / "cp2.cosigned"),
        "--out",
        str(d / "p2"),
    )
    (d / "e2").write_bytes(b"third")
    _ok(
        capsys,
        "log",
        "verify-proof",
        str(d / "p2"),
        "--entry",
        str(d / "e2"),
        "--key",
        vkey,
        "--witness-key",
        str(d / "w1.key.pub"),
        "--min-witnesses",
        "1",
    )
    _ok(
        capsys,
        "log",
        "verify",
        str(d / "export.json"),
        "--key",
        vkey,
    )
    err = _fails(
        capsys,
        1,
        "log",
        "verify-proof",
        str(d / "p0.tlog-proof"),
        "--entry",
        str(d / "e0"),
        "--key",
        vkey,
        "--witness-key",
        str(d / "w1.key.pub"),
    )
    assert "0 of the required 1 witness" in err
    # Store the cosignatures in the log: exports then satisfy a witness policy.
    out = _ok(capsys, "log", "add-cosignatures", db, str(d / "cp2.cosigned"), "--key", vkey)
    assert "2 signature line(s)" in out
    _ok(capsys, "log", "export", db, "--out", str(d / "export2.json"))
    out = _ok(
        capsys,
        "log",
        "verify",
        str(d / "export2.json"),
        "--key",
        vkey,
        "--witness-key",
        str(d / "w1.key.pub"),
        "--json",
    )
    assert json.loads(out)["witnesses"] == ["witness.example/w1"]


def test_cli_errors_are_one_line_and_leave_no_partial_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path
    db = str(d / "log.db")
    _ok(capsys, "log", "keygen", "--name", ORIGIN, "--out", str(d / "k"))
    _fails(capsys, 2, "log", "keygen", "--name", ORIGIN, "--out", str(d / "k"))  # exists
    _fails(capsys, 2, "log", "keygen", "--name", "bad name", "--out", str(d / "k2"))
    _fails(capsys, 2, "log", "init", db, "--origin", "has space")
    _fails(capsys, 2, "log", "append", str(d / "missing.db"), "--text", "x")
    _ok(capsys, "log", "init", db, "--origin", ORIGIN)
    _fails(capsys, 2, "log", "init", db, "--origin", ORIGIN)
    _fails(capsys, 2, "log", "append", db)
    _fails(capsys, 2, "log", "prove", db, "--index", "0", "--out", str(d / "p"))
    assert not (d / "p").exists()
    _fails(capsys, 2, "log", "prove", db, "--index", "0", "--from-size", "1")
    _fails(capsys, 2, "log", "export", db, "--out", str(d / "x.json"))
    assert not (d / "x.json").exists()
    fifo = d / "fifo"
    os.mkfifo(fifo)
    err = _fails(capsys, 2, "log", "keygen", "--name", ORIGIN, "--out", str(fifo), "--force")
    assert "not a regular file" in err and fifo.is_fifo()
    _ok(capsys, "witness", "keygen", "--name", "w", "--out", str(d / "wk"))
    err = _fails(capsys, 2, "log", "checkpoint", db, "--key", str(d / "wk"))
    assert "witness (cosignature) key" in err
    (d / "garbage").write_text("PRIVATE+KEY+nope")
    _fails(capsys, 2, "log", "checkpoint", db, "--key", str(d / "garbage"))
    _fails(capsys, 2, "log", "verify", str(d / "garbage"), "--key", "not+a+key")
    _fails(
        capsys,
        2,
        "log",
        "verify-proof",
        str(d / "garbage"),
        "--entry",
        str(d / "garbage"),
        "--key",
        str(d / "k.pub"),
    )


def test_checkpoints_signed_by_a_pkcs11_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = make_token(tmp_path, monkeypatch=monkeypatch)
    uri = token.generate_ed25519_key("checkpoints")
    db = str(tmp_path / "hsm.db")
    vkey = _ok(capsys, "log", "vkey", "--key", uri, "--name", ORIGIN).strip()
    _ok(capsys, "log", "init", db, "--origin", ORIGIN)
    _ok(capsys, "log", "append", db, "--text", "signed on a token")
    note = _ok(capsys, "log", "checkpoint", db, "--key", uri)
    checked = verify_checkpoint(note.encode(), VerifierKey.from_text(vkey))
    assert checked.checkpoint.size == 1
    err = _fails(capsys, 2, "log", "vkey", "--key", uri)
    assert "needs a key name" in err or "name" in err
    ec_uri = token.generate_ec_key("not-ed25519")
    err = _fails(capsys, 2, "log", "checkpoint", db, "--key", ec_uri)
    assert "not an Ed25519 key" in err


def test_cli_on_a_real_postgresql_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres: object
) -> None:
    dsn = postgres.create_schema()  # type: ignore[attr-defined]
    key = tmp_path / "log.key"
    vkey = _ok(capsys, "log", "keygen", "--name", ORIGIN, "--out", str(key)).splitlines()[-1]
    _ok(capsys, "log", "init", dsn, "--origin", ORIGIN)
    _fails(capsys, 2, "log", "init", dsn, "--origin", ORIGIN)
    _ok(capsys, "log", "append", dsn, "--text", "pg one", "--text", "pg two")
    _ok(capsys, "log", "checkpoint", dsn, "--key", str(key), "--out", str(tmp_path / "cp"))
    _ok(capsys, "log", "prove", dsn, "--index", "1", "--out", str(tmp_path / "p"))
    (tmp_path / "e").write_bytes(b"pg two")
    out = _ok(
        capsys,
        "log",
        "verify-proof",
        str(tmp_path / "p"),
        "--entry",
        str(tmp_path / "e"),
        "--key",
        vkey,
    )
    assert "tree size 2" in out
    _ok(capsys, "log", "export", dsn, "--out", str(tmp_path / "x.json"))
    _ok(capsys, "log", "verify", str(tmp_path / "x.json"), "--key", vkey)
    err = _fails(
        capsys, 2, "log", "append", "postgresql://nobody:hunter2@127.0.0.1:1/none", "--text", "x"
    )
    assert "cannot connect to PostgreSQL" in err
    assert "hunter2" not in err and "nobody:***@" in err
