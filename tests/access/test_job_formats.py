"""Job requests, access policies and signed results as formats: strict parsing (a fuzz test per
parser), defaults filled before hashing, and results that verify offline against a real
transparency log, with every byte of the result and the log entry's edits caught."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightvault._json import canonical
from weightvault.access import (
    AccessPolicy,
    extraction_days,
    make_result_statement,
    parse_dataset,
    parse_job_request,
    sign_result,
    verify_job_result,
)
from weightvault.access.result import digest_of
from weightvault.custody.policy import ModelPolicy
from weightvault.errors import FormatError, VerificationError, WeightvaultError
from weightvault.tlog import Ed25519NoteSigner, TransparencyLog

QUERY = {"kind": "query", "model": "m", "version": "v1", "inputs": {"prompts": [[1, 2, 3]]}}


def test_defaults_are_filled_in_before_the_digest() -> None:
    short = parse_job_request(QUERY)
    spelled = parse_job_request(
        {**QUERY, "parameters": {"max_new_tokens": 16, "temperature": 0.0, "seed": 0}}
    )
    assert short.parameters == {
        "max_new_tokens": 16, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0
    }  # fmt: skip
    assert short.digest() == spelled.digest()
    other = parse_job_request({**QUERY, "inputs": {"prompts": [[1, 2, 4]]}})
    assert other.digest() != short.digest() and other.inputs_digest() != short.inputs_digest()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "train"}, "job.kind: expected one of"),
        ({"extra": 1}, "job: unknown field extra"),
        ({"parameters": {"max_new_tokens": True}}, "job.parameters.max_new_tokens"),
        ({"parameters": {"max_new_tokens": 257}}, "job.parameters.max_new_tokens"),
        ({"parameters": {"temperature": float("nan")}}, "job.parameters.temperature"),
        ({"parameters": {"beam": 4}}, "job.parameters: unknown field beam"),
        ({"inputs": {}}, "job.inputs: missing field prompts"),
        ({"inputs": {"prompts": [[-1]]}}, "job.inputs.prompts[0][0]"),
        ({"inputs": {"prompts": [[]]}}, "job.inputs.prompts[0]"),
        ({"inputs": {"prompts": [[1]], "features": [[0.5]]}}, "prompts or features, not both"),
        ({"inputs": {"features": [[0.5, float("inf")]]}}, "job.inputs.features[0][1]: expected a"),
        ({"inputs": {"features": [[True]]}}, "job.inputs.features[0][0]"),
        ({"inputs": {"features": []}}, "job.inputs.features: expected a list of 1 to 64"),
    ],
)
def test_bad_job_requests_are_refused_naming_the_field(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(FormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_job_request({**QUERY, **change})


def test_datasets_are_json_lines_with_limits() -> None:
    rows = parse_dataset('{"input_ids": [1, 2]}\n\n{"input_ids": [3], "label": 1}\n', "d")
    assert rows == [{"input_ids": [1, 2]}, {"input_ids": [3], "label": 1}]
    # A testbed's numeric inputs (tamper-lab models): features and a label, nothing else.
    assert parse_dataset('{"features": [0.5, 1], "label": 0}', "d") == [
        {"features": [0.5, 1.0], "label": 0}
    ]
    for text, message in (
        ('{"features": [0.5]}', "d line 1: expected features and label"),
        ('{"features": [0.5], "input_ids": [1], "label": 0}', "expected features and label"),
        ('{"features": ["a"], "label": 0}', r"d line 1.features\[0\]"),
        ('{"input_ids": [1]}\n{"ids": [2]}', "d line 2"),
        ('{"input_ids": [1], "input_ids": [2]}', "duplicate key"),
        ("", "no rows"),
        ("x" * (1024 * 1024 + 1), "at most"),
    ):
        with pytest.raises(FormatError, match=message):
            parse_dataset(text, "d")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(["query", "evaluate", "finetune", "inspect", "x"]),
    parameters=st.dictionaries(
        st.sampled_from(["max_new_tokens", "temperature", "steps", "statistics", "seed", "q"]),
        _json,
        max_size=3,
    ),
    inputs=st.dictionaries(
        st.sampled_from(["prompts", "features", "dataset", "train", "eval"]), _json, max_size=2
    ),
)
def test_any_request_parses_or_is_refused_with_a_format_error(
    kind: str, parameters: dict[str, Any], inputs: dict[str, Any]
) -> None:
    doc = {"kind": kind, "model": "m", "version": "v", "parameters": parameters, "inputs": inputs}
    try:
        request = parse_job_request(doc)
    except FormatError:
        return
    assert parse_job_request(json.loads(request.to_json())).digest() == request.digest()


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["tiers", "approvals", "wall_s", "cpu_s", "z"]), _json))
def test_any_access_policy_parses_or_is_refused_with_a_format_error(doc: dict[str, Any]) -> None:
    try:
        policy = AccessPolicy.from_dict(doc)
    except FormatError:
        return
    assert AccessPolicy.from_dict(policy.to_dict()) == policy


def test_access_policy_rules() -> None:
    policy = AccessPolicy.from_dict({"tiers": {"researcher": ["query"]}, "approvals": {"query": 0}})
    assert policy.kinds_for(frozenset({"researcher", "reader"})) == {"query"}
    assert policy.kinds_for(frozenset({"auditor"})) == set()
    assert policy.approvals["query"] == 0 and policy.approvals["finetune"] == 2
    with pytest.raises(FormatError, match="unknown tier 'reader'"):
        AccessPolicy.from_dict({"tiers": {"reader": ["query"]}})
    with pytest.raises(FormatError, match="more than the number of approvers"):
        ModelPolicy.from_dict(
            {"approvers": ["a"], "approvals_required": 1, "access": {"approvals": {"query": 2}}}
        )
    without = ModelPolicy.from_dict({"approvers": ["a"], "approvals_required": 1})
    assert "access" not in without.to_dict()  # existing policies keep their exact JSON
    # 14 GB at 16 MiB a day: about 2.3 years.
    assert round(extraction_days(14 * 10**9, 16 << 20, 86400) / 365, 1) == 2.3


def _released(tmp_path: Path, outputs: dict[str, Any]) -> tuple[bytes, bytes, str, int]:
    """A release logged in a real transparency log, and its signed result."""
    signer = Ed25519NoteSigner.generate("test.example/log")
    log = TransparencyLog.create(tmp_path / "log.db", "test.example/log")
    release = {
        "job_id": "ab" * 16, "kind": "query", "model": "m", "version": "v1", "requester": "rosa",
        "request_digest": "sha256:" + "1" * 64, "model_root_digest": "sha256:" + "2" * 64,
        "outputs_digest": digest_of(outputs), "environment_digest": "sha256:" + "3" * 64,
        "parameters": {"seed": 0}, "inputs_digest": "sha256:" + "4" * 64,
        "approvals": [{"approver": "alice", "key_id": "5" * 64, "log_index": 0}],
    }  # fmt: skip
    log.append(b'{"action":"job.submit"}')
    entry = canonical({"action": "job.release", "detail": release, "outcome": "allowed"})
    index = log.append(entry)
    log.append(b'{"action":"later"}')
    log.sign_checkpoint(signer)
    export = log.export().to_json()
    log.close()
    release["log"] = {
        "origin": "test.example/log",
        "index": index,
        "entry_sha256": hashlib.sha256(entry).hexdigest(),
    }
    key_id = hashlib.sha256(signer.public_key).hexdigest()
    result = sign_result(make_result_statement(release, outputs), signer.sign_message, key_id)
    return result, export, signer.verifier_key.to_text(), index


def test_a_result_verifies_offline_and_every_changed_byte_fails(tmp_path: Path) -> None:
    result, export, key, index = _released(tmp_path, {"completions": [[7, 8]], "tokens_out": 2})
    verified = verify_job_result(result, export, key)
    assert verified.outputs == {"completions": [[7, 8]], "tokens_out": 2}
    assert verified.log_index == index and verified.log_size == 3
    for position in range(len(result)):
        flipped = bytearray(result)
        flipped[position] ^= 0x01
        with pytest.raises(WeightvaultError):
            verify_job_result(bytes(flipped), export, key)
    other = Ed25519NoteSigner.generate("test.example/log").verifier_key.to_text()
    with pytest.raises(VerificationError):
        verify_job_result(result, export, other)


def test_an_edited_log_entry_or_a_result_logged_elsewhere_fails(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    result, export, key, index = _released(tmp_path / "a", {"metrics": {"loss": 1.5}})
    doc = json.loads(export)
    entry = json.loads(base64.b64decode(doc["entries"][index]))
    entry["detail"]["outputs_digest"] = "sha256:" + "0" * 64
    doc["entries"][index] = base64.b64encode(canonical(entry)).decode()
    with pytest.raises(VerificationError, match="changed, removed, reordered or inserted"):
        verify_job_result(result, json.dumps(doc).encode(), key)
    (tmp_path / "b").mkdir()
    _other, other_export, _key, _index = _released(tmp_path / "b", {"metrics": {"loss": 1.5}})
    with pytest.raises(VerificationError):
        verify_job_result(result, other_export, key)
