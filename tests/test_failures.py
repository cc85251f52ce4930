"""Every command meets the ordinary failures of a real system, and answers each in one line.

The failures are real, not mocked: a read-only file system (a tmpfs mounted ``ro``, because the
tests run as root and root writes through ``chmod 0555``), a full disk (a 64 KiB tmpfs filled to
the last byte), logs and models on a mount that was remounted read-only, a TCP port another
socket listens on, a missing input, and a folder where a file belongs. The mounts live in a
private mount namespace (``unshare -m``) that ends with the driver process, so nothing leaks to
the machine. Where namespaces or tmpfs mounts are unavailable the test fails, naming why: it
never skips.

For every case: exit code 2 (the system refused; never 3, the bug code), one line on standard
error that starts ``error:`` and names the path, no traceback, nothing on standard output, and
no file or folder left behind in any watched location. Where the path came from an option, the
line names the option to change (``choose another with --out``).

The driver runs the cases in one process (:func:`weightvault.cli.app.run`, output captured at
the file-descriptor level, so worker threads and child processes are captured too); one case
per failure kind also runs as a real ``python -m weightvault`` process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.keyfiles import write_ec_key_pair
from tests.paths import REPO

#: tmpfs sizes: the "full" disk is filled completely after its inputs are copied in.
_FULL_SIZE = "64k"


@dataclass
class Case:
    """One command run under one failure."""

    name: str
    argv: list[str]
    failure: str  # readonly, full, missing, directory, port
    expect: str  # a path (or text) the one-line error must contain
    hint: str | None = None  # e.g. "choose another with --out"
    process: bool = False  # run as a real process too
    stdout_file: str | None = None  # send standard output to this file (a full disk)
    report: bool = False  # the command prints a report of the failure on standard output
    may_leave: tuple[str, ...] = ()  # name endings that may appear (a database's journals)
    env: dict[str, str] = field(default_factory=dict)


# --- the driver: runs inside the mount namespace ---------------------------------------------


def _sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def _snapshot(roots: list[str]) -> list[tuple[str, int]]:
    entries: list[tuple[str, int]] = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs:
                entries.append((os.path.join(folder, name) + "/", 0))
            for name in files:
                path = os.path.join(folder, name)
                entries.append((path, os.lstat(path).st_size))
    return sorted(entries)


def _fill(folder: str) -> None:
    """Write zeros into ``folder`` until the file system has not one byte left."""
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as handle:
        block = b"\0" * 4096
        try:
            while True:
                handle.write(block)
        except OSError:
            pass
        try:
            while True:
                handle.write(b"\0")
        except OSError:
            pass


def _run_captured(case: dict[str, Any], scratch: str) -> tuple[int, str, str]:
    import tempfile

    out_target = case["stdout_file"]
    with tempfile.TemporaryFile() as err_file, tempfile.TemporaryFile() as out_file:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        out_fd = os.open(out_target, os.O_WRONLY | os.O_CREAT, 0o644) if out_target else None
        os.dup2(out_fd if out_fd is not None else out_file.fileno(), 1)
        os.dup2(err_file.fileno(), 2)
        cwd = os.getcwd()
        os.chdir(scratch)
        old_env = {k: os.environ.get(k) for k in case["env"]}
        os.environ.update(case["env"])
        try:
            from weightvault.cli.app import run

            try:
                code = run(case["argv"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                sys.stderr.write(traceback.format_exc())
                code = -1
            try:
                sys.stdout.flush()
            except OSError as exc:  # what the interpreter would report at exit
                sys.stderr.write(f"Exception ignored flushing stdout: {exc!r}\n")
                code = 120
            sys.stderr.flush()
        finally:
            for key, value in old_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            os.chdir(cwd)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if out_fd is not None:
                os.close(out_fd)
        out_file.seek(0)
        err_file.seek(0)
        return (
            code,
            out_file.read().decode("utf-8", "replace"),
            err_file.read().decode("utf-8", "replace"),
        )


def _run_process(case: dict[str, Any], scratch: str) -> tuple[int, str, str]:
    stdout = open(case["stdout_file"], "wb") if case["stdout_file"] else subprocess.PIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "weightvault", *case["argv"]],
            cwd=scratch,
            env={**os.environ, **case["env"]},
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    finally:
        if stdout is not subprocess.PIPE:
            stdout.close()  # type: ignore[union-attr]
    out = proc.stdout.decode("utf-8", "replace") if proc.stdout else ""
    return proc.returncode, out, proc.stderr.decode("utf-8", "replace")


def drive(spec_path: str) -> None:
    """Set up the mounts, run every case, write the results beside the spec (JSON)."""
    spec = json.loads(Path(spec_path).read_text())
    mounts = spec["mounts"]
    _sh("mount", "--make-rprivate", "/")
    _sh("mount", "-t", "tmpfs", "-o", "ro,size=16k", "tmpfs", mounts["readonly"])
    _sh("mount", "-t", "tmpfs", "-o", f"size={_FULL_SIZE}", "tmpfs", mounts["full"])
    for source in spec["full_inputs"]:
        shutil.copy(source, mounts["full"])
    _fill(mounts["full"])
    _sh("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mounts["remounted"])
    for source in spec["remounted_inputs"]:
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(mounts["remounted"], os.path.basename(source)))
        else:
            shutil.copy(source, mounts["remounted"])
    _sh("mount", "-o", "remount,ro", mounts["remounted"])
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = str(busy.getsockname()[1])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = str(probe.getsockname()[1])
    watched = [*mounts.values(), spec["work"]]
    results = []
    for case in spec["cases"]:
        case["argv"] = [
            a.replace("{busy_port}", port).replace("{free_port}", free_port) for a in case["argv"]
        ]
        case["expect"] = case["expect"].replace("{busy_port}", port)
        scratch = os.path.join(spec["work"], "scratch", case["name"])
        os.makedirs(scratch)
        before = _snapshot(watched)
        started = time.monotonic()
        if case["process"]:
            code, out, err = _run_process(case, scratch)
        else:
            code, out, err = _run_captured(case, scratch)
        seconds = time.monotonic() - started
        after = _snapshot(watched)
        results.append(
            {
                "name": case["name"],
                "code": code,
                "out": out,
                "err": err,
                "seconds": seconds,
                "appeared": sorted(set(after) - set(before)),
                "vanished": sorted(set(before) - set(after)),
            }
        )
    busy.close()
    Path(spec_path).with_suffix(".results.json").write_text(json.dumps(results))


# --- the pytest side ----------------------------------------------------------------------


def _namespaces_work(tmp: Path) -> str | None:
    """``None`` when ``unshare -m`` and tmpfs mounts work here, else why not."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "the unshare and mount commands (util-linux) are not installed"
    probe = tmp / "probe"
    probe.mkdir()
    script = (
        f"mount --make-rprivate / && mount -t tmpfs -o ro,size=4k tmpfs {probe} && "
        f"! touch {probe}/x 2>/dev/null"
    )
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return (
            "cannot mount a read-only tmpfs in a private mount namespace "
            f"(unshare -m, as uid {os.getuid()}): {result.stderr.strip() or result.returncode}"
        )
    return None


def _run_cases(tmp: Path, cases: list[Case], spec_extra: dict[str, Any]) -> dict[str, Any]:
    why = _namespaces_work(tmp)
    if why is not None:
        pytest.fail(f"the injected-failure walk cannot run here: {why}")
    spec = {
        "cases": [asdict(c) for c in cases],
        "work": str(tmp / "work"),
        **spec_extra,
    }
    (tmp / "work").mkdir(exist_ok=True)
    spec_path = tmp / "spec.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [
            "unshare",
            "-m",
            sys.executable,
            "-c",
            f"from tests.test_failures import drive; drive({str(spec_path)!r})",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"driver failed:\n{proc.stdout}\n{proc.stderr}"
    results = json.loads(spec_path.with_suffix(".results.json").read_text())
    return {r["name"]: r for r in results}


def _check(case: Case, result: dict[str, Any]) -> list[str]:
    """Every way ``result`` falls short of the contract, for one readable failure report."""
    problems = []
    err = result["err"]
    lines = err.splitlines()
    if result["code"] != 2:
        problems.append(f"exit {result['code']}, expected 2")
    if "Traceback" in err or "Traceback" in result["out"]:
        problems.append("a traceback was printed")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        problems.append(f"not one 'error:' line: {err!r}")
    if "internal error" in err:
        problems.append("reported as an internal error")
    if case.expect not in err:
        problems.append(f"the message does not name {case.expect!r}: {err.strip()!r}")
    if case.hint is not None and case.hint not in err:
        problems.append(f"no hint {case.hint!r}: {err.strip()!r}")
    if case.stdout_file is None and result["out"] and not case.report:
        problems.append(f"printed on standard output: {result['out'][:200]!r}")
    appeared = [
        path
        for path, _size in result["appeared"]
        if path != case.stdout_file and not path.endswith(case.may_leave or ("\0",))
    ]
    if appeared:
        problems.append(f"left behind: {appeared}")
    if result["vanished"]:
        problems.append(f"removed or changed: {result['vanished']}")
    return problems


def _assert_all(cases: list[Case], results: dict[str, Any]) -> None:
    failures = {}
    for case in cases:
        problems = _check(case, results[case.name])
        if problems:
            command = " ".join(a if len(a) < 80 else a[:40] + "..." for a in case.argv)
            failures[f"{case.name} ({command})"] = problems
    assert not failures, json.dumps(failures, indent=1)
    kinds = {c.failure for c in cases}
    for kind in kinds:  # every kind ran at least once as a real process
        assert any(c.process for c in cases if c.failure == kind), kind


# --- inputs ---------------------------------------------------------------------------------


@dataclass
class Inputs:
    root: Path
    home: Path
    model: Path
    key: Path
    pub: Path
    log: Path
    log_key: Path
    checkpoint: Path
    entry: Path
    proof: Path
    export: Path
    witness_key: Path
    encrypted: Path
    encrypted_file: Path
    identity: Path
    checkpoint_pt: Path
    shares: Path
    folder: Path  # an existing folder, where a file is expected
    readonly: Path
    full: Path
    remounted: Path


def _cli(*argv: str) -> None:
    from weightvault.cli.app import run

    assert run(list(argv)) == 0, argv


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inputs]:
    root = tmp_path_factory.mktemp("failures")
    home = root / "home"
    home.mkdir()
    saved = os.environ.get("WEIGHTVAULT_HOME")
    os.environ["WEIGHTVAULT_HOME"] = str(home)
    model = root / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(os.urandom(40_000))
    (model / "config.json").write_text('{"layers": 2}')
    key, pub = write_ec_key_pair(root)
    _cli("sign", str(model), "--key", str(key))
    log, log_key = root / "audit.db", root / "log.key"
    _cli("log", "keygen", "--name", "example.com/log", "--out", str(log_key))
    _cli("log", "init", str(log), "--origin", "example.com/log")
    entry = root / "entry0"
    entry.write_bytes(b'{"event":"register"}')
    _cli("log", "append", str(log), str(entry))
    checkpoint = root / "cp1"
    _cli("log", "checkpoint", str(log), "--key", str(log_key), "--out", str(checkpoint))
    proof = root / "e0.tlog-proof"
    _cli("log", "prove", str(log), "--index", "0", "--out", str(proof))
    export = root / "export.json"
    _cli("log", "export", str(log), "--out", str(export))
    witness_key = root / "witness.key"
    _cli("witness", "keygen", "--name", "w.example.com/w1", "--out", str(witness_key))
    encrypted = root / "model.wvenc"
    _cli("encrypt", str(model), "-o", str(encrypted))
    encrypted_file = root / "weights.bin.wvenc"
    _cli("encrypt", str(model / "weights.bin"), "-o", str(encrypted_file))
    identity = root / "id.x25519"
    _cli("x25519-keygen", "-o", str(identity))
    shares = root / "shares"
    kek = str(home / "keyring.kek")
    _cli("breakglass", "split", "--kek", kek, "-k", "2", "-n", "3", "-o", str(shares))
    checkpoint_pt = root / "tiny.pt"
    import torch

    torch.save({"w": torch.arange(6, dtype=torch.float32)}, checkpoint_pt)
    folder = root / "a-folder"
    folder.mkdir()
    mounts = {}
    for name in ("readonly", "full", "remounted"):
        mounts[name] = root / name
        mounts[name].mkdir()
    yield Inputs(
        root,
        home,
        model,
        key,
        pub,
        log,
        log_key,
        checkpoint,
        entry,
        proof,
        export,
        witness_key,
        encrypted,
        encrypted_file,
        identity,
        checkpoint_pt,
        shares,
        folder,
        mounts["readonly"],
        mounts["full"],
        mounts["remounted"],
    )
    if saved is None:
        os.environ.pop("WEIGHTVAULT_HOME", None)
    else:
        os.environ["WEIGHTVAULT_HOME"] = saved


def _offline_cases(i: Inputs) -> list[Case]:
    ro, full, rm = str(i.readonly), str(i.full), str(i.remounted)
    missing = str(i.root / "no-such-file")
    folder = str(i.folder)
    model, key, pub = str(i.model), str(i.key), str(i.pub)
    log, lkey, lpub = str(i.log), str(i.log_key), f"{i.log_key}.pub"
    cp, enc, encf = str(i.checkpoint), str(i.encrypted), str(i.encrypted_file)
    share1, share2 = str(i.shares / "share-1.txt"), str(i.shares / "share-2.txt")
    kek = str(i.home / "keyring.kek")
    ro_model, ro_log, ro_enc = f"{rm}/model", f"{rm}/audit.db", f"{rm}/model.wvenc"
    fresh_sig = str(i.root / "never-written.sig")
    full_log = f"{full}/audit.db"
    c = Case
    return [
        # sign / verify / digest
        c("sign-ro", ["sign", model, "--key", key, "--signature", f"{ro}/m.sig"], "readonly", ro,
          "choose another with --signature", process=True),
        c("sign-ro-model", ["sign", ro_model, "--key", key, "--force"], "readonly", rm),
        c("sign-full", ["sign", model, "--key", key, "--signature", f"{full}/m.sig"], "full",
          f"{full}/m.sig", "choose another with --signature", process=True),
        c("sign-missing", ["sign", missing, "--key", key], "missing", missing, process=True),
        c("sign-key-missing", ["sign", model, "--key", missing, "--signature", fresh_sig],
          "missing", missing),
        c("sign-key-dir", ["sign", model, "--key", folder, "--signature", fresh_sig],
          "directory", folder, process=True),
        c("verify-missing", ["verify", missing, "--key", pub], "missing", missing),
        c("verify-key-dir", ["verify", model, "--key", folder], "directory", folder),
        c("verify-signature-dir", ["verify", model, "--key", pub, "--signature", folder],
          "directory", folder),
        c("digest-missing", ["digest", missing], "missing", missing),
        c("digest-stdout-full", ["digest", model, "--json"], "full",
          "no space left on device while writing <standard output>",
          stdout_file=f"{full}/digest.json"),
        c("log-prove-stdout-full", ["log", "prove", log, "--index", "0"], "full",
          "no space left on device while writing <standard output>",
          stdout_file=f"{full}/proof", process=True),
        # scan / convert
        c("scan-missing", ["scan", missing], "missing", missing, report=True),
        c("convert-ro", ["convert", str(i.checkpoint_pt), "-o", f"{ro}/x.safetensors"],
          "readonly", ro, "choose another with -o"),
        c("convert-full", ["convert", str(i.checkpoint_pt), "-o", f"{full}/x.safetensors"],
          "full", f"{full}/x.safetensors", "choose another with -o"),
        c("convert-missing", ["convert", missing, "-o", str(i.root / "x.safetensors")],
          "missing", missing),
        c("convert-out-dir", ["convert", str(i.checkpoint_pt), "-o", folder], "directory",
          folder),
        # encryption
        c("encrypt-ro", ["encrypt", model, "-o", f"{ro}/m.wvenc"], "readonly", ro,
          "choose another with -o"),
        c("encrypt-full", ["encrypt", model, "-o", f"{full}/m.wvenc"], "full", f"{full}/m.wvenc",
          "choose another with -o"),
        c("encrypt-file-full", ["encrypt", f"{model}/weights.bin", "-o", f"{full}/w.wvenc"],
          "full", f"{full}/w.wvenc", "choose another with -o"),
        c("encrypt-missing", ["encrypt", missing, "-o", str(i.root / "x.wvenc")], "missing",
          missing),
        c("encrypt-to-dir", ["encrypt", model, "-o", str(i.root / "y.wvenc"), "--to", folder],
          "directory", folder),
        c("decrypt-ro", ["decrypt", enc, "-o", f"{ro}/dec"], "readonly", ro,
          "choose another with -o"),
        c("decrypt-full", ["decrypt", enc, "-o", f"{full}/dec"], "full", f"{full}/dec",
          "choose another with -o", process=True),
        c("decrypt-file-full", ["decrypt", encf, "-o", f"{full}/w.bin"], "full",
          f"{full}/w.bin", "choose another with -o"),
        c("decrypt-missing", ["decrypt", missing], "missing", missing),
        c("decrypt-identity-dir", ["decrypt", enc, "-o", str(i.root / "d2"), "-i", folder],
          "directory", folder),
        c("rewrap-ro", ["rewrap", enc, "--to", "keyring", "-o", f"{ro}/rw"], "readonly", ro,
          "choose another with -o"),
        c("rewrap-in-place-ro", ["rewrap", ro_enc, "--to", "keyring"], "readonly", rm),
        c("rewrap-full", ["rewrap", enc, "--to", "keyring", "-o", f"{full}/rw"], "full",
          f"{full}/rw", "choose another with -o"),
        c("rewrap-missing", ["rewrap", missing, "--to", "keyring"], "missing", missing),
        c("inspect-missing", ["inspect", missing], "missing", missing),
        c("x25519-keygen-ro", ["x25519-keygen", "-o", f"{ro}/id"], "readonly", ro,
          "choose another with -o"),
        c("x25519-keygen-full", ["x25519-keygen", "-o", f"{full}/id"], "full", f"{full}/id",
          "choose another with -o"),
        c("x25519-keygen-dir", ["x25519-keygen", "-o", folder], "directory", folder),
        c("keygen-ro", ["keygen", "-o", f"{ro}/k.pem"], "readonly", ro, "choose another with -o"),
        c("keygen-full", ["keygen", "-o", f"{full}/k.pem"], "full", f"{full}/k.pem",
          "choose another with -o"),
        c("keygen-dir", ["keygen", "-o", folder], "directory", folder),
        c("keygen-passphrase-missing", ["keygen", "-o", str(i.root / "k2.pem"),
                                        "--passphrase-file", missing], "missing", missing),
        # the custody service
        c("serve-port", ["serve", "--data", str(i.root / "srv"), "--port", "{busy_port}"], "port",
          "already in use", "choose another with --port", process=True),
        c("serve-data-file", ["serve", "--data", key, "--port", "{busy_port}"], "directory",
          key, "--data must be a folder"),
        c("serve-data-ro", ["serve", "--data", f"{ro}/srv", "--port", "{free_port}"], "readonly",
          ro, "choose another with --data"),
        c("serve-data-full", ["serve", "--data", f"{full}/srv", "--port", "{free_port}"], "full",
          f"{full}/srv", "choose another with --data"),
        # transparency log
        c("log-keygen-ro", ["log", "keygen", "--name", "e.com/l", "--out", f"{ro}/k"], "readonly",
          ro, "choose another with --out"),
        c("log-keygen-full", ["log", "keygen", "--name", "e.com/l", "--out", f"{full}/k"],
          "full", f"{full}/k", "choose another with --out"),
        c("log-keygen-dir", ["log", "keygen", "--name", "e.com/l", "--out", folder],
          "directory", folder),
        c("log-vkey-missing", ["log", "vkey", "--key", missing], "missing", missing),
        c("log-init-ro", ["log", "init", f"{ro}/l.db", "--origin", "e.com/l"], "readonly", ro,
          process=True),
        c("log-init-full", ["log", "init", f"{full}/l.db", "--origin", "e.com/l"], "full",
          f"{full}/l.db"),
        c("log-init-no-folder", ["log", "init", f"{missing}/l.db", "--origin", "e.com/l"],
          "missing", missing),
        c("log-init-dir", ["log", "init", folder, "--origin", "e.com/l"], "directory", folder),
        c("log-append-ro", ["log", "append", ro_log, "--text", "x"], "readonly", rm),
        c("log-append-full", ["log", "append", full_log, "--text", "x" * 20000], "full",
          full_log, may_leave=("-wal", "-shm")),  # SQLite's journals of the existing log
        c("log-append-missing", ["log", "append", missing, "--text", "x"], "missing", missing),
        c("log-checkpoint-ro", ["log", "checkpoint", log, "--key", lkey, "--out", f"{ro}/cp"],
          "readonly", ro, "choose another with --out"),
        c("log-checkpoint-full", ["log", "checkpoint", log, "--key", lkey, "--out",
                                  f"{full}/cp"], "full", f"{full}/cp",
          "choose another with --out"),
        c("log-checkpoint-key-dir", ["log", "checkpoint", log, "--key", folder], "directory",
          folder),
        c("log-add-cosignatures-missing", ["log", "add-cosignatures", log, missing, "--key",
                                           lpub], "missing", missing),
        c("log-prove-ro", ["log", "prove", log, "--index", "0", "--out", f"{ro}/p"], "readonly",
          ro, "choose another with --out"),
        c("log-prove-full", ["log", "prove", log, "--index", "0", "--out", f"{full}/p"], "full",
          f"{full}/p", "choose another with --out"),
        c("log-prove-ro-log", ["log", "prove", ro_log, "--index", "0"], "readonly", rm),
        c("log-verify-missing", ["log", "verify", missing, "--key", lpub], "missing", missing),
        c("log-verify-dir", ["log", "verify", folder, "--key", lpub], "directory", folder),
        c("log-verify-proof-dir", ["log", "verify-proof", str(i.proof), "--entry", folder,
                                   "--key", lpub], "directory", folder),
        c("log-export-ro", ["log", "export", log, "--out", f"{ro}/x.json"], "readonly", ro,
          "choose another with --out"),
        c("log-export-full", ["log", "export", log, "--out", f"{full}/x.json"], "full",
          f"{full}/x.json", "choose another with --out"),
        c("log-export-missing", ["log", "export", missing, "--out", str(i.root / "x.json")],
          "missing", missing),
        c("log-import-ro", ["log", "import", str(i.export), f"{ro}/n.db", "--key", lpub],
          "readonly", ro),
        c("log-import-full", ["log", "import", str(i.export), f"{full}/n.db", "--key", lpub],
          "full", f"{full}/n.db"),
        c("log-import-missing", ["log", "import", missing, str(i.root / "n.db"), "--key", lpub],
          "missing", missing),
        c("witness-keygen-ro", ["witness", "keygen", "--name", "w.e.com/w", "--out", f"{ro}/w"],
          "readonly", ro, "choose another with --out"),
        c("witness-keygen-full", ["witness", "keygen", "--name", "w.e.com/w", "--out",
                                  f"{full}/w"], "full", f"{full}/w", "choose another with --out"),
        c("witness-cosign-state-ro", ["witness", "cosign", cp, "--key", str(i.witness_key),
                                      "--log-key", lpub, "--state", f"{ro}/state"], "readonly",
          ro, "choose another with --state"),
        c("witness-cosign-full", ["witness", "cosign", cp, "--key", str(i.witness_key),
                                  "--log-key", lpub, "--state", str(i.root / "st"), "--out",
                                  f"{full}/cs"], "full", f"{full}/cs",
          "choose another with --out"),
        c("witness-cosign-missing", ["witness", "cosign", missing, "--key", str(i.witness_key),
                                     "--log-key", lpub, "--state", str(i.root / "st2")],
          "missing", missing),
        c("witness-verify-dir", ["witness", "verify", folder, "--log-key", lpub,
                                 "--witness-key", f"{i.witness_key}.pub"], "directory", folder),
        # custody files offline
        c("audit-verify-missing", ["audit", "verify", missing, "--log-key", lpub], "missing",
          missing),
        c("audit-verify-dir", ["audit", "verify", folder, "--log-key", lpub], "directory",
          folder),
        c("breakglass-split-ro", ["breakglass", "split", "--kek", kek, "-k", "2", "-n", "3", "-o",
                                  f"{ro}/shares"], "readonly", ro, "choose another with -o"),
        c("breakglass-split-full", ["breakglass", "split", "--kek", kek, "-k", "2", "-n", "3",
                                    "-o", f"{full}/shares"], "full", f"{full}/shares",
          "choose another with -o"),
        c("breakglass-split-missing", ["breakglass", "split", "--kek", missing, "-k", "2", "-n",
                                       "3", "-o", str(i.root / "sh")], "missing", missing),
        c("breakglass-split-kek-dir", ["breakglass", "split", "--kek", folder, "-k", "2", "-n",
                                       "3", "-o", str(i.root / "sh")], "directory", folder),
        c("breakglass-recover-ro", ["breakglass", "recover", share1, share2, "-o", f"{ro}/kek"],
          "readonly", ro, "choose another with -o"),
        c("breakglass-recover-full", ["breakglass", "recover", share1, share2, "-o",
                                      f"{full}/kek"], "full", f"{full}/kek",
          "choose another with -o"),
        c("breakglass-recover-missing", ["breakglass", "recover", share1, missing, "-o",
                                         str(i.root / "kek")], "missing", missing),
        # the tamper lab (the refusals that come before any training)
        c("tamper-defend-ro", ["tamper", "defend", "-o", f"{ro}/m.safetensors"], "readonly", ro,
          "choose another with -o"),
        c("tamper-report-missing", ["tamper", "report", missing, "-o", folder], "missing",
          missing),
        c("tamper-attack-suite-dir", ["tamper", "attack", "--suite", folder, "-o",
                                      str(i.root / "r.json")], "directory", folder),
    ]


def test_every_command_fails_cleanly_on_system_failures(inputs: Inputs, tmp_path: Path) -> None:
    cases = _offline_cases(inputs)
    assert len({c.name for c in cases}) == len(cases)
    results = _run_cases(
        tmp_path,
        cases,
        {
            "mounts": {
                "readonly": str(inputs.readonly),
                "full": str(inputs.full),
                "remounted": str(inputs.remounted),
            },
            "full_inputs": [str(inputs.log)],
            "remounted_inputs": [str(inputs.model), str(inputs.log), str(inputs.encrypted)],
        },
    )
    _assert_all(cases, results)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The custody service (a real uvicorn process) with its cast, from the custody tests."""
    from tests.custody.helpers import build_world, start_service

    root = tmp_path_factory.mktemp("failures-custody")
    service = start_service(root / "data")
    try:
        yield build_world(root, service)
    finally:
        service.stop()


def _vault_cases(i: Inputs, world: Any) -> list[Case]:
    ro, full = str(i.readonly), str(i.full)
    missing = str(i.root / "no-such-file")
    folder = str(i.folder)
    people = world.people
    rita = ["--token", people["rita"].token, "--identity", str(people["rita"].identity_path)]
    audrey = ["--token", people["audrey"].token]
    olivia = ["--token", people["olivia"].token]
    admin = ["--token", people["admin"].token]
    first, second = world.granted(), world.granted()
    request = world.client("rita").request("llama", "v1", "evaluation of the release", 600, 1 << 20)
    url = {"WEIGHTVAULT_URL": world.service.url}
    c = Case
    return [
        c("vault-login-home-ro", ["vault", "login", "--url", world.service.url, *admin],
          "readonly", ro, env={"WEIGHTVAULT_HOME": ro}, process=True),
        c("vault-pull-ro", ["vault", "pull", first, "-o", f"{ro}/pulled", *rita], "readonly", ro,
          "choose another with -o", env=url),
        c("vault-pull-full", ["vault", "pull", second, "-o", f"{full}/pulled", *rita], "full",
          f"{full}/pulled", "choose another with -o", env=url, process=True),
        c("vault-pull-identity-dir", ["vault", "pull", first, "-o", str(i.root / "p"),
                                      "--identity", folder, "--token", people["rita"].token],
          "directory", folder, env=url),
        c("vault-audit-ro", ["vault", "audit", "-o", f"{ro}/audit.json", *audrey], "readonly",
          ro, "choose another with -o", env=url),
        c("vault-audit-full", ["vault", "audit", "-o", f"{full}/audit.json", *audrey], "full",
          f"{full}/audit.json", "choose another with -o", env=url),
        c("vault-push-missing", ["vault", "push", missing, "--model", "llama", "--version", "v9",
                                 "--signature", str(i.model / "model.sig"), *olivia], "missing",
          missing, env=url, process=True),
        c("vault-push-signature-dir", ["vault", "push", str(i.model), "--model", "llama",
                                       "--version", "v9", "--signature", folder, *olivia],
          "directory", folder, env=url, process=True),
        c("vault-principal-key-missing", ["vault", "principal", "zoe", "--role", "approver",
                                          "--approval-key", missing, *admin], "missing", missing,
          env=url),
        c("vault-model-policy-dir", ["vault", "model", "m2", "--policy", folder, *olivia],
          "directory", folder, env=url),
        c("vault-approve-key-missing", ["vault", "approve", request["id"], "--key", missing,
                                        "--token", people["alice"].token], "missing", missing,
          env=url),
    ]


def test_vault_commands_fail_cleanly_on_system_failures(
    inputs: Inputs, world: Any, tmp_path: Path
) -> None:
    cases = _vault_cases(inputs, world)
    results = _run_cases(
        tmp_path,
        cases,
        {
            "mounts": {
                "readonly": str(inputs.readonly),
                "full": str(inputs.full),
                "remounted": str(inputs.remounted),
            },
            "full_inputs": [],
            "remounted_inputs": [],
        },
    )
    _assert_all(cases, results)
