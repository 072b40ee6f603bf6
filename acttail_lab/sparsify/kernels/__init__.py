"""Sparse GEMV kernels for batch-1 decoding, and a sparse decoding path for whole models.

``sparse_gemv(x, w_t, sparsity | k= | threshold=, backend="auto"|"triton"|"torch")``
multiplies the active inputs of ``x`` by an input-major weight ``w_t = W^T``
(``[d_in, d_out]``), reading only the weight rows of active inputs. Triton
(``triton_gemv``) runs on GPUs and is imported lazily; the PyTorch fallback
(``reference``) runs anywhere. ``decode.sparse_decoding(model, allocation)``
routes the seven projections of every layer through it. On CPU, ``backend="numba"``
(``cpu_gemv``, optional extra ``cpu-kernels``) reads the kept rows in place in
float32 or bfloat16, and ``cpu_decode.cpu_sparse_decoding`` decodes through it
with one selection per shared input.
"""
from ...core.errors import KernelInputError
from .dispatch import BACKENDS, choose_backend, sparse_gemv, triton_installed  # noqa: F401
from .reference import SUPPORTED_DTYPES, input_major, sparse_gemv_torch
