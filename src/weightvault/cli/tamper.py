"""``weightvault tamper``: red-team released models with fine-tuning attacks, train defenses.

Only Typer is imported at load time; torch and the lab are imported inside the commands.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import typer

from weightvault.cli._groups import command_group

ORDER = 90

tamper_app = command_group(
    "tamper",
    (
        "Tamper-resistance lab: how much does it cost to fine-tune a safeguard away?\n\n"
        "report runs the whole lab (attack grid split before training, defenses from a defaults "
        "file, every attack on every seed against random init, the undefended release and the "
        "defenses) and writes JSON, Markdown and PNG plots; defend trains one defense; attack "
        "runs a suite against saved models; tune writes defense defaults from train-time "
        "adversaries only. Needs the tamper extra (torch)."
    ),
)

ForceOut = Annotated[bool, typer.Option("--force", help="Overwrite --out.")]
"""``--force`` of the commands that write one ``--out`` file."""
_TESTBED_HELP = "digits, bios, minilm, or module:callable returning your own Testbed adapter."
_QUICK_HELP = (
    "Small grid and short training; seeds below 3 allowed; the report says NOT FOR CLAIMS."
)


def _import_lab() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        from weightvault.errors import UsageError

        raise UsageError(
            "the tamper lab needs PyTorch", hint="pip install 'weightvault[tamper]'"
        ) from exc


def _parse_seeds(text: str, *, quick: bool) -> tuple[int, ...]:
    from weightvault.errors import UsageError

    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers") from exc
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: expected distinct non-negative integers")
    _check_seed_count(seeds, quick=quick, option=f"--seeds {text!r}")
    return seeds


def _check_seed_count(seeds: tuple[int, ...], *, quick: bool, option: str) -> None:
    from weightvault.errors import UsageError
    from weightvault.tamper.evaluate import MIN_SEEDS

    if len(seeds) < MIN_SEEDS and not quick:
        raise UsageError(
            f"{option}: {len(seeds)} seed(s); worst cases and intervals need at least {MIN_SEEDS}",
            hint="give --seeds 0,1,2 or more, or pass --quick (its report is not for claims)",
        )


def _check_device(device: str) -> None:
    from weightvault.errors import UsageError

    if device not in ("cpu", "cuda"):
        raise UsageError(f"--device {device!r}: use cpu or cuda")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
        import os

        # Deterministic cuBLAS needs a fixed workspace (set before the first CUDA call).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


class _Execution(TypedDict):
    """How a lab run is executed, given to ``run_suite`` and ``run_lab`` as it is: torch threads,
    worker processes, the device, and where progress lines go."""

    threads: int
    jobs: int
    device: str
    progress: Callable[[str], None]


def _execution(threads: int, jobs: int, device: str) -> _Execution:
    """``--threads``, ``--jobs`` and ``--device`` of a lab run, the device checked."""
    _check_device(device)
    return {"threads": threads, "jobs": jobs, "device": device, "progress": _progress()}


def _read_input(path: Path) -> bytes:
    """The bytes of an input file (a suite, grid, results or candidates file)."""
    from weightvault.errors import InputError

    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc


def _read_grid(path: Path | None) -> Any:
    if path is None:
        return None
    from weightvault.tamper.grid import AttackGrid

    return AttackGrid.from_json(_read_input(path))


def _configure_cache() -> None:
    """The bios testbed keeps its pretrained base and release between runs (training it is the
    slow part): in $WEIGHTVAULT_TAMPER_CACHE, else ~/.cache/weightvault/tamper; "off" disables."""
    import os

    from weightvault.tamper import bios

    where = os.environ.get("WEIGHTVAULT_TAMPER_CACHE")
    if where == "off":
        bios.set_cache_dir(None)
        return
    bios.set_cache_dir(Path(where) if where else Path.home() / ".cache" / "weightvault" / "tamper")


def _progress() -> Any:
    from weightvault.cli._ui import err_console

    console = err_console()
    return lambda msg: console.print(f"  {msg}", highlight=False)


@tamper_app.command("defend")
def defend_command(
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the model (.safetensors)."),
    method: str = typer.Option(
        "mlac", "--method", help="mlac, tar, or none (the undefended release)."
    ),
    testbed: str = typer.Option("digits", "--testbed", help=_TESTBED_HELP),
    defaults_file: Path | None = typer.Option(
        None, "--defaults", help="Defaults file (from 'tamper tune'); default: the built-in one."
    ),
    grid_file: Path | None = typer.Option(
        None, "--grid", help="Attack grid JSON (its train-time side sets the simulated attackers)."
    ),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Outer training steps."),
    inner_steps: int | None = typer.Option(
        None, "--inner-steps", min=1, help="Simulated attacker steps K per outer step."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Defense seed."),
    threads: int = typer.Option(
        1, "--threads", min=1, help="Torch threads (results depend on it)."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (same code path)."),
    force: ForceOut = False,
    json_out: bool = typer.Option(False, "--json", help="Print the defense record as JSON."),
) -> None:
    """Train a defense from the testbed's undefended release and save it (safetensors)."""
    _import_lab()
    from weightvault._fs import ensure_writable_destination
    from weightvault.cli._ui import emit_json, err_console, out_console
    from weightvault.errors import UsageError
    from weightvault.tamper.defaults import builtin_defaults_path, load_defaults
    from weightvault.tamper.defenses import defend
    from weightvault.tamper.testbed import load_adapter, save_model

    if method not in ("mlac", "tar", "none"):
        raise UsageError(f"defense method {method!r}: use mlac, tar or none")
    _check_device(device)
    ensure_writable_destination(out, force=force)
    grid = _read_grid(grid_file)
    _configure_cache()
    bed = load_adapter(testbed)
    overrides: dict[str, Any] | None = None
    split = None
    if defaults_file is not None or builtin_defaults_path(bed.name).is_file():
        defaults, _ = load_defaults(defaults_file, bed.name)
        overrides = defaults.overrides(method) if method != "none" else None
        split = (grid or defaults.grid).split(len(bed.data().attacker))
    elif grid is not None:
        split = grid.split(len(bed.data().attacker))
    err_console().print(f"training {method} defense on testbed {bed.name} ...")
    model, record, desired = defend(
        bed,
        method,
        overrides=overrides,
        split=split,
        steps=steps,
        inner_steps=inner_steps,
        seed=seed,
        threads=threads,
        device=device,
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
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="Built-in suite: ci, minilm, or a testbed's grid (digits, bios; --quick: its small "
        "grid).",
    ),
    grid_file: Path | None = typer.Option(
        None, "--grid", help="Attack grid JSON: run its evaluation suite."
    ),
    seeds: str | None = typer.Option(None, "--seeds", help="Attack seeds, e.g. 0,1,2 (>= 3)."),
    quick: bool = typer.Option(False, "--quick", help=_QUICK_HELP),
    threads: int = typer.Option(
        1, "--threads", min=1, help="Torch threads (results depend on it)."
    ),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Worker processes (same results)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (same code path)."),
    force: ForceOut = False,
    json_out: bool = typer.Option(False, "--json", help="Print the worst cases as JSON."),
) -> None:
    """Run an attack suite against models (plus random init and the undefended release)."""
    _import_lab()
    from weightvault._fs import ensure_writable_destination, write_bytes_atomic
    from weightvault.cli._ui import emit_json, out_console
    from weightvault.errors import UsageError
    from weightvault.tamper.defenses import DefenseRecord
    from weightvault.tamper.evaluate import run_suite
    from weightvault.tamper.grid import default_grid, evaluation_suite
    from weightvault.tamper.spec import AttackSuite, preset_suite
    from weightvault.tamper.summary import summarize
    from weightvault.tamper.testbed import load_adapter, load_model

    if sum(x is not None for x in (suite_file, preset, grid_file)) != 1:
        raise UsageError("give exactly one of --suite FILE, --preset NAME or --grid FILE")
    from weightvault import _interrupt

    _interrupt.note_untouched(*models)
    execution = _execution(threads, jobs, device)
    seed_list = None if seeds is None else _parse_seeds(seeds, quick=quick)
    ensure_writable_destination(out, force=force)
    _configure_cache()
    bed = load_adapter(testbed)
    split_doc = None
    labels: dict[str, str] = {}
    grid = _read_grid(grid_file)
    if grid is None and preset is not None and preset not in ("ci", "minilm"):
        grid = default_grid(preset, quick=quick)
    if grid is not None:
        suite, split = evaluation_suite(grid, len(bed.data().attacker))
        split_doc = split.to_dict()
        labels = {spec.name: split.label(spec) for spec in suite.attacks}
    elif suite_file is not None:
        suite = AttackSuite.from_json(_read_input(suite_file))
    else:
        assert preset is not None
        suite = preset_suite(preset)
    if seed_list is not None:
        suite = suite.with_seeds(seed_list)
    _check_seed_count(suite.seeds, quick=quick, option=f"suite {suite.name!r}")
    candidates = {}
    for path in models:
        name = path.name.removesuffix(".safetensors")
        if name in candidates:
            raise UsageError(f"two models are named {name!r}; rename one file")
        model, metadata = load_model(path, bed)
        defense = metadata.get("defense")
        candidates[name] = (model, None if defense is None else DefenseRecord.from_dict(defense))
    result = run_suite(
        bed, candidates, suite, **execution, quick=quick, split=split_doc, labels=labels
    )
    write_bytes_atomic(out, result.to_json(), force=force)
    summary = summarize(result, bootstrap=200)
    rows = {
        name: {
            "role": m["role"],
            "desired_acc": m["desired_acc"],
            "worst_case": m["worst_case"],
            "worst_mean": m["worst_mean"],
        }
        for name, m in summary["models"].items()
    }
    if json_out:
        emit_json(
            {"results": str(out), "not_for_claims": summary["not_for_claims"], "models": rows}
        )
        return
    from rich.table import Table

    stamp = " — NOT FOR CLAIMS" if summary["not_for_claims"] else ""
    table = Table(title=f"suite {suite.name}, seeds {list(suite.seeds)}{stamp}")
    for col in ("model", "desired acc", "worst case (attack, seed)", "worst mean over seeds"):
        table.add_column(col)
    for name, row in rows.items():
        worst, mean = row["worst_case"], row["worst_mean"]
        table.add_row(
            name,
            f"{row['desired_acc']:.1%}",
            "-" if worst is None else f"{worst['value']:.1%} ({worst['attack']}, {worst['seed']})",
            "-" if mean is None else f"{mean['value']:.1%}",
        )
    out_console().print(table)
    out_console().print(f"wrote {out}")


@tamper_app.command("report")
def report_command(
    results: Path | None = typer.Argument(
        None, help="Results JSON written by 'tamper attack'; without it, run the whole lab."
    ),
    out_dir: Path = typer.Option(..., "--out-dir", "-o", help="Folder for the report files."),
    prefix: str = typer.Option("tamper", "--prefix", help="File name prefix."),
    margin: float = typer.Option(
        0.02, "--margin", min=0.0, max=0.5, help="δ: how far above random init 'blocks' may be."
    ),
    testbed: str | None = typer.Option(
        None, "--testbed", help="Lab run only (default bios). " + _TESTBED_HELP
    ),
    quick: bool = typer.Option(False, "--quick", help="Lab run only. " + _QUICK_HELP),
    seeds: str | None = typer.Option(None, "--seeds", help="Lab run only: seeds (>= 3)."),
    grid_file: Path | None = typer.Option(None, "--grid", help="Lab run only: attack grid JSON."),
    defaults_file: Path | None = typer.Option(
        None, "--defaults", help="Lab run only: defaults file (default: the built-in one)."
    ),
    threads: int = typer.Option(1, "--threads", min=1, help="Lab run only: torch threads."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Lab run only: worker processes."),
    device: str = typer.Option("cpu", "--device", help="Lab run only: cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing report files."),
    json_out: bool = typer.Option(False, "--json", help="Print the written paths as JSON."),
) -> None:
    """Write the report (<prefix>-summary.json, -report.md, -curves.png, -summary.png); without
    RESULTS, first run the whole lab and also write <prefix>-results.json."""
    from weightvault import _interrupt

    if results is not None:
        _interrupt.note_untouched(results)
    _import_lab()
    from weightvault._fs import check_folder_writable, ensure_writable_destination, staged_outputs
    from weightvault.cli._ui import emit_json, out_console
    from weightvault.errors import InputError, UsageError
    from weightvault.tamper.evaluate import SuiteResult
    from weightvault.tamper.report import report_files, stage_report

    if not prefix or "/" in prefix or prefix.startswith("."):
        raise UsageError(f"--prefix {prefix!r}: use a plain file-name prefix")
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: folder does not exist; create it first")
    files = report_files(out_dir, prefix)
    paths = [files.summary_json, files.markdown, files.curves_png, files.summary_png]
    if results is not None:
        lab_only = {
            "--testbed": testbed is not None,
            "--quick": quick,
            "--seeds": seeds is not None,
            "--grid": grid_file is not None,
            "--defaults": defaults_file is not None,
            "--jobs": jobs != 1,
            "--threads": threads != 1,
            "--device": device != "cpu",
        }
        given = [flag for flag, used in lab_only.items() if used]
        if given:
            raise UsageError(f"{given[0]} applies to a lab run; drop it or drop RESULTS")
        result = SuiteResult.from_json(_read_input(results))
    else:
        from weightvault.tamper.lab import run_lab
        from weightvault.tamper.testbed import load_adapter

        execution = _execution(threads, jobs, device)
        seed_list = None if seeds is None else _parse_seeds(seeds, quick=quick)
        check_folder_writable(out_dir)
        results_path = out_dir / f"{prefix}-results.json"
        for path in [results_path, *paths]:
            ensure_writable_destination(path, force=force)
        grid = _read_grid(grid_file)
        _configure_cache()
        bed = load_adapter(testbed or "bios")
        result = run_lab(
            bed, **execution, quick=quick, seeds=seed_list, grid=grid, defaults_path=defaults_file
        )
        paths.insert(0, results_path)
    with staged_outputs() as batch:
        if results is None:
            batch.write_bytes(paths[0], result.to_json(), force=force)
        stage_report(result, batch, files, margin=margin, force=force)
    if json_out:
        emit_json({"files": [str(p) for p in paths]})
        return
    for path in paths:
        out_console().print(f"wrote {path}")


@tamper_app.command("tune")
def tune_command(
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the defaults file (JSON)."),
    testbed: str = typer.Option("digits", "--testbed", help=_TESTBED_HELP),
    grid_file: Path | None = typer.Option(
        None, "--grid", help="Attack grid JSON (default: the testbed's built-in grid)."
    ),
    candidates_file: Path | None = typer.Option(
        None, "--candidates", help='JSON {"mlac": [{...}, ...], "tar": [...]} to choose from.'
    ),
    threads: int = typer.Option(1, "--threads", min=1, help="Torch threads."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    force: ForceOut = False,
) -> None:
    """Choose defense hyperparameters with train-time adversaries on the defender's own data
    (never the attacker pool, the test split or a held-out family) and write a defaults file."""
    _import_lab()
    import json

    from weightvault._fs import ensure_writable_destination, write_bytes_atomic
    from weightvault.cli._ui import out_console
    from weightvault.errors import FormatError, UsageError
    from weightvault.tamper.defaults import BUILTIN_CANDIDATES, BUILTIN_QUICK, tune
    from weightvault.tamper.grid import default_grid
    from weightvault.tamper.testbed import load_adapter

    _check_device(device)
    ensure_writable_destination(out, force=force)
    _configure_cache()
    bed = load_adapter(testbed)
    grid = _read_grid(grid_file) or default_grid(bed.name)
    if candidates_file is not None:
        raw = _read_input(candidates_file)
        try:
            candidates = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"{candidates_file}: not valid JSON ({exc})") from exc
        if not isinstance(candidates, dict):
            raise FormatError(f"{candidates_file}: expected an object of method -> list")
    elif bed.name in BUILTIN_CANDIDATES:
        candidates = BUILTIN_CANDIDATES[bed.name]
    else:
        raise UsageError(f"no built-in candidates for testbed {bed.name!r}; give --candidates")
    defaults = tune(
        bed,
        grid,
        candidates,
        quick=BUILTIN_QUICK.get(bed.name),
        threads=threads,
        device=device,
        progress=_progress(),
    )
    write_bytes_atomic(out, defaults.to_json(), force=force)
    console = out_console()
    for method, values in defaults.defenses.items():
        console.print(f"{method}: {json.dumps(values, sort_keys=True)}")
    console.print(f"wrote {out}")


@tamper_app.command("grid")
def grid_command(
    testbed: str = typer.Argument("bios", help="Testbed whose built-in grid to print."),
    quick: bool = typer.Option(False, "--quick", help="The small grid of quick runs."),
) -> None:
    """Print a built-in attack grid as JSON (a starting point for your own --grid file)."""
    import sys

    from weightvault.tamper.grid import default_grid

    sys.stdout.write(default_grid(testbed, quick=quick).to_json().decode())


@tamper_app.command("suite")
def suite_command(
    preset: str = typer.Argument("ci", help="Built-in suite to print: ci, minilm."),
) -> None:
    """Print a built-in attack suite as JSON (a starting point for your own --suite file)."""
    import sys

    from weightvault.tamper.spec import preset_suite

    sys.stdout.write(preset_suite(preset).to_json().decode())


def register(app: typer.Typer) -> None:
    app.add_typer(tamper_app, name="tamper")
