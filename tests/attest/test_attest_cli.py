"""``weightvault attest`` and ``verify --require-attestation``: exit codes and one-line refusals."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.attest.conftest import eval_predicate, provenance_predicate
from tests.signing._pki import Pki

from weightvault.cli.app import run


def _write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def _err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_add_list_verify_and_require(
    tmp_path: Path,
    model: Path,
    keys: tuple[Path, Path],
    other_keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    private, public = map(str, keys)
    assert run(["sign", str(model), "--key", private]) == 0
    capsys.readouterr()
    # No attestation yet: verify --require-attestation refuses, naming the reason.
    code = run(["verify", str(model), "--key", public, "--require-attestation", "eval-results"])
    assert code == 1
    assert "attestation refused (missing)" in _err_line(capsys)

    results = _write(tmp_path / "eval.json", eval_predicate())
    assert run(["attest", "add", str(model), str(results), "--predicate", "eval-results",
                "--key", private]) == 0  # fmt: skip
    assert "attested eval-results" in capsys.readouterr().out
    card = tmp_path / "card.md"
    card.write_text("# tiny-model\n\nTwo layers.\n")
    assert run(["attest", "add", str(model), str(card), "--predicate", "model-card",
                "--key", private, "--json"]) == 0  # fmt: skip
    added = json.loads(capsys.readouterr().out)
    assert added["kind"] == "model-card"

    assert run(["attest", "list", str(model), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["attestations"]
    assert sorted(a["kind"] for a in listed) == ["eval-results", "model-card"]
    assert all(a["verified"] is False for a in listed)

    assert run(["attest", "verify", str(model), "--key", public]) == 0
    out = capsys.readouterr().out
    assert "ok eval-results" in out and "ok model-card" in out
    assert run(["verify", str(model), "--key", public, "--require-attestation", "eval-results",
                "--require-attestation", "model-card"]) == 0  # fmt: skip
    assert "eval-results attestation OK" in capsys.readouterr().out
    # Another key: each attestation is refused as an unlisted signer.
    assert run(["attest", "verify", str(model), "--key", str(other_keys[1])]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("refused (unlisted-signer)") == 2
    assert "2 of 2 attestations refused" in captured.err
    # A kind that is not there.
    code = run(["attest", "verify", str(model), "--key", public, "--predicate",
                "training-provenance"])  # fmt: skip
    assert code == 1
    assert "(missing)" in capsys.readouterr().err
    # The model changes and is re-signed: the attestations are about the old digest.
    (model / "weights.bin").write_bytes(b"retrained")
    assert run(["sign", str(model), "--key", private, "--force"]) == 0
    capsys.readouterr()
    code = run(["verify", str(model), "--key", public, "--require-attestation", "eval-results"])
    assert code == 1
    assert "attestation refused (wrong-subject)" in _err_line(capsys)


def test_altered_attestation_file_is_refused(
    tmp_path: Path, model: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = {"accuracy": 0.95, "refusal_rate": 0.01}
    results = _write(tmp_path / "eval.json", eval_predicate(metrics=metrics))
    assert run(["sign", str(model), "--key", str(keys[0])]) == 0
    out = tmp_path / "eval.sigstore.json"
    assert run(["attest", "add", str(model), str(results), "--predicate", "eval-results",
                "--key", str(keys[0]), "-o", str(out)]) == 0  # fmt: skip
    # -o again without --force: refused, nothing replaced.
    before = out.read_bytes()
    assert run(["attest", "add", str(model), str(results), "--predicate", "eval-results",
                "--key", str(keys[0]), "-o", str(out)]) == 2  # fmt: skip
    assert "already exists" in _err_line(capsys) and out.read_bytes() == before
    bundle = json.loads(before)
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["metrics"]["accuracy"] = 0.99
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    folder = tmp_path / "tiny-model.attestations"
    folder.mkdir()
    _write(folder / "eval-results-tampered.sigstore.json", bundle)
    code = run(["verify", str(model), "--key", str(keys[1]), "--require-attestation",
                "eval-results"])  # fmt: skip
    assert code == 1
    assert "attestation refused (bad-signature)" in _err_line(capsys)


def test_certificate_identity_and_provenance(
    tmp_path: Path, model: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "corpus"
    dataset.mkdir()
    (dataset / "train.jsonl").write_text('{"text": "a"}\n')
    predicate = _write(tmp_path / "slsa.json", provenance_predicate())
    assert run(["attest", "add", str(model), str(predicate), "--predicate", "training-provenance",
                "--dataset", str(dataset), "--key", str(pki.leaf_key), "--certificate",
                str(pki.leaf), "--chain", str(pki.chain)]) == 0  # fmt: skip
    assert "subject (dataset): corpus" in capsys.readouterr().out
    assert run(["attest", "verify", str(model), "--trust-root", str(pki.root),
                "--identity", pki.email, "--predicate", "training-provenance"]) == 0  # fmt: skip
    capsys.readouterr()
    assert run(["attest", "verify", str(model), "--trust-root", str(pki.root),
                "--identity", "mallory@example.com"]) == 1  # fmt: skip
    assert "refused (unlisted-signer)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["--predicate", "eval-results", "--dataset", "DATA"], 2, "--dataset applies to"),
        (["--predicate", "benchmark"], 2, "'benchmark' is not one of"),
        (["--predicate", "eval-results", "--log", "x.db"], 2, "--log and --log-key go together"),
    ],
)
def test_usage_errors(
    tmp_path: Path,
    model: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    words: str,
) -> None:
    results = _write(tmp_path / "eval.json", eval_predicate())
    argv = [str(tmp_path) if a == "DATA" else a for a in argv]
    assert run(["attest", "add", str(model), str(results), "--key", str(keys[0]), *argv]) == code
    assert words in _err_line(capsys)
    assert not (tmp_path / "tiny-model.attestations").exists()


def test_malformed_predicate_file(
    tmp_path: Path, model: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _write(tmp_path / "eval.json", {**eval_predicate(), "metrics": {"accuracy": "high"}})
    code = run(["attest", "add", str(model), str(broken), "--predicate", "eval-results",
                "--key", str(keys[0])])  # fmt: skip
    assert code == 2
    assert "predicate.metrics.accuracy: expected a number" in _err_line(capsys)
    (tmp_path / "bad.json").write_text('{"suite": "a", "suite": "b"}')
    code = run(["attest", "add", str(model), str(tmp_path / "bad.json"), "--predicate",
                "eval-results", "--key", str(keys[0])])  # fmt: skip
    assert code == 2
    assert "duplicate key" in _err_line(capsys)
    assert not (tmp_path / "tiny-model.attestations").exists()


def test_sign_row_groups_and_read_a_subset(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "corpus"
    dataset.mkdir()
    table = pa.table({"id": list(range(3000)), "text": [f"row {i}" for i in range(3000)]})
    pq.write_table(table, dataset / "train.parquet", row_group_size=1000)
    assert run(["sign", str(dataset), "--key", str(keys[0]), "--row-groups", "--json"]) == 0
    signed = json.loads(capsys.readouterr().out)
    assert Path(signed["row_groups_attestation"]).parent.name == "corpus.attestations"
    rows = ["attest", "rows", str(dataset), "--file", "train.parquet", "--key", str(keys[1])]
    assert run([*rows, "--group", "0", "--group", "2"]) == 0
    assert "row groups 0, 2 OK (2000 rows)" in capsys.readouterr().out
    start = pq.ParquetFile(dataset / "train.parquet").metadata.row_group(1).column(1)
    with open(dataset / "train.parquet", "r+b") as handle:
        handle.seek(start.data_page_offset + 10)
        byte = handle.read(1)
        handle.seek(start.data_page_offset + 10)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert run([*rows, "--group", "0", "--group", "2"]) == 0
    capsys.readouterr()
    assert run([*rows, "--group", "1"]) == 1
    assert "row group 1" in _err_line(capsys)
    assert run([*rows, "--group", "7"]) == 2
    assert "has 3 row groups" in _err_line(capsys)
    # A folder without shards: refused before anything is signed.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    assert run(["sign", str(tmp_path / "notes"), "--key", str(keys[0]), "--row-groups"]) == 2
    assert "no Parquet, Arrow or JSONL files" in _err_line(capsys)
    assert not (tmp_path / "notes" / "model.sig").exists()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux only)")
def test_interrupting_attest_add_leaves_nothing_behind(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """SIGINT / SIGTERM at random points of ``attest add`` (hashing a 24 MB model, then
    creating MODEL.attestations/ and the file) and of ``sign --row-groups`` (the signature,
    then the attestation): the folder is as it was, or complete."""
    from tests.test_interrupts import Scenario, _check, _run_all

    results = _write(tmp_path / "eval.json", eval_predicate())

    def prepare(point: Path) -> list[str]:
        model = point / "model"
        model.mkdir()
        for index in range(3):
            (model / f"shard-{index}.bin").write_bytes(os.urandom(8 << 20))
        return ["attest", "add", str(model), str(results), "--predicate", "eval-results",
                "--key", str(keys[0])]  # fmt: skip

    def watch(point: Path) -> Path:
        return point / "model.attestations"

    def complete(point: Path) -> None:
        [stored] = list((point / "model.attestations").iterdir())
        assert stored.name.startswith("eval-results-") and json.loads(stored.read_bytes())

    def prepare_dataset(point: Path) -> list[str]:
        dataset = point / "corpus"
        dataset.mkdir()
        line = b'{"text": "' + b"x" * 90 + b'"}\n'
        for index in range(2):
            (dataset / f"part-{index}.jsonl").write_bytes(line * 120_000)
        return ["sign", str(dataset), "--key", str(keys[0]), "--row-groups"]

    def dataset_done(point: Path) -> None:
        assert json.loads((point / "corpus" / "model.sig").read_bytes())
        [stored] = list((point / "corpus.attestations").iterdir())
        assert stored.name.startswith("row-groups-")

    scenarios = [
        Scenario("attest-add", prepare, watch, complete, 12),
        Scenario(
            "sign-row-groups",
            prepare_dataset,
            lambda point: point / "corpus.attestations",
            dataset_done,
            10,
        ),
    ]
    _check(_run_all(scenarios, tmp_path, seed=17), min_mid_work={"attest-add": 1})


def test_verify_json_carries_the_required_attestations(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "corpus"
    dataset.mkdir()
    (dataset / "train.jsonl").write_text("".join(f'{{"n": {i}}}\n' for i in range(50)))
    assert run(["sign", str(dataset), "--key", str(keys[0]), "--row-groups",
                "--lines-per-group", "20"]) == 0  # fmt: skip
    capsys.readouterr()
    assert run(["verify", str(dataset), "--key", str(keys[1]), "--require-attestation",
                "row-groups", "--json"]) == 0  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True
    record = document["attestations"]["row-groups"]
    assert record["subject"]["role"] == "dataset"
    assert record["subject"]["root_digest"] == document["root_digest"]
    groups = record["predicate"]["files"][0]["groups"]
    assert [g["rows"] for g in groups] == [20, 20, 10]


@pytest.mark.parametrize("command", ["list", "verify"])
def test_a_missing_model_is_named(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str], command: str
) -> None:
    extra = ["--key", str(keys[1])] if command == "verify" else []
    assert run(["attest", command, str(tmp_path / "nope"), *extra]) == 2
    assert "nope: no such file or folder" in _err_line(capsys)


def test_logged_attestation_and_require_log(
    tmp_path: Path, model: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    name = "example.com/attestations"
    log_key, database = tmp_path / "log.key", tmp_path / "log.db"
    assert run(["log", "keygen", "--name", name, "--out", str(log_key)]) == 0
    assert run(["log", "init", str(database), "--origin", name]) == 0
    results = _write(tmp_path / "eval.json", eval_predicate())
    card = _write(tmp_path / "card.json", {"content": "# tiny", "mediaType": "text/markdown"})
    logging = ["--log", str(database), "--log-key", str(log_key)]
    assert run(["attest", "add", str(model), str(results), "--predicate", "eval-results",
                "--key", str(keys[0]), *logging]) == 0  # fmt: skip
    assert run(["attest", "add", str(model), str(card), "--predicate", "model-card",
                "--key", str(keys[0])]) == 0  # fmt: skip
    capsys.readouterr()
    verify = ["attest", "verify", str(model), "--key", str(keys[1]), "--require-log",
              "--log-key", f"{log_key}.pub"]  # fmt: skip
    assert run([*verify, "--predicate", "eval-results"]) == 0
    assert "ok eval-results" in capsys.readouterr().out
    assert run(verify) == 1  # the model card was not logged
    captured = capsys.readouterr()
    assert "refused (not-logged): model-card-" in captured.out
    assert "1 of 2 attestations refused" in captured.err
    assert run([*verify[:-3], "--log-key", f"{log_key}.pub"]) == 2
    assert "--require-log and --log-key go together" in _err_line(capsys)
