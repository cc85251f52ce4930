"""``weightvault scan`` / ``convert`` from the command line: outputs and exit codes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from weightvault.cli.app import run


def _bu(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    root.mkdir()
    (root / "good.pkl").write_bytes(pickle.dumps({"a": [1, 2]}))
    (root / "custom.pkl").write_bytes(b"\x80\x04" + _bu("mypkg.layers") + _bu("Block") + b"\x93.")
    return root


def test_safe_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.pkl").write_bytes(pickle.dumps([1]))
    assert run(["scan", str(tmp_path / "a.pkl")]) == 0
    assert "1 safe" in capsys.readouterr().out


def test_unknown_fails_by_default_and_fail_on_dangerous_passes(
    model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["scan", str(model)]) == 1
    out = capsys.readouterr().out
    assert "mypkg.layers.Block" in out and "unknown" in out and "[default:unknown]" in out
    assert run(["scan", "--fail-on", "dangerous", str(model)]) == 0
    assert run(["scan", "--fail-on", "unknown", str(model)]) == 1
    assert run(["scan", "--fail-on", "suspicious", str(model)]) == 1  # the old name still works
    assert run(["scan", "--allow", "mypkg.layers.Block", str(model)]) == 0
    assert run(["scan", "--allow", "mypkg.*", str(model)]) == 0


def test_policy_file_trusts_classes_and_is_parsed_strictly(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[safe]\n"mypkg.layers.*" = "our own layers; they only hold tensors"\n')
    assert run(["scan", "--policy", str(policy), str(model)]) == 0
    capsys.readouterr()
    policy.write_text('[safe]\n"mypkg.layers.*" = "ours"\n[trusted]\n"x.y" = "z"\n')
    assert run(["scan", "--policy", str(policy), str(model)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {policy}: unknown key 'trusted' (expected tables: safe, " \
        "safe-reference, unknown, dangerous)\n"
    # a policy cannot downgrade a dangerous verdict
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"\x80\x04" + _bu("os") + _bu("system") + b"\x93.")
    policy.write_text('[safe]\n"os.*" = "we trust os"\n')
    assert run(["scan", "--policy", str(policy), str(evil)]) == 1


def test_empty_folder_is_nothing_to_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert run(["scan", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'empty'}: nothing to scan: the folder " \
        "holds no files\n"
    assert run(["scan", "--json", str(tmp_path / "empty")]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == doc["max_severity"] == "error"


def test_json_of_a_missing_file_reports_an_error_not_safe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["scan", "--json", str(tmp_path / "missing.pkl")]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == doc["max_severity"] == "error"
    assert doc["files"][0]["status"] == doc["files"][0]["severity"] == "error"
    assert doc["summary"]["by_status"] == {"dangerous": 0, "unknown": 0, "error": 1, "safe": 0}


def test_dangerous_exit_1_and_error_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"\x80\x04" + _bu("os") + _bu("system") + b"\x93.")
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"\x80\x04\x8c\x05ab")
    assert run(["scan", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert run(["scan", str(broken), str(evil), str(tmp_path / "missing")]) == 1
    captured = capsys.readouterr()
    assert "os.system" in captured.out
    assert len(captured.err.strip().splitlines()) == 2  # one line per failed file
    assert "Traceback" not in captured.err


def test_json_output(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["scan", "--json", str(model)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == doc["max_severity"] == "unknown"
    assert doc["format_version"] == 2
    assert doc["summary"]["files"] == 2
    by_name = {Path(f["path"]).name: f for f in doc["files"]}
    finding = by_name["custom.pkl"]["findings"][0]
    assert (finding["subject"], finding["severity"], finding["usage"], finding["rule"]) == (
        "mypkg.layers.Block", "unknown", "referenced", "default:unknown"
    )
    assert by_name["good.pkl"]["status"] == "safe"


def test_sarif_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"\x80\x04" + _bu("os") + _bu("system") + b"\x93.")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 4)
    assert run(["scan", "--sarif", str(tmp_path)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == "2.1.0"
    assert doc["$schema"].endswith("sarif-2.1.0.json")
    results = doc["runs"][0]["results"]
    levels = sorted(r["level"] for r in results)
    assert levels == ["error", "error"]
    finding = next(r for r in results if r["ruleId"] != "weightvault/error")
    assert finding["properties"]["decided_by"] == "kb:os.*"
    assert "os.system (referenced)" in finding["message"]["text"]
    rule_ids = {r["id"] for r in doc["runs"][0]["tool"]["driver"]["rules"]}
    assert {r["ruleId"] for r in results} <= rule_ids
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results}
    assert any(u.endswith("evil.pkl") for u in uris)


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["scan", "--json", "--sarif", str(tmp_path)]) == 2
    assert run(["scan", "--fail-on", "bogus", str(tmp_path)]) == 2
    assert run(["scan", "--allow", "bad name", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert all(line.startswith("error: ") for line in err.strip().splitlines())


def test_convert_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    source = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2, 2)}, source)
    out = tmp_path / "m.safetensors"
    assert run(["convert", str(source), "-o", str(out)]) == 0
    assert out.exists()
    assert run(["convert", str(source), "-o", str(out)]) == 2  # exists, no --force
    assert "--force" in capsys.readouterr().err
    assert run(["convert", str(source), "-o", str(out), "--force", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tensors"][0]["name"] == "w"


def test_console_entry_matches_the_typer_command(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``weightvault.cli.run`` (the console script) parses ``scan`` itself; same results."""
    from weightvault.cli import run as console_run

    def main(argv: list[str]) -> int:
        return console_run(["scan", *argv])

    assert main([str(model)]) == 1
    assert "mypkg.layers.Block" in capsys.readouterr().out
    assert main(["--fail-on", "dangerous", str(model)]) == 0
    capsys.readouterr()
    assert main(["--json", str(model)]) == 1
    module_doc = json.loads(capsys.readouterr().out)
    assert run(["scan", "--json", str(model)]) == 1
    assert json.loads(capsys.readouterr().out) == module_doc
    assert main(["--json", "--allow", "mypkg.*", str(model)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["max_severity"] == "safe"
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(1))
    assert main([str(tmp_path / "ok.pkl")]) == 0
    assert capsys.readouterr().out.strip() == "1 file(s) scanned, 1 safe"
    assert main([str(tmp_path / "missing")]) == 2
    assert main(["--fail-on", "bogus", str(tmp_path)]) == 2
    assert main(["--json", "--sarif", str(tmp_path)]) == 2


def test_sign_scan_lists_every_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.keyfiles import write_ec_key_pair

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.pkl").write_bytes(pickle.dumps({"w": [0.5, 1.5]}))
    (model / "a.pkl").write_bytes(b"\x80\x04" + _bu("os") + _bu("system") + b"\x93.")
    (model / "b.pkl").write_bytes(b"\x80\x04" + _bu("mypkg.layers") + _bu("Block") + b"\x93.")
    (model / "c.pkl").write_bytes(b"\x80\x04" + _bu("subprocess") + _bu("Popen") + b"\x93.")
    private, _public = write_ec_key_pair(tmp_path)
    assert run(["sign", str(model), "--key", str(private), "--scan"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: 3 findings: ")
    for name, subject in (("a.pkl", "os.system"), ("b.pkl", "mypkg.layers.Block"),
                          ("c.pkl", "subprocess.Popen")):
        assert f"{name}: " in err and subject in err
    assert not (model / "model.sig").exists()
    # at the dangerous threshold the unknown class no longer counts
    assert run(["sign", str(model), "--key", str(private), "--scan", "--fail-on", "dangerous"]) == 1
    err = capsys.readouterr().err
    assert "2 findings" in err and "mypkg.layers.Block" not in err
