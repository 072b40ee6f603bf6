"""``sparse_gemv``: one entry point, Triton on GPUs, the PyTorch fallback elsewhere.

Backends:

* ``"triton"``: the kernels of :mod:`acttail_lab.sparsify.kernels.triton_gemv`. Needs
  Triton and CUDA tensors (or Triton's CPU interpreter, ``TRITON_INTERPRET=1``
  set before triton is first imported: slow, for correctness tests).
  Demanding it without them raises DeviceError; there is no silent fallback.
* ``"torch"``: :func:`acttail_lab.sparsify.kernels.reference.sparse_gemv_torch`
  (gathers the active rows with ``embedding_bag``), any device.
* ``"numba"``: :func:`acttail_lab.sparsify.kernels.cpu_gemv.sparse_gemv_numba`, CPU
  tensors in float32 or bfloat16 (optional extra ``cpu-kernels``; demanding it
  without numba raises DeviceError naming the fix).
* ``"auto"``: ``"triton"`` for CUDA tensors when Triton is installed,
  otherwise ``"torch"`` (``auto`` never picks numba: ask for it by name).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import sys

import torch

from ...core.errors import DeviceError, KernelInputError
from .reference import check_inputs, resolve_selection, sparse_gemv_torch

BACKENDS = ("auto", "triton", "torch", "numba")


@functools.lru_cache(maxsize=None)
def triton_installed() -> bool:
    """Whether the ``triton`` package can be imported (checked once, without importing it)."""
    return importlib.util.find_spec("triton") is not None


def triton_module():
    """The kernel module (imports triton on first use)."""
    from . import triton_gemv

    return triton_gemv


def _interpreter_requested() -> bool:
    value = os.environ.get("TRITON_INTERPRET", "").strip().lower()
    return value in ("1", "true", "on", "yes")


def check_triton_usable(device: torch.device | str) -> None:
    """Raise DeviceError unless the Triton backend can run on ``device`` (CUDA, or CPU via the interpreter)."""
    device = torch.device(device)
    if not triton_installed():
        raise DeviceError(
            "backend='triton' was requested but Triton is not installed. Fix: `pip install triton` on a "
            "Linux machine with an NVIDIA GPU, or use backend='torch' (or 'auto') for the PyTorch fallback.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("backend='triton' on CUDA tensors, but no GPU is visible to PyTorch. "
                              "Fix: run on a GPU machine, or use backend='torch' on CPU tensors.")
        return
    if device.type == "cpu":
        # Importing the kernel module compiles for whatever TRITON_INTERPRET says now: import it
        # only when the interpreter is asked for, or when it is loaded already.
        if _interpreter_requested() or f"{__package__}.triton_gemv" in sys.modules:
            if triton_module().interpreted():
                return
        if _interpreter_requested():
            raise DeviceError(
                "TRITON_INTERPRET=1 is set but the kernels were compiled without the interpreter (triton was "
                "imported before the variable was set). Fix: set TRITON_INTERPRET=1 before anything imports "
                "triton (start a fresh process), or use backend='torch'.")
        gpu = "a GPU is visible: move the tensors with .cuda()" if torch.cuda.is_available() else \
            f"no GPU is visible to PyTorch (torch {torch.__version__}, cuda build {torch.version.cuda})"
        raise DeviceError(
            f"backend='triton' needs CUDA tensors, but the inputs are on the CPU and {gpu}. Fix: use "
            "backend='torch' or 'auto' (the PyTorch fallback), run on a GPU, or for a slow correctness run on "
            "CPU set TRITON_INTERPRET=1 before triton is imported.")
    raise DeviceError(f"backend='triton' does not support {device.type} tensors. Fix: backend='torch'.")


def choose_backend(backend: str, device: torch.device | str) -> str:
    """``"triton"`` or ``"torch"`` for tensors on ``device``; checks a demanded Triton backend (DeviceError)."""
    if backend not in BACKENDS:
        raise KernelInputError(f"backend={backend!r} is not one of {BACKENDS}.")
    device = torch.device(device)
    if backend == "triton":
        check_triton_usable(device)
        return "triton"
    if backend == "numba":
        from .cpu_gemv import require_numba

        require_numba()
        if device.type != "cpu":
            raise DeviceError(f"backend='numba' runs on CPU tensors, not {device.type}. Fix: backend='auto'.")
        return "numba"
    if backend == "auto" and device.type == "cuda" and triton_installed():
        return "triton"
    return "torch"


def sparse_gemv(x: torch.Tensor, w_t: torch.Tensor, sparsity: float | None = None, *, k: int | None = None,
                threshold: float | None = None, bias: torch.Tensor | None = None, backend: str = "auto",
                config=None) -> torch.Tensor:
    """Sparse matrix-vector product ``y = x_active @ w_t (+ bias)`` for decoding.

    Args:
        x: activations ``[..., d_in]`` (one row per token; batch-1 decoding
            is one row), fp16 / bf16 / fp32.
        w_t: input-major weight ``[d_in, d_out]`` (``input_major(linear.weight)``),
            same dtype and device as ``x``.
        sparsity: fraction of inputs skipped per row; keeps the
            ``k = round((1 - sparsity) d_in)`` largest ``|x|`` (TopK).
        k: inputs kept per row (instead of ``sparsity``).
        threshold: keep the inputs with ``|x| > threshold`` (TEAL-style,
            calibrated thresholds; the kept count varies per row).
        bias: optional ``[d_out]``.
        backend: ``"auto"``, ``"triton"``, ``"torch"`` or ``"numba"`` (module doc).
        config: a ``triton_gemv.GemvConfig`` for the Triton kernels (default:
            registered or built-in tiles); ignored by the torch backend.
    Returns:
        ``[..., d_out]`` in the weight dtype; products summed in fp32.
    Raises:
        KernelInputError (dtype, shape, layout, selection), DeviceError
        (Triton demanded where it cannot run).
    """
    d_in, d_out = check_inputs(x, w_t, bias)
    keep, thr = resolve_selection(d_in, sparsity, k, threshold)
    which = choose_backend(backend, w_t.device)
    x2d = x.reshape(-1, d_in)
    if which == "triton":
        y = triton_module().sparse_gemv_triton(x2d.contiguous(), w_t, k=keep, threshold=thr, bias=bias,
                                               config=config)
    else:
        if which == "numba":
            from .cpu_gemv import sparse_gemv_numba

            y = sparse_gemv_numba(x2d, w_t, k=keep, threshold=thr)
        else:
            y = sparse_gemv_torch(x2d, w_t, k=keep, threshold=thr)
        if bias is not None:
            y = (y.float() + bias.float()).to(w_t.dtype)
    return y.reshape(*x.shape[:-1], d_out)
