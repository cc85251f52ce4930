"""``weightvault tamper``: red-team released models with fine-tuning attacks, train defenses.

Only Typer is imported at load time; torch and the lab are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import typer

ORDER = 90

tamper_app = typer.Typer(
    name="tamper",
    help=(
        "Tamper-resistance lab: how much does it cost to fine-tune a safeguard away?\n\n"
        "defend trains a defense (MLAC- or TAR-style) and saves the model; attack runs an attack "
        "suite against models (random init and the undefended release are always included); "
        "report writes JSON, Markdown and PNG plots. Needs the tamper extra (torch)."
    ),
    no_args_is_help=True,
)

_TESTBED_HELP = "digits, minilm, or module:callable returning your own Testbed adapter."


def _import_lab() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        from weightvault.errors import UsageError

        raise UsageError(
            "the tamper lab needs PyTorch", hint="pip install 'weightvault[tamper]'"
        ) from exc


def _parse_seeds(text: str) -> tuple[int, ...]:
    from weightvault.errors import UsageError

    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers") from exc
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: expected distinct non-negative integers")
    return seeds


@tamper_app.command("defend")
def defend_command(
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the model (.safetensors)."),
    method: str = typer.Option(
        "mlac", "--method", help="mlac, tar, or none (the undefended release)."
    ),
    testbed: str = typer.Option("digits", "--testbed", help=_TESTBED_HELP),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Outer training steps."),
    inner_steps: int | None = typer.Option(
        None, "--inner-steps", min=1, help="Simulated attacker steps K per outer step."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Defense seed."),
    threads: int = typer.Option(
        1, "--threads", min=1, help="Torch threads (results depend on it)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the defense record as JSON."),
) -> None:
    """Train a defense from the testbed's undefended release and save it (safetensors)."""
    _import_lab()
    from weightvault._fs import ensure_writable_destination
    from weightvault.cli._ui import emit_json, err_console, out_console
    from weightvault.errors import UsageError
    from weightvault.tamper.defenses import defend
    from weightvault.tamper.testbed import load_adapter, save_model

    if method not in ("mlac", "tar", "none"):
        raise UsageError(f"defense method {method!r}: use mlac, tar or none")
    ensure_writable_destination(out, force=force)
    bed = load_adapter(testbed)
    err_console().print(f"training {method} defense on testbed {bed.name} ...")
    model, record, desired = defend(
        bed, method, steps=steps, inner_steps=inner_steps, seed=seed, threads=threads
    )
    metadata = {"testbed": bed.name, "defense": None if record is None else record.to_dict()}
    save_model(out, model, metadata, force=force)
    doc = {
        "model": str(out),
        "testbed": bed.name,
        "method": method,
        "desired_acc": desired,
        "defense": metadata["defense"],
    }
    if json_out:
        emit_json(doc)
        return
    console = out_console()
    console.print(f"wrote {out} ({method}, testbed {bed.name})")
    console.print(f"desired-task test accuracy: {desired:.1%}")
    if record is not None:
        console.print(f"trained against families: {', '.join(record.training_families)}")


@tamper_app.command("attack")
def attack_command(
    models: list[Path] = typer.Option(
        [], "--model", "-m", help="A model to attack (repeatable); references are always added."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the results JSON."),
    testbed: str = typer.Option("digits", "--testbed", help=_TESTBED_HELP),
    suite_file: Path | None = typer.Option(None, "--suite", help="Attack suite JSON file."),
    preset: str | None = typer.Option(None, "--preset", help="Built-in suite: ci, digits, minilm."),
    seeds: str | None = typer.Option(None, "--seeds", help="Attack seeds, e.g. 0,1,2 (>= 3)."),
    threads: int = typer.Option(
        1, "--threads", min=1, help="Torch threads (results depend on it)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the worst cases as JSON."),
) -> None:
    """Run an attack suite against models (plus random init and the undefended release)."""
    _import_lab()
    from weightvault._fs import ensure_writable_destination, write_bytes_atomic
    from weightvault.cli._ui import emit_json, err_console, out_console
    from weightvault.errors import InputError, UsageError
    from weightvault.tamper.defenses import DefenseRecord
    from weightvault.tamper.evaluate import run_suite
    from weightvault.tamper.report import summarize
    from weightvault.tamper.spec import AttackSuite, preset_suite
    from weightvault.tamper.testbed import load_adapter, load_model

    if (suite_file is None) == (preset is None):
        raise UsageError("give exactly one of --suite FILE or --preset NAME")
    from weightvault import _interrupt

    _interrupt.note_untouched(*models)
    ensure_writable_destination(out, force=force)
    if suite_file is not None:
        try:
            raw = suite_file.read_bytes()
        except OSError as exc:
            raise InputError(f"{suite_file}: cannot read ({exc.strerror})") from exc
        suite = AttackSuite.from_json(raw)
    else:
        assert preset is not None
        suite = preset_suite(preset)
    if seeds is not None:
        suite = suite.with_seeds(_parse_seeds(seeds))
    bed = load_adapter(testbed)
    candidates = {}
    for path in models:
        name = path.name.removesuffix(".safetensors")
        if name in candidates:
            raise UsageError(f"two models are named {name!r}; rename one file")
        model, metadata = load_model(path, bed)
        defense = metadata.get("defense")
        candidates[name] = (model, None if defense is None else DefenseRecord.from_dict(defense))
    console = err_console()
    result = run_suite(
        bed,
        candidates,
        suite,
        threads=threads,
        progress=lambda msg: console.print(f"  {msg}", highlight=False),
    )
    write_bytes_atomic(out, result.to_json(), force=force)
    summary = summarize(result)
    rows = {
        name: {
            "role": m["role"],
            "desired_acc": m["desired_acc"],
            "worst_case": m["worst_case"],
            "worst_attack": m["worst_attack"],
            "regret_vs_random_init": m["regret_vs_random_init"],
        }
        for name, m in summary["models"].items()
    }
    if json_out:
        emit_json({"results": str(out), "models": rows})
        return
    from rich.table import Table

    table = Table(title=f"suite {suite.name}, seeds {list(suite.seeds)}")
    for col in (
        "model",
        "desired acc",
        "worst-case harmful acc",
        "worst attack",
        "regret vs random init",
    ):
        table.add_column(col)
    for name, row in rows.items():
        worst = row["worst_case"]
        regret = row["regret_vs_random_init"]
        table.add_row(
            name,
            f"{row['desired_acc']:.1%}",
            "diverged" if worst is None else f"{worst['mean']:.1%} ± {worst['std']:.1%}",
            row["worst_attack"] or "-",
            "n/a" if regret is None else f"{regret * 100:+.1f} pts",
        )
    out_console().print(table)
    out_console().print(f"wrote {out}")


@tamper_app.command("report")
def report_command(
    results: Path = typer.Argument(..., help="Results JSON written by 'tamper attack'."),
    out_dir: Path = typer.Option(..., "--out-dir", "-o", help="Folder for the report files."),
    prefix: str = typer.Option("tamper", "--prefix", help="File name prefix."),
    margin: float = typer.Option(
        0.02, "--margin", min=0.0, max=0.5, help="Accuracy above random init still 'resisted'."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing report files."),
    json_out: bool = typer.Option(False, "--json", help="Print the written paths as JSON."),
) -> None:
    """Write the report: <prefix>-summary.json, -report.md, -curves.png, -summary.png."""
    from weightvault import _interrupt

    _interrupt.note_untouched(results)
    _import_lab()
    from weightvault.cli._ui import emit_json, out_console
    from weightvault.errors import InputError, UsageError
    from weightvault.tamper.evaluate import SuiteResult
    from weightvault.tamper.report import write_report

    if not prefix or "/" in prefix or prefix.startswith("."):
        raise UsageError(f"--prefix {prefix!r}: use a plain file-name prefix")
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: folder does not exist; create it first")
    try:
        raw = results.read_bytes()
    except OSError as exc:
        raise InputError(f"{results}: cannot read ({exc.strerror})") from exc
    result = SuiteResult.from_json(raw)
    files = write_report(result, out_dir, prefix=prefix, margin=margin, force=force)
    paths = [files.summary_json, files.markdown, files.curves_png, files.summary_png]
    if json_out:
        emit_json({"files": [str(p) for p in paths]})
        return
    for path in paths:
        out_console().print(f"wrote {path}")


@tamper_app.command("suite")
def suite_command(
    preset: str = typer.Argument("digits", help="Built-in suite to print: ci, digits, minilm."),
) -> None:
    """Print a built-in attack suite as JSON (a starting point for your own --suite file)."""
    import sys

    from weightvault.tamper.spec import preset_suite

    sys.stdout.write(preset_suite(preset).to_json().decode())


def register(app: typer.Typer) -> None:
    app.add_typer(tamper_app, name="tamper")
