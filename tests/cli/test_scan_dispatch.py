"""The ``weightvault`` console script runs ``scan`` without Typer, byte for byte like Typer does.

``scan`` has one definition (:mod:`weightvault.cli.scan`: its options, parsing and behaviour);
the console script parses its command line with a small parser (no Typer, click or Rich at
start-up) and hands to click only what that parser leaves to it. The reference is the Typer
command (``weightvault.cli.app.run(["scan", ...])``). Both run as subprocesses in the same folder
and environment (stdin closed, so Rich sees no terminal on either side) and must print the same
stdout and stderr and exit with the same code, for findings, errors and usage errors alike; and
whatever the small parser accepts, click must parse to the same options.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scan"))

from scan_corpus import build_corpus

CONSOLE_SCRIPT = Path(sys.executable).with_name("weightvault")
TYPER = "import sys; from weightvault.cli.app import run; sys.exit(run(sys.argv[1:]))"
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def _bu(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def _global(module: str, name: str) -> bytes:
    """A protocol-4 pickle that imports ``module.name`` and stops (nothing is called)."""
    return b"\x80\x04" + _bu(module) + _bu(name) + b"\x93."


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dispatch")
    corpus = build_corpus(
        root / "corpus", only={"torch_zip_payload.pt", "state_dict.pt", "model.safetensors"}
    )
    (root / "clean.pkl").write_bytes(pickle.dumps({"a": [1, 2]}))
    (root / "evil.pkl").write_bytes(_global("os", "system"))
    (root / "custom.pkl").write_bytes(_global("mypkg.layers", "Block"))
    (root / "broken.pkl").write_bytes(b"\x80\x04\x8c\x05ab")  # truncated inside a string
    (root / "bad:smile:.safetensors").write_bytes(b"\x10" + b"\x00" * 7 + b"{")
    (root / "unreadable.pkl").write_bytes(pickle.dumps(1))
    (root / "unreadable.pkl").chmod(0)
    os.mkfifo(root / "fifo")  # opening it would block: it must not be opened at all
    model = root / "model"
    model.mkdir()
    (model / "good.pkl").write_bytes(pickle.dumps([1.5, "x"]))
    (model / "custom.pkl").write_bytes(_global("mypkg.layers", "Block"))
    for sample in corpus:
        (model / sample.name).write_bytes(sample.path.read_bytes())
    (model / "config.json").write_text('{"hidden": 64}')
    clean = root / "clean-model"
    clean.mkdir()
    (clean / "a.pkl").write_bytes(pickle.dumps({"w": [0.5] * 4}))
    (clean / "b.json").write_text("{}")
    (root / "empty").mkdir()
    (root / "policy.toml").write_text('[safe]\n"mypkg.layers.*" = "our layers"\n')
    (root / "bad-policy.toml").write_text('[safe]\n"mypkg.layers.*" = 1\n')
    return root


def _run(argv: list[str], cwd: Path, *, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
        timeout=120, env=env,
    )
    return proc.returncode, proc.stdout, proc.stderr


def console_script(args: list[str], cwd: Path) -> tuple[int, str, str]:
    return _run([str(CONSOLE_SCRIPT), "scan", *args], cwd)


def typer_command(args: list[str], cwd: Path) -> tuple[int, str, str]:
    return _run([sys.executable, "-c", TYPER, "scan", *args], cwd)


CASES: list[tuple[str, list[str], int]] = [
    ("clean file", ["clean.pkl"], 0),
    ("dangerous pickle", ["evil.pkl"], 1),
    ("suspicious pickle", ["custom.pkl"], 1),
    ("suspicious pickle allowed", ["--allow", "mypkg.layers.Block", "custom.pkl"], 0),
    ("suspicious pickle allowed by module", ["--allow=mypkg.*", "custom.pkl"], 0),
    ("folder", ["model"], 1),
    ("clean folder", ["clean-model"], 0),
    ("folder written oddly", ["./model//"], 1),
    ("missing path", ["missing.pkl"], 2),
    ("unreadable file", ["unreadable.pkl"], 0 if ROOT_USER else 2),
    ("truncated pickle", ["broken.pkl"], 2),
    ("fifo", ["fifo"], 2),
    ("error line with emoji-like name", ["bad:smile:.safetensors"], 2),
    ("finding wins over error", ["broken.pkl", "evil.pkl", "missing.pkl"], 1),
    ("json", ["--json", "model"], 1),
    ("sarif", ["--sarif", "model", "broken.pkl"], 1),
    ("verbose", ["-v", "clean-model", "clean.pkl"], 0),
    ("verbose long", ["--verbose", "model"], 1),
    ("fail-on dangerous", ["--fail-on", "dangerous", "custom.pkl"], 0),
    ("fail-on dangerous still fails", ["--fail-on", "DANGEROUS", "model"], 1),
    ("options after paths", ["clean.pkl", "--json", "evil.pkl"], 1),
    ("workers", ["--workers", "0", "model"], 1),
    ("bad fail-on", ["--fail-on", "bogus", "clean.pkl"], 2),
    ("fail-on clean", ["--fail-on", "clean", "clean.pkl"], 2),
    ("json and sarif", ["--json", "--sarif", "clean.pkl"], 2),
    ("workers above range", ["--workers", "65", "clean.pkl"], 2),
    ("workers below range", ["--workers=-1", "clean.pkl"], 2),
    ("workers not a number", ["--workers", "many", "clean.pkl"], 2),
    ("unknown option", ["--bogus", "clean.pkl"], 2),
    ("abbreviated option", ["--jso", "clean.pkl"], 2),
    ("flag with a value", ["--json=1", "clean.pkl"], 2),
    ("option without its value", ["clean.pkl", "--fail-on"], 2),
    ("no paths", [], 2),
    ("path that looks like an option", ["-1"], 2),
    ("double dash", ["--", "-1", "clean.pkl"], 2),
    ("bad allow entry", ["--allow", "bad name", "clean.pkl"], 2),
    ("help in a cluster of short options", ["-vh", "clean.pkl"], 0),
    ("allow value that looks like help", ["--allow=-h", "clean.pkl"], 2),  # not a pattern
    ("fail-on unknown", ["--fail-on", "unknown", "custom.pkl"], 1),
    ("fail-on suspicious is unknown", ["--fail-on", "suspicious", "custom.pkl"], 1),
    ("policy file", ["--policy", "policy.toml", "custom.pkl"], 0),
    ("malformed policy file", ["--policy", "bad-policy.toml", "custom.pkl"], 2),
    ("missing policy file", ["--policy", "missing.toml", "clean.pkl"], 2),
    ("empty folder", ["empty"], 2),
    ("empty folder json", ["--json", "empty", "missing.pkl"], 2),
]


@pytest.mark.parametrize(("args", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_console_script_scan_matches_the_typer_command(
    workdir: Path, args: list[str], code: int
) -> None:
    lean = console_script(args, workdir)
    reference = typer_command(args, workdir)
    assert lean == reference
    assert lean[0] == code
    assert "Traceback" not in lean[2]
    if code == 2 and not lean[1]:  # usage and input errors: one line on stderr
        assert lean[2].startswith("error: ") and len(lean[2].splitlines()) == 1


def test_a_pipe_is_an_error_not_an_empty_clean_file(workdir: Path) -> None:
    """``cat evil.pkl | weightvault scan /dev/stdin`` was "1 clean" (a pipe's size is 0)."""
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "scan", "/dev/stdin"], input=_global("os", "system"),
        capture_output=True, check=False, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == b"error: /dev/stdin: not a regular file (device, socket or FIFO); " \
        b"not read\n"


def _imports(args: list[str], cwd: Path) -> set[str]:
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    _code, _out, err = _run([str(CONSOLE_SCRIPT), *args], cwd, env=env)
    return {
        line.split("|")[-1].strip() for line in err.splitlines() if line.startswith("import time:")
    }


@pytest.mark.parametrize(
    "args", [["clean.pkl"], ["--json", "model"], ["missing.pkl"], ["--fail-on", "bogus", "x"]]
)
def test_scan_skips_typer(workdir: Path, args: list[str]) -> None:
    modules = _imports(["scan", *args], workdir)
    assert "weightvault.scan" in modules
    assert not modules & {"typer", "click", "weightvault.cli.app"}


def test_clean_scan_imports_no_rich_nor_json(workdir: Path) -> None:
    modules = _imports(["scan", "clean.pkl"], workdir)
    assert not modules & {"rich", "json", "pathlib", "shutil"}


def test_refused_arguments_go_to_typer(workdir: Path) -> None:
    modules = _imports(["scan", "--workers", "65", "clean.pkl"], workdir)
    assert "weightvault.cli.app" in modules


def test_scan_help_is_typers(workdir: Path) -> None:
    for flag in ("--help", "-h"):
        code, out, err = console_script(["clean.pkl", flag], workdir)
        assert code == 0 and not err
        assert "Usage: weightvault scan [OPTIONS] PATHS..." in out
        assert "--fail-on" in out and "--workers" in out
        assert (code, out, err) == typer_command([flag], workdir)


def test_version_and_other_commands_go_through_the_new_entry_point(workdir: Path) -> None:
    from weightvault import __version__

    assert _run([str(CONSOLE_SCRIPT), "--version"], workdir) == (
        0, f"weightvault {__version__}\n", ""
    )
    assert _run([sys.executable, "-m", "weightvault", "--version"], workdir)[1] == (
        f"weightvault {__version__}\n"
    )
    code, out, _err = _run([str(CONSOLE_SCRIPT), "digest", "clean-model"], workdir)
    assert code == 0 and "sha256:" in out
    code, _out, err = _run([str(CONSOLE_SCRIPT), "no-such-command"], workdir)
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
    code, out, _err = _run([str(CONSOLE_SCRIPT)], workdir)
    assert "scan" in out and "sign" in out  # no arguments: the command list


@pytest.mark.parametrize(
    "args", [["--bogus", "clean.pkl"], ["--workers", "65", "clean.pkl"], [], ["--help"],
             ["--", "-1", "clean.pkl"], ["--json", "model"]],
)
def test_python_dash_m_weightvault_scan_is_the_same_command(workdir: Path, args: list[str]) -> None:
    """``python -m weightvault scan`` is the console script (there is no second scan entry)."""
    module = _run([sys.executable, "-m", "weightvault", "scan", *args], workdir)
    assert module == console_script(args, workdir)
    assert "Traceback" not in module[2]


def test_the_scan_parser_reads_what_it_accepts_as_click_does(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One definition, two parsers: every command line the console script's parser accepts is
    parsed by click (the Typer command built from the same options) to the same options."""
    import typer
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from typer.main import get_command

    from weightvault.cli.scan import ScanOptions, parse, register

    monkeypatch.chdir(workdir)
    application = typer.Typer()
    register(application)
    command = get_command(application)
    tokens = ["clean.pkl", "model", "./model//", "missing.pkl", "-", "--", "-1", "--json",
              "--sarif", "-v", "--verbose", "-vv", "-h", "--help", "--fail-on",
              "--fail-on=dangerous", "dangerous", "--allow", "--allow=mypkg.*", "--allow=-h",
              "mypkg.*", "--policy", "--policy=policy.toml", "policy.toml", "--workers",
              "--workers=0", "3", "65", "-2", "x", "--workers=x", "--json=1", "--jso", ""]
    accepted = 0

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(tokens), max_size=7))
    def check(argv: list[str]) -> None:
        nonlocal accepted
        ours = parse(argv)
        if ours is None:
            return
        accepted += 1
        params = command.make_context("scan", list(argv)).params
        paths = [str(Path(path)) for path in params.pop("paths")]  # as Typer converts them
        params["allow"] = tuple(params["allow"])
        assert ScanOptions(paths=paths, **params) == ours, argv

    check()
    assert accepted >= 50  # the common forms are read here, not handed to click


def test_display_path_is_what_pathlib_prints() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    from weightvault.scan import display_path

    @given(st.text(alphabet="/.a", max_size=12))
    def check(text: str) -> None:
        assert display_path(text) == str(Path(text))

    check()


def test_unreadable_path_is_clicks_usage_error(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Typer's ``Path`` arguments refuse an existing path that is not readable; so does the lean
    parser, which then lets Typer word it (``os.access`` is faked: the tests may run as root)."""
    from weightvault.cli import run as console_run
    from weightvault.cli.app import run as typer_run

    target = str(workdir / "unreadable.pkl")
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if str(p) == target else real_access(p, mode)
    )
    assert typer_run(["scan", target]) == 2
    reference = capsys.readouterr()
    assert console_run(["scan", target]) == 2
    assert capsys.readouterr() == reference
    assert reference.err == f"error: Invalid value for 'PATHS...': Path {target!r} is not " \
        "readable. (see --help)\n"
