"""What each job kind does, inside the worker: load the model from decrypted memory, then query,
evaluate, fine-tune or inspect it, and return only the kind's declared outputs.

Models are ``transformers`` architectures named by the version's ``config.json``
(``architectures[0]``, a class of the ``transformers`` package itself: no remote code), with
weights from the version's safetensors files, read through the decrypting reader straight into
tensors; or a tamper-lab model (one safetensors file whose metadata names a built-in testbed,
as ``weightvault tamper`` saves them), built as that testbed's architecture (query and evaluate
only: its inputs are the testbed's, numbers or token ids, and its outputs the desired head's).

Numbers that leave are rounded (probabilities to 4 decimals, statistics to 4 significant
digits): every digit is extraction bandwidth.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import time
from collections.abc import Mapping
from typing import Any

from weightvault.access.spec import JobRequest, parse_dataset, parse_job_request

__all__ = ["LoadedModel", "load_model", "run_job"]

_TORCH_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip
_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForSequenceClassification")
EVALUATION_GROUP = "weightvault.evaluations"


def _round(value: float, digits: int = 4) -> float:
    if not math.isfinite(value) or value == 0:
        return float(value) if math.isfinite(value) else 0.0
    return float(f"{value:.{digits}g}")


class LoadedModel:
    """A model built from decrypted memory, with the names its weights were stored under."""

    def __init__(
        self,
        model: Any,
        config: dict[str, Any],
        stored_names: dict[str, list[str]],
        testbed: Any = None,
    ):
        self.model = model
        self.config = config
        self.stored_names = stored_names
        """Per safetensors file, the tensor names it held (a derived version keeps them)."""
        self.testbed = testbed
        """The tamper-lab testbed a tamper model was built for (None: a transformers model)."""

    @property
    def is_classifier(self) -> bool:
        if self.testbed is not None:
            return True
        return str(self.config.get("architectures", [""])[0]).endswith("ForSequenceClassification")


def _read_state(
    files: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, str]]:
    """Every tensor of every ``*.safetensors`` file, decrypted into memory; the names per file;
    the metadata of the last file read."""
    import torch

    from weightvault.crypt.safetensors import read_safetensors_index
    from weightvault.errors import FormatError

    state: dict[str, Any] = {}
    stored: dict[str, list[str]] = {}
    metadata: dict[str, str] = {}
    for path, reader in files.items():
        if not path.endswith(".safetensors"):
            continue
        tensors, metadata = read_safetensors_index(reader, exact=True)  # a loader: every rule
        stored[path] = list(tensors)
        for tensor_name, info in tensors.items():
            dtype = getattr(torch, _TORCH_DTYPES.get(info.dtype, ""), None)
            if dtype is None:
                raise FormatError(
                    f"{path}: tensor {tensor_name!r} has unsupported dtype {info.dtype}"
                )
            data = reader.read_bytearray(info.start, info.end - info.start)
            tensor = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
            state[tensor_name] = tensor.reshape(info.shape)
    if not state:
        raise FormatError("the model version has no safetensors weights")
    return state, stored, metadata


def _load_testbed_model(
    state: dict[str, Any], stored: dict[str, list[str]], metadata: dict[str, str]
) -> LoadedModel:
    """A tamper-lab model: the named built-in testbed's trunk and a desired head sized by the
    stored weights, loaded strictly (every tensor, every shape)."""
    from weightvault.errors import FormatError
    from weightvault.tamper.testbed import BUILTIN_TESTBEDS, METADATA_KEY, TamperModel

    try:
        saved = json.loads(metadata[METADATA_KEY])
        name = str(saved["testbed"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"safetensors metadata {METADATA_KEY}: no testbed named") from exc
    if name not in BUILTIN_TESTBEDS:
        raise FormatError(
            f"testbed {name!r} is not built in (jobs run {', '.join(sorted(BUILTIN_TESTBEDS))})"
        )
    head = state.get("desired_head.weight")
    if head is None or head.dim() != 2:
        raise FormatError("the tamper model has no desired_head.weight")
    testbed = BUILTIN_TESTBEDS[name]()
    model = TamperModel(testbed.make_trunk(0), testbed.feature_dim, int(head.shape[0]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise FormatError(
            f"weights do not match the {name} testbed: {str(exc).splitlines()[0]}"
        ) from exc
    model.eval()
    return LoadedModel(model, {"testbed": name, "num_labels": int(head.shape[0])}, stored, testbed)


def load_model(files: Mapping[str, Any]) -> LoadedModel:
    """Build the model from ``config.json`` and every ``*.safetensors`` file (random-access
    readers of the ciphertext): tensors are decrypted into memory only."""
    from weightvault.errors import FormatError

    if "config.json" not in files:
        from weightvault.tamper.testbed import METADATA_KEY

        state, stored, metadata = _read_state(files)
        if len(stored) == 1 and METADATA_KEY in metadata:
            return _load_testbed_model(state, stored, metadata)
        raise FormatError("the model version has no config.json")
    import transformers

    config_doc = json.loads(files["config.json"].read_all())
    architectures = config_doc.get("architectures") or []
    name = str(architectures[0]) if architectures else ""
    if not name.endswith(_SUFFIXES) or not hasattr(transformers, name):
        raise FormatError(
            f"config.json: architecture {name!r} is not a supported transformers class"
        )
    config = transformers.AutoConfig.for_model(**config_doc)
    state, stored, _metadata = _read_state(files)
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights  # type: ignore[attr-defined,no-redef]
    with no_init_weights():
        model = getattr(transformers, name)(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    tied = {k for k in missing if _is_tied(model, k)}
    if unexpected or set(missing) - tied:
        wrong = sorted(unexpected) or sorted(set(missing) - tied)
        raise FormatError(f"weights do not match the architecture (first: {wrong[0]!r})")
    model.eval()
    return LoadedModel(model, config_doc, stored)


def _is_tied(model: Any, key: str) -> bool:
    """Whether ``key`` is an output embedding tied to the input embedding."""
    output = model.get_output_embeddings()
    if output is None or not key.endswith("weight"):
        return False
    return bool(output.weight is model.get_input_embeddings().weight and "head" in key)


# -- kinds ---------------------------------------------------------------------------------------


def _query(loaded: LoadedModel, job: JobRequest) -> dict[str, Any]:
    import torch

    p = job.parameters
    torch.manual_seed(p["seed"])
    model = loaded.model
    if loaded.testbed is not None:
        return {"probabilities": _testbed_probabilities(loaded, job), "tokens_out": 0}
    if "prompts" not in job.inputs:
        raise ValueError("this model takes prompts (token ids); features are for testbeds")
    results: list[Any] = []
    tokens_out = 0
    with torch.no_grad():
        for prompt in job.inputs["prompts"]:
            ids = torch.tensor([prompt], dtype=torch.long)
            if loaded.is_classifier:
                probs = torch.softmax(model(input_ids=ids).logits[0], dim=-1).tolist()
                results.append([round(x, 4) for x in probs])
                continue
            sample = p["temperature"] > 0
            kwargs: dict[str, Any] = {"max_new_tokens": p["max_new_tokens"], "do_sample": sample}
            if sample:
                kwargs.update(temperature=p["temperature"], top_k=p["top_k"], top_p=p["top_p"])
            pad = getattr(model.config, "eos_token_id", None)
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), pad_token_id=pad or 0, **kwargs
            )
            completion = out[0, len(prompt) :].tolist()
            tokens_out += len(completion)
            results.append(completion)
    key = "probabilities" if loaded.is_classifier else "completions"
    return {key: results, "tokens_out": tokens_out}


def _testbed_input(loaded: LoadedModel, row: dict[str, Any], key: str) -> Any:
    """One input of a tamper-lab model as a batch of one: numbers (``features``, checked against
    the testbed's input width) or token ids (``input_ids``)."""
    import torch

    if key == "input_ids":
        return torch.tensor([row[key]], dtype=torch.long)
    x = torch.tensor([row[key]], dtype=torch.float32)
    shape = loaded.testbed.data().test.x.shape[1:]
    if x.shape[1:] != shape:
        raise ValueError(
            f"the {loaded.config['testbed']} testbed takes rows of {shape.numel()} numbers, "
            f"not {x.shape[1]}"
        )
    return x


def _testbed_probabilities(loaded: LoadedModel, job: JobRequest) -> list[list[float]]:
    import torch

    rows = job.inputs.get("features") or job.inputs["prompts"]
    key = "features" if "features" in job.inputs else "input_ids"
    out = []
    with torch.no_grad():
        for row in rows:
            x = _testbed_input(loaded, {key: row}, key)
            probs = torch.softmax(loaded.model(x)[0], dim=-1).tolist()
            out.append([round(v, 4) for v in probs])
    return out


def _testbed_split_metrics(loaded: LoadedModel) -> dict[str, float]:
    """Desired-task loss and accuracy on the testbed's own test split (``builtin:testbed``)."""
    import torch

    split = loaded.testbed.data().test
    with torch.no_grad():
        logits = torch.cat([loaded.model(split.x[i : i + 256]) for i in range(0, len(split), 256)])
    loss = float(torch.nn.functional.cross_entropy(logits, split.desired))
    accuracy = float((logits.argmax(-1) == split.desired).float().mean())
    return {"loss": _round(loss), "accuracy": _round(accuracy), "scored": float(len(split))}


def _dataset_metrics(loaded: LoadedModel, rows: list[dict[str, Any]]) -> dict[str, float]:
    """LM: mean token loss, perplexity, next-token accuracy; classifier: loss and accuracy."""
    import torch

    model = loaded.model
    total_loss = 0.0
    correct = 0
    count = 0
    with torch.no_grad():
        for row in rows:
            if loaded.testbed is not None:
                key = "features" if "features" in row else "input_ids"
                logits = model(_testbed_input(loaded, row, key))[0]
            elif "input_ids" not in row:
                raise ValueError("this model takes input_ids rows; features are for testbeds")
            else:
                ids = torch.tensor([row["input_ids"]], dtype=torch.long)
                logits = model(input_ids=ids).logits[0]
            if loaded.is_classifier:
                label = int(row.get("label", 0))
                if label >= logits.shape[-1]:
                    raise ValueError(f"label {label} is out of range for this classifier")
                total_loss += float(
                    torch.nn.functional.cross_entropy(logits[None], torch.tensor([label]))
                )
                correct += int(int(logits.argmax()) == label)
                count += 1
            elif ids.shape[1] >= 2:
                target = ids[0, 1:]
                pred = logits[:-1]
                total_loss += float(
                    torch.nn.functional.cross_entropy(pred, target, reduction="sum")
                )
                correct += int((pred.argmax(-1) == target).sum())
                count += int(target.numel())
    if count == 0:
        raise ValueError("the dataset has nothing to score (language-model rows need 2+ ids)")
    loss = total_loss / count
    metrics = {"loss": _round(loss), "accuracy": _round(correct / count), "scored": float(count)}
    if not loaded.is_classifier:
        metrics["perplexity"] = _round(math.exp(min(loss, 50.0)))
    return metrics


def _evaluate(loaded: LoadedModel, job: JobRequest) -> dict[str, Any]:
    name = job.parameters["evaluation"]
    rows = parse_dataset(job.inputs["dataset"], "dataset") if "dataset" in job.inputs else None
    if name == "builtin:dataset":
        assert rows is not None  # the request parser insists
        return {"evaluation": name, "metrics": _dataset_metrics(loaded, rows)}
    if name == "builtin:testbed":
        if loaded.testbed is None:
            raise ValueError("builtin:testbed evaluates tamper-lab models; this is not one")
        return {"evaluation": name, "metrics": _testbed_split_metrics(loaded)}
    from importlib.metadata import entry_points

    found = [e for e in entry_points(group=EVALUATION_GROUP) if e.name == name]
    if not found:
        raise ValueError(
            f"no installed evaluation named {name!r} (entry point group {EVALUATION_GROUP})"
        )
    raw = found[0].load()(loaded.model, rows)
    if not isinstance(raw, dict) or len(raw) > 64:
        raise ValueError(f"evaluation {name!r} must return at most 64 named numbers")
    metrics = {str(k)[:64]: _round(float(v)) for k, v in raw.items()}
    return {"evaluation": name, "metrics": metrics}


def _finetune(loaded: LoadedModel, job: JobRequest, message: dict[str, Any]) -> dict[str, Any]:
    import random

    import torch
    from safetensors.torch import save

    p = job.parameters
    train = parse_dataset(job.inputs["train"], "train")
    held_out = parse_dataset(job.inputs["eval"], "eval") if "eval" in job.inputs else train
    if any("input_ids" not in row for row in (*train, *held_out)):
        raise ValueError("fine-tuning data are input_ids rows; features are for testbeds")
    before = _dataset_metrics(loaded, held_out)
    torch.manual_seed(p["seed"])
    order = random.Random(p["seed"])  # noqa: S311 - reproducible batches, not secrets
    model = loaded.model
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=p["learning_rate"])
    for _step in range(p["steps"]):
        optimizer.zero_grad()
        batch = [train[order.randrange(len(train))] for _ in range(p["batch_size"])]
        loss = 0.0
        for row in batch:
            ids = torch.tensor([row["input_ids"]], dtype=torch.long)
            if loaded.is_classifier:
                label = torch.tensor([int(row.get("label", 0))])
                loss = loss + model(input_ids=ids, labels=label).loss
            elif ids.shape[1] >= 2:
                loss = loss + model(input_ids=ids, labels=ids).loss
        if isinstance(loss, float):
            raise ValueError("the training set has nothing to learn from (rows need 2+ ids)")
        (loss / len(batch)).backward()
        optimizer.step()
    model.eval()
    after = _dataset_metrics(loaded, held_out)
    state = model.state_dict()
    written = []
    for slot in message.get("outputs", []):
        path = slot["path"]
        if path in loaded.stored_names:
            data = save(
                {n: state[n].detach().contiguous().clone() for n in loaded.stored_names[path]}
            )
        elif path == "config.json":
            data = json.dumps(loaded.config, sort_keys=True, indent=2).encode("utf-8")
        else:
            continue
        written.append(_seal_output(slot, data, message["scratch"]))
    return {"metrics_before": before, "metrics_after": after, "steps": p["steps"], "files": written}


def _seal_output(slot: dict[str, Any], data: bytes, scratch: str) -> dict[str, Any]:
    """Encrypt ``data`` under the data key the service sealed for this output (in memory to
    ciphertext: the plaintext is never written)."""
    import os

    from weightvault.crypt.format import parse_header
    from weightvault.crypt.stream import encrypt_stream

    header_bytes = base64.b64decode(slot["header"])
    header = parse_header(header_bytes, slot["path"])
    target = os.path.join(scratch, slot["file"])
    with open(target, "xb") as out:
        out.write(header_bytes)
        _read, body = encrypt_stream(
            io.BytesIO(data), out, base64.b64decode(slot["dek"]), header.body_context()
        )
    return {
        "path": slot["path"],
        "file": slot["file"],
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "header_size": len(header_bytes),
        "body_size": body,
    }


def _final_norm(model: Any) -> Any:
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    for name in ("ln_f", "norm", "final_layer_norm", "final_layernorm"):
        module = getattr(base, name, None)
        if module is not None:
            return module
    return None


def _inspect(loaded: LoadedModel, job: JobRequest) -> dict[str, Any]:
    import torch

    model = loaded.model
    top_k = job.parameters["logit_lens_top_k"]
    head = model.get_output_embeddings() if top_k and not loaded.is_classifier else None
    norm = _final_norm(model)
    statistics: list[list[dict[str, float]]] = []
    lens: list[list[list[list[Any]]]] = []
    with torch.no_grad():
        for prompt in job.inputs["prompts"]:
            ids = torch.tensor([prompt], dtype=torch.long)
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
            if job.parameters["statistics"]:
                statistics.append(
                    [
                        {
                            "mean": _round(float(h.mean())),
                            "std": _round(float(h.std())) if h.numel() > 1 else 0.0,
                            "min": _round(float(h.min())),
                            "max": _round(float(h.max())),
                            "abs_mean": _round(float(h.abs().mean())),
                        }
                        for h in hidden
                    ]
                )
            if head is not None:
                per_layer = []
                for h in hidden:
                    normed = norm(h) if norm is not None else h
                    probs = torch.softmax(head(normed)[0], dim=-1)
                    values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
                    per_layer.append(
                        [
                            [[int(i), round(float(v), 3)] for i, v in zip(ix, vs, strict=True)]
                            for ix, vs in zip(indices.tolist(), values.tolist(), strict=True)
                        ]
                    )
                lens.append(per_layer)
    result: dict[str, Any] = {"layers": len(hidden)}
    if job.parameters["statistics"]:
        result["activation_statistics"] = statistics
    if head is not None:
        result["logit_lens"] = lens
    return result


def run_job(message: dict[str, Any], files: Mapping[str, Any]) -> dict[str, Any]:
    """The worker's default entry: parse the job again (the worker trusts nothing it did not
    check), load the model, run the kind."""
    import torch

    torch.set_num_threads(max(1, int(message.get("threads", 1))))
    job = parse_job_request(message["job"])
    started = time.perf_counter()
    loaded = load_model(files)
    loaded_at = time.perf_counter()
    if loaded.testbed is not None and job.kind in ("finetune", "inspect"):
        raise ValueError(
            f"{job.kind} jobs run on transformers models; this is a tamper-lab "
            f"{loaded.config['testbed']} model (query and evaluate it)"
        )
    if job.kind == "query":
        outputs = _query(loaded, job)
    elif job.kind == "evaluate":
        outputs = _evaluate(loaded, job)
    elif job.kind == "finetune":
        outputs = _finetune(loaded, job, message)
    else:
        outputs = _inspect(loaded, job)
    # Recorded in the worker's environment (the log), not in the outputs (what leaves).
    message["timings"] = {
        "load_s": round(loaded_at - started, 4),
        "run_s": round(time.perf_counter() - loaded_at, 4),
    }
    return outputs
