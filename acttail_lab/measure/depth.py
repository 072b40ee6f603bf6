"""Depth utilisation: how much each decoder layer does, and whether activation sparsity changes it.

Background: under Pre-LN the residual stream's variance grows with depth, so
late layers add ever smaller relative updates and act close to the identity
(the "curse of depth"); arXiv 2603.15389 reports that activation sparsity
damps this variance growth and makes layers more useful. This module measures,
per decoder layer ``l`` of a real model, with ``h_in`` / ``h_out`` the
residual-stream hidden states entering / leaving the layer (one vector of
``d`` = hidden size per token):

* :func:`layer_profile`: ``var_in`` / ``var_out`` (mean over tokens of the
  variance across the ``d`` hidden dimensions; units: squared activation),
  ``growth = var_out / var_in``, ``rel_update`` (mean of
  ``||h_out - h_in|| / ||h_in||``) and ``cos_in_out`` (mean cosine of ``h_in``
  and ``h_out``; ``block_influence = 1 - cos_in_out`` is ShortGPT's score),
  dense or under a TopK allocation (:class:`acttail_lab.sparsify.topk.TopKSparsifier`);
* :func:`jacobian_identity_gap`: how far the layer map is from the identity
  along random directions (central finite differences, 0 = identity);
* :func:`skip_layer_perplexity`: the perplexity when the layer is replaced by
  the identity (its output := its input), cached per layer on disk.

:func:`depth_table` joins these with each layer's mean alpha and the sparsity
ActTail gives the layer; :func:`depth_correlations` ranks them against each
other (Spearman); :func:`variance_under_sparsity` compares variance profiles
under dense / uniform / ActTail allocations. Committed SmolLM2-135M results are
made by ``scripts/reproduce_depth.py`` and read by :func:`load_depth`.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.cache import atomic_write_text, cache_dir, hash_bytes, stable_hash
from ..core.errors import ActTailError
from ..core.models import LoadedModel, decoder_layers
from ..core.paths import DEFAULT_MODEL, result_path
from . import grid as evaluation

CACHE_VERSION = 1
"""Bump when the cached skip-layer row format or its scoring changes (old rows are then ignored)."""

DEFAULT_CONDITIONS = ("dense", "uniform@0.5", "acttail@0.5", "uniform@0.7", "acttail@0.7")
DEPTH_SCORES = ("delta_nll", "jacobian_gap", "block_influence", "rel_update", "growth", "growth_median")
"""Per-layer utilisation scores correlated by :func:`depth_correlations`."""
PROFILE_COLUMNS = ("layer", "var_in", "var_out", "growth", "var_in_median", "var_out_median", "growth_median",
                   "rel_update", "cos_in_out", "block_influence", "tokens")


class DepthError(ActTailError, ValueError):
    """Bad input to a depth measurement (windows, layer index, condition text)."""


# --------------------------------------------------------------------------- inputs
def _unwrap(model) -> nn.Module:
    return model.model if isinstance(model, LoadedModel) else model


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


# --------------------------------------------------------------------------- per-token statistics
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
    med_in, med_out = float(np.median(stats["var_in"].numpy())), float(np.median(stats["var_out"].numpy()))
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
        self.handles: list = []

    def __enter__(self) -> "_ProfileRecorder":
        for i, layer in enumerate(self.layers):
            self.handles.append(layer.register_forward_pre_hook(self._pre(i), with_kwargs=True))
            self.handles.append(layer.register_forward_hook(self._post(i)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
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


# --------------------------------------------------------------------------- variance profile
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

    model, windows = _unwrap(model), check_windows(windows)
    sparsifier = TopKSparsifier(model, allocation, protocol=protocol) if allocation is not None else None
    with _eval_mode(model), torch.inference_mode(), _ProfileRecorder(decoder_layers(model)) as recorder, \
            (sparsifier if sparsifier is not None else contextlib.nullcontext()):
        for batch in tqdm(windows.split(batch_size), desc="layer profile", disable=not progress, leave=False):
            _forward(model, batch)
    return recorder.table()


# --------------------------------------------------------------------------- Jacobian vs identity
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
    model, windows = _unwrap(model), check_windows(windows)
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

    handles = [layer.register_forward_pre_hook(make_hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        with _eval_mode(model), torch.inference_mode():
            for batch in tqdm(windows.split(batch_size), desc="Jacobian gap", disable=not progress, leave=False):
                _forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for i, parts in gaps.items():
        values = torch.cat(parts)
        rows.append({"layer": i, "jacobian_gap": float(values.mean()),
                     "jacobian_gap_median": float(np.median(values.numpy())),
                     "n_probes": n_probes, "eps": eps, "tokens": int(windows.numel())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- skip-layer perplexity
@contextlib.contextmanager
def skipped_layer(model, layer: int):
    """Context manager: decoder layer ``layer`` returns its input unchanged (the layer becomes the identity)."""
    model = _unwrap(model)
    index = _check_layers(model, [layer])[0]

    def hook(module, args, kwargs, output):
        return _with_hidden(output, _hidden_in(args, kwargs))

    handle = decoder_layers(model)[index].register_forward_hook(hook, with_kwargs=True)
    try:
        yield model
    finally:
        handle.remove()


def windows_hash(windows: torch.Tensor) -> str:
    """Content hash of token windows (ids, shape and dtype)."""
    windows = windows.cpu().contiguous()
    return stable_hash([list(windows.shape), str(windows.dtype), hash_bytes(windows.numpy().tobytes())])


def _skip_key(context: dict, layer: int | None) -> str:
    return stable_hash({"v": CACHE_VERSION, **context, "layer": "dense" if layer is None else int(layer)}, 32)


def _read_skip(path: Path, key: str) -> dict | None:
    """The cached {perplexity, nll, tokens} for ``key``; None when missing or not trustworthy (warns)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ok = (data.get("key") == key and isinstance(data.get("tokens"), int) and data["tokens"] > 0
              and math.isfinite(data["nll"]) and math.isclose(data["perplexity"], math.exp(data["nll"]),
                                                                rel_tol=1e-9))
    except (OSError, ValueError, TypeError, AttributeError, KeyError, OverflowError):
        ok = False
    if not ok:
        warnings.warn(f"Ignoring unreadable or inconsistent cache file {path}; recomputing that layer.", stacklevel=3)
        return None
    return {k: data[k] for k in ("perplexity", "nll", "tokens")}


def _skip_nll(model: nn.Module, windows: torch.Tensor, layer: int | None, context: dict, cache: bool,
              batch_size: int) -> dict:
    """Perplexity with ``layer`` skipped (None: dense), from the cache when there; adds ``cached``."""
    key = _skip_key(context, layer)
    path = cache_dir("depth") / f"skip-{key}.json"
    found = _read_skip(path, key) if cache else None
    if found is not None:
        return {**found, "cached": True}
    with (skipped_layer(model, layer) if layer is not None else contextlib.nullcontext()):
        result = evaluation.perplexity(model, windows, batch_size=batch_size, progress=False)
    measured = {"perplexity": result.perplexity, "nll": result.nll, "tokens": int(result.tokens)}
    if cache:
        payload = {"key": key, **measured, "layer": layer, "wall_s": result.wall_s, "context": context}
        atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return {**measured, "cached": False}


def skip_layer_perplexity(model, windows: torch.Tensor, layers=None, progress: bool = True, cache: bool = True,
                          batch_size: int = 4) -> pd.DataFrame:
    """Perplexity when each decoder layer in turn is replaced by the identity.

    Args:
        model: a causal LM or :class:`LoadedModel`. windows: LongTensor ``[n, T]``.
        layers: layer indices (None: all). cache: read/write one JSON file per
            layer under ``cache_dir("depth")``, keyed by the weights
            (``evaluation.model_fingerprint``), a hash of the token ids and the layer,
            written atomically so an interrupted run resumes where it stopped.
        progress: tqdm bar over layers plus one line per layer on stderr.
    Returns:
        One row per layer: layer, perplexity, nll (mean nats per scored token,
        all ``T - 1`` targets per window), dense_perplexity, dense_nll,
        delta_nll = nll - dense_nll (nats; > 0: the layer is needed), tokens, cached.
    """
    model, windows = _unwrap(model), check_windows(windows)
    chosen = _check_layers(model, layers)
    context = {"weights": evaluation.model_fingerprint(model), "windows": windows_hash(windows)}
    with _eval_mode(model):
        dense = _skip_nll(model, windows, None, context, cache, batch_size)
        rows = []
        for layer in tqdm(chosen, desc="skip layer", disable=not progress):
            row = _skip_nll(model, windows, layer, context, cache, batch_size)
            rows.append({"layer": layer, "perplexity": row["perplexity"], "nll": row["nll"],
                         "dense_perplexity": dense["perplexity"], "dense_nll": dense["nll"],
                         "delta_nll": row["nll"] - dense["nll"], "tokens": row["tokens"], "cached": row["cached"]})
            if progress:
                print(f"[depth] skip layer {layer:2d}: ppl {row['perplexity']:.3f} (dense {dense['perplexity']:.3f}, "
                      f"+{rows[-1]['delta_nll']:.4f} nats){', cached' if row['cached'] else ''}",
                      file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- alpha and budgets per layer
def layer_alpha(spectra: pd.DataFrame) -> pd.DataFrame:
    """Per layer: alpha_mean (plain mean over its projections) and alpha_weighted (weighted by n_params)."""
    w = spectra.assign(_w=spectra["alpha"] * spectra["n_params"]).groupby("layer", sort=True)
    return pd.DataFrame({"alpha_mean": w["alpha"].mean(),
                         "alpha_weighted": w["_w"].sum() / w["n_params"].sum()}).reset_index()


def budget_column(strategy: str, target: float) -> str:
    """Name of a per-layer budget column, e.g. ``budget_acttail@0.5``."""
    return f"budget_{strategy}@{float(target):g}"


def layer_budgets(spectra: pd.DataFrame, strategies=("acttail", "acttail-block"), targets=(0.5, 0.7)) -> pd.DataFrame:
    """Per layer, the parameter-weighted mean sparsity each strategy gives it at each target.

    Input: a ``spectra.analyze`` table (layer, projection, n_params, alpha). Output:
    layer plus one column :func:`budget_column` per (strategy, target).
    """
    from ..allocation import allocate

    out = pd.DataFrame({"layer": sorted(spectra["layer"].unique())})
    for strategy in strategies:
        for target in targets:
            alloc = allocate(spectra, strategy, float(target))
            g = alloc.assign(_w=alloc["sparsity"] * alloc["n_params"]).groupby("layer", sort=True)
            out[budget_column(strategy, target)] = (g["_w"].sum() / g["n_params"].sum()).to_numpy()
    return out


def join_depth(profile: pd.DataFrame, gap: pd.DataFrame, skip: pd.DataFrame, spectra: pd.DataFrame,
               strategies=("acttail", "acttail-block"), targets=(0.5, 0.7)) -> pd.DataFrame:
    """One row per layer: the profile, the Jacobian gap, the skip-layer scores, alpha and the budgets.

    Skip columns are renamed skip_perplexity, skip_nll, skip_tokens; the profile's
    tokens become profile_tokens and the gap's jacobian_tokens.
    """
    skip = skip.drop(columns=["cached"], errors="ignore").rename(
        columns={"perplexity": "skip_perplexity", "nll": "skip_nll", "tokens": "skip_tokens"})
    table = (profile.rename(columns={"tokens": "profile_tokens"})
             .merge(gap.rename(columns={"tokens": "jacobian_tokens"}), on="layer", how="outer")
             .merge(skip, on="layer", how="outer")
             .merge(layer_alpha(spectra), on="layer", how="left")
             .merge(layer_budgets(spectra, strategies, targets), on="layer", how="left"))
    return table.sort_values("layer").reset_index(drop=True)


def depth_table(lm, windows: torch.Tensor, profile_windows: torch.Tensor | None = None,
                jacobian_windows: torch.Tensor | None = None, spectra: pd.DataFrame | None = None,
                strategies=("acttail", "acttail-block"), targets=(0.5, 0.7), xmin: str = "ks",
                n_probes: int = 2, eps: float = 1e-2, seed: int = 0, batch_size: int = 4,
                cache: bool = True, progress: bool = True) -> pd.DataFrame:
    """Every per-layer score of a model in one table (:func:`join_depth`).

    ``windows`` are scored for the skip-layer perplexity; ``profile_windows``
    (default: ``windows``) feed the dense :func:`layer_profile`;
    ``jacobian_windows`` (default: the first 2 windows cut to 256 tokens) feed
    :func:`jacobian_identity_gap`. ``spectra`` defaults to
    ``spectra.analyze(model, xmin=xmin)`` (alphas; cached on disk).
    """
    model = _unwrap(lm)
    windows = check_windows(windows)
    profile = layer_profile(model, windows if profile_windows is None else profile_windows,
                            batch_size=batch_size, progress=progress)
    gap = jacobian_identity_gap(model, windows[:2, :256] if jacobian_windows is None else jacobian_windows,
                                n_probes=n_probes, eps=eps, seed=seed, progress=progress)
    skip = skip_layer_perplexity(model, windows, progress=progress, cache=cache, batch_size=batch_size)
    if spectra is None:
        from ..spectral.spectra import analyze

        spectra = analyze(model, xmin=xmin, progress=progress)
    return join_depth(profile, gap, skip, spectra, strategies, targets)


def depth_correlations(df: pd.DataFrame, scores=DEPTH_SCORES, predictors=None) -> pd.DataFrame:
    """Spearman rho across layers between each utilisation score and each predictor.

    ``predictors`` default: alpha_mean, alpha_weighted and every ``budget_*`` column.
    Returns one row per (score, predictor): score, predictor, rho, p_value, n
    (layers with both values finite). rho is NaN when either column is constant.
    """
    from scipy.stats import spearmanr

    if predictors is None:
        predictors = [c for c in df.columns if c in ("alpha_mean", "alpha_weighted") or c.startswith("budget_")]
    missing = [c for c in (*scores, *predictors) if c not in df.columns]
    if missing:
        raise DepthError(f"The table has no column(s) {missing}. Fix: pass a depth_table / load_depth() table.")
    rows = []
    for score in scores:
        for predictor in predictors:
            pair = df[[score, predictor]].astype(float).replace([np.inf, -np.inf], np.nan).dropna()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = spearmanr(pair[score], pair[predictor]) if len(pair) > 2 else None
            rho, p = (float(result.statistic), float(result.pvalue)) if result is not None else (np.nan, np.nan)
            rows.append({"score": score, "predictor": predictor, "rho": rho, "p_value": p, "n": len(pair)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- variance under sparsity
def parse_condition(text: str) -> tuple[str, float]:
    """``"dense"`` -> ("dense", 0.0); ``"acttail@0.5"`` -> ("acttail", 0.5) (strategy or preset @ target)."""
    if str(text).strip() == "dense":
        return "dense", 0.0
    match = re.fullmatch(r"\s*(.+?)\s*@\s*([0-9.eE+-]+)\s*", str(text))
    if not match:
        raise DepthError(f"Cannot read the condition {text!r}. Fix: write 'dense' or 'STRATEGY@TARGET', "
                         "e.g. 'uniform@0.5' or 'acttail@0.7'.")
    try:
        return match.group(1), float(match.group(2))
    except ValueError:
        raise DepthError(f"Target {match.group(2)!r} in {text!r} is not a number. Fix: e.g. 'acttail@0.5'.")


def condition_allocations(model, conditions=DEFAULT_CONDITIONS, spectra: pd.DataFrame | None = None,
                          xmin: str = "ks") -> dict[str, tuple[str, float, object]]:
    """label -> (strategy, target, allocation or None) for condition texts (see :func:`parse_condition`).

    Alphas come from ``spectra`` or, when a strategy needs them, ``spectra.analyze(model, xmin)``.
    A mapping label -> allocation (None, table or float) is passed through (strategy = label).
    """
    from ..allocation import allocate
    from ..core.models import projection_table
    from ..sparsify.topk import weighted_sparsity

    if isinstance(conditions, Mapping):
        out = {}
        for label, alloc in conditions.items():
            target = (0.0 if alloc is None else float(alloc) if np.isscalar(alloc)
                      else weighted_sparsity(alloc, "sparsity"))
            out[str(label)] = (str(label), target, alloc)
        return out
    parsed = {str(c): parse_condition(c) for c in conditions}
    if spectra is None and any(s not in ("dense", "uniform") for s, _ in parsed.values()):
        from ..spectral.spectra import analyze

        spectra = analyze(_unwrap(model), xmin=xmin, progress=False)
    table = spectra if spectra is not None else projection_table(_unwrap(model))
    return {label: (s, t, None if s == "dense" else allocate(table, s, t)) for label, (s, t) in parsed.items()}


def variance_under_sparsity(model, windows: torch.Tensor, conditions=DEFAULT_CONDITIONS,
                            spectra: pd.DataFrame | None = None, xmin: str = "ks", protocol: str = "all",
                            batch_size: int = 4, progress: bool = True) -> pd.DataFrame:
    """:func:`layer_profile` under each condition (dense, uniform@0.5, acttail@0.5, ...), stacked.

    ``conditions``: texts ``"dense"`` / ``"STRATEGY@TARGET"`` or a mapping
    label -> allocation (see :func:`condition_allocations`). Returns a long table:
    condition, strategy, target, then :data:`PROFILE_COLUMNS` (one row per
    condition and layer, conditions in the order given).
    """
    model, windows = _unwrap(model), check_windows(windows)
    frames = []
    for label, (strategy, target, alloc) in condition_allocations(model, conditions, spectra, xmin).items():
        profile = layer_profile(model, windows, alloc, protocol=protocol, batch_size=batch_size, progress=False)
        frames.append(profile.assign(condition=label, strategy=strategy, target=target))
        if progress:
            last = profile.iloc[-1]
            print(f"[depth] {label:>14s}: final var_out {last['var_out']:.4g}, "
                  f"total growth {last['var_out'] / profile['var_in'].iloc[0]:.4g}", file=sys.stderr, flush=True)
    long = pd.concat(frames, ignore_index=True)
    return long[["condition", "strategy", "target", *PROFILE_COLUMNS]]


def variance_ratio(long: pd.DataFrame, reference: str = "dense", value: str = "var_out") -> pd.DataFrame:
    """``long`` with a column ``ratio`` = ``value`` / the ``reference`` condition's ``value`` at the same layer.

    1 = sparsity leaves that layer's variance unchanged. DepthError when ``reference`` is absent.
    """
    if reference not in set(long["condition"]):
        raise DepthError(f"No {reference!r} condition to compare with (have {list(dict.fromkeys(long['condition']))}). "
                         f"Fix: include {reference!r} in the conditions of variance_under_sparsity.")
    ref = long[long["condition"] == reference].set_index("layer")[value]
    return long.assign(ratio=long[value].to_numpy(dtype=float) / ref.reindex(long["layer"]).to_numpy(dtype=float))


def growth_summary(long: pd.DataFrame, reference: str = "dense") -> pd.DataFrame:
    """One row per condition of a :func:`variance_under_sparsity` table.

    Columns: condition, strategy, target; total_growth (var_out of the last layer /
    var_in of the first, i.e. from the embeddings, which sparsity does not touch);
    growth_after_first (var_out of the last layer / var_out of the first);
    mean_log_growth (mean over layers of ln growth, nats per layer); final_var_out;
    layer_ratio (median over layers of var_out / the ``reference``'s var_out at that
    layer; NaN without a reference); each also with the per-token medians
    (``*_median``); final_vs_reference / final_median_vs_reference (the last layer's ratio).
    """
    has_ref = reference in set(long["condition"])
    rows = []
    for label, part in long.groupby("condition", sort=False):
        part = part.sort_values("layer")
        row = {"condition": label, "strategy": part["strategy"].iloc[0], "target": part["target"].iloc[0]}
        for suffix in ("", "_median"):
            var_in, var_out = part[f"var_in{suffix}"], part[f"var_out{suffix}"]
            row.update({f"total_growth{suffix}": var_out.iloc[-1] / var_in.iloc[0],
                        f"growth_after_first{suffix}": var_out.iloc[-1] / var_out.iloc[0],
                        f"mean_log_growth{suffix}": float(np.log(var_out / var_in).mean()),
                        f"final_var_out{suffix}": var_out.iloc[-1]})
        rows.append(row)
    out = pd.DataFrame(rows)
    for suffix, name in (("", "final_vs_reference"), ("_median", "final_median_vs_reference")):
        if has_ref:
            ratios = variance_ratio(long, reference, f"var_out{suffix}")
            out[f"layer_ratio{suffix}"] = ratios.groupby("condition", sort=False)["ratio"].median().to_numpy()
            ref = out.loc[out["condition"] == reference, f"final_var_out{suffix}"].iloc[0]
            out[name] = out[f"final_var_out{suffix}"] / ref
        else:
            out[f"layer_ratio{suffix}"] = out[name] = np.nan
    return out


# --------------------------------------------------------------------------- committed results
def depth_paths(model: str = DEFAULT_MODEL, results_dir=None) -> tuple[Path, Path]:
    """(per-layer table, variance long table) CSV paths under ``results_dir`` (default ``results.RESULTS_DIR``)."""
    return result_path("depth", model, results_dir), result_path("depth_variance", model, results_dir)


def load_depth(results_dir: str | os.PathLike | None = None,
               model: str = DEFAULT_MODEL) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The committed (per-layer table, variance long table), each with ``attrs["provenance"]`` from its sidecar."""
    from ..report.results import load_table

    table_path, variance_path = depth_paths(model, results_dir)
    return load_table(table_path), load_table(variance_path)


def _layers_text(layers) -> str:
    return ", ".join(str(int(i)) for i in layers)


def depth_conclusions(table: pd.DataFrame, variance: pd.DataFrame, correlations: pd.DataFrame | None = None,
                      budget: str = "budget_acttail@0.5", top: int = 3) -> list[str]:
    """Sentences computed from the numbers (for the notebook's conclusion; nothing typed by hand)."""
    correlations = depth_correlations(table) if correlations is None else correlations
    costly = table.nlargest(top, "delta_nll")
    cheap = table.nsmallest(top, "delta_nll")
    dense_ppl = float(table["dense_perplexity"].iloc[0])
    n_layers = len(table)
    late = table[table["layer"] >= n_layers // 2]
    rest = table[table["layer"] > 0]
    growth = growth_summary(variance)
    dense = growth[growth["condition"] == "dense"].iloc[0]
    out = [
        f"Dense perplexity {dense_ppl:.2f}; skipping layers {_layers_text(costly['layer'])} costs most "
        f"(+{costly['delta_nll'].iloc[0]:.3f} nats for layer {int(costly['layer'].iloc[0])}), skipping layers "
        f"{_layers_text(cheap['layer'])} costs least ({', '.join(f'{v:+.4f}' for v in cheap['delta_nll'])} nats).",
        f"Dense, the residual stream's variance grows {dense['total_growth']:.3g}x from the embeddings to the output "
        f"of layer {n_layers - 1}, {dense['growth_after_first']:.3g}x after layer 0 (per-token median "
        f"{dense['growth_after_first_median']:.3g}x); in the second half of the network a typical token's variance "
        f"grows {float(np.exp(np.log(late['growth_median']).mean())):.3f}x per layer and the relative update "
        f"||h_out - h_in|| / ||h_in|| averages {late['rel_update'].mean():.3f}.",
        f"Jacobian identity gap after layer 0: median {rest['jacobian_gap'].median():.2f}, lowest "
        f"{rest['jacobian_gap'].min():.2f} (layer {int(rest.loc[rest['jacobian_gap'].idxmin(), 'layer'])}), "
        f"highest {rest['jacobian_gap'].max():.2f} (layer {int(rest.loc[rest['jacobian_gap'].idxmax(), 'layer'])}); "
        f"1 - cos(h_in, h_out) after layer 0: median {rest['block_influence'].median():.3f}.",
    ]
    ratios = variance_ratio(variance, "dense", "var_out_median")
    for row in growth[growth["condition"] != "dense"].itertuples():
        r = ratios.loc[ratios["condition"] == row.condition, "ratio"]
        out.append(f"{row.condition}: a typical token's variance leaving a layer is {row.layer_ratio_median:.2f}x "
                   f"dense's at the median layer (range {r.min():.2f}-{r.max():.2f}x over layers; mean over tokens "
                   f"{row.layer_ratio:.2f}x); after the last layer {row.final_median_vs_reference:.2f}x.")
    finite = correlations.dropna(subset=["rho"])
    if len(finite):
        strongest = finite.loc[finite["rho"].abs().idxmax()]
        n_sig = int((finite["p_value"] < 0.05).sum())
        out.append(f"{n_sig} of {len(finite)} score/predictor rank correlations reach p < 0.05; the strongest is "
                   f"rho({strongest['score']}, {strongest['predictor']}) = {strongest['rho']:+.2f} "
                   f"(p = {strongest['p_value']:.2g}).")
    for score in ("delta_nll", "jacobian_gap", "block_influence"):
        for predictor in ("alpha_mean", budget):
            hit = correlations[(correlations["score"] == score) & (correlations["predictor"] == predictor)]
            if len(hit):
                r = hit.iloc[0]
                out.append(f"Spearman rho({score}, {predictor}) = {r['rho']:+.2f} (p = {r['p_value']:.2g}, "
                           f"n = {int(r['n'])} layers).")
    return out


__all__ = [
    "DepthError", "DEFAULT_CONDITIONS", "DEPTH_SCORES", "PROFILE_COLUMNS", "check_windows", "token_stats",
    "layer_profile", "jacobian_identity_gap", "skipped_layer", "skip_layer_perplexity", "windows_hash",
    "layer_alpha", "budget_column", "layer_budgets", "join_depth", "depth_table", "depth_correlations",
    "parse_condition", "condition_allocations", "variance_under_sparsity", "variance_ratio", "growth_summary",
    "depth_paths",
    "load_depth", "depth_conclusions",
]
