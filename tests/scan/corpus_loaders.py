"""Run the real loaders on corpus files (a child-process script for ``test_corpus_fires.py``).

Usage: ``python corpus_loaders.py JOBS.json``, where the file holds ``[[loader, path], ...]``.
Each job runs in turn, every exception (even ``SystemExit``) caught; one line per job is printed:
``RESULT_PREFIX`` and ``{"path": ..., "ok": bool, "error": "..."}``. Importing this module runs
nothing; the loaders, which execute the files they read, run only in the child process.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

RESULT_PREFIX = "corpus-loader-result: "
"""Marks the runner's own output lines (payloads may print too)."""

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "Weather?"},
]


class _NoPersistentIds(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> None:
        return None


def _chat_template(path: str) -> str:
    import gguf

    reader = gguf.GGUFReader(path)
    field = reader.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode()


def _render(template: str, *, sandboxed: bool) -> str:
    import datetime

    import jinja2
    import jinja2.sandbox

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    if sandboxed:  # llama-cpp-python since the CVE-2024-34359 fix
        env: jinja2.Environment = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True)
        messages = MESSAGES[1:] if "raise_exception" in template else MESSAGES
    else:  # llama-cpp-python before it: jinja2.Environment(loader=BaseLoader(), ...)
        env = jinja2.Environment(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True)
        messages = MESSAGES
    return env.from_string(template).render(
        messages=messages, bos_token="<s>", eos_token="</s>", add_generation_prompt=True,
        raise_exception=raise_exception, tools=[{"type": "function", "function": {"name": "f"}}],
        strftime_now=lambda fmt: datetime.datetime(2024, 5, 1).strftime(fmt),
    )


def _hf_templates(path: str) -> list[tuple[str, str]]:
    """``(name, template)`` of a Hugging Face chat-template file, read as transformers reads it
    (a ``.jinja`` file, or the ``chat_template`` of a JSON file: a string, a list of
    ``{"name", "template"}`` objects or a ``{name: template}`` object)."""
    file = Path(path)
    if file.suffix == ".jinja":
        return [("default", file.read_text())]
    value = json.loads(file.read_text())["chat_template"]
    if isinstance(value, str):
        return [("default", value)]
    if isinstance(value, dict):
        return list(value.items())
    return [(entry["name"], entry["template"]) for entry in value]


def _transformers_chat(path: str) -> list[str]:
    """What transformers renders: a tokenizer folder (``tokenizer_config.json`` or
    ``chat_template.jinja`` beside ``tokenizer.json``) through ``AutoTokenizer`` and
    ``apply_chat_template``; a processor's ``chat_template.json`` / ``processor_config.json``
    through ``render_jinja_template``. Both use its ``ImmutableSandboxedEnvironment``."""
    file = Path(path)
    tools = [{"type": "function", "function": {"name": "f", "description": "d",
                                               "parameters": {"type": "object"}}}]
    out = []
    if file.name in ("tokenizer_config.json", "chat_template.jinja"):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), local_files_only=True)
        templates = tokenizer.chat_template
        names = list(templates) if isinstance(templates, dict) else [None]
        for name in names:
            source = templates[name] if name is not None else templates
            messages = MESSAGES[1:] if "raise_exception" in source else MESSAGES
            out.append(tokenizer.apply_chat_template(
                messages, tools=tools, add_generation_prompt=True, tokenize=False,
                chat_template=name))
        return out
    from transformers.utils.chat_template_utils import render_jinja_template

    for _, template in _hf_templates(path):
        messages = MESSAGES[1:] if "raise_exception" in template else MESSAGES
        out.append(render_jinja_template(
            conversations=[messages], tools=tools, chat_template=template,
            add_generation_prompt=True, bos_token="<s>", eos_token="</s>"))
    return out


def _zip_member_pickles(path: str) -> None:
    """What a loader built on ``zipfile`` runs: every ``.pkl`` member unpickled (persistent ids,
    the tensor storages, answered with None)."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.filename.endswith(".pkl"):
                _NoPersistentIds(io.BytesIO(archive.read(info))).load()


def _zip_member_loads(path: str) -> None:
    """``pickle.loads`` (the bytes unpickler) on each ``data.pkl`` member read by ``zipfile``."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.filename.endswith("/data.pkl"):
                pickle.loads(archive.read(info))


def load(loader: str, path: str) -> object:
    if loader == "pickle.load":
        with open(path, "rb") as handle:
            return pickle.load(handle)
    if loader == "pickle.loads":
        return pickle.loads(Path(path).read_bytes())
    if loader == "pickle.load+call":
        with open(path, "rb") as handle:
            obj = pickle.load(handle)
        return obj["fn"](*obj["args"])
    if loader in ("torch.load", "torch.load+call", "torch.jit.load"):
        import torch

        if loader == "torch.jit.load":
            return torch.jit.load(path)
        obj = torch.load(path, weights_only=False)
        return obj.act(obj.hint) if loader == "torch.load+call" else obj
    if loader == "joblib.load":
        import joblib

        return joblib.load(path)
    if loader == "numpy.load":
        import numpy as np

        obj = np.load(path, allow_pickle=True)
        if isinstance(obj, np.lib.npyio.NpzFile):
            with obj:
                return {key: obj[key] for key in obj.files}
        return obj
    if loader == "gguf-jinja":
        return _render(_chat_template(path), sandboxed=False)
    if loader == "gguf-jinja-sandboxed":
        return _render(_chat_template(path), sandboxed=True)
    if loader == "hf-template-jinja":
        return [_render(template, sandboxed=False) for _, template in _hf_templates(path)]
    if loader == "transformers-chat-template":
        return _transformers_chat(path)
    if loader == "safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    if loader == "onnx":
        import onnx

        model = onnx.load(path)  # reads the external data file too
        onnx.checker.check_model(model)
        return model
    if loader == "onnx-data":
        return Path(path).read_bytes()
    if loader == "zipfile":
        return _zip_member_pickles(path)
    if loader == "pickle.loads-member":
        return _zip_member_loads(path)
    raise ValueError(f"unknown loader {loader!r}")


def main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    for loader, path in jobs:
        try:
            load(loader, path)
            result = {"path": path, "ok": True, "error": ""}
        except BaseException as exc:
            result = {"path": path, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
