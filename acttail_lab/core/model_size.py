"""How many parameters a model has, read from its files' headers before anything loads it.

Used to plan work (``acttail-lab report`` estimates its time from it) without loading a model:

* a ``.gguf`` file: the sum of its tensors' element counts (header only, milliseconds);
* a ``.safetensors`` file or a folder of shards: the sum over each header's tensor shapes;
* a built-in model name: its fetched GGUF (None when it is not fetched yet);
* anything else (a Hub id not in the local cache): None.

Outputs: :func:`tensor_shapes` ``{tensor name: shape}`` and :func:`parameter_count` (an ``int``, embeddings
included, as the files store them), each None when no local file tells.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from .model_files import gguf_tensors, safetensors_header


def gguf_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of every tensor in a GGUF file (from its header; GGUF lists the fastest dimension first)."""
    return {name: tuple(shape) for name, shape, _, _ in gguf_tensors(path)[0]}


def safetensors_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of every tensor in one ``.safetensors`` file (from its JSON header)."""
    header, _ = safetensors_header(path)
    return {name: tuple(int(d) for d in entry["shape"]) for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict) and "shape" in entry}


def tensor_shapes(source: str | os.PathLike) -> dict[str, tuple[int, ...]] | None:
    """``{name: shape}`` of ``source`` (built-in name, ``.gguf``, ``.safetensors``, or a folder of shards), or
    None when no local file tells (a Hub id, a built-in model not fetched yet)."""
    from .builtin_models import BUILTIN_MODELS

    name = os.fspath(source)
    if name in BUILTIN_MODELS:
        from .cache import cache_dir

        spec = BUILTIN_MODELS[name]
        path = cache_dir("downloads") / spec.download_dir / spec.gguf_file
        return gguf_shapes(path) if path.is_file() else None
    path = Path(os.path.expanduser(name))
    if path.is_file() and path.suffix == ".gguf":
        return gguf_shapes(path)
    if path.is_file() and path.suffix == ".safetensors":
        return safetensors_shapes(path)
    if path.is_dir():
        shards = sorted(path.glob("*.safetensors"))
        return {k: v for shard in shards for k, v in safetensors_shapes(shard).items()} if shards else None
    return None


def parameter_count(source: str | os.PathLike) -> int | None:
    """Parameters of ``source`` (see :func:`tensor_shapes`), or None when no local file tells."""
    shapes = tensor_shapes(source)
    if shapes is None:
        return None
    return sum(math.prod(shape) for shape in shapes.values())


def _is_embedding(name: str) -> bool:
    """Token embeddings and the output head, in GGUF (``token_embd``, ``output``) or Hugging Face names."""
    return (name.split(".")[0] in ("token_embd", "output", "lm_head", "embed_out")
            or any(part in name.split(".") for part in ("embed_tokens", "wte")))


def projection_shapes(shapes: dict[str, tuple[int, ...]]) -> list[tuple[int, int]]:
    """The 2-D weight matrices among ``shapes`` that are not embeddings or the output head."""
    return [tuple(shape) for name, shape in shapes.items()
            if len(shape) == 2 and not _is_embedding(name)]


def forward_parameters(shapes: dict[str, tuple[int, ...]]) -> int:
    """Weights one token's forward pass multiplies: every projection plus the output head (the token embedding
    when the head is tied to it). A forward pass costs about twice this many FLOPs per token."""
    head = next((shape for name, shape in shapes.items() if name.split(".")[0] in ("output", "lm_head")), None)
    if head is None:
        head = next((shape for name, shape in shapes.items() if _is_embedding(name)), (0,))
    return sum(m * n for m, n in projection_shapes(shapes)) + math.prod(head)


def spectra_flops(shapes: dict[str, tuple[int, ...]]) -> float:
    """FLOPs of the ESDs of every projection: the Gram matrix (``2 m n d``, ``d = min(m, n)``) and its
    eigenvalues without vectors (about ``4 d^3 / 3``), in float64 (counted twice: about half the float32 speed).
    Qwen2.5-Coder-1.5B's 196 spectra took 126 CPU seconds with the model's load, about a third of what this
    count gives at a busy machine's measured speed: an upper estimate."""
    return sum(2 * (2 * m * n * min(m, n) + 4 * min(m, n) ** 3 / 3) for m, n in projection_shapes(shapes))
