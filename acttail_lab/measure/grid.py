"""Perplexity of a (TopK-sparsified) model, and a cached grid over strategies x sparsities.

Scoring protocols (say which one a number uses):

* ``"all"``: every projection input is sparsified at every position, and all
  ``T - 1`` next-token targets of each window of ``T`` tokens are scored.
* ``"last_half"``: TEAL's prefill rule. Positions ``t >= T // 2`` are
  sparsified, earlier positions are dense, and only the targets predicted at
  sparsified positions are scored (tokens ``T // 2 + 1 ... T - 1``:
  ``T - 1 - T // 2`` per window). A dense row under this protocol is scored on
  exactly the same tokens, so rows compare like for like.

Perplexity is ``exp(mean NLL)`` over scored tokens, NLL in nats. Windows are
non-overlapping (no sliding context), so numbers depend on the window length.

:func:`evaluate_grid` caches every row as a small JSON file under
``cache_dir("eval")``, keyed by the model (source and a weight fingerprint),
the token windows (corpus, split, window, tokens and a hash of the ids), the
sparsity vector, the protocol and the dtype/device type. Re-running resumes:
an interrupted run loses at most the row in progress.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.cache import (
    atomic_path,
    atomic_write_text,
    cache_dir,
    hash_bytes,
    stable_hash,
)
from ..core.corpus import corpus_text, token_windows
from ..core.errors import AllocationError
from ..core.models import LoadedModel, load_model, projection_table
from ..core.provenance import describe_device, write_sidecar
from ..sparsify.methods import calibration_for, make_sparsifier
from ..sparsify.topk import PROTOCOLS, TopKSparsifier, weighted_sparsity

CACHE_VERSION = 1
"""Bump when the cached row format or the scoring changes (old rows are then ignored)."""

GRID_COLUMNS = ("strategy", "sparsity", "perplexity", "nll", "tokens", "realised_sparsity", "protocol",
                "window", "model", "corpus", "split", "xmin_rule", "options", "wall_s", "device", "dtype", "cached",
                "method", "kinds", "realised_std")
"""Columns of :func:`evaluate_grid`. ``sparsity`` is the target over the projections that get a budget
(``kinds``; all when empty); ``realised_sparsity`` is always the parameter-weighted fraction of *all*
projection weights the run skips; ``realised_std`` the parameter-weighted mean of the per-token standard
deviation of each projection's sparsity (0 for TopK, which is exact per token)."""


# --------------------------------------------------------------------------- one perplexity
@dataclass
class PerplexityResult:
    """Perplexity of one model (+ allocation) on a set of token windows.

    perplexity: exp(nll). nll: mean negative log-likelihood per scored token
    (nats). tokens: scored target tokens. realised_sparsity: parameter-weighted
    mean of the measured per-projection sparsity (0.0 when dense).
    projections: per-projection table from :meth:`TopKSparsifier.realised`
    (None when dense). wall_s: seconds for the forward passes. protocol: see
    the module doc.
    """

    perplexity: float
    nll: float
    tokens: int
    realised_sparsity: float
    wall_s: float
    protocol: str
    projections: pd.DataFrame | None = field(default=None, repr=False)

    def as_row(self) -> dict:
        """The scalar fields as a dict (one row of a results table)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "projections"}


def _model_of(model) -> nn.Module:
    return model.model if isinstance(model, LoadedModel) else model


def input_device(model: nn.Module) -> torch.device:
    """Device of the input embeddings (where token ids must go; right with ``device_map="auto"`` too)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and hasattr(embeddings, "weight"):
        return embeddings.weight.device
    return next(model.parameters()).device


def _scored_start(protocol: str, length: int) -> int:
    """First position whose next-token prediction is scored."""
    return length // 2 if protocol == "last_half" else 0


def _window_nll(model: nn.Module, ids: torch.Tensor, start: int, keep_arg: bool) -> tuple[float, int]:
    """Summed NLL (nats) and count of the targets ``ids[:, start + 1:]`` predicted from ``ids``."""
    length = ids.shape[1]
    kwargs = {"use_cache": False}
    if keep_arg and start > 0:
        kwargs["logits_to_keep"] = length - start  # only positions start..T-1 go through the LM head
    logits = model(input_ids=ids, **kwargs).logits
    logits = logits[:, logits.shape[1] - (length - start):-1]  # predictions made at positions start..T-2
    targets = ids[:, start + 1:].to(logits.device)
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    return float(nll), targets.numel()


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
    model = _model_of(model)
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    device = input_device(model)
    start = _scored_start(protocol, windows.shape[1])
    keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
    if sparsifier is None and allocation is not None:
        sparsifier = TopKSparsifier(model, allocation, protocol=protocol)
    total_nll, total_tokens = 0.0, 0
    t0 = time.perf_counter()
    try:
        with torch.inference_mode(), (sparsifier if sparsifier is not None else contextlib.nullcontext()):
            for batch in tqdm(windows.split(batch_size), desc=desc, disable=not progress, leave=False):
                nll, count = _window_nll(model, batch.to(device), start, keep_arg)
                total_nll += nll
                total_tokens += count
    finally:
        model.train(was_training)
    wall = time.perf_counter() - t0
    projections = sparsifier.realised() if sparsifier is not None else None
    realised = weighted_sparsity(projections) if projections is not None else 0.0
    mean_nll = total_nll / total_tokens
    return PerplexityResult(perplexity=math.exp(mean_nll), nll=mean_nll, tokens=total_tokens,
                            realised_sparsity=realised, wall_s=wall, protocol=protocol, projections=projections)


# --------------------------------------------------------------------------- cache keys
def model_fingerprint(model: nn.Module, samples: int = 4096) -> str:
    """Cheap content hash of a model's weights: names, shapes, dtypes and a strided sample of values.

    Hashing every byte of a 7B model takes tens of seconds; instead each tensor
    contributes a hash of ``samples`` evenly spaced values and its float64 sum
    (one fast pass on its own device), which tell checkpoints apart in practice.
    Tensors on the ``meta`` device (offloaded) contribute their shape only.
    """
    parts = []
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            entry = [name, list(tensor.shape), str(tensor.dtype)]
            if tensor.device.type != "meta" and tensor.numel() > 0 and tensor.is_floating_point():
                flat = tensor.reshape(-1)
                step = max(1, flat.numel() // samples)
                sample = flat[::step][:samples].double().cpu().numpy()
                entry.append(hash_bytes(sample.tobytes()))
                entry.append(repr(float(flat.sum(dtype=torch.float64))))
            parts.append(entry)
    return stable_hash(parts)


def allocation_vector(allocation) -> list | None:
    """The ``[name, sparsity]`` pairs of an allocation (DataFrame or dict), rounded to 1e-12; None for dense."""
    if allocation is None:
        return None
    if isinstance(allocation, pd.DataFrame):
        pairs = zip(allocation["name"], allocation["sparsity"])
    elif isinstance(allocation, dict):
        pairs = allocation.items()
    else:
        return [["*", round(float(allocation), 12)]]
    return [[str(n), round(float(s), 12)] for n, s in pairs]


def row_key(context: dict, allocation, method: str = "topk", calibration: str | None = None) -> str:
    """Cache key of one grid row: the run context, a hash of the sparsity vector and, for methods other
    than TopK, the method and the key of its calibration statistics."""
    extra = {} if method == "topk" else {"method": method, "calibration": calibration}
    return stable_hash({"v": CACHE_VERSION, **context, **extra,
                        "allocation": stable_hash(allocation_vector(allocation))}, 32)


def token_spread(projections: pd.DataFrame | None) -> float:
    """Parameter-weighted mean of the per-token sparsity std of each projection (0 without the column)."""
    if projections is None or "realised_std" not in projections:
        return 0.0
    return weighted_sparsity(projections, "realised_std")


_MEASURED = ("perplexity", "nll", "tokens", "realised_sparsity", "wall_s", "device")
_OPTIONAL = ("realised_std",)


def _read_cached(path: Path, key: str) -> dict | None:
    """The cached measurements for ``key``, or None when missing, unreadable or inconsistent."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ok = (data.get("key") == key and all(f in data for f in _MEASURED)
              and isinstance(data["tokens"], int) and data["tokens"] > 0
              and math.isfinite(data["nll"]) and math.isclose(data["perplexity"], math.exp(data["nll"]), rel_tol=1e-9)
              and 0.0 <= data["realised_sparsity"] <= 1.0)
    except (OSError, ValueError, TypeError, AttributeError, OverflowError):
        ok = False
    if not ok:
        warnings.warn(f"Ignoring unreadable or inconsistent cache file {path}; recomputing that row.", stacklevel=3)
        return None
    return {**{f: data[f] for f in _MEASURED}, **{f: data.get(f, 0.0) for f in _OPTIONAL}}


def _write_cached(path: Path, key: str, measured: dict, context: dict) -> None:
    payload = {"key": key, **measured, "context": context}
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n")


# --------------------------------------------------------------------------- the grid
def _resolve_specs(strategies):
    from ..allocation import StrategySpec, parse_strategy

    if isinstance(strategies, (str, StrategySpec)):
        strategies = [strategies]
    return [s if isinstance(s, StrategySpec) else parse_strategy(s) for s in strategies]


def _projection_table_for(model: nn.Module, specs, xmin, progress: bool = False) -> pd.DataFrame:
    """Spectra table (with alpha; cached by ``spectra``) when a strategy needs alphas, else the projection table."""
    from ..allocation.strategies import get_strategy

    if any(get_strategy(spec.strategy).needs_alpha for spec in specs):
        from ..spectral.spectra import analyze

        return analyze(model, xmin=xmin, progress=progress)
    return projection_table(model)


def _cost_table_for(lm: LoadedModel, specs, corpus: str, progress: bool = False) -> pd.DataFrame | None:
    """The calibration cost table (cached by ``sensitivity``) when a strategy is solved from it."""
    from ..allocation.strategies import get_strategy

    if not any(get_strategy(spec.strategy).needs_cost and spec.strategy != "teal-greedy" for spec in specs):
        return None
    from .sensitivity import cost_table

    return cost_table(lm, corpus=corpus, progress=progress)


def _greedy_path_for(lm: LoadedModel, specs, corpus: str, progress: bool = False) -> pd.DataFrame | None:
    """TEAL's greedy path on calibration text (cached by ``teal_greedy``) when a strategy reads it."""
    greedy = [spec for spec in specs if spec.strategy == "teal-greedy"]
    if not greedy:
        return None
    from ..allocation.strategies import resolve_options
    from .teal_greedy import greedy_path

    s_max = resolve_options(greedy[0].strategy, greedy[0].options)["s_max"]
    return greedy_path(lm, corpus=corpus, s_max=s_max, progress=progress)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def evaluate_grid(model_name="smollm2-135m", strategies=("uniform", "acttail"), sparsities=(0.5, 0.6, 0.7, 0.8),
                  tokens: int = 16384, window: int = 512, corpus: str = "austen", split: str = "evaluation",
                  xmin: str = "ks", protocol: str = "all", device="cpu", dtype: torch.dtype = torch.float32,
                  seed: int = 0, cache: bool = True, progress: bool = True, include_dense: bool = True,
                  batch_size: int = 4, device_map: str | None = None,
                  calibration_tokens: int = 8192) -> pd.DataFrame:
    """Perplexity for every (strategy, target sparsity) pair, plus a dense row, on the same windows.

    Args:
        model_name: built-in name, HF id, folder or .gguf (see ``load_model``),
            or an already loaded :class:`LoadedModel` (then device/dtype/device_map are ignored).
        strategies: preset labels or ``NAME[k=v;...]`` texts (``allocation.parse_strategy``)
            or StrategySpec objects.
        sparsities: targets (parameter-weighted mean fraction of inputs zeroed), each in [0, 1).
        tokens, window: evaluation tokens (rounded down to whole windows) and window length.
        corpus, split: ``"austen"`` or a text file; ``"evaluation"`` by default.
        xmin: xmin rule passed to ``spectra.analyze`` for alpha-based strategies.
        protocol: ``"all"`` or ``"last_half"`` (module doc).
        device, dtype, device_map: passed to ``load_model`` (``device_map="auto"`` for big models).
        seed: torch seed. cache: read/write the per-row JSON cache. progress: tqdm bar + one log line per row.
        include_dense: add the dense row (strategy ``"dense"``, sparsity 0).
        calibration_tokens: calibration-split tokens for methods that need statistics
            (rotated, threshold, cats; ``acttail_lab.sparsify.methods``).
    Returns:
        DataFrame, one row per run, columns :data:`GRID_COLUMNS`. ``tokens`` is the
        number of scored tokens; ``options`` the strategy options as JSON.
    """
    if protocol not in PROTOCOLS:
        raise AllocationError(f"Unknown protocol {protocol!r}. Fix: choose one of {PROTOCOLS}.")
    from ..allocation import allocate
    from ..allocation.strategies import get_strategy

    torch.manual_seed(seed)
    lm = model_name if isinstance(model_name, LoadedModel) else load_model(
        model_name, device=device, dtype=dtype, device_map=device_map)
    model = lm.model
    windows = token_windows(lm.tokenizer, corpus_text(corpus, split), window=window, n_tokens=tokens)
    specs = _resolve_specs(strategies)
    table = _projection_table_for(model, specs, xmin, progress) if specs else None
    model_dtype = next(model.parameters()).dtype
    dev = input_device(model)
    context = {
        "model": lm.source, "weights": model_fingerprint(model), "corpus": str(corpus), "split": split,
        "window": window, "tokens": tokens, "windows": hash_bytes(windows.numpy().tobytes()),
        "protocol": protocol, "dtype": _dtype_name(model_dtype), "device": dev.type,
    }
    common = dict(protocol=protocol, window=window, model=lm.name, corpus=str(corpus), split=split,
                  dtype=_dtype_name(model_dtype))

    cost = _cost_table_for(lm, specs, corpus, progress)
    path = _greedy_path_for(lm, specs, corpus, progress)
    stats = calibration_for(lm, [spec.method for spec in specs], corpus=corpus, tokens=calibration_tokens,
                            window=window, progress=progress)
    jobs = [("dense", 0.0, None, None)] if include_dense else []
    for spec in specs:
        for target in sparsities:
            alloc = allocate(table, spec, float(target), cost=cost, greedy_path=path)
            jobs.append((spec.label, float(target), spec, alloc))

    rows = []
    for label, target, spec, allocation in jobs:
        method = spec.method if spec is not None else "topk"
        key = row_key(context, None if allocation is None else allocation[["name", "sparsity"]], method,
                      stats.key if stats is not None and method != "topk" else None)
        path = cache_dir("eval") / f"{key}.json"
        measured = _read_cached(path, key) if cache else None
        cached = measured is not None
        if measured is None:
            sparsifier = (None if allocation is None else
                          make_sparsifier(model, allocation, method, protocol=protocol, stats=stats, progress=progress))
            result = perplexity(model, windows, allocation, protocol=protocol, batch_size=batch_size,
                                progress=progress, seed=seed, desc=f"{label} @ {target:g}", sparsifier=sparsifier)
            measured = {**{f: getattr(result, f) for f in _MEASURED if f != "device"},
                        "device": describe_device(dev), "realised_std": token_spread(result.projections)}
            if cache:
                _write_cached(path, key, measured, context)
        needs_alpha = spec is not None and get_strategy(spec.strategy).needs_alpha
        row = {"strategy": label, "sparsity": target, **measured, **common,
               "xmin_rule": xmin if needs_alpha else None,
               "options": json.dumps(dict(spec.options) if spec else {}, sort_keys=True, default=str),
               "cached": cached, "method": method if spec is not None else None,
               "kinds": "+".join(spec.kinds) if spec is not None and spec.kinds else None}
        rows.append(row)
        if progress:
            print(f"[evaluate] {label:>14s} s={target:.3f}: ppl {row['perplexity']:.4f} "
                  f"(realised {row['realised_sparsity']:.4f}, {row['tokens']} tokens, "
                  f"{row['wall_s']:.1f} s{', cached' if cached else ''})", file=sys.stderr, flush=True)
    return pd.DataFrame(rows, columns=list(GRID_COLUMNS))


def write_results(df: pd.DataFrame, path_csv, **provenance) -> Path:
    """Write ``df`` as CSV (atomically) and ``<path_csv>.json`` with provenance; return the CSV path.

    ``provenance`` goes to :func:`acttail_lab.core.provenance.provenance` (seed,
    device, command, and any extra settings such as model or tokens).
    """
    path = Path(path_csv)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    write_sidecar(path, **provenance)
    return path
