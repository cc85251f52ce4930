"""Sign on save: hash safetensors bytes as they are written, sign the folder without rereading.

:func:`save_safetensors` writes a safetensors file (atomically) through a hashing writer and
returns a :class:`WrittenFile`: the digests of exactly the bytes written, per file or per
shard. :func:`sign_written` signs a folder using those digests for the files they describe
(still the same file: device, inode, size and modification time unchanged) and hashing only the
rest (``config.json``, optimizer state...). :func:`sign_on_save` does both for a state dict or a
transformers model; :class:`SigningCallback` does it for every checkpoint a ``Trainer`` writes.

The signature is an ordinary OMS signature: ``weightvault verify`` and ``model-signing`` check it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from weightvault import signing
from weightvault._fs import atomic_output
from weightvault._safetensors import safetensors_header
from weightvault.errors import UsageError
from weightvault.hashing import HashAlgorithm, HashJob, hash_jobs
from weightvault.load._read import Extent, shard_extents, whole_file
from weightvault.oms.manifest import Manifest, Resource
from weightvault.signing import ManifestKeywords, ManifestOptions, Signer, SignResult

if TYPE_CHECKING:
    import torch

__all__ = ["SigningCallback", "WrittenFile", "save_safetensors", "sign_on_save", "sign_written"]

PathLike = str | os.PathLike[str]

#: safetensors dtype names by torch dtype name.
_DTYPE_NAMES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "complex64": "C64",
}
_WRITE_CHUNK = 16 << 20


@dataclass(frozen=True)
class WrittenFile:
    """A file as :func:`save_safetensors` wrote it: its identity and the digests of its bytes."""

    path: Path
    size: int
    identity: tuple[int, int, int, int]
    """``(device, inode, size, mtime_ns)`` right after the write; a later change breaks it."""
    hash_type: HashAlgorithm
    shard_size: int | None
    digests: tuple[bytes, ...]
    """One per extent: the whole file, or each shard in order."""

    def matches(self, path: Path) -> bool:
        try:
            status = os.stat(path)
        except OSError:
            return False
        return _identity(status) == self.identity

    def resources(self, name: str, serialization_algorithm: str) -> list[Resource]:
        extents = _extents(name, self.size, self.shard_size)
        return [
            Resource(e.resource, d, serialization_algorithm)
            for e, d in zip(extents, self.digests, strict=True)
        ]


def _identity(status: os.stat_result) -> tuple[int, int, int, int]:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _extents(name: str, size: int, shard_size: int | None) -> list[Extent]:
    return whole_file(name, size) if shard_size is None else shard_extents(name, size, shard_size)


class _HashingWriter:
    """Writes to ``handle`` and hashes every byte into the digest of the extent it falls in."""

    def __init__(self, handle: Any, algorithm: HashAlgorithm, extents: list[Extent]) -> None:
        self.handle = handle
        self.algorithm = algorithm
        self.extents = extents
        self.index = 0
        self.position = 0
        self.hasher = algorithm.new_hasher()
        self.digests: list[bytes] = []
        self._close_empty()

    def _close_empty(self) -> None:
        while self.index < len(self.extents) and self.extents[self.index].end == self.position:
            self.digests.append(self.hasher.digest())
            self.hasher = self.algorithm.new_hasher()
            self.index += 1

    def write(self, data: memoryview) -> None:
        self.handle.write(data)
        offset = 0
        while offset < len(data):
            end = self.extents[self.index].end
            take = min(len(data) - offset, end - self.position)
            self.hasher.update(data[offset : offset + take])
            offset += take
            self.position += take
            self._close_empty()


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes in row-major order, little-endian (CPU, contiguous)."""
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    array: Any = flat.view(torch.uint8).numpy()
    return memoryview(array).cast("B")


def save_safetensors(
    tensors: Mapping[str, torch.Tensor],
    path: PathLike,
    *,
    metadata: Mapping[str, str] | None = None,
    hash_type: HashAlgorithm | str = HashAlgorithm.SHA256,
    shard_size: int | None = None,
) -> WrittenFile:
    """Write ``tensors`` as a safetensors file, hashing the bytes as they are written.

    ``shard_size`` cuts the digests as the ``shards`` serialization does (``None``: one digest
    for the file). The file appears under its name only once complete.
    """
    algorithm = HashAlgorithm.parse(hash_type)
    order = sorted(tensors, key=lambda n: (-tensors[n].element_size(), n))
    layout: list[tuple[str, str, tuple[int, ...], int]] = []
    for name in order:
        tensor = tensors[name]
        dtype = _DTYPE_NAMES.get(str(tensor.dtype).removeprefix("torch."))
        if dtype is None:
            raise UsageError(f"tensor {name!r}: dtype {tensor.dtype} has no safetensors name")
        layout.append((name, dtype, tuple(tensor.shape), tensor.numel() * tensor.element_size()))
    header = safetensors_header(layout, metadata)
    size = len(header) + sum(nbytes for _name, _dtype, _shape, nbytes in layout)
    target = Path(path)
    extents = _extents(target.name, size, shard_size)
    with atomic_output(target, force=True) as handle:
        writer = _HashingWriter(handle, algorithm, extents)
        writer.write(memoryview(header))
        for name in order:
            data = _tensor_bytes(tensors[name])
            for start in range(0, len(data), _WRITE_CHUNK):
                writer.write(data[start : start + _WRITE_CHUNK])
        if writer.position != size or len(writer.digests) != len(extents):  # pragma: no cover
            raise RuntimeError("safetensors writer wrote an unexpected number of bytes")
        digests = tuple(writer.digests)
    return WrittenFile(target, size, _identity(os.stat(target)), algorithm, shard_size, digests)


def _model_name(root: Path) -> str:
    return root.name if root.name not in ("", "..") else os.path.basename(os.path.abspath(root))


def sign_written(
    model_path: PathLike,
    signer: Signer,
    written: Iterable[WrittenFile] = (),
    *,
    signature_path: PathLike | None = None,
    options: ManifestOptions | None = None,
    **keywords: Unpack[ManifestKeywords],
) -> SignResult:
    """Sign ``model_path`` as :func:`weightvault.signing.sign` would, reusing the digests of
    ``written`` files that are unchanged and match the options (the rest is hashed)."""
    sig = (
        Path(signature_path)
        if signature_path is not None
        else signing.default_signature_path(model_path)
    )
    plan = signing.plan_model(model_path, signature_path=sig, options=options, **keywords)
    serialization = plan.serialization()
    shard_size = serialization.shard_size if serialization.method == "shards" else None
    algorithm = serialization.resource_algorithm
    known = {os.path.realpath(w.path): w for w in written}
    resources: list[Resource] = []
    jobs: list[tuple[str, HashJob]] = []
    for item in plan.tree.files:
        record = known.get(os.path.realpath(item.path))
        if (
            record is not None
            and record.hash_type is serialization.hash_type
            and record.shard_size == shard_size
            and record.matches(item.path)
        ):
            resources += record.resources(item.name, algorithm)
            continue
        for extent in _extents(item.name, item.size, shard_size):
            jobs.append(
                (
                    extent.resource,
                    HashJob(
                        item.path, item.name, extent.end - extent.start, extent.start, extent.end
                    ),
                )
            )
    digests = hash_jobs(
        [job for _, job in jobs], serialization.hash_type, max_workers=plan.options.max_workers
    )
    resources += [
        Resource(name, digest, algorithm) for (name, _), digest in zip(jobs, digests, strict=True)
    ]
    manifest = Manifest.build(_model_name(plan.model_path), resources, serialization)
    signed = signing.sign_manifest(manifest, signer, left_out=plan.left_out)
    signing.write_signature(signed, sig)
    return SignResult(plan.model_path, sig, manifest, signed.signer, signed.left_out)


class _Recorder:
    """Replaces transformers' safetensors writer while installed, keeping what it wrote."""

    def __init__(self, options: ManifestOptions) -> None:
        self.options = options
        self.written: list[WrittenFile] = []
        self.lock = threading.Lock()

    def save_file(
        self,
        tensors: Mapping[str, torch.Tensor],
        filename: PathLike,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        shard_size = self.options.recorded_shard_size
        record = save_safetensors(
            tensors,
            filename,
            metadata=metadata,
            hash_type=self.options.hash_type,
            shard_size=shard_size,
        )
        with self.lock:
            self.written.append(record)

    def taken(self, folder: Path) -> list[WrittenFile]:
        """The records for files under ``folder`` (forgotten here once taken)."""
        base = os.path.realpath(folder) + os.sep
        with self.lock:
            mine = [w for w in self.written if os.path.realpath(w.path).startswith(base)]
            self.written = [w for w in self.written if w not in mine]
        return mine


@contextmanager
def _recording(options: ManifestOptions) -> Iterator[_Recorder]:
    """transformers' ``save_pretrained`` writes safetensors through a recorder meanwhile."""
    import transformers.modeling_utils as modeling_utils

    recorder = _Recorder(options)
    previous = modeling_utils.__dict__["safe_save_file"]
    setattr(modeling_utils, "safe_save_file", recorder.save_file)  # noqa: B010 - not exported
    try:
        yield recorder
    finally:
        setattr(modeling_utils, "safe_save_file", previous)  # noqa: B010


def sign_on_save(
    model: Any,
    folder: PathLike,
    signer: Signer,
    *,
    signature_path: PathLike | None = None,
    options: ManifestOptions | None = None,
    **keywords: Unpack[ManifestKeywords],
) -> SignResult:
    """Save ``model`` into ``folder`` and sign the folder, hashing the weights as written.

    ``model`` is a transformers model (``save_pretrained``: configuration and safetensors
    weights) or a mapping of tensors (written as ``model.safetensors``). Other files already in
    the folder are signed too (hashed), as ``weightvault sign`` would.
    """
    opts = ManifestOptions.merge(options, keywords)
    target = Path(folder)
    if hasattr(model, "save_pretrained"):
        with _recording(opts) as recorder:
            model.save_pretrained(target, safe_serialization=True)
        written = recorder.taken(target)
    elif isinstance(model, Mapping):
        target.mkdir(parents=True, exist_ok=True)
        written = [
            save_safetensors(
                model,
                target / "model.safetensors",
                hash_type=opts.hash_type,
                shard_size=opts.recorded_shard_size,
            )
        ]
    else:
        raise TypeError("model must be a transformers model or a mapping of tensors")
    return sign_written(target, signer, written, signature_path=signature_path, options=opts)


def _make_callback() -> type:
    """The callback class, made on first use (so importing this module does not load
    transformers)."""
    from transformers import TrainerCallback

    class SigningCallback(TrainerCallback):
        """A ``TrainerCallback`` that signs each checkpoint folder when the Trainer writes it.

        While training runs, transformers' safetensors writer is replaced by a hashing one, so
        the weights' digests come from the bytes written; the checkpoint's other files (optimizer
        state, trainer state) are hashed when it is signed. Signatures go to ``model.sig`` in
        each ``checkpoint-STEP`` folder; ``results`` lists what was signed.
        """

        def __init__(
            self,
            signer: Signer,
            *,
            options: ManifestOptions | None = None,
            **keywords: Unpack[ManifestKeywords],
        ) -> None:
            self.signer = signer
            self.options = ManifestOptions.merge(options, keywords)
            self.results: list[SignResult] = []
            self._recording: Any = None
            self._recorder: _Recorder | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._recording is None:
                self._recording = _recording(self.options)
                self._recorder = self._recording.__enter__()

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            written = self._recorder.taken(folder) if self._recorder is not None else []
            self.results.append(sign_written(folder, self.signer, written, options=self.options))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._recording is not None:
                self._recording.__exit__(None, None, None)
                self._recording = None
                self._recorder = None

    return SigningCallback


def __getattr__(name: str) -> Any:
    if name == "SigningCallback":
        cls = _make_callback()
        globals()["SigningCallback"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:

    class SigningCallback:
        def __init__(
            self,
            signer: Signer,
            *,
            options: ManifestOptions | None = None,
            **keywords: Unpack[ManifestKeywords],
        ) -> None: ...

        results: list[SignResult]
