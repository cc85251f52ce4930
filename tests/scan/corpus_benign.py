"""Benign files written by the real libraries (issue 12): what mainstream training code saves.

A scanner used as a CI gate must pass all of these at its default threshold. Each sample names
the loader that reads it back (``Sample.loader``); ``tests/scan/test_corpus_fires.py`` loads
every one in a child process, proving the files are genuine, not look-alikes.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import fractions
import io
import pathlib
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

from scan_corpus import Sample, write_hf_tokenizer

__all__ = ["CHAT_TEMPLATES", "LLAMA3_TOOLS_TEMPLATE", "build_benign", "transformers_template"]

# Chat templates in the styles mainstream GGUF models ship (written for this corpus).
CHAT_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim"
        " + '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
        " + message['content'] | trim + '<|eot_id|>' %}{{ content }}{% endfor %}"
        "{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "mistral": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}"
        "{% endif %}"
        "{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'].strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ ' ' + message['content'].strip() + eos_token }}"
        "{% endif %}{% endfor %}"
    ),
    "tools": (
        "{%- set ns = namespace(system='You are a helpful assistant.') -%}"
        "{%- for message in messages -%}{%- if message.role == 'system' -%}"
        "{%- set ns.system = message.content -%}{%- endif -%}{%- endfor -%}"
        "{{ '<|system|>' ~ ns.system ~ ' Today is ' ~ strftime_now('%d %b %Y') ~ '.' }}"
        "{%- if tools -%}{{ '<tools>' ~ (tools | tojson) ~ '</tools>' }}{%- endif -%}"
        "{%- for message in messages | rejectattr('role', 'equalto', 'system') -%}"
        "{{ '<|' ~ message.role ~ '|>' ~ message.content | default('', true) }}"
        "{%- if message.tool_calls is defined -%}{%- for call in message.tool_calls -%}"
        "{{ '<call>' ~ call.function.name ~ (call.function.arguments | tojson) ~ '</call>' }}"
        "{%- endfor -%}{%- endif -%}{%- if not loop.last %}{{ '\\n' }}{% endif -%}"
        "{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
    ),
}


# A Llama-3.1-style tool-calling template (written for this corpus): namespace(), loops over
# tools and tool calls, raise_exception, strftime_now, tojson.
LLAMA3_TOOLS_TEMPLATE = """{{- bos_token }}
{%- set ns = namespace(system='', date=strftime_now('%d %b %Y')) %}
{%- if messages[0]['role'] == 'system' %}
    {%- set ns.system = messages[0]['content'] | trim %}
    {%- set messages = messages[1:] %}
{%- endif %}
{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}
{{- 'Cutting Knowledge Date: December 2023\\nToday Date: ' + ns.date + '\\n\\n' }}
{%- if tools is not none and tools | length > 0 %}
    {{- 'You have access to the following functions:\\n\\n' }}
    {%- for tool in tools %}
        {{- tool | tojson(indent=4) }}{{- '\\n\\n' }}
    {%- endfor %}
{%- endif %}
{{- ns.system + '<|eot_id|>' }}
{%- for message in messages %}
    {%- if message.role not in ['user', 'assistant', 'tool', 'ipython'] %}
        {{- raise_exception('Unknown role: ' + message.role) }}
    {%- endif %}
    {%- if message.tool_calls is defined and message.tool_calls %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
        {%- for call in message.tool_calls %}
            {%- set fn = call.function if call.function is defined else call %}
            {{- '{"name": "' + fn.name + '", "parameters": ' + (fn.arguments | tojson) + '}' }}
        {%- endfor %}
        {{- '<|eot_id|>' }}
    {%- else %}
        {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' }}
        {{- message.content | trim + '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

#: Templates that ship inside the installed transformers package: (file under the package,
#: name of the assignment or property that holds it).
TRANSFORMERS_TEMPLATES = {
    "smolvlm": ("models/smolvlm/processing_smolvlm.py", "DEFAULT_CHAT_TEMPLATE"),
    "llama4": ("models/llama4/processing_llama4.py", "chat_template"),
    "qwen2_audio": ("models/qwen2_audio/processing_qwen2_audio.py", "default_chat_template"),
}


def transformers_template(which: str) -> str:
    """A chat template as the installed transformers ships it, read from its source file (a
    module-level string, or the string a property returns) without importing transformers."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    assert spec is not None and spec.origin is not None
    relative, name = TRANSFORMERS_TEMPLATES[which]
    tree = ast.parse((Path(spec.origin).parent / relative).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return node.value.value
        if isinstance(node, ast.FunctionDef) and node.name == name:
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return) and isinstance(inner.value, ast.Constant):
                    return str(inner.value.value)
    raise LookupError(f"{name} not found in transformers/{relative}")


def _hparams() -> argparse.Namespace:
    return argparse.Namespace(
        lr=3e-4, batch_size=32, epochs=10, seed=0, optimizer="adamw", betas=(0.9, 0.999),
        data_dir=pathlib.PosixPath("/data/imagenet"), output_dir=pathlib.Path("runs/exp1"),
        pattern=pathlib.PurePosixPath("shards/*.tar"), amp=True, layers=[64, 128, 256],
        started=datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
    )


def _python_values() -> dict[str, object]:
    return {
        "created": datetime.datetime(2024, 5, 1, 12, 30, 15, 250000),
        "created_utc": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
        "tz": datetime.timezone(datetime.timedelta(hours=2), "CEST"),
        "day": datetime.date(2024, 5, 1), "at": datetime.time(12, 30),
        "elapsed": datetime.timedelta(hours=3, seconds=12),
        "price": decimal.Decimal("1.10"), "ratio": fractions.Fraction(1, 3),
        "blob": b"\x00\x01bytes", "buffer": bytearray(b"raw"), "tags": {"a", "b"},
        "frozen": frozenset({1, 2}), "z": complex(1, 2), "nan": float("nan"),
        "big": 2**80, "nested": {"list": [1, 2.5, None, True], "tuple": (1, "x")},
    }


def build_benign(root: Path, only: set[str] | None = None) -> list[Sample]:
    """Write the issue-12 benign samples under ``root/benign``."""
    import joblib
    import numpy as np
    import torch
    import torch.nn.functional as F

    ben = root / "benign"
    ben.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = []

    def add(name: str, writer: Callable[[Path], object], *, loader: str, category: str,
            note: str = "") -> None:
        if only is not None and name not in only:
            return
        path = ben / name
        writer(path)
        samples.append(Sample(name, path, False, "clean", note=note, loader=loader,
                              category=category))

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 4))
    labels = (features[:, 0] + features[:, 1] > 0).astype(np.int64)
    targets = features @ np.array([1.0, -2.0, 0.5, 0.0])

    # 1. Full-model torch.save: torch.nn classes, torch.nn.functional callables as attributes.
    cat = "full-model torch.save"
    add("full_model_transformer_gelu.pt", lambda p: torch.save(
        torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu"), p),
        loader="torch.load", category=cat,
        note="activation stored as torch._C._nn.gelu (F.gelu), not called")

    def sequential_with_functional(path: Path) -> None:
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.GELU(),
                                    torch.nn.Dropout(0.1), torch.nn.Linear(8, 2))
        model.act = F.gelu
        model.act_relu = F.relu
        model.act_silu = F.silu
        model.norm_fn = F.layer_norm
        model.squash = torch.tanh
        torch.save(model, path)

    add("full_model_functional_attrs.pt", sequential_with_functional, loader="torch.load",
        category=cat, note="F.gelu/F.relu/F.silu/F.layer_norm/torch.tanh kept as attributes")
    add("full_model_conv_bn_legacy.pt", lambda p: torch.save(torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Embedding(10, 4)), p,
        _use_new_zipfile_serialization=False), loader="torch.load", category=cat,
        note="legacy (non-zip) format, BatchNorm buffers")

    # 2. Training hyper-parameters and plain Python values.
    cat = "hyper-parameters and Python values"
    add("hparams_namespace_p0.pkl", lambda p: p.write_bytes(pickle.dumps(
        {"args": _hparams()}, protocol=0)), loader="pickle.load", category=cat)
    add("hparams_namespace_p2.pkl", lambda p: p.write_bytes(pickle.dumps(
        {"args": _hparams()}, protocol=2)), loader="pickle.load", category=cat)
    add("hparams_namespace_p5.pkl", lambda p: p.write_bytes(pickle.dumps(
        {"args": _hparams(), "vocab": list("abc")}, protocol=5)), loader="pickle.load",
        category=cat)
    add("python_values_p0.pkl", lambda p: p.write_bytes(pickle.dumps(_python_values(),
                                                                     protocol=0)),
        loader="pickle.load", category=cat, note="datetime, decimal, fractions, bytes, sets")
    add("python_values_p4.pkl", lambda p: p.write_bytes(pickle.dumps(_python_values(),
                                                                     protocol=4)),
        loader="pickle.load", category=cat)

    def lightning_checkpoint(path: Path) -> None:
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
        model(torch.randn(3, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
        torch.save({
            "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.2.0",
            "state_dict": model.state_dict(), "hyper_parameters": _hparams(),
            "optimizer_states": [optimizer.state_dict()],
            "lr_schedulers": [scheduler.state_dict()], "hparams_name": "args",
            "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.25),
                                              "dirpath": pathlib.PosixPath("/ckpt")}},
        }, path)

    add("lightning_style.ckpt", lightning_checkpoint, loader="torch.load", category=cat,
        note="Namespace and PosixPath inside a zip checkpoint")

    # 3. Optimizer state dicts, tensors of every kind.
    cat = "PyTorch state"

    def optimizers(path: Path) -> None:
        model = torch.nn.Linear(4, 2)
        adam = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
        sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        for optimizer in (adam, sgd):
            model(torch.randn(3, 4)).sum().backward()
            optimizer.step()
        torch.save({"adam": adam.state_dict(), "sgd": sgd.state_dict(),
                    "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict()}, path)

    add("optimizer_states.pt", optimizers, loader="torch.load", category=cat)

    def tensor_kinds(path: Path) -> None:
        dense = torch.arange(12.0).reshape(3, 4)
        torch.save({
            "view": dense.t(), "sparse": dense.to_sparse(),
            "complex": torch.ones(2, dtype=torch.cfloat),
            "int8": torch.zeros(4, dtype=torch.int8), "uint8": torch.zeros(4, dtype=torch.uint8),
            "bool": torch.tensor([True, False]), "param": torch.nn.Parameter(torch.ones(2)),
            "size": torch.Size([3, 4]), "dtype": torch.bfloat16, "device": torch.device("cpu"),
            "generator_state": torch.Generator().manual_seed(1).get_state(),
        }, path)

    add("tensor_kinds.pt", tensor_kinds, loader="torch.load", category=cat,
        note="sparse, complex, views, Parameter, Size, dtype, device")
    add("legacy_checkpoint_full.pt", lambda p: torch.save({
        "model": torch.nn.Linear(3, 2).state_dict(), "args": _hparams(), "epoch": 7},
        p, _use_new_zipfile_serialization=False), loader="torch.load", category=cat,
        note="legacy stacked-pickle format with a Namespace")
    add("torch_tar_legacy.pt", _torch_tar_checkpoint, loader="torch.load", category=cat,
        note="pre-0.4 tar layout: sys_info, pickle, storages, tensors members")

    # 4. TorchScript archives.
    cat = "TorchScript"

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.linear(x)) * 2

    add("torchscript_scripted.pt", lambda p: torch.jit.save(torch.jit.script(Tiny()), str(p)),
        loader="torch.jit.load", category=cat)
    add("torchscript_traced.pt", lambda p: torch.jit.save(
        torch.jit.trace(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()),
                        torch.randn(2, 4)), str(p)), loader="torch.jit.load", category=cat)

    # 5. NumPy archives.
    cat = "NumPy"

    def npz_mixed(path: Path) -> None:
        record = np.dtype([("id", "<i8"), ("name", "<U8"), ("pos", "<f4", (3,)),
                           ("when", "<M8[s]"), ("flags", [("ok", "?"), ("code", "u1")])])
        np.savez(path, when=np.array(["2024-01-01", "2024-06-30T12:00"], dtype="datetime64[m]"),
                 span=np.array([1, 2, 3], dtype="timedelta64[D]"), records=np.zeros(3, record),
                 half=np.ones(4, np.float16), cplx=np.ones(2, np.complex64),
                 text=np.array(["a", "bcd"]), raw=np.frombuffer(b"abcd", "S2"),
                 fortran=np.asfortranarray(np.arange(6).reshape(2, 3)))

    add("npz_datetime_structured.npz", npz_mixed, loader="numpy.load", category=cat,
        note="datetime64/timedelta64, structured and nested dtypes, unicode, Fortran order")
    add("npz_compressed_structured.npz", lambda p: np.savez_compressed(
        p, rec=np.zeros(2, [("a", "<i4"), ("b", "<M8[D]")]), x=np.arange(5)),
        loader="numpy.load", category=cat)
    add("numpy_scalars_dtypes.pkl", lambda p: p.write_bytes(pickle.dumps({
        "day": np.datetime64("2024-01-01"), "dtype": np.dtype([("a", "<i4"), ("b", "<U3")]),
        "f": np.float32(1.5), "i": np.int16(3), "masked": np.ma.masked_array([1, 2], [0, 1]),
        "array": np.arange(6).reshape(2, 3)}, protocol=4)), loader="pickle.load", category=cat)

    # 6. scikit-learn, LightGBM, XGBoost through joblib and pickle; joblib compression.
    cat = "estimators"

    def sklearn_pipeline(path: Path) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        joblib.dump(make_pipeline(StandardScaler(), LogisticRegression()).fit(features, labels),
                    path)

    add("sklearn_pipeline.joblib", sklearn_pipeline, loader="joblib.load", category=cat,
        note="StandardScaler + LogisticRegression")

    def sklearn_forest(path: Path) -> None:
        from sklearn.ensemble import RandomForestClassifier

        joblib.dump(RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(
            features, labels), path)

    add("sklearn_random_forest.joblib", sklearn_forest, loader="joblib.load", category=cat)

    def sklearn_misc(path: Path) -> None:
        from sklearn.cluster import KMeans
        from sklearn.compose import ColumnTransformer
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import OneHotEncoder
        from sklearn.tree import DecisionTreeRegressor

        joblib.dump({
            "tree": DecisionTreeRegressor(max_depth=3).fit(features, targets),
            "pca": PCA(2).fit(features), "kmeans": KMeans(2, n_init=1, random_state=0).fit(
                features),
            "columns": ColumnTransformer([("onehot", OneHotEncoder(), [0])]).fit(
                np.array([["a"], ["b"], ["a"]], dtype=object)),
        }, path, compress=("lzma", 3))

    add("sklearn_misc_lzma.joblib", sklearn_misc, loader="joblib.load", category=cat,
        note="tree, PCA, KMeans, ColumnTransformer; lzma-compressed")
    for method in ("zlib", "gzip", "bz2", "xz"):
        add(f"joblib_{method}.joblib", lambda p, meth=method: joblib.dump(
            {"weights": np.arange(500.0), "ids": np.arange(50, dtype=np.int32), "meta": _hparams()},
            p, compress=(meth, 3)), loader="joblib.load", category="joblib compression")

    def lightgbm_model(path: Path, *, use_joblib: bool) -> None:
        import lightgbm

        model = lightgbm.LGBMClassifier(n_estimators=3, num_leaves=4, min_child_samples=2,
                                        verbose=-1).fit(features, labels)
        if use_joblib:
            joblib.dump(model, path)
        else:
            path.write_bytes(pickle.dumps(model))

    add("lightgbm_classifier.pkl", lambda p: lightgbm_model(p, use_joblib=False),
        loader="pickle.load", category=cat)
    add("lightgbm_classifier.joblib", lambda p: lightgbm_model(p, use_joblib=True),
        loader="joblib.load", category=cat)

    def xgboost_model(path: Path, *, use_joblib: bool) -> None:
        import xgboost

        model = xgboost.XGBRegressor(n_estimators=3, max_depth=2, n_jobs=1).fit(features, targets)
        if use_joblib:
            joblib.dump(model, path)
        else:
            path.write_bytes(pickle.dumps(model))

    add("xgboost_regressor.pkl", lambda p: xgboost_model(p, use_joblib=False),
        loader="pickle.load", category=cat)
    add("xgboost_regressor.joblib", lambda p: xgboost_model(p, use_joblib=True),
        loader="joblib.load", category=cat)

    # 7. safetensors, GGUF with mainstream chat templates, ONNX.
    def safetensors_torch(path: Path) -> None:
        from safetensors.torch import save_file

        save_file({"w": torch.ones(4, 4, dtype=torch.bfloat16), "b": torch.zeros(4)}, str(path),
                  metadata={"format": "pt"})

    add("model_bf16.safetensors", safetensors_torch, loader="safetensors", category="safetensors")
    for style in CHAT_TEMPLATES:
        add(f"gguf_{style}.gguf", lambda p, s=style: _gguf_model(p, CHAT_TEMPLATES[s]),
            loader="gguf-jinja-sandboxed", category="GGUF chat template")
    # 8. Hugging Face chat templates outside GGUF: tokenizer_config.json (a string, or a list
    # of named templates), chat_template.jinja, chat_template.json / processor_config.json;
    # each folder is a tokenizer transformers loads, rendered by apply_chat_template.
    cat = "Hugging Face chat template"
    hf_loader = "transformers-chat-template"
    for style, template in {**CHAT_TEMPLATES, "llama3_tools": LLAMA3_TOOLS_TEMPLATE}.items():
        add(f"hf_{style}/tokenizer_config.json",
            lambda p, t=template: write_hf_tokenizer(p.parent, chat_template=t),
            loader=hf_loader, category=cat)
    add("hf_named_templates/tokenizer_config.json", lambda p: write_hf_tokenizer(
        p.parent, chat_template=[{"name": "default", "template": CHAT_TEMPLATES["chatml"]},
                                 {"name": "tool_use", "template": LLAMA3_TOOLS_TEMPLATE}]),
        loader=hf_loader, category=cat, note="a list of {name, template} objects")
    add("hf_llama3_jinja/chat_template.jinja", lambda p: write_hf_tokenizer(
        p.parent, jinja=LLAMA3_TOOLS_TEMPLATE), loader=hf_loader, category=cat)
    add("hf_mistral_jinja/chat_template.jinja", lambda p: write_hf_tokenizer(
        p.parent, jinja=CHAT_TEMPLATES["mistral"]), loader=hf_loader, category=cat)
    for which in TRANSFORMERS_TEMPLATES:
        add(f"hf_transformers_{which}/tokenizer_config.json",
            lambda p, w=which: write_hf_tokenizer(p.parent, chat_template=transformers_template(w)),
            loader=hf_loader, category=cat, note="template shipped in the transformers package")
    add("hf_processor_llama4/chat_template.json", lambda p: _json_file(
        p, {"chat_template": transformers_template("llama4")}), loader=hf_loader, category=cat,
        note="the legacy processor template file")
    add("hf_processor_smolvlm/processor_config.json", lambda p: _json_file(
        p, {"processor_class": "SmolVLMProcessor", "image_seq_len": 64,
            "chat_template": transformers_template("smolvlm")}), loader=hf_loader, category=cat)
    add("mlp_external.onnx", _onnx_mlp, loader="onnx", category="ONNX",
        note="weights in mlp_external.onnx.data next to it, as onnx writes large models")
    samples_by_name = {s.name for s in samples}
    if "mlp_external.onnx" in samples_by_name:
        samples.append(Sample("mlp_external.onnx.data", ben / "mlp_external.onnx.data", False,
                              "clean", note="raw float data of mlp_external.onnx",
                              loader="onnx-data", category="ONNX"))
    return samples


def _torch_tar_checkpoint(path: Path) -> None:
    """A state dict in PyTorch's pre-0.4 tar layout, as ``torch/serialization.py``'s
    ``legacy_load`` reads it: members ``sys_info``, ``storages`` (count, then per storage a
    pickled ``(key, location, storage type)`` and an int64 element count with the raw bytes),
    ``tensors`` (count, then per tensor a pickled ``(key, storage key, tensor type)``, int32 ndim,
    4 pad bytes, int64 sizes, strides and storage offset) and ``pickle`` (the object, tensors as
    persistent ids)."""
    import struct

    import torch

    weight = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    bias = torch.ones(3, dtype=torch.float32)
    storages = io.BytesIO()
    pickle.dump(2, storages, protocol=2)
    for key, tensor in ((0, weight), (1, bias)):
        pickle.dump((key, "cpu", torch.FloatStorage), storages, protocol=2)
        storages.write(struct.pack("<q", tensor.numel()) + tensor.numpy().tobytes())
    pickle.dump([], storages, protocol=2)  # storage views
    tensors = io.BytesIO()
    pickle.dump(2, tensors, protocol=2)
    for key, storage_key, tensor in ((2, 0, weight), (3, 1, bias)):
        pickle.dump((key, storage_key, torch.FloatTensor), tensors, protocol=2)
        tensors.write(struct.pack("<i", tensor.dim()) + b"\0" * 4)
        tensors.write(struct.pack(f"<{tensor.dim()}q", *tensor.shape))
        tensors.write(struct.pack(f"<{tensor.dim()}q", *tensor.stride()))
        tensors.write(struct.pack("<q", 0))

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> str | None:
            return {id(weight): "2", id(bias): "3"}.get(id(obj))

    main = io.BytesIO()
    _Pickler(main, protocol=2).dump({"weight": weight, "bias": bias, "epoch": 5})
    members = {
        "sys_info": pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {
            "short": 2, "int": 4, "long": 8}}, protocol=2),
        "pickle": main.getvalue(), "storages": storages.getvalue(), "tensors": tensors.getvalue(),
    }
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _json_file(path: Path, document: object) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def _gguf_model(path: Path, template: str) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-chat")
    writer.add_context_length(128)
    writer.add_block_count(1)
    writer.add_chat_template(template)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>", "a", "b"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_tensor("token_embd.weight", np.zeros((5, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _onnx_mlp(path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(4, 64)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(np.zeros(64, np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(size=(64, 2)).astype(np.float32), "w2")
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 2])], initializer=[w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="weightvault-corpus")
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=0)
