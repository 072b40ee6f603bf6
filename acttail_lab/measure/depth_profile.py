"""Per-layer profile of the residual stream, and how far each layer is from the identity.

Inputs: a model (or LoadedModel) and token windows ``[n, T]``. :func:`layer_profile` records,
per decoder layer, ``var_in`` / ``var_out`` (mean over tokens of the variance across the
hidden dimensions; units: squared activation), ``growth = var_out / var_in``, ``rel_update``
(mean ``||h_out - h_in|| / ||h_in||``), ``cos_in_out`` and ``block_influence = 1 - cos``
(ShortGPT's score), with per-token medians, dense or under a TopK allocation.
:func:`jacobian_identity_gap` measures ``||J v - v|| / ||v||`` along random directions ``v``
by central finite differences (0 = the layer is the identity). Hooks go through
:func:`acttail_lab.core.hooks.hooks`.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.errors import DepthError
from ..core.hooks import hooks
from ..core.models import decoder_layers, unwrap
from ..core.tensors import to_numpy
from . import grid as evaluation

PROFILE_COLUMNS = ("layer", "var_in", "var_out", "growth", "var_in_median", "var_out_median", "growth_median",
                   "rel_update", "cos_in_out", "block_influence", "tokens")


def check_windows(windows, min_tokens: int = 2) -> torch.Tensor:
    """``windows`` as a CPU LongTensor ``[n_windows >= 1, T >= min_tokens]``; DepthError naming the fix otherwise."""
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2:
        shape = tuple(windows.shape) if isinstance(windows, torch.Tensor) else type(windows).__name__
        raise DepthError(f"windows must be a 2-D tensor [n_windows, T] of token ids, got {shape}. "
                         "Fix: build them with corpus.token_windows(tokenizer, text, window=512, n_tokens=...).")
    if windows.dtype.is_floating_point or windows.dtype == torch.bool:
        raise DepthError(f"windows hold {windows.dtype} values, not token ids. Fix: pass a LongTensor of ids.")
    if windows.shape[0] == 0:
        raise DepthError("No windows (0 rows). Fix: use a longer text or a smaller window in token_windows.")
    if windows.shape[1] < min_tokens:
        raise DepthError(f"Windows of {windows.shape[1]} token(s) are too short: need at least {min_tokens}. "
                         "Fix: use token_windows(..., window=128) or longer.")
    return windows.cpu().long()


def _check_layers(model: nn.Module, layers) -> list[int]:
    n = len(decoder_layers(model))
    chosen = list(range(n)) if layers is None else [int(i) for i in layers]
    bad = [i for i in chosen if not 0 <= i < n]
    if bad:
        raise DepthError(f"Layer index {bad[0]} is out of range: this model has {n} decoder layers (0..{n - 1}). "
                         "Fix: pass layers=None (all) or indices in that range.")
    return chosen


def _hidden_in(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _hidden_out(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_hidden(output, hidden: torch.Tensor):
    """``output`` with its hidden states replaced (a tensor, or the first item of a tuple)."""
    if isinstance(output, (tuple, list)):
        return type(output)((hidden, *output[1:]))
    return hidden


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _forward(model: nn.Module, ids: torch.Tensor) -> None:
    """One forward pass for its hooks (the LM head only on the last position when the model allows it)."""
    kwargs = {"use_cache": False}
    if "logits_to_keep" in _params(model):
        kwargs["logits_to_keep"] = 1
    model(input_ids=ids.to(evaluation.input_device(model)), **kwargs)


def _params(model: nn.Module) -> tuple[str, ...]:
    import inspect

    return tuple(inspect.signature(model.forward).parameters)


def token_stats(h_in: torch.Tensor, h_out: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token statistics of one layer (float64 tensors with one value per token).

    var_in / var_out: variance across the hidden dimension (population variance,
    squared activation units); rel_update: ``||h_out - h_in|| / ||h_in||``;
    cos: cosine of ``h_in`` and ``h_out``.
    """
    a = h_in.detach().double().reshape(-1, h_in.shape[-1])
    b = h_out.detach().double().reshape(-1, h_out.shape[-1])
    norm_in = a.norm(dim=-1)
    return {"var_in": a.var(dim=-1, unbiased=False), "var_out": b.var(dim=-1, unbiased=False),
            "rel_update": (b - a).norm(dim=-1) / norm_in.clamp_min(1e-30),
            "cos": F.cosine_similarity(a, b, dim=-1, eps=1e-30)}


def _profile_row(layer: int, stats: dict[str, torch.Tensor]) -> dict:
    var_in, var_out = float(stats["var_in"].mean()), float(stats["var_out"].mean())
    med_in, med_out = float(np.median(to_numpy(stats["var_in"]))), float(np.median(to_numpy(stats["var_out"])))
    cos = float(stats["cos"].mean())
    return {"layer": layer, "var_in": var_in, "var_out": var_out, "growth": var_out / var_in,
            "var_in_median": med_in, "var_out_median": med_out, "growth_median": med_out / med_in,
            "rel_update": float(stats["rel_update"].mean()), "cos_in_out": cos, "block_influence": 1.0 - cos,
            "tokens": int(stats["var_in"].numel())}


class _ProfileRecorder:
    """Hooks on every decoder layer collecting :func:`token_stats` (pre-hook: input; forward hook: output)."""

    def __init__(self, layers: nn.ModuleList):
        self.layers = layers
        self.inputs: dict[int, torch.Tensor] = {}
        self.stats: dict[int, list[dict]] = {i: [] for i in range(len(layers))}
        self._hooks = None

    def __enter__(self) -> "_ProfileRecorder":
        self._hooks = hooks(pre=[(layer, self._pre(i), True) for i, layer in enumerate(self.layers)],
                            post=[(layer, self._post(i)) for i, layer in enumerate(self.layers)])
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        installed, self._hooks = self._hooks, None
        if installed is not None:
            installed.__exit__(None, None, None)
        self.inputs.clear()

    def _pre(self, i: int):
        def hook(module, args, kwargs):
            self.inputs[i] = _hidden_in(args, kwargs).detach().clone()  # a copy: safe from in-place updates
        return hook

    def _post(self, i: int):
        def hook(module, args, output):
            self.stats[i].append(token_stats(self.inputs.pop(i), _hidden_out(output)))
        return hook

    def table(self) -> pd.DataFrame:
        rows = [_profile_row(i, {k: torch.cat([s[k] for s in parts]) for k in parts[0]})
                for i, parts in self.stats.items() if parts]
        return pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))


def layer_profile(model, windows: torch.Tensor, allocation=None, protocol: str = "all", batch_size: int = 4,
                  progress: bool = True) -> pd.DataFrame:
    """Residual-stream statistics of every decoder layer, dense or TopK-sparsified.

    Args:
        model: a causal LM or :class:`LoadedModel` (run in eval mode, no gradients).
        windows: LongTensor ``[n_windows, T]`` of token ids.
        allocation: None (dense) or anything ``TopKSparsifier`` accepts (allocation
            table, dict name -> sparsity, one float).
        protocol: ``"all"`` or ``"last_half"`` (which positions are sparsified).
        batch_size: windows per forward pass. progress: tqdm bar over batches.
    Returns:
        DataFrame, one row per layer: :data:`PROFILE_COLUMNS`. Means are over all
        ``n_windows * T`` tokens (so tokens with massive activations weigh in);
        the ``_median`` columns are medians over tokens (robust to the few tokens with
        massive activations). ``growth`` = var_out / var_in, ``growth_median`` =
        var_out_median / var_in_median.
    """
    from ..sparsify.topk import TopKSparsifier

    model, windows = unwrap(model), check_windows(windows)
    sparsifier = TopKSparsifier(model, allocation, protocol=protocol) if allocation is not None else None
    with _eval_mode(model), torch.inference_mode(), _ProfileRecorder(decoder_layers(model)) as recorder, \
            (sparsifier if sparsifier is not None else contextlib.nullcontext()):
        for batch in tqdm(windows.split(batch_size), desc="layer profile", disable=not progress, leave=False):
            _forward(model, batch)
    return recorder.table()


def _probe(h: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """A Gaussian direction (shape of ``h``) scaled per token to ``eps * ||h_token||``."""
    v = torch.randn(h.shape, generator=generator, dtype=torch.float32).to(h.dtype).to(h.device)
    scale = eps * h.norm(dim=-1, keepdim=True) / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return v * scale


def _gap_per_token(layer: nn.Module, args, kwargs, v: torch.Tensor) -> torch.Tensor:
    """``||(f(h+v) - f(h-v)) / 2 - v|| / ||v||`` per token (float64)."""
    h = _hidden_in(args, kwargs)
    rest_args = tuple(args[1:])
    kw = {k: val for k, val in kwargs.items() if k != "hidden_states"}
    plus = _hidden_out(layer(h + v, *rest_args, **kw))
    minus = _hidden_out(layer(h - v, *rest_args, **kw))
    jv = (plus.double() - minus.double()) / 2
    vd = v.double()
    return ((jv - vd).norm(dim=-1) / vd.norm(dim=-1).clamp_min(1e-30)).reshape(-1)


def jacobian_identity_gap(model, windows: torch.Tensor, n_probes: int = 2, eps: float = 1e-2, seed: int = 0,
                          batch_size: int = 2, progress: bool = True) -> pd.DataFrame:
    """How far each layer's map ``h -> f(h)`` is from the identity, along random directions.

    For each token the probe ``v`` is a Gaussian direction scaled to ``eps * ||h||``
    (``eps`` relative); ``J v`` is estimated by central differences
    ``(f(h+v) - f(h-v)) / 2`` of the whole layer (the perturbation is applied to
    every token of a window at once, so ``J v`` includes attention's mixing).
    The gap is ``||J v - v|| / ||v||`` per token: 0 when the layer acts as the
    identity along ``v``, ~1 when it changes directions by as much as their size.

    A pre-hook captures each layer's inputs (hidden states, position embeddings,
    mask...) during a normal forward pass and calls the layer again itself
    (guarded so the extra calls are not probed in turn). Seeded: the same seed
    draws the same probes. Keep it small: a few windows (e.g. 2 x 256 tokens).
    Returns one row per layer: layer, jacobian_gap (mean over tokens and probes),
    jacobian_gap_median, n_probes, eps, tokens (per probe).
    """
    if n_probes < 1 or not eps > 0:
        raise DepthError(f"n_probes={n_probes}, eps={eps}: need n_probes >= 1 and eps > 0 (e.g. 2 and 1e-2).")
    model, windows = unwrap(model), check_windows(windows)
    layers = decoder_layers(model)
    generator = torch.Generator().manual_seed(int(seed))
    gaps: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(layers))}
    busy = {"flag": False}

    def make_hook(i: int):
        def hook(module, args, kwargs):
            if busy["flag"]:
                return None  # our own extra calls: not probed again
            busy["flag"] = True
            try:
                h = _hidden_in(args, kwargs)
                for _ in range(n_probes):
                    gaps[i].append(_gap_per_token(module, args, kwargs, _probe(h, eps, generator)))
            finally:
                busy["flag"] = False
            return None
        return hook

    with hooks(pre=[(layer, make_hook(i)) for i, layer in enumerate(layers)], with_kwargs=True), \
            _eval_mode(model), torch.inference_mode():
        for batch in tqdm(windows.split(batch_size), desc="Jacobian gap", disable=not progress, leave=False):
            _forward(model, batch)
    rows = []
    for i, parts in gaps.items():
        values = torch.cat(parts)
        rows.append({"layer": i, "jacobian_gap": float(values.mean()),
                     "jacobian_gap_median": float(np.median(to_numpy(values))),
                     "n_probes": n_probes, "eps": eps, "tokens": int(windows.numel())})
    return pd.DataFrame(rows)
