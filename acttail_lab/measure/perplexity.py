"""Perplexity of a causal LM on token windows, dense or under any sparsifier.

Inputs: a model (or LoadedModel), LongTensor windows ``[n_windows, T]``, and an allocation or a
ready sparsifier. Protocol ``"all"``: every position is sparsified and every next-token
prediction scored; ``"last_half"`` (TEAL's): only positions >= T/2 are sparsified and scored.
Output: :class:`PerplexityResult` (perplexity = exp of the mean NLL in nats per scored token,
tokens scored, realised sparsity, wall time). The LM head and the loss run on chunks of
positions, so memory does not grow with batch x length x vocabulary.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import time
from dataclasses import dataclass, field, fields

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.errors import AllocationError
from ..core.models import unwrap
from ..sparsify.topk import PROTOCOLS, TopKSparsifier, weighted_sparsity


@dataclass
class PerplexityResult:
    """Perplexity of one model (+ allocation) on a set of token windows.

    perplexity: exp(nll). nll: mean negative log-likelihood per scored token
    (nats). tokens: scored target tokens. realised_sparsity: parameter-weighted
    mean of the measured per-projection sparsity (0.0 when dense).
    projections: per-projection table from :meth:`TopKSparsifier.realised`
    (None when dense). wall_s: seconds for the forward passes. protocol: see
    the module doc. window_nll: mean NLL per scored token of each window (nats), in window
    order (every window scores the same number of tokens, so ``nll == mean(window_nll)``);
    the unit of the paired bootstrap in :mod:`acttail_lab.report.bootstrap`.
    """

    perplexity: float
    nll: float
    tokens: int
    realised_sparsity: float
    wall_s: float
    protocol: str
    projections: pd.DataFrame | None = field(default=None, repr=False)
    window_nll: tuple[float, ...] = field(default=(), repr=False)

    def as_row(self) -> dict:
        """The scalar fields as a dict (one row of a results table)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("projections", "window_nll")}


def input_device(model: nn.Module) -> torch.device:
    """Device of the input embeddings (where token ids must go; right with ``device_map="auto"`` too)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and hasattr(embeddings, "weight"):
        return embeddings.weight.device
    return next(model.parameters()).device


def _scored_start(protocol: str, length: int) -> int:
    """First position whose next-token prediction is scored."""
    return length // 2 if protocol == "last_half" else 0


LOGIT_BUDGET = 2 ** 26
"""Logit elements per chunk of the loss (256 MB in fp32): full-vocabulary logits are never held for every
position at once (a 262k vocabulary at T=2048, batch 4 would need ~8 GB, twice with the fp32 copy)."""
CHUNKED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text")
"""Architectures whose logits are ``lm_head(final hidden state)`` (then Gemma's optional soft cap)."""


def _chunked_head(model: nn.Module):
    """``(decoder, lm_head, softcap)`` when the loss can be computed chunk by chunk, else None."""
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config
    if getattr(config, "model_type", None) not in CHUNKED_MODEL_TYPES or not hasattr(model, "model"):
        return None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return None
    return model.model, head, getattr(text, "final_logit_softcapping", None)


def _window_nll(model: nn.Module, ids: torch.Tensor, start: int, keep_arg: bool) -> tuple[torch.Tensor, int]:
    """Summed NLL (nats) of each window's targets ``ids[:, start + 1:]`` (float64 CPU tensor ``[batch]``)
    and the count of targets per window.

    For the supported architectures the LM head runs on chunks of at most ``LOGIT_BUDGET / vocab``
    positions, so peak memory does not grow with batch x length x vocabulary.
    """
    chunked = _chunked_head(model)
    if chunked is None:
        return _window_nll_full(model, ids, start, keep_arg)
    decoder, head, softcap = chunked
    hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state
    hidden = hidden[:, start:-1].reshape(-1, hidden.shape[-1])  # predictions made at positions start..T-2
    targets = ids[:, start + 1:].reshape(-1).to(hidden.device)
    rows = max(1, LOGIT_BUDGET // head.weight.shape[0])
    losses = []
    for i in range(0, hidden.shape[0], rows):
        logits = head(hidden[i:i + rows])
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        losses.append(F.cross_entropy(logits.float(), targets[i:i + rows].to(logits.device), reduction="none")
                      .to("cpu", torch.float64))
    per_window = torch.cat(losses).reshape(ids.shape[0], -1)
    return per_window.sum(dim=1), per_window.shape[1]


def _window_nll_full(model: nn.Module, ids: torch.Tensor, start: int, keep_arg: bool) -> tuple[torch.Tensor, int]:
    """:func:`_window_nll` through the model's own forward (any other architecture)."""
    length = ids.shape[1]
    kwargs = {"use_cache": False}
    if keep_arg and start > 0:
        kwargs["logits_to_keep"] = length - start  # only positions start..T-1 go through the LM head
    logits = model(input_ids=ids, **kwargs).logits
    logits = logits[:, logits.shape[1] - (length - start):-1]  # predictions made at positions start..T-2
    targets = ids[:, start + 1:].to(logits.device)
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.reshape(targets.shape).to("cpu", torch.float64).sum(dim=1), targets.shape[1]


def perplexity(model, windows: torch.Tensor, allocation=None, protocol: str = "all", batch_size: int = 4,
               progress: bool = True, seed: int = 0, desc: str = "perplexity", sparsifier=None) -> PerplexityResult:
    """Perplexity of ``model`` on ``windows``, dense or TopK-sparsified.

    Args:
        model: a causal LM (or a :class:`LoadedModel`); put in eval mode for the call.
        windows: LongTensor ``[n_windows, T]`` of token ids (moved to the model's device).
        allocation: None (dense), or anything :class:`TopKSparsifier` accepts
            (DataFrame with name/sparsity, dict, or one float).
        protocol: ``"all"`` or ``"last_half"`` (see the module doc for what is scored).
        batch_size: windows per forward pass.
        progress: show a tqdm bar over batches.
        seed: ``torch.manual_seed`` before the passes (eval mode has no randomness; kept for safety).
        sparsifier: instead of ``allocation``, a ready context manager with ``realised()``
            (``methods.make_sparsifier``: rotated TopK, thresholds, CATS).
    Returns:
        :class:`PerplexityResult`.
    """
    if protocol not in PROTOCOLS:
        raise AllocationError(f"Unknown protocol {protocol!r}. Fix: choose one of {PROTOCOLS}.")
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be [n_windows, T>=2] token ids, got shape {tuple(windows.shape)}.")
    model = unwrap(model)
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    device = input_device(model)
    start = _scored_start(protocol, windows.shape[1])
    keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
    if sparsifier is None and allocation is not None:
        sparsifier = TopKSparsifier(model, allocation, protocol=protocol)
    window_sums, per_window = [], 0
    t0 = time.perf_counter()
    try:
        with torch.inference_mode(), (sparsifier if sparsifier is not None else contextlib.nullcontext()):
            for batch in tqdm(windows.split(batch_size), desc=desc, disable=not progress, leave=False):
                sums, per_window = _window_nll(model, batch.to(device), start, keep_arg)
                window_sums.append(sums)
    finally:
        model.train(was_training)
    wall = time.perf_counter() - t0
    projections = sparsifier.realised() if sparsifier is not None else None
    realised = weighted_sparsity(projections) if projections is not None else 0.0
    sums = torch.cat(window_sums)
    total_tokens = per_window * sums.numel()
    mean_nll = float(sums.sum()) / total_tokens
    return PerplexityResult(perplexity=math.exp(mean_nll), nll=mean_nll, tokens=total_tokens,
                            realised_sparsity=realised, wall_s=wall, protocol=protocol, projections=projections,
                            window_nll=tuple(float(v) / per_window for v in sums))
