"""``weightvault vault job submit|approve|deny|status|list|result|cancel|verify-result``:
structured access, jobs that run next to the weights inside custody.

Registered as a sub-group of ``vault`` (this module's ORDER comes after :mod:`.vault`'s).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from weightvault.cli._groups import GROUP, command_group
from weightvault.cli._options import Client, ForceFile, Json, show
from weightvault.cli.vault import add_decision_commands

ORDER = 61

job_app = command_group(
    "job", "Jobs next to the weights (query, evaluate, finetune, inspect): only results leave."
)

JobId = Annotated[str, typer.Argument(help="Job id.")]
"""The job a command acts on (``job status | result | cancel``)."""


def _read_text(path: Path, option: str) -> str:
    from weightvault._fs import read_small_file
    from weightvault.access.spec import MAX_DATASET_BYTES

    data: bytes = read_small_file(path, option, MAX_DATASET_BYTES)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        from weightvault.errors import InputError

        raise InputError(f"{option} {path}: not UTF-8 text") from exc


def _ids(text: str, option: str) -> list[int]:
    from weightvault.errors import UsageError

    try:
        return [int(token) for token in text.replace(",", " ").split()]
    except ValueError as exc:
        raise UsageError(
            f"{option}: expected token ids separated by spaces, like '5 9 13'"
        ) from exc


def _parameters(pairs: list[str]) -> dict[str, Any]:
    from weightvault.errors import UsageError

    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--param {pair!r}: expected NAME=VALUE")
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return out


def _summary(job: dict[str, Any]) -> str:
    approvals = sum(1 for a in job.get("approvals", []) if a["decision"] == "approve")
    line = (
        f"job {job['id']}: {job['kind']} on {job['model']}@{job['version']} for "
        f"{job['requester']}: {job['status']}, {approvals}/{job['approvals_required']} approvals"
    )
    if job.get("reason"):
        line += f" ({job['reason']})"
    if job.get("derived_version"):
        line += f"; tuned version {job['model']}@{job['derived_version']} stays in custody"
    return line


@job_app.command("submit")
def submit(
    model_name: str = typer.Option(..., "--model", help="Model name."),
    version: str = typer.Option(..., "--version", help="Model version."),
    kind: str = typer.Option(..., "--kind", help="query, evaluate, finetune or inspect."),
    justification: str = typer.Option(..., "--justification", help="Why you run this job."),
    prompts: list[str] = typer.Option(
        [], "--prompt", help="Token ids of one prompt ('5 9 13'); repeat for more."
    ),
    dataset: Path | None = typer.Option(None, "--dataset", help="JSON Lines dataset (evaluate)."),
    train: Path | None = typer.Option(None, "--train", help="JSON Lines training set (finetune)."),
    held_out: Path | None = typer.Option(
        None, "--eval", help="JSON Lines held-out set (finetune)."
    ),
    params: list[str] = typer.Option(
        [], "--param", help="A parameter, NAME=VALUE (e.g. temperature=0.7); repeat."
    ),
    service: Client = GROUP,
) -> None:
    """Submit a job; it runs once the model's policy's approvals for its kind are in."""
    inputs: dict[str, Any] = {}
    if prompts:
        inputs["prompts"] = [_ids(p, "--prompt") for p in prompts]
    for name, path, option in (
        ("dataset", dataset, "--dataset"),
        ("train", train, "--train"),
        ("eval", held_out, "--eval"),
    ):
        if path is not None:
            inputs[name] = _read_text(path, option)
    job = {
        "model": model_name,
        "version": version,
        "kind": kind,
        "parameters": _parameters(params),
        "inputs": inputs,
    }
    service.call(
        lambda client: client.submit_job(job, justification), lambda result: [_summary(result)]
    )


add_decision_commands(
    job_app,
    ("job_id", "Job id."),
    lambda client: client.decide_job,
    lambda _job_id, _decision, result: _summary(result),
    {
        "approve": "Sign an approval of exactly this job (its request digest); submit it.",
        "deny": "Sign a denial of this job and submit it (one denial closes it).",
    },
)


@job_app.command("status")
def status(
    job_id: JobId,
    wait: float = typer.Option(0.0, "--wait", help="Wait up to this many seconds for it to end."),
    service: Client = GROUP,
) -> None:
    """A job's state (pending, approved, running, succeeded, failed, killed, released, ...)."""
    import time

    deadline = time.monotonic() + wait
    with service.client() as client:
        result = client.get_job(job_id)
        while result["status"] in ("approved", "running") and time.monotonic() < deadline:
            time.sleep(0.25)
            result = client.get_job(job_id)
    service.show(result, [_summary(result)])


@job_app.command("list")
def list_jobs(
    status_filter: str | None = typer.Option(None, "--status", help="Only jobs in this state."),
    service: Client = GROUP,
) -> None:
    """The jobs you may see (yours; all of a model's for its owner and approvers)."""
    service.listing(lambda client: client.list_jobs(status_filter), _summary, "no jobs")


def _outputs_lines(outputs: dict[str, Any]) -> list[str]:
    lines = []
    for name, value in sorted(outputs.items()):
        text = json.dumps(value, sort_keys=True)
        lines.append(f"  {name}: {text if len(text) <= 200 else text[:197] + '...'}")
    return lines


@job_app.command("result")
def result(
    job_id: JobId,
    output: Path = typer.Option(..., "-o", "--output", help="Write the signed result here."),
    force: ForceFile = False,
    service: Client = GROUP,
) -> None:
    """Receive a finished job's signed result (once: it counts against your output budget)."""
    import base64

    from weightvault._fs import ensure_writable_destination, write_bytes_atomic

    ensure_writable_destination(output, force=force)
    with service.client() as client:
        signed = client.job_result(job_id)
    write_bytes_atomic(output, signed, force=force)
    predicate = json.loads(base64.b64decode(json.loads(signed)["payload"]))["predicate"]
    lines = [
        f"wrote the signed result of {predicate['kind']} job {job_id} to {output}",
        *_outputs_lines(predicate["outputs"]),
    ]
    service.show({"output": str(output), "bytes": len(signed), "predicate": predicate}, lines)


@job_app.command("cancel")
def cancel(
    job_id: JobId,
    service: Client = GROUP,
) -> None:
    """Cancel a job that was not released (a running worker is killed)."""
    service.call(lambda client: client.cancel_job(job_id), lambda result: [_summary(result)])


@job_app.command("verify-result")
def verify_result(
    result_path: Path = typer.Argument(..., help="A signed result from 'vault job result'."),
    log_export: Path = typer.Option(..., "--log-export", help="An export from 'vault audit'."),
    log_key: Path = typer.Option(..., "--log-key", help="The log's public key (audit.pub)."),
    as_json: Json = False,
) -> None:
    """Check a job result offline: its signature, its outputs, and its entry in the log."""
    from weightvault._fs import read_small_file
    from weightvault.access.result import MAX_RESULT_BYTES, verify_job_result

    signed = read_small_file(result_path, "job result", MAX_RESULT_BYTES)
    export = read_small_file(log_export, "--log-export", 1 << 34)
    key_text = read_small_file(log_key, "--log-key", 4096).decode("ascii", "replace")
    verified = verify_job_result(signed, export, key_text)
    p = verified.predicate
    lines = [
        f"job result OK: {p['kind']} job {p['job_id']} on {p['model']}@{p['version']}, "
        f"released to {p['requester']}",
        f"  logged at entry {verified.log_index} of {verified.log_size}; model root "
        f"{p['model_root_digest']}",
        *_outputs_lines(verified.outputs),
    ]
    show({"log_index": verified.log_index, "predicate": p}, as_json, lines)


def register(app: typer.Typer) -> None:
    from weightvault.cli.vault import vault_app

    del app  # a sub-group of 'vault'
    vault_app.add_typer(job_app, name="job")
