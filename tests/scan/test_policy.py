"""Verdicts by evidence: the knowledge base, the dotted-name rules, called vs referenced, policy
files, and real files from the mainstream libraries scanning safe through the command line."""

from __future__ import annotations

import argparse
import pathlib
import pickle
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from weightvault.errors import FormatError, InputError
from weightvault.scan import make_policy, scan_file
from weightvault.scan.policy import (
    CLASSES,
    DEFAULT_POLICY,
    KNOWLEDGE_PATH,
    Policy,
    Severity,
    knowledge,
    load_policy_file,
    parse_knowledge,
    parse_pattern,
)

CONSOLE_SCRIPT = Path(sys.executable).with_name("weightvault")


def _class(module: str, name: str, policy: Policy = DEFAULT_POLICY) -> str:
    return policy.judge(module, name).klass


# -- the knowledge base file ---------------------------------------------------------------------


def test_the_fast_reader_and_tomllib_read_the_knowledge_base_alike() -> None:
    text = Path(KNOWLEDGE_PATH).read_text(encoding="utf-8")
    document = tomllib.loads(text)
    entries, attributes = parse_knowledge(text)
    fast: dict[str, dict[str, str]] = {}
    for entry in entries:
        fast.setdefault(entry.klass, {})[entry.pattern] = entry.evidence
    for entry in attributes.values():
        section = "dangerous-attribute" if entry.klass == "dangerous" else "alias-attribute"
        fast.setdefault(section, {})[entry.pattern] = entry.evidence
    assert fast == document
    assert set(document) <= {*CLASSES, "dangerous-attribute", "alias-attribute"}


def test_every_entry_has_one_line_of_evidence_and_a_valid_pattern() -> None:
    text = Path(KNOWLEDGE_PATH).read_text(encoding="utf-8")
    entries, attributes = parse_knowledge(text)
    assert len(entries) > 100 and len(attributes) > 100
    for entry in entries:
        assert parse_pattern(entry.pattern)
        assert len(entry.evidence.split()) >= 3, entry
    patterns = [e.pattern for e in entries]
    assert len(patterns) == len(set(patterns)), "a pattern listed twice"


def test_exact_paths_are_not_listed_in_two_classes() -> None:
    text = Path(KNOWLEDGE_PATH).read_text(encoding="utf-8")
    entries, _ = parse_knowledge(text)
    owner: dict[str, str] = {}
    for entry in entries:
        for item in parse_pattern(entry.pattern):
            if item.kind == "exact":
                assert owner.setdefault(item.text, entry.klass) == entry.klass, item.text


@pytest.mark.parametrize(("text", "problem"), [
    ('[safe]\n"a.b" = "x"\n[nonsense]\n', "unknown section"),
    ('"a.b" = "outside a section"\n', "inside a section"),
    ('[safe]\n"a.b" = "escaped \\" quote"\n', "inside a section"),
    ('[safe]\n"a.b" = \'single quotes\'\n', "inside a section"),
])
def test_the_fast_reader_refuses_what_it_does_not_read(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_knowledge(text)


# -- patterns ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("os.*", "os.system", True),
    ("os.*", "os.path.join", True),
    ("os.*", "osx.system", False),
    ("pandas.eval.*", "pandas.eval", True),  # a trailing .* includes the object itself
    ("numpy.{core,_core}.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", True),
    ("numpy.dtypes.[A-Z]*DType", "numpy.dtypes.Float32DType", True),
    ("numpy.dtypes.[A-Z]*DType", "numpy.dtypes.float32", False),
    ("sklearn.tree.**.[A-Z]*", "sklearn.tree._classes.DecisionTreeClassifier", True),
    ("sklearn.tree.**.[A-Z]*", "sklearn.tree.DecisionTreeClassifier", True),
    ("sklearn.tree.**.[A-Z]*", "sklearn.tree._classes.load", False),
    ("a.?.c", "a.b.c", True),
    ("a.?.c", "a.bb.c", False),
])
def test_pattern_grammar(pattern: str, path: str, matches: bool) -> None:
    module, _, name = path.rpartition(".")
    policy = Policy([__import__("weightvault.scan.policy", fromlist=["Entry"]).Entry(
        pattern, "safe", "test", "policy"
    )])
    found = policy._user.lookup(path) if policy._user is not None else None
    assert (found is not None) is matches, (pattern, path)
    del module, name


@pytest.mark.parametrize("bad", ["", "os", "*.x", "a..b", "a.b.", "a.{b,}", "a.{b", "a.**",
                                 "a.b c", "a.[b", "a.x**y"])
def test_malformed_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_pattern(bad)


def test_the_most_specific_entry_decides() -> None:
    # torch._C.* is dangerous, torch._C._nn.[a-z]* (more specific) is a safe reference,
    # torch._C._VariableFunctionsClass.from_file (exact) reads a file
    assert _class("torch._C", "_jit_pass_inline") == "dangerous"
    assert _class("torch._C._nn", "gelu") == "safe-reference"
    assert _class("torch._C._VariableFunctionsClass", "from_file") == "dangerous"
    assert _class("torch._C._VariableFunctionsClass", "conv2d") == "safe-reference"
    assert _class("torch.serialization", "_get_layout") == "safe"
    assert _class("torch.serialization", "load") == "dangerous"


# -- the verdicts --------------------------------------------------------------------------------

SAFE = [
    ("torch._utils", "_rebuild_tensor_v2"), ("torch", "FloatStorage"), ("torch", "bfloat16"),
    ("collections", "OrderedDict"), ("argparse", "Namespace"), ("pathlib", "PosixPath"),
    ("pathlib", "PureWindowsPath"), ("datetime", "datetime"), ("decimal", "Decimal"),
    ("fractions", "Fraction"), ("uuid", "UUID"), ("builtins", "set"), ("builtins", "object"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy", "dtype"),
    ("numpy.dtypes", "Float64DType"), ("numpy.random._pickle", "__randomstate_ctor"),
    ("sklearn.linear_model._logistic", "LogisticRegression"),
    ("sklearn.tree._tree", "Tree"), ("sklearn._loss.loss", "HalfBinomialLoss"),
    ("xgboost.sklearn", "XGBClassifier"), ("xgboost.core", "Booster"),
    ("lightgbm.sklearn", "LGBMRegressor"), ("lightgbm.basic", "Booster"),
    ("torch.nn.modules.linear", "Linear"), ("torch.nn.modules.activation", "GELU"),
    ("transformers.models.bert.modeling_bert", "BertModel"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
]


@pytest.mark.parametrize(("module", "name"), SAFE)
def test_data_constructors_are_safe_called_or_referenced(module: str, name: str) -> None:
    judgement = DEFAULT_POLICY.judge(module, name)
    assert judgement.verdict(True).severity == Severity.SAFE, judgement
    assert judgement.verdict(False).severity == Severity.SAFE, judgement


DANGEROUS = [
    # private stdlib helpers that spawn processes or run source
    ("uuid", "_get_command_stdout"), ("uuid", "getnode"), ("platform", "_syscmd_file"),
    ("ctypes.util", "_findLib_gcc"), ("multiprocessing.util", "spawnv_passfds"),
    ("imaplib", "IMAP4_stream"), ("pydoc", "pipepager"), ("_osx_support", "_read_output"),
    ("subprocess", "_args_from_interpreter_flags"), ("_posixsubprocess", "fork_exec"),
    # stdlib internals that eval/exec a string
    ("dataclasses", "_create_fn"), ("collections", "namedtuple"), ("typing", "_eval_type"),
    ("typing", "ForwardRef._evaluate"), ("gettext", "c2py"), ("timeit", "timeit"),
    ("cProfile", "run"), ("code", "InteractiveInterpreter"), ("pdb", "run"),
    ("bdb", "Bdb.run"), ("trace", "Trace.runctx"), ("doctest", "debug_src"),
    ("logging.config", "dictConfig"), ("logging.config", "_resolve"), ("string", "Formatter"),
    # import by name, anywhere
    ("importlib", "import_module"), ("pkgutil", "resolve_name"), ("pydoc", "locate"),
    ("torch._utils", "_import_dotted_name"), ("warnings", "_getcategory"),
    ("transformers.dynamic_module_utils", "get_class_from_dynamic_module"),
    ("transformers.utils.import_utils", "requires_backends"), ("unittest.mock", "_importer"),
    ("sklearn.utils.discovery", "all_estimators"),
    # expression parsers
    ("numexpr", "evaluate"), ("pandas", "eval"), ("pandas.core.computation.eval", "eval"),
    ("sympy", "sympify"), ("sympy.parsing.sympy_parser", "parse_expr"), ("jinja2", "Template"),
    # file writers and URL fetchers of ML libraries
    ("numpy", "save"), ("numpy", "memmap"), ("numpy.lib._datasource", "DataSource"),
    ("torch", "save"), ("torch.hub", "load_state_dict_from_url"),
    ("torch.utils.model_zoo", "load_url"), ("joblib", "dump"), ("joblib.memory", "Memory"),
    ("joblib.numpy_pickle_compat", "NDArrayWrapper"), ("sklearn.datasets", "fetch_openml"),
    ("sklearn.datasets._svmlight_format_io", "dump_svmlight_file"),
    ("huggingface_hub", "hf_hub_download"), ("pandas.core.frame", "DataFrame.to_pickle"),
    ("safetensors.torch", "save_file"), ("xgboost.tracker", "RabitTracker"),
    ("lightgbm.basic", "Dataset"),
    # loaders of nested payloads
    ("torch.serialization", "load"), ("numpy", "load"), ("pickle", "loads"), ("dill", "loads"),
    ("marshal", "loads"), ("yaml", "unsafe_load"),
    # sockets, files, processes, indirection
    ("socket", "create_connection"), ("urllib.request", "urlopen"), ("io", "FileIO"),
    ("builtins", "getattr"), ("builtins", "eval"), ("operator", "attrgetter"),
    ("_operator", "methodcaller"), ("atexit", "register"),
    ("weakref", "finalize"), ("os", "system"), ("posix", "system"), ("nt", "system"),
    ("shutil", "rmtree"), ("tempfile", "mkdtemp"), ("pty", "spawn"),
    # dotted names and aliases reach what they name
    ("torch", "hub.load"), ("numpy", "testing._private.utils.runstring"),
    ("pathlib", "os.system"), ("mimetypes", "os.popen"), ("mypkg.utils", "_os.system"),
    ("torch.nn.modules.module", "torch.hub.load"), ("builtins", "eval.__call__"),
    ("torch._utils", "_rebuild_tensor_v2.__globals__"), ("collections", "OrderedDict.__class__"),
    ("pathlib", "Path.write_text"), ("torch.nn.functional", "importlib"),
    ("mypkg", "evil.system"), ("mypkg", "Runner.popen"), ("torch", "UntypedStorage.from_file"),
    # constructors that map or create files, under every name they are reached by
    ("torch", "from_file"), ("torch._C._VariableFunctionsClass", "from_file"),
    ("torch.storage", "UntypedStorage.from_file"), ("torch", "FloatStorage.from_file"),
    ("torch", "TypedStorage.from_file"), ("torch", "UntypedStorage._new_shared_filename_cpu"),
    ("torch", "UntypedStorage._new_using_fd_cpu"), ("torch", "UntypedStorage._write_file"),
    ("torch", "Tensor.share_memory_"), ("torch", "PyTorchFileWriter"),
    ("torch", "_load_global_deps"), ("numpy._core.memmap", "memmap"),
    ("numpy.core.memmap", "memmap"), ("numpy", "lib.format.open_memmap"),
    ("numpy._core.records", "fromfile"), ("numpy", "ndarray.tofile"), ("mmap", "mmap"),
    ("scipy.io", "savemat"), ("scipy.io.wavfile", "write"), ("scipy.sparse", "save_npz"),
    ("scipy", "LowLevelCallable"), ("pandas", "HDFStore"), ("pandas", "DataFrame.to_parquet"),
    ("xgboost.core", "Booster.dump_model"), ("cv2", "imwrite"), ("lmdb", "open"),
    ("torchvision.io", "write_png"), ("mypkg.store", "memmap"), ("mypkg", "Writer.write"),
]


@pytest.mark.parametrize(("module", "name"), DANGEROUS)
def test_what_runs_code_imports_touches_files_or_network_is_dangerous_even_referenced(
    module: str, name: str,
) -> None:
    judgement = DEFAULT_POLICY.judge(module, name)
    assert judgement.klass == "dangerous", judgement
    assert judgement.verdict(False).severity == Severity.DANGEROUS
    assert judgement.evidence and judgement.rule


UNKNOWN = [("mypkg.layers", "Block"), ("__main__", "Net"), ("collections.abc", "Mapping"),
           ("builtins", "len"), ("x y", "z"), ("json", "loads"), ("torch.nn.functional", "torch"),
           ("torch.nn.modules.activation", "F"), ("sklearn.cluster._kmeans", "ABCMeta"),
           ("sklearn.metrics.pairwise", "np")]


@pytest.mark.parametrize(("module", "name"), UNKNOWN)
def test_everything_else_is_unknown(module: str, name: str) -> None:
    assert DEFAULT_POLICY.judge(module, name).verdict(True).severity == Severity.UNKNOWN


def test_references_and_calls() -> None:
    gelu = DEFAULT_POLICY.judge("torch._C._nn", "gelu")
    assert gelu.verdict(False).severity == Severity.SAFE
    assert gelu.verdict(True).severity == Severity.UNKNOWN
    assert "called while the file loads" in gelu.verdict(True).reason
    reconstructor = DEFAULT_POLICY.judge("copyreg", "_reconstructor")
    assert reconstructor.verdict(True).severity == Severity.SAFE
    assert reconstructor.verdict(False).severity == Severity.UNKNOWN
    loader = DEFAULT_POLICY.judge("torch.storage", "_load_from_bytes")
    assert loader.verdict(False).severity == loader.verdict(True).severity == Severity.DANGEROUS


def test_python2_names_are_judged_as_the_unpickler_imports_them() -> None:
    assert DEFAULT_POLICY.judge("__builtin__", "set", protocol=2).full == "builtins.set"
    assert DEFAULT_POLICY.judge("__builtin__", "set", protocol=2).klass == "safe"
    assert DEFAULT_POLICY.judge("copy_reg", "_reconstructor", protocol=0).klass == (
        "calls-arguments"
    )
    # protocol 3+: the C unpickler imports the name as written; a reader that remaps anyway
    # (torch's weights-only unpickler) reads builtins.eval: the worse reading counts
    assert DEFAULT_POLICY.judge("__builtin__", "eval", protocol=4).klass == "dangerous"


def test_the_knowledge_base_is_read_once_and_cheaply() -> None:
    import time

    started = time.perf_counter()
    knowledge.cache_clear()
    fresh = knowledge()
    elapsed = time.perf_counter() - started
    assert knowledge() is fresh
    assert elapsed < 0.5, elapsed  # about 3 ms on an idle machine; generous for shared CI


# -- user policies -------------------------------------------------------------------------------


def _policy_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_policy_file_trusts_distrusts_and_never_downgrades_dangerous(tmp_path: Path) -> None:
    path = _policy_file(tmp_path, (
        '[safe]\n"acme.layers.*" = "our layers: tensors only"\n"os.system" = "we trust it"\n'
        '[safe-reference]\n"acme.act.swish" = "an activation"\n'
        '[dangerous]\n"acme.tools.*" = "writes files"\n'
        '[unknown]\n"argparse.Namespace" = "not in our models"\n'
    ))
    policy = make_policy(policy_file=path)
    block = policy.judge("acme.layers.block", "Block")
    assert (block.klass, block.rule) == ("safe", "policy:acme.layers.*")
    assert policy.judge("acme.act", "swish").verdict(True).severity == Severity.UNKNOWN
    assert policy.judge("acme.tools", "export").klass == "dangerous"
    assert policy.judge("argparse", "Namespace").klass == "unknown"  # stricter is allowed
    assert policy.judge("os", "system").klass == "dangerous"  # never downgraded
    assert policy.judge("acme.layers", "_os.system").klass == "dangerous"  # rules still apply
    both = make_policy(["other.Thing"], path)
    assert both.judge("other", "Thing").rule == "--allow:other.Thing"
    assert both.judge("acme.layers", "Block").klass == "safe"


@pytest.mark.parametrize(("text", "message"), [
    ('[trusted]\n"a.b" = "x"\n', "unknown key 'trusted' (expected tables: safe, safe-reference,"),
    ('safe = 1\n', "safe: expected a table"),
    ('[safe]\n"a.b" = 1\n', "the value must be a non-empty string"),
    ('[safe]\n"a.b" = ""\n', "the value must be a non-empty string"),
    ('[safe]\n"a.b" = """two\nlines"""\n', "the evidence must be one line"),
    ('[safe]\n"a" = "module only"\n', "expected module.name or module.*"),
    ('[loader]\n"a.b" = "x"\n', "unknown key 'loader'"),
    ('[safe\n', "not valid TOML"),
])
def test_policy_files_are_parsed_strictly(tmp_path: Path, text: str, message: str) -> None:
    path = _policy_file(tmp_path, text)
    with pytest.raises(FormatError) as info:
        load_policy_file(path)
    assert message in str(info.value)
    assert "\n" not in info.value.one_line()
    assert str(path) in str(info.value)


def test_unreadable_or_binary_policy_files(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        load_policy_file(tmp_path / "missing.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[safe]")
    with pytest.raises(FormatError, match="not UTF-8"):
        load_policy_file(binary)


def test_allow_patterns_are_validated() -> None:
    with pytest.raises(ValueError, match=r"expected module\.name or module\.\*"):
        make_policy(["bad name"])
    assert make_policy(["mypkg.*"]).judge("mypkg.sub", "Thing").klass == "safe"


def test_policies_survive_pickling_for_worker_processes(tmp_path: Path) -> None:
    policy = make_policy(["mypkg.*"])
    policy.judge("mypkg", "X")
    clone = pickle.loads(pickle.dumps(policy))
    assert clone.user_entries == policy.user_entries
    assert clone.judge("mypkg", "X") == policy.judge("mypkg", "X")


# -- the knowledge base against the installed libraries ------------------------------------------


def _acceptable(module_name: str, value: object, klass: str) -> bool:
    """What a pattern may make safe: a class or function of the library itself, plain data or
    an instance of the library's own type, a typing construct, an exception class, or something
    whose own name the knowledge base judges safe. Never a module, a metaclass or an executor
    re-exported from elsewhere."""
    import inspect
    import types
    import typing

    import numpy as np

    top = module_name.split(".")[0]
    if isinstance(value, bool | int | float | str | bytes | np.generic | np.dtype) or value is None:
        return True
    if isinstance(value, dict | list | tuple | frozenset | set):
        return True
    if isinstance(value, types.ModuleType):
        return False
    origin = getattr(value, "__module__", "") or ""
    if isinstance(value, typing.TypeVar | types.UnionType | types.GenericAlias) or origin in (
        "typing", "typing_extensions", "collections.abc"
    ):
        return True
    if isinstance(value, type):
        if issubclass(value, BaseException) or origin.split(".")[0] == top:
            return True
        return DEFAULT_POLICY.judge(origin, value.__qualname__).klass == "safe"
    if inspect.isfunction(value) or inspect.isbuiltin(value) or isinstance(value, np.ufunc) or (
        type(value).__name__ == "cython_function_or_method"
    ):
        if origin.split(".")[0] == top:
            return True
        own = DEFAULT_POLICY.judge(origin, getattr(value, "__qualname__", ""))
        return own.klass in ("safe", "safe-reference")
    return (getattr(type(value), "__module__", "") or "").split(".")[0] == top


AUDITED = [
    "torch.nn.modules", "torch.nn.functional", "torch._C._nn", "torch.optim", "numpy.dtypes",
    "sklearn.linear_model", "sklearn.tree", "sklearn.ensemble", "sklearn.preprocessing",
    "sklearn.pipeline", "sklearn.svm", "sklearn.neighbors", "sklearn.decomposition",
    "sklearn.cluster", "sklearn.compose", "sklearn.model_selection", "sklearn.impute",
    "sklearn.naive_bayes", "sklearn.neural_network", "sklearn._loss", "sklearn.dummy",
    "sklearn.calibration", "sklearn.multiclass", "sklearn.metrics", "xgboost.sklearn",
    "lightgbm.sklearn", "transformers.activations", "transformers.models.bert",
]


def test_patterns_over_the_installed_libraries_make_only_their_own_data_safe() -> None:
    """Patterns (``torch.nn.modules.**.[A-Z]*``, ``torch.nn.functional.[a-z]*``, estimator
    packages) also match what those modules import from elsewhere (``F``, ``np``, ``ABCMeta``,
    executors). Every name in the installed packages that a pattern makes safe must be the
    library's own class or function, plain data, or something the knowledge base trusts on its
    own name."""
    import importlib
    import pkgutil
    import warnings

    bad: list[tuple[str, str, str]] = []
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in AUDITED:
            package = importlib.import_module(name)
            modules = [package]
            for info in pkgutil.iter_modules(getattr(package, "__path__", []), name + "."):
                if "test" not in info.name:
                    modules.append(importlib.import_module(info.name))
            for module in modules:
                for attribute, value in list(vars(module).items()):
                    if attribute.startswith("__"):
                        continue
                    judgement = DEFAULT_POLICY.judge(module.__name__, attribute)
                    if judgement.klass not in ("safe", "safe-reference"):
                        continue
                    checked += 1
                    if not _acceptable(module.__name__, value, judgement.klass):
                        bad.append((module.__name__, attribute, type(value).__name__))
    assert checked > 1000
    assert not bad, bad


# -- real files from the real libraries scan safe through the command line -----------------------


@pytest.fixture(scope="module")
def benign_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import joblib
    import lightgbm
    import numpy as np
    import torch
    import torch.nn.functional as F
    import xgboost
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path_factory.mktemp("benign")
    features = np.random.default_rng(0).random((40, 4))
    labels = (features[:, 0] > 0.5).astype(int)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    model.act_fn = F.gelu  # torch._C._nn.gelu kept as an attribute (referenced, not called)
    model.other_act = F.silu
    model.conv_fn = F.conv2d  # pickled as getattr(torch._C._VariableFunctionsClass, "conv2d")
    torch.save(model, root / "full_module.pt")
    hparams = argparse.Namespace(lr=0.1, out=pathlib.PosixPath("/tmp/run"), layers=[8, 8])
    torch.save({"args": hparams, "state_dict": model.state_dict()}, root / "checkpoint.pt")
    for protocol in (0, 2, 4, 5):
        (root / f"namespace_p{protocol}.pkl").write_bytes(pickle.dumps(hparams, protocol=protocol))
    (root / "path.pkl").write_bytes(pickle.dumps(pathlib.PosixPath("/data/x"), protocol=4))
    pipeline = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())])
    joblib.dump(pipeline.fit(features, labels), root / "pipeline.joblib")
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(features, labels)
    joblib.dump(forest, root / "forest.joblib", compress=3)
    with open(root / "forest_p0.pkl", "wb") as handle:
        pickle.dump(forest, handle, protocol=0)
    lgbm = lightgbm.LGBMClassifier(n_estimators=3, verbose=-1).fit(features, labels)
    joblib.dump(lgbm, root / "lgbm.joblib")
    (root / "lgbm.pkl").write_bytes(pickle.dumps(lgbm))
    xgb = xgboost.XGBRegressor(n_estimators=3).fit(features, labels)
    joblib.dump(xgb, root / "xgb.joblib")
    (root / "xgb.pkl").write_bytes(pickle.dumps(xgb))
    (root / "tensor.pkl").write_bytes(pickle.dumps(torch.ones(3)))  # _load_from_bytes blob
    return root


def test_mainstream_benign_models_scan_safe_through_the_cli(benign_models: Path) -> None:
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "scan", "--json", str(benign_models)], capture_output=True,
        text=True, check=False, timeout=300,
    )
    import json

    document = json.loads(proc.stdout)
    problems = {
        Path(f["path"]).name: (f["status"], [x["subject"] for x in f["findings"]], f["errors"])
        for f in document["files"] if f["status"] != "safe"
    }
    assert proc.returncode == 0 and not problems, problems
    assert document["summary"]["files"] == 15


def test_the_benign_models_turn_unsafe_when_a_payload_is_added(
    benign_models: Path, tmp_path: Path,
) -> None:
    """The same kinds of files with one change each are not safe: a called activation, and a
    tensor blob whose nested checkpoint runs code."""
    called = tmp_path / "called.pkl"
    called.write_bytes(b"\x80\x04\x8c\x0ctorch._C._nn\x8c\x04gelu\x93)R.")
    result = scan_file(called)
    assert (result.status, result.findings[0].usage) == ("unknown", "called")
    evil_blob = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00idq\x00\x85R."
    loader = (b"\x80\x02ctorch.storage\n_load_from_bytes\nC" + bytes([len(evil_blob)]) + evil_blob
              + b"\x85R.")
    path = tmp_path / "blob.pkl"
    path.write_bytes(loader)
    result = scan_file(path)
    assert result.status == "dangerous"
    assert any(f.subject == "posix.system" and "/bytes" in f.location for f in result.findings)
    # a protocol-0 blob has no \x80 marker: it is scanned because the loader is called on it
    quiet_blob = b"cposix\nsystem\n(S'id'\ntR."
    path.write_bytes(b"\x80\x02ctorch.storage\n_load_from_bytes\nC" + bytes([len(quiet_blob)])
                     + quiet_blob + b"\x85R.")
    assert scan_file(path).status == "dangerous"
