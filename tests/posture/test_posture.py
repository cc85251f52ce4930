"""Posture over a real SL3 deployment: the level it reaches, its SL4 gaps, and one test per
checked control showing that turning it off drops the level and names the gap."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.posture.helpers import Sl3World, build_sl3

from weightvault.cli.app import run
from weightvault.crypt.recipients.keyring import create_keyring
from weightvault.custody.breakglass_files import split_keyring
from weightvault.posture import Deployment, PostureReport, Status, assess, parse_attestation
from weightvault.signing import KeyVerifier


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sl3World]:
    saved = os.environ.get("SOFTHSM2_CONF")
    built, front = build_sl3(tmp_path_factory.mktemp("sl3"))
    yield built
    front.close()
    if saved is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = saved


def _assess(world: Sl3World, deployment: Deployment, attested: bool = True) -> PostureReport:
    if not attested:
        return assess(deployment)
    return assess(
        deployment,
        attestation=world.attestation,
        attestation_verifier=KeyVerifier.from_file(world.attestation_key),
    )


def _result(report: PostureReport, measure_id: str) -> Any:
    return next(r for r in report.results if r.measure.id == measure_id)


def test_sl3_deployment_reaches_sl3_and_lists_its_sl4_gaps(world: Sl3World, tmp_path: Path) -> None:
    report = _assess(world, world.deployment(world.copy(tmp_path / "custody")))
    assert report.level == 3, [
        (r.measure.id, r.evidence) for r in report.results if r.status is Status.FAIL
    ]
    gaps = {g.measure.id for g in report.gaps()}
    assert gaps == {
        "sl4.short-grants",
        "sl4.egress-week",
        "sl4.witness-quorum",
        "sl4.confidential-computing",
        "sl4.physical-security",
        "sl4.third-party-red-teaming",
    }
    # Attested controls are never reported as passed (verified).
    background = _result(report, "sl3.background-checks")
    assert background.status is Status.ATTESTED
    assert "not verified" in background.evidence[0]
    assert "attested as not in place" in _result(report, "sl4.confidential-computing").evidence[0]
    assert "48.00 h" in _result(report, "sl4.egress-week").evidence[0]
    assert "CKA_EXTRACTABLE=False" in _result(report, "sl3.kek-non-exportable").evidence[0]
    assert _result(report, "sl2.breakglass").status is Status.NOT_APPLICABLE


def _sql(path: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(path) as db:
        assert db.execute(statement, args).rowcount >= 1


def _edit_policy(data: Path, **changes: object) -> None:
    with sqlite3.connect(data / "custody.db") as db:
        (text,) = db.execute("SELECT policy_json FROM models WHERE name = 'llama'").fetchone()
        policy = {**json.loads(text), **changes}
        db.execute("UPDATE models SET policy_json = ? WHERE name = 'llama'", (json.dumps(policy),))


def _edit_log_entry(world: Sl3World, data: Path) -> dict[str, object]:
    _sql(data / "audit.tlog", "UPDATE tlog_entries SET data = ? WHERE idx = 1", b'{"edited":1}')
    return {}


def _open_secret(world: Sl3World, data: Path) -> dict[str, object]:
    os.chmod(data / "audit-hmac.key", 0o644)
    return {}


def _plaintext_blob(world: Sl3World, data: Path) -> dict[str, object]:
    blob = next((data / "blobs").rglob("*.wvenc"))
    blob.write_bytes((world.root / "llama-v1" / "model.safetensors").read_bytes())
    return {}


def _signer_removed(world: Sl3World, data: Path) -> dict[str, object]:
    from cryptography.hazmat.primitives.asymmetric import ec
    from tests.custody.helpers import public_pem

    other = public_pem(ec.generate_private_key(ec.SECP256R1()))
    _edit_policy(data, signers=[{"name": "rotated", "public_key_pem": other}])
    return {}


def _plaintext_in_staging(world: Sl3World, data: Path) -> dict[str, object]:
    (data / "staging").mkdir(exist_ok=True)
    shutil.copy(world.root / "llama-v1" / "model.safetensors", data / "staging" / "left.bin")
    return {}


def _plaintext_named_like_a_database(world: Sl3World, data: Path) -> dict[str, object]:
    shutil.copy(world.root / "llama-v1" / "model.safetensors", data / "backup.db")
    return {}


def _loose_scan_policy(world: Sl3World, data: Path) -> dict[str, object]:
    policy = data.parent / "scan-policy.toml"
    policy.write_text('[safe]\n"mylib.layers.*" = "our own layers"\n')
    return {"scan_policy": policy}


def _plain_http(world: Sl3World, data: Path) -> dict[str, object]:
    return {"service_url": "http://127.0.0.1:8443"}


def _credentials_left(world: Sl3World, data: Path) -> dict[str, object]:
    (data / "credentials").mkdir(mode=0o700)
    (data / "credentials" / "alice.token").write_text("wvt_x_y\n")
    return {}


def _extractable_kek(world: Sl3World, data: Path) -> dict[str, object]:
    return {"kek": world.extractable_kek_uri}


def _one_approver(world: Sl3World, data: Path) -> dict[str, object]:
    _edit_policy(data, approvals_required=1)
    return {}


def _month_long_grants(world: Sl3World, data: Path) -> dict[str, object]:
    _edit_policy(data, max_grant_duration_s=30 * 86400)
    return {}


def _generous_egress(world: Sl3World, data: Path) -> dict[str, object]:
    _edit_policy(data, egress_bytes_per_window=world.model_size * 10)
    return {}


def _no_witness(world: Sl3World, data: Path) -> dict[str, object]:
    return {"witness_keys": ()}


CONTROLS: list[tuple[str, str, Callable[[Sl3World, Path], dict[str, object]]]] = [
    ("audit-log-intact", "sl1.audit-trail", _edit_log_entry),
    ("file-permissions", "sl1.secret-files", _open_secret),
    ("encryption-at-rest", "sl1.encrypted-at-rest", _plaintext_blob),
    ("signing-required", "sl1.signed-versions", _signer_removed),
    ("no-plaintext-weights", "sl2.central-storage", _plaintext_in_staging),
    ("no-plaintext-weights", "sl2.central-storage", _plaintext_named_like_a_database),
    ("scan-policy", "sl2.scan-default", _loose_scan_policy),
    ("tls", "sl2.tls", _plain_http),
    ("credentials-removed", "sl2.credentials-handed-out", _credentials_left),
    ("kek-hsm", "sl3.kek-non-exportable", _extractable_kek),
    ("approvals", "sl3.two-person-rule", _one_approver),
    ("grant-expiry", "sl3.no-standing-access", _month_long_grants),
    ("time-to-exfiltrate", "sl3.egress-day", _generous_egress),
    ("audit-witnessed", "sl3.witnessed-log", _no_witness),
]


@pytest.mark.parametrize(
    ("check", "measure_id", "turn_off"), CONTROLS, ids=[c[2].__name__.strip("_") for c in CONTROLS]
)
def test_turning_off_a_checked_control_drops_the_level_and_names_the_gap(
    world: Sl3World,
    tmp_path: Path,
    check: str,
    measure_id: str,
    turn_off: Callable[[Sl3World, Path], dict[str, object]],
) -> None:
    data = world.copy(tmp_path / "custody")
    changes = turn_off(world, data)
    report = _assess(world, world.deployment(data, **changes))
    failed = _result(report, measure_id)
    assert failed.measure.check == check
    assert failed.status is Status.FAIL and failed.evidence
    assert report.level == failed.measure.level - 1
    assert measure_id in {g.measure.id for g in report.gaps()}


def test_every_checked_control_has_a_turn_off_test() -> None:
    from weightvault.posture import CHECKS

    covered = {check for check, _, _ in CONTROLS} | {"breakglass-split"}
    assert covered == set(CHECKS)


def test_breakglass_split_of_a_software_kek(world: Sl3World, tmp_path: Path) -> None:
    """A keyring KEK tops out at SL2 (not in an HSM), and needs its break-glass split for SL2."""
    data = world.copy(tmp_path / "custody")
    keyring = create_keyring(data / "service-kek.keyring")
    shares = split_keyring(data / "service-kek.keyring", 2, 3, tmp_path / "shares")
    with_share = _assess(world, world.deployment(data, kek="", breakglass_share=shares[0]))
    assert with_share.level == 2
    assert f"KEK {keyring.kid} split 2 of 3" in _result(with_share, "sl2.breakglass").evidence
    assert "sl3.kek-non-exportable" in {g.measure.id for g in with_share.gaps()}

    without = _assess(world, world.deployment(data, kek=""))
    assert without.level == 1
    assert "sl2.breakglass" in {g.measure.id for g in without.gaps()}

    # A share of another KEK, or one kept in the data folder, does not count.
    other = tmp_path / "other.keyring"
    create_keyring(other)
    stale = split_keyring(other, 2, 3, tmp_path / "stale")[0]
    inside = split_keyring(data / "service-kek.keyring", 2, 3, data / "shares")[0]
    for share, words in ((stale, "not of the KEK in use"), (inside, "kept in the data folder")):
        report = _assess(world, world.deployment(data, kek="", breakglass_share=share))
        assert report.level == 1
        assert words in " ".join(_result(report, "sl2.breakglass").evidence)


def test_attested_controls_need_a_valid_signed_attestation(world: Sl3World, tmp_path: Path) -> None:
    data = world.copy(tmp_path / "custody")
    unattested = _assess(world, world.deployment(data), attested=False)
    assert unattested.level == 2
    assert _result(unattested, "sl3.background-checks").evidence == ("no signed attestation given",)

    edited = tmp_path / "attestation.yaml"
    edited.write_text(world.attestation.read_text().replace("Dana Reyes", "Someone Else"))
    shutil.copy(
        world.attestation.with_name("attestation.yaml.sig"), tmp_path / "attestation.yaml.sig"
    )
    report = assess(
        world.deployment(data),
        attestation=edited,
        attestation_verifier=KeyVerifier.from_file(world.attestation_key),
    )
    assert report.level == 2
    assert report.attestation_problem is not None
    assert "changed since it was signed" in report.attestation_problem


def test_attestation_format_is_strict() -> None:
    from weightvault.errors import FormatError

    base = (Path(__file__).parent / "helpers.py").read_text()
    text = base.split('SL3_ATTESTATION = """\\\n')[1].split('"""')[0]
    assert parse_attestation(text.encode()).controls["red-teaming"].in_place
    for bad, words in (
        (text.replace("organization:", "organisation:"), "unknown key"),
        (text + "organization: Other\n", "appears twice"),
        (text.replace("in_place: true", 'in_place: "yes"', 1), "in_place"),
        (text.replace("valid_until: 2099-01-05", "valid_until: 2020-01-01"), "before"),
        ("- a list\n", "mapping"),
    ):
        with pytest.raises(FormatError, match=words):
            parse_attestation(bad.encode())


def test_cli_writes_reports_and_enforces_the_required_level(
    world: Sl3World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = world.copy(tmp_path / "custody")
    witness = tmp_path / "w1.pub"
    witness.write_text(world.witness_keys[0].to_text() + "\n")
    base = [
        "posture", "check", "--data", str(data), "--kek", world.kek_uri, "--url", world.tls_url,
        "--ca", str(world.ca_file), "--witness-key", str(witness),
        "--attestation", str(world.attestation), "--attestation-key", str(world.attestation_key),
    ]  # fmt: skip
    assert run([*base, "--require", "SL3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("posture: SL3\ngaps to SL4:\n  sl4.")

    html_path = tmp_path / "posture.html"
    assert run([*base, "--format", "html", "-o", str(html_path), "--require", "SL4"]) == 1
    captured = capsys.readouterr()
    assert "posture SL3 is below the required SL4 (6 gaps to SL4)" in captured.err
    page = html_path.read_text()
    assert "<svg" in page and "Gaps to SL4" in page and "sl4.witness-quorum" in page

    assert run([*base, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["level"] == 3 and len(doc["next_level_gaps"]) == 6
    assert run([*base, "--format", "md"]) == 0
    assert "## Gaps to SL4" in capsys.readouterr().out

    assert run([*base, "--require", "SL9"]) == 2
    assert "expected SL1 to SL5" in capsys.readouterr().err
    assert run(["posture", "check", "--data", str(tmp_path / "nowhere")]) == 2
    assert "not a custody data folder" in capsys.readouterr().err


def test_cli_signs_an_attestation(
    world: Sl3World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.keyfiles import write_ec_key_pair

    private, public = write_ec_key_pair(tmp_path, "ciso")
    attestation = tmp_path / "attestation.yaml"
    attestation.write_bytes(world.attestation.read_bytes())
    assert run(["posture", "sign", str(attestation), "--key", str(private)]) == 0
    assert "5 controls" in capsys.readouterr().out
    data = world.copy(tmp_path / "custody")
    report = assess(
        world.deployment(data),
        attestation=attestation,
        attestation_verifier=KeyVerifier.from_file(public),
    )
    assert report.level == 3
    # Signing refuses a malformed file and writes nothing.
    broken = tmp_path / "broken.yaml"
    broken.write_text("format: nope\n")
    assert run(["posture", "sign", str(broken), "--key", str(private)]) == 2
    assert not (tmp_path / "broken.yaml.sig").exists()


def test_the_measure_table_in_the_docs_is_the_data_file() -> None:
    from weightvault.posture import CHECKS, level_name, load_measures

    doc = (Path(__file__).resolve().parents[2] / "docs" / "posture.md").read_text()
    table = doc.split("## The measures")[1].split("```text\n")[1].split("```")[0]
    rows = [line.split() for line in table.splitlines()[1:]]
    measures = load_measures(known_checks=frozenset(CHECKS))
    expected = [
        [
            m.id,
            level_name(m.level),
            "check" if m.check else "attested",
            m.check_key or m.attest or "",
            *m.category.split(),
        ]
        for m in measures
    ]
    assert rows == expected


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ('[[measure]]\nid = "a"\nlevel = 1\ncategory = "c"\ndescription = "d"\n', "exactly one"),
        (
            '[[measure]]\nid = "a"\nlevel = 6\ncategory = "c"\ndescription = "d"\ncheck = "tls"\n',
            "level",
        ),
        (
            '[[measure]]\nid = "a"\nlevel = 1\ncategory = "c"\ndescription = "d"\ncheck = "nope"\n',
            "unknown check",
        ),
        (
            '[[measure]]\nid = "a"\nlevel = 1\ncategory = "c"\ndescription = "d"\nattest = "x"\n'
            "params = { n = 1 }\n",
            "only checks",
        ),
        (
            '[[measure]]\nid = "a"\nlevel = 1\ncategory = "c"\ndescription = "d"\ncheck = "tls"\n'
            "extra = 1\n",
            "unknown key",
        ),
        (
            '[[measure]]\nid = "a"\nlevel = 1\ncategory = "c"\ndescription = "d"\ncheck = "tls"\n'
            '[[measure]]\nid = "a"\nlevel = 2\ncategory = "c"\ndescription = "d"\ncheck = "tls"\n',
            "repeated",
        ),
    ],
)
def test_the_measure_table_is_parsed_strictly(tmp_path: Path, table: str, words: str) -> None:
    from weightvault.errors import FormatError
    from weightvault.posture import CHECKS, load_measures

    path = tmp_path / "measures.toml"
    path.write_text(table)
    with pytest.raises(FormatError, match=words):
        load_measures(path, known_checks=frozenset(CHECKS))


def test_an_attestation_signed_by_another_key_is_refused(world: Sl3World, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from weightvault.posture import sign_attestation
    from weightvault.signing import KeySigner

    attestation = tmp_path / "attestation.yaml"
    attestation.write_bytes(world.attestation.read_bytes())
    forged = sign_attestation(
        attestation.read_bytes(), KeySigner(ec.generate_private_key(ec.SECP256R1()))
    )
    (tmp_path / "attestation.yaml.sig").write_bytes(forged)
    report = assess(
        world.deployment(world.copy(tmp_path / "custody")),
        attestation=attestation,
        attestation_verifier=KeyVerifier.from_file(world.attestation_key),
    )
    assert report.level == 2 and report.attestation_problem
    assert "different key" in report.attestation_problem
    assert all(r.status is not Status.ATTESTED for r in report.results)


def test_html_report_renders_in_chromium_and_escapes_attested_text(
    world: Sl3World, tmp_path: Path
) -> None:
    """The page loads with no script error and no request; text from the attestation file
    (a person's input) is shown as text, never run as markup."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from weightvault.posture import sign_attestation
    from weightvault.signing import KeySigner

    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    assert chromium.exists(), "Debian chromium is part of the test environment"
    hostile = '<img src="http://127.0.0.1:9/x" onerror="alert(1)"><script>alert(2)</script>'
    attestation = tmp_path / "attestation.yaml"
    attestation.write_text(
        world.attestation.read_text().replace(
            "program charter SEC-7, reviewed quarterly", json.dumps(hostile)
        )
    )
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "attestation.yaml.sig").write_bytes(
        sign_attestation(attestation.read_bytes(), KeySigner(key))
    )
    from tests.custody.helpers import public_pem

    (tmp_path / "ciso.pub").write_text(public_pem(key))
    report = assess(
        world.deployment(world.copy(tmp_path / "custody")),
        attestation=attestation,
        attestation_verifier=KeyVerifier.from_file(tmp_path / "ciso.pub"),
    )
    assert report.level == 3
    page_file = tmp_path / "posture.html"
    page_file.write_text(report.to_html())
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", lambda d: problems.append(f"dialog {d.message}"))
            page.on(
                "request",
                lambda r: (
                    problems.append(f"fetched {r.url}") if not r.url.startswith("file:") else None
                ),
            )
            page.goto(page_file.as_uri())
            assert page.title() == "Security posture: SL3"
            assert page.locator("svg rect").count() >= 10
            assert page.locator("tr.fail").count() == len(
                [r for r in report.results if r.status is Status.FAIL]
            )
            assert hostile in page.locator("tr.attested").first.inner_text()
            page.screenshot(path=str(tmp_path / "posture.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert (tmp_path / "posture.png").stat().st_size > 10_000


def test_markdown_cells_cannot_break_the_table_or_carry_html() -> None:
    from weightvault.posture.report import _md_cell

    assert _md_cell("a | b\n<script>") == "a \\| b &lt;script&gt;"


def test_tls_failures_are_named(world: Sl3World, tmp_path: Path) -> None:
    """Another CA, a missing CA file and a closed port each fail the TLS measure, saying why."""
    from tests.custody.helpers import free_port
    from tests.posture.helpers import _self_signed

    data = world.copy(tmp_path / "custody")
    other_ca, _key = _self_signed(tmp_path)
    cases = [
        ({"ca_file": other_ca}, "certificate verify failed"),
        ({"ca_file": tmp_path / "missing.pem"}, "cannot be used as CA certificates"),
        ({"service_url": f"https://127.0.0.1:{free_port()}"}, "Connection refused"),
    ]
    for changes, words in cases:
        report = _assess(world, world.deployment(data, **changes))
        tls = _result(report, "sl2.tls")
        assert tls.status is Status.FAIL and report.level == 1, words
        assert words in tls.evidence[0], tls.evidence


def test_assessing_writes_nothing_into_the_data_folder(world: Sl3World, tmp_path: Path) -> None:
    """Posture reads: no file appears, disappears or changes content in the data folder (the
    database's WAL side files excepted, which SQLite manages for any reader)."""
    import hashlib

    data = world.copy(tmp_path / "custody")

    def snapshot() -> dict[str, str]:
        return {
            str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))
        }

    before = snapshot()
    report = _assess(world, world.deployment(data))
    assert report.level == 3
    assert snapshot() == before
