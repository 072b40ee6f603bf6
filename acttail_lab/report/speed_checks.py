"""Notebook 04's live steps: re-running the GPU benchmarks, and checking the sparse decoding path.

- :func:`benchmark_commands` / :func:`run_gpu_benchmarks`: the command lines of
  ``benchmarks/bench_gemv.py`` and ``benchmarks/bench_decode.py`` on CUDA
  (a quick variant under ``fast``), and running them;
- :func:`decode_path_check` / :func:`decode_check_line`: decode a tiny random
  LLaMA token by token through ``sparse_decoding`` and compare the logits with
  TopK masking (``TopKSparsifier``) and with the dense model.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ..core.errors import DeviceError

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def benchmark_commands(fast: bool = False, python: str = sys.executable,
                       benchmarks: Path = BENCHMARKS) -> list[list[str]]:
    """The two GPU benchmark command lines (GEMV, then decoding). ``fast``: sparsities 0, 0.5, 0.8 in fp16
    and one decoding target (0.5); otherwise the GEMV kernels are tuned and every target is run."""
    gemv = ["--sparsities", "0,0.5,0.8", "--dtypes", "fp16"] if fast else ["--tune"]
    decode = ["--targets", "0.5"] if fast else []
    return [[python, str(benchmarks / script), "--device", "cuda", *extra]
            for script, extra in (("bench_gemv.py", gemv), ("bench_decode.py", decode))]


def run_gpu_benchmarks(fast: bool = False, run: Callable = subprocess.run,
                       cuda_available: Callable[[], bool] | None = None) -> list[list[str]]:
    """Run :func:`benchmark_commands` one after the other (each printed first; a failure raises), which rewrite
    ``data/results/{gemv,decode}_gpu.csv``. Raises DeviceError when PyTorch sees no GPU. Returns the commands."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available
    if not cuda_available():
        raise DeviceError("ACTTAIL_RUN_GPU=1 asks for the GPU benchmarks, but no GPU is visible to PyTorch. "
                          "Fix: unset ACTTAIL_RUN_GPU to load the committed results, or run on a GPU machine.")
    commands = benchmark_commands(fast)
    for cmd in commands:
        print("running:", " ".join(cmd))
        run(cmd, check=True)
    return commands


def decode_path_check(preset: str = "llama-tiny", seed: int = 0, n_tokens: int = 8, low: float = 0.2,
                      high: float = 0.9, path: str = "auto") -> dict:
    """Decode ``n_tokens`` random token ids one at a time (KV cache) through a sparse decoding path on a random
    ``preset`` model, each projection at a random sparsity in [low, high) (seeded).

    ``path``: ``"auto"`` (``kernels.decode.sparse_decoding``: Triton on a GPU, the PyTorch kernel otherwise) or
    ``"cpu"`` (``kernels.cpu_decode.cpu_sparse_decoding``: the numba kernel with one selection per shared input,
    the PyTorch kernel when numba is missing).

    Output: backend (the GEMV backend used), sparse_vs_masked (max |logit difference| between the sparse
    path and the full-sequence forward under ``TopKSparsifier`` with the same allocation: summation order
    only, so ~1e-6) and masked_vs_dense (the same against the dense model: clearly non-zero).
    """
    import inspect

    import torch

    from ..core.models import projection_table, random_model
    from ..sparsify.kernels.decode import sparse_decoding
    from ..sparsify.topk import TopKSparsifier

    model = random_model(preset, seed=seed)
    names = projection_table(model)["name"]
    generator = torch.Generator().manual_seed(seed)
    allocation = dict(zip(names, (low + (high - low) * torch.rand(len(names), generator=generator)).tolist()))
    ids = torch.randint(0, 256, (1, n_tokens), generator=generator)
    with torch.no_grad():
        dense = model(ids).logits[0]
        with TopKSparsifier(model, allocation):
            masked = model(ids).logits[0]
        # transformers >= 5.x names the KV cache ``cache`` (``past_key_values`` is deprecated there)
        key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        if path == "cpu":
            from ..sparsify.kernels.cpu_decode import cpu_sparse_decoding

            context = cpu_sparse_decoding(model, allocation)
        elif path == "auto":
            context = sparse_decoding(model, allocation)
        else:
            raise ValueError(f"path={path!r} is not 'auto' or 'cpu'.")
        with context as used:
            past, steps = None, []
            for t in range(n_tokens):
                out = model(ids[:, t:t + 1], use_cache=True, **{key: past})
                past, steps = out[key], steps + [out.logits[0, -1]]
    decoded = torch.stack(steps)
    backend = used.backend if path == "cpu" else str(used["backend"].iloc[0])
    return dict(backend=backend, sparse_vs_masked=float((decoded - masked).abs().max()),
                masked_vs_dense=float((masked - dense).abs().max()))


def decode_check_line(check: dict) -> str:
    """:func:`decode_path_check`'s result as one line."""
    return (f"backend {check['backend']}: max |sparse path - TopK masking| = {check['sparse_vs_masked']:.2e}; "
            f"max |TopK masking - dense| = {check['masked_vs_dense']:.2f}")
