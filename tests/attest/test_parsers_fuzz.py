"""Parsers of untrusted input fail with FormatError, naming what is wrong, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.attest.conftest import eval_predicate

from weightvault.attest import (
    Subject,
    check_predicate,
    layout_shard,
    make_statement,
    parse_statement,
)
from weightvault.errors import FormatError

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _statement_document() -> dict[str, Any]:
    subject = Subject("tiny", bytes(range(32)))
    statement = make_statement(subject, "eval-results", eval_predicate())
    document: dict[str, Any] = json.loads(statement.to_payload())
    return document


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_mutated_statement_parses_or_is_refused(data: st.DataObject) -> None:
    document = _statement_document()
    paths = _paths(document)[1:]
    path = data.draw(st.sampled_from(paths))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(_JSON)
    payload = json.dumps(document).encode()
    try:
        parsed = parse_statement(payload)
    except FormatError as exc:
        assert exc.message and "\n" not in exc.message
        return
    assert parsed.predicate_type and parsed.subjects


@settings(max_examples=200, deadline=None)
@given(predicate=_JSON)
def test_arbitrary_predicates_of_every_kind(predicate: Any) -> None:
    for kind in (
        "https://weightvault.dev/attestation/model-card/v1",
        "https://weightvault.dev/attestation/eval-results/v1",
        "https://slsa.dev/provenance/v1",
        "https://weightvault.dev/attestation/row-groups/v1",
    ):
        try:
            check_predicate(kind, predicate)
        except FormatError:
            pass


@pytest.fixture(scope="module")
def arrow_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    table = pa.table({"id": list(range(300)), "s": [str(i) for i in range(300)]})
    path = tmp_path_factory.mktemp("arrow") / "t.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=100):
            writer.write_batch(batch)
    return path.read_bytes()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_damaged_arrow_file_is_refused_or_read(
    arrow_file: bytes, tmp_path: Path, data: st.DataObject
) -> None:
    """Flipped bytes and truncation in the IPC messages the walk parses by hand."""
    damaged = bytearray(arrow_file)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(damaged) - 1))
        damaged[position] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(damaged)))
    path = tmp_path / "damaged.arrow"
    path.write_bytes(bytes(damaged[:cut] if data.draw(st.booleans()) else damaged))
    try:
        layout = layout_shard(path)
    except FormatError:
        return
    assert all(0 <= g.start <= g.end <= layout.size for g in layout.groups)
