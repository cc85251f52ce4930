"""The risk register through the real service and the CLI: entries with evidence that must name
attached attestations, strict fields, every addition logged, JSON and Markdown exports."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.custody.helpers import World
from tests.custody.test_gates import evaluation

from weightvault.custody.client import VaultHTTPError


def _cli(world: World, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "WEIGHTVAULT_URL": world.service.url,
        "WEIGHTVAULT_TOKEN": world.people[who].token,
    }
    return subprocess.run(
        [sys.executable, "-m", "weightvault", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_risk_entries_cite_attached_attestations_and_are_logged(
    world: World, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with world.client("rita") as rita, pytest.raises(VaultHTTPError):
        rita.gate_check("llama", "v1", "deploy")  # llama has no release policy
    digest_root = _root_of_llama(world)
    bundle = evaluation(digest_root, key)
    with world.client("olivia") as olivia:
        digest = olivia.attach_attestation("llama", "v1", bundle)["digest"]
    added = _cli(
        world,
        "olivia",
        "risk",
        "add",
        "llama",
        "--hazard",
        "uplift for synthesis of dangerous agents",
        "--likelihood",
        "unlikely",
        "--severity",
        "severe",
        "--owner",
        "olivia",
        "--mitigation",
        "refusal training",
        "--mitigation",
        "deploy behind the API only",
        "--evidence",
        digest,
        "--json",
    )
    assert added.returncode == 0, added.stderr
    entry = json.loads(added.stdout)
    assert entry["evidence"] == [digest] and entry["mitigations"][1] == "deploy behind the API only"
    # Evidence must be an attestation attached to the model; scales are fixed; fields strict.
    unknown = _cli(
        world,
        "olivia",
        "risk",
        "add",
        "llama",
        "--hazard",
        "x",
        "--likelihood",
        "rare",
        "--severity",
        "minor",
        "--owner",
        "olivia",
        "--evidence",
        "sha256:" + "0" * 64,
    )
    assert unknown.returncode == 1 and "no such attestation" in unknown.stderr
    bad_scale = _cli(
        world,
        "olivia",
        "risk",
        "add",
        "llama",
        "--hazard",
        "x",
        "--likelihood",
        "often",
        "--severity",
        "minor",
        "--owner",
        "olivia",
    )
    assert bad_scale.returncode == 2 and "likelihood: expected one of" in bad_scale.stderr
    assert "Traceback" not in unknown.stderr + bad_scale.stderr
    with world.client("rita") as rita, pytest.raises(VaultHTTPError) as reader:
        rita.add_risk(
            "llama", {"hazard": "x", "likelihood": "rare", "severity": "minor", "owner": "rita"}
        )
    assert reader.value.status == 403
    # Listing and exports.
    listed = _cli(world, "audrey", "risk", "list", "llama", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [entry["id"]]
    out = tmp_path / "register.md"
    exported = _cli(world, "audrey", "risk", "export", "llama", "--format", "md", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    markdown = out.read_text()
    assert "| uplift for synthesis of dangerous agents | unlikely | severe |" in markdown
    assert f"`{digest}`" in markdown
    again = _cli(world, "audrey", "risk", "export", "llama", "--format", "md", "-o", str(out))
    assert again.returncode == 2 and "--force" in again.stderr
    as_json = _cli(world, "audrey", "risk", "export", "llama", "--format", "json")
    assert json.loads(as_json.stdout)["risks"][0]["hazard"].startswith("uplift")
    # The addition is in the transparency log with the whole entry.
    with world.client("audrey") as audrey:
        events = [
            json.loads(base64.b64decode(e)) for e in json.loads(audrey.audit_export())["entries"]
        ]
    logged = [e for e in events if e["action"] == "risk.add" and e["outcome"] == "allowed"]
    assert logged[-1]["detail"]["risk"]["id"] == entry["id"]
    assert logged[-1]["detail"]["risk"]["evidence"] == [digest]
    assert logged[-1]["detail"]["model"] == "llama"


def _root_of_llama(world: World) -> str:
    from weightvault.attest import digest_subject

    assert world.model_dir is not None
    subject = digest_subject(
        world.model_dir, signature_path=world.model_dir.parent / "llama-v1.sig"
    )
    return "sha256:" + subject.digest.hex()


def test_entries_are_updated_and_closed_and_each_change_is_logged_whole(world: World) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with world.client("olivia") as olivia:
        digest = olivia.attach_attestation("llama", "v1", evaluation(_root_of_llama(world), key))[
            "digest"
        ]
        entry = olivia.add_risk(
            "llama",
            {
                "hazard": "cyber-offense uplift",
                "likelihood": "possible",
                "severity": "major",
                "owner": "olivia",
            },
        )
    risk_id = entry["id"]
    assert entry["status"] == "open" and entry["mitigations"] == []
    changed = _cli(
        world, "olivia", "risk", "update", "llama", risk_id, "--likelihood", "unlikely",
        "--mitigation", "rate limits", "--evidence", digest, "--json",
    )  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    updated = json.loads(changed.stdout)
    assert (updated["likelihood"], updated["severity"]) == ("unlikely", "major")
    assert updated["mitigations"] == ["rate limits"] and updated["evidence"] == [digest]
    assert updated["updated_by"] == "olivia" and updated["log_index"] > entry["log_index"]
    # Strict: an unknown digest, a bad scale, nothing to change; a reader may not change it.
    unknown = _cli(
        world, "olivia", "risk", "update", "llama", risk_id, "--evidence", "sha256:" + "1" * 64
    )
    assert unknown.returncode == 1 and "no such attestation" in unknown.stderr
    bad = _cli(world, "olivia", "risk", "update", "llama", risk_id, "--severity", "huge")
    assert bad.returncode == 2 and "severity: expected one of" in bad.stderr
    nothing = _cli(world, "olivia", "risk", "update", "llama", risk_id)
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
    assert "Traceback" not in unknown.stderr + bad.stderr + nothing.stderr
    with world.client("rita") as rita, pytest.raises(VaultHTTPError) as reader:
        rita.update_risk("llama", risk_id, {"severity": "minor"})
    assert reader.value.status == 403
    with world.client("olivia") as olivia, pytest.raises(VaultHTTPError) as missing:
        olivia.close_risk("llama", "0" * 32, "mitigated by removing the capability")
    assert missing.value.status == 404
    # Closing needs a reason; a closed entry stays listed and takes no further change.
    short = _cli(world, "olivia", "risk", "close", "llama", risk_id, "--reason", "done")
    assert short.returncode != 0 and "reason" in short.stderr
    reason = "capability removed by the safety fine-tune; re-evaluated below threshold"
    closed = _cli(world, "audrey", "risk", "close", "llama", risk_id, "--reason", reason, "--json")
    assert closed.returncode == 0, closed.stderr
    assert json.loads(closed.stdout)["status"] == "closed"
    again = _cli(world, "olivia", "risk", "update", "llama", risk_id, "--severity", "minor")
    assert again.returncode == 1 and "is closed" in again.stderr
    listed = {
        r["id"]: r
        for r in json.loads(_cli(world, "rita", "risk", "list", "llama", "--json").stdout)
    }
    assert listed[risk_id]["status"] == "closed" and listed[risk_id]["close_reason"] == reason
    markdown = _cli(world, "rita", "risk", "export", "llama", "--format", "md").stdout
    assert f"| closed: {reason} |" in markdown
    # Every change is in the log with the whole entry after it, so the register rebuilt from
    # the log alone is the register the service lists.
    from weightvault.custody.risk import register_from_events

    with world.client("audrey") as audrey:
        raw = json.loads(audrey.audit_export())["entries"]
    events = [(i, json.loads(base64.b64decode(e))) for i, e in enumerate(raw)]
    changes = [
        (e["action"], e["outcome"], e["principal"])
        for _i, e in events
        if e["action"] in ("risk.update", "risk.close") and e["detail"].get("risk_id") == risk_id
    ]
    assert changes == [
        ("risk.update", "allowed", "olivia"),
        ("risk.update", "denied", "olivia"),
        ("risk.update", "denied", "olivia"),
        ("risk.update", "denied", "rita"),
        ("risk.close", "denied", "olivia"),
        ("risk.close", "allowed", "audrey"),
        ("risk.update", "denied", "olivia"),
    ], changes
    rebuilt = {r["id"]: r for r in register_from_events(events, "llama")}
    assert rebuilt == listed
