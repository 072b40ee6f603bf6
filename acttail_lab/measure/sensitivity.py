"""Measured sensitivity: how much does TopK at sparsity s hurt each projection?

Two measures, both on CALIBRATION text (``corpus_text(split="calibration")``,
Sense and Sensibility for the default corpus; the evaluation split is never
touched here):

- :func:`cost_table` (cheap): for every projection and sparsity level, the
  relative output error of TopK on its own input,
  ``rel_error = ||W (x - topk_s(x))||_F / ||W x||_F`` over the captured tokens
  (every other projection dense), and ``rel_input_error = ||x - topk_s(x)||_F
  / ||x||_F``. One dense forward, then matrix products only.
- :func:`loss_increase_table` (expensive): mean NLL with ONLY that projection
  sparsified minus the dense mean NLL; one forward per (projection, level).

Then :func:`spectral_correlations` asks whether spectral metrics (alpha under
several xmin rules, alpha_weighted, stable rank, lambda_max) rank projections
the way the measured sensitivity does (Spearman), overall, within each
projection kind (across layers) and within each layer (across kinds), and
:func:`estimate_cost` scores any allocation on the measured curves (fast
enough for a slider). Solvers that use the curves live in
:mod:`acttail_lab.allocation.cost_solvers`.

Results are cached under ``cache_dir("sensitivity")``, keyed by the model's
weights, the token ids and the options, written atomically.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.cache import stable_hash
from ..core.corpus import DEFAULT_CORPUS, corpus_text, token_windows
from ..core.errors import AllocationError, CorpusError
from ..core.fingerprint import tokens_key, weights_fingerprint
from ..core.hooks import hooks
from ..core.models import iter_projections, tokenizer_of, unwrap
from ..core.result_cache import ResultCache
from ..sparsify.topk import TopKSparsifier, keep_count

DEFAULT_SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
"""12 levels, finer at high sparsity where the curves bend; 0.5 and 0.8 are on the grid."""

_CACHE_VERSION = 2


def sensitivity_cache(fmt: str = "csv", enabled: bool = True) -> ResultCache:
    """The on-disk cache of this module: ``cache_dir("sensitivity")/{cost,loss}-<key>.csv`` (+ ``.dense.json``)."""
    return ResultCache("sensitivity", version=_CACHE_VERSION, fmt=fmt, enabled=enabled)


# --------------------------------------------------------------------------- inputs


def calibration_windows(tokenizer, corpus: str = DEFAULT_CORPUS, window: int = 512,
                        n_tokens: int = 2048) -> torch.Tensor:
    """Token windows ``[n_tokens // window, window]`` from the start of the CALIBRATION split."""
    return token_windows(tokenizer, corpus_text(corpus, split="calibration"), window=window, n_tokens=n_tokens)


def _resolve_windows(model, windows, corpus: str, window: int, n_tokens: int) -> tuple[nn.Module, torch.Tensor]:
    net, tokenizer = unwrap(model), tokenizer_of(model)
    if windows is None:
        if tokenizer is None:
            raise CorpusError(
                "No token windows given and no tokenizer to make them. Fix: pass a LoadedModel "
                "(load_model(...)) or windows=calibration_windows(tokenizer)."
            )
        windows = calibration_windows(tokenizer, corpus, window, n_tokens)
    windows = torch.as_tensor(windows)
    if windows.dim() != 2 or windows.dtype != torch.long or windows.numel() == 0:
        raise CorpusError(f"windows must be a non-empty LongTensor [n_windows, window], got "
                          f"{windows.dtype} {tuple(windows.shape)}. Fix: use corpus.token_windows(...).")
    return net, windows




def _token_picks(n_total: int, max_tokens: int, seed: int) -> np.ndarray:
    """Sorted flat token positions kept: all if n_total <= max_tokens, else a seeded sample."""
    if max_tokens <= 0:
        raise CorpusError(f"max_tokens={max_tokens} must be positive. Fix: pass e.g. max_tokens=2048.")
    if n_total <= max_tokens:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=max_tokens, replace=False))


@torch.no_grad()
def capture_inputs(model, windows, max_tokens: int = 2048, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs of every projection during a dense forward, ``{name: Tensor[n_tokens, d_in]}``.

    Args:
        model: a supported causal LM (or LoadedModel).
        windows: LongTensor ``[n_windows, window]`` of token ids; use
            :func:`calibration_windows` (calibration split), never evaluation text.
        max_tokens: at most this many positions are kept, one seeded uniform
            sample (same positions for every projection) over all windows.
        seed: seed of that sample.
    Returns:
        dict in model order; projections that read one tensor (q/k/v, gate/up)
        share one stored tensor. Memory: ``n_layers * n_tokens * (3 * hidden +
        intermediate) * 4`` bytes in fp32, i.e. 0.8 GB for SmolLM2-135M at
        2048 tokens (30 * 2048 * 3264 * 4 B), on the model's device.
    """
    net, windows = _resolve_windows(model, windows, DEFAULT_CORPUS, 512, 2048)
    device = next(net.parameters()).device
    decoder = net.get_decoder() if hasattr(net, "get_decoder") else net  # no LM head: ~20% less work
    n_windows, length = windows.shape
    picks = _token_picks(n_windows * length, max_tokens, seed)
    chunks: dict[str, list[torch.Tensor]] = {}
    memo: dict = {"layer": None, "items": [], "rows": None}

    def make_hook(row):
        def hook(module, args):
            x = args[0]
            if memo["layer"] != row["layer"]:  # shared inputs only occur within one layer
                memo["layer"], memo["items"] = row["layer"], []
            sub = next((s for obj, s in memo["items"] if obj is x), None)
            if sub is None:
                sub = x.reshape(-1, x.shape[-1])[memo["rows"]].detach()  # indexing copies
                memo["items"].append((x, sub))  # holding x keeps its identity unique
            chunks[row["name"]].append(sub)
        return hook

    pre = []
    for row, module in iter_projections(net):
        chunks[row["name"]] = []
        pre.append((module, make_hook(row)))
    try:
        with hooks(pre=pre):
            for w in range(n_windows):
                local = picks[(picks >= w * length) & (picks < (w + 1) * length)] - w * length
                if local.size == 0:
                    continue
                memo["rows"], memo["layer"], memo["items"] = torch.as_tensor(local, device=device), None, []
                decoder(input_ids=windows[w:w + 1].to(device), use_cache=False)
    finally:
        memo["items"] = []
    joined: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, parts in chunks.items():
        key = tuple(id(p) for p in parts)
        if key not in joined:
            joined[key] = torch.cat(parts) if len(parts) > 1 else parts[0]
        out[name] = joined[key]
    return out


# --------------------------------------------------------------------------- cost table
def _shared_groups(inputs: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """Projection names grouped by identical input tensor (object identity), in model order."""
    groups: dict[int, list[str]] = {}
    for name, x in inputs.items():
        groups.setdefault(id(x), []).append(name)
    return list(groups.values())


def _ranking(x: torch.Tensor) -> torch.Tensor:
    """Column indices of each row of ``x`` by decreasing ``|x|`` (TopK keeps the first k)."""
    a = x.abs()
    if a.device.type == "cpu" and a.dtype == torch.float32:
        a = a.view(torch.int32)  # non-negative floats order like their bit patterns; faster sort on CPU
    return a.sort(dim=1, descending=True).indices


def _token_sq_norms(r: torch.Tensor, weight: torch.Tensor, gram: torch.Tensor | None) -> torch.Tensor:
    """``||W r_t||^2`` for every row r_t of ``r`` (float64), via the Gram matrix when given."""
    if gram is None:
        y = r @ weight.T
        return (y * y).sum(dim=1).double()  # per-token sums in fp32 (d_out terms), totals in fp64
    return ((r @ gram) * r).sum(dim=1).double()


def _group_errors(x: torch.Tensor, weights: list[torch.Tensor], sparsities) -> dict[str, np.ndarray]:
    """Errors of TopK at each level on tokens ``x`` for every weight reading ``x``.

    Returns ``rel_error`` and ``rel_error_token`` (``[n_weights, n_levels]``)
    and ``rel_input_error`` (``[n_levels]``). Per token, ``||W r_t||^2`` is
    ``r_t^T (W^T W) r_t`` when d_out > d_in, else ``||W r_t||^2`` directly,
    whichever costs fewer multiply-adds (``n_tokens * d_in * min(d_in, d_out)``);
    the TopK ranking is computed once per input and shared by its projections.
    """
    x = x.float()
    d = x.shape[1]
    grams = [w.T @ w if w.shape[0] > d else None for w in weights]
    ranking = _ranking(x)
    tiny = np.finfo(float).tiny
    dense = [_token_sq_norms(x, w, g).clamp_min(tiny) for w, g in zip(weights, grams)]
    x_sq = max(float((x * x).sum(dim=1).double().sum()), tiny)
    pooled = np.zeros((len(weights), len(sparsities)))
    per_token = np.zeros((len(weights), len(sparsities)))
    inputs = np.zeros(len(sparsities))
    for j, s in enumerate(sparsities):
        k = keep_count(s, d)
        if k >= d:
            continue
        dropped = ranking[:, k:]
        r = torch.zeros_like(x).scatter_(1, dropped, x.gather(1, dropped))
        for i, (w, g) in enumerate(zip(weights, grams)):
            err = _token_sq_norms(r, w, g)
            pooled[i, j] = np.sqrt(float(err.sum() / dense[i].sum()))
            per_token[i, j] = np.sqrt(float((err / dense[i]).mean()))
        inputs[j] = np.sqrt(float((r * r).sum(dim=1).double().sum()) / x_sq)
    return dict(rel_error=pooled, rel_error_token=per_token, rel_input_error=inputs)


def _check_sparsities(sparsities) -> tuple[float, ...]:
    levels = tuple(sorted(float(s) for s in sparsities))
    if not levels or any(not 0.0 <= s < 1.0 for s in levels) or len(set(levels)) != len(levels):
        raise AllocationError(f"sparsities={list(sparsities)} must be distinct values in [0, 1). "
                              "Fix: pass e.g. sensitivity.DEFAULT_SPARSITIES.")
    return levels


def cost_table(model, windows: torch.Tensor | None = None, *, sparsities=DEFAULT_SPARSITIES,
               max_tokens: int = 2048, seed: int = 0, corpus: str = DEFAULT_CORPUS, window: int = 512,
               n_tokens: int = 2048, cache: bool = True, progress: bool = True) -> pd.DataFrame:
    """Relative output error of TopK, per projection and sparsity level, on calibration tokens.

    Args:
        model: a supported causal LM or a LoadedModel.
        windows: token ids ``[n_windows, window]``; default
            ``calibration_windows(tokenizer, corpus, window, n_tokens)`` (needs a LoadedModel).
        sparsities: the levels s (TopK keeps ``round((1 - s) * d_in)`` entries per token).
        max_tokens, seed: token sample of :func:`capture_inputs`.
        cache: read / write ``cache_dir("sensitivity")/cost-<key>.csv``, key =
            (weights hash, token ids hash, levels, max_tokens, seed).
        progress: show a tqdm bar over input groups.
    Returns:
        Tidy DataFrame, one row per (projection, level), model order then level:
        layer, projection, name, d_out, d_in, n_params, sparsity, keep (entries
        kept per token), rel_error (pooled: ``||W(X - topk(X))||_F / ||W X||_F``
        over all tokens, 0 at s = 0), rel_error_token (root mean square over
        tokens of the per-token ``||W(x_t - topk(x_t))|| / ||W x_t||``),
        rel_input_error (``||X - topk(X)||_F / ||X||_F``), n_tokens.
        The pooled error is dominated by tokens with massive activations (in
        SmolLM2 the first token of each window has outputs ~700x the median
        norm in some layers, e.g. layer 11 down: pooled 0.004 vs per-token 0.13
        at s = 0.5); the per-token error weighs every token the same.
    Cost: one dense forward + per level about ``n_tokens * sum(d_in * min(d_in, d_out))``
        multiply-adds; SmolLM2-135M, 2048 tokens, 12 levels: ~1 min on one CPU
        thread (see benchmarks/bench_cost_table.py).
    """
    net, windows = _resolve_windows(model, windows, corpus, window, n_tokens)
    levels = _check_sparsities(sparsities)
    store, key = sensitivity_cache("csv", cache), None
    if cache:
        key = "cost-" + stable_hash(dict(kind="cost", version=_CACHE_VERSION, model=weights_fingerprint(net, "full"),
                                         tokens=tokens_key(windows), sparsities=levels, max_tokens=max_tokens,
                                         seed=seed))
        found = store.load(key)
        if found is not None:
            return found
    inputs = capture_inputs(net, windows, max_tokens=max_tokens, seed=seed)
    rows = {row["name"]: (row, module) for row, module in iter_projections(net)}
    records = {}
    groups = _shared_groups(inputs)
    for names in tqdm(groups, desc="cost table", disable=not progress):
        x = inputs[names[0]]
        weights = [rows[n][1].weight.detach().float() for n in names]
        errors = _group_errors(x, weights, levels)
        for i, name in enumerate(names):
            row = rows[name][0]
            records[name] = [dict(row, sparsity=s, keep=keep_count(s, row["d_in"]),
                                  rel_error=errors["rel_error"][i, j],
                                  rel_error_token=errors["rel_error_token"][i, j],
                                  rel_input_error=errors["rel_input_error"][j], n_tokens=int(x.shape[0]))
                             for j, s in enumerate(levels)]
        del x
    table = pd.DataFrame([r for name in rows for r in records[name]])
    if key is not None:
        store.save(key, table)
    return table


# --------------------------------------------------------------------------- loss increase
LOSS_COLUMNS = ("layer", "projection", "name", "n_params", "sparsity", "loss", "dense_loss", "loss_increase",
                "n_tokens")


def _join(done: pd.DataFrame, new_rows: list[dict]) -> pd.DataFrame:
    frames = [f for f in (done, pd.DataFrame(new_rows, columns=list(LOSS_COLUMNS))) if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(LOSS_COLUMNS))


@torch.no_grad()
def mean_nll(model: nn.Module, windows: torch.Tensor) -> float:
    """Mean next-token negative log-likelihood (nats) over all windows (each window weighs the same)."""
    device = next(model.parameters()).device
    losses = [float(model(input_ids=w[None].to(device), labels=w[None].to(device), use_cache=False).loss)
              for w in windows]
    return float(np.mean(losses))


def loss_increase_table(model, windows: torch.Tensor | None = None, *, names: Iterable[str] | None = None,
                        sparsities=(0.5, 0.8), corpus: str = DEFAULT_CORPUS, window: int = 256,
                        n_tokens: int = 512, cache: bool = True, progress: bool = True) -> pd.DataFrame:
    """Calibration loss with ONLY one projection TopK-sparsified, minus the dense loss.

    Args:
        model: a supported causal LM or a LoadedModel.
        windows: token ids; default 2 calibration windows of 256 tokens.
        names: projections to measure (default: all).
        sparsities: levels per projection.
        cache: rows are cached one by one in ``cache_dir("sensitivity")/loss-<key>.csv``
            (key = weights hash + token ids hash), so an interrupted run resumes
            and other names / levels extend the same file.
    Returns:
        One row per (projection, level): layer, projection, name, n_params,
        sparsity, loss, dense_loss, loss_increase (nats), n_tokens.
    Cost: one forward over all windows per (projection, level): 210 x 2 = 420
        forwards for SmolLM2-135M (~1-2 s each at 512 tokens on one CPU thread,
        so ~10 min), vs. one forward for :func:`cost_table`.
    """
    net, windows = _resolve_windows(model, windows, corpus, window, n_tokens)
    table = pd.DataFrame([row for row, _ in iter_projections(net)])
    wanted = list(table["name"]) if names is None else list(names)
    unknown = sorted(set(wanted) - set(table["name"]))
    if unknown:
        raise AllocationError(f"Unknown projection name(s) {unknown[:3]}. Fix: use names from projection_table(model).")
    levels = _check_sparsities(sparsities)
    rows_store, dense_store, key = sensitivity_cache("csv", cache), sensitivity_cache("json", cache), None
    done = pd.DataFrame(columns=list(LOSS_COLUMNS))
    if cache:
        key = "loss-" + stable_hash(dict(kind="loss", version=_CACHE_VERSION, model=weights_fingerprint(net, "full"),
                                         tokens=tokens_key(windows)))
        found = rows_store.load(key, check=lambda t: set(LOSS_COLUMNS) <= set(t.columns))
        if found is not None:
            done = found
    found = dense_store.load(f"{key}.dense", check=lambda d: isinstance(d["dense_loss"], float)) if cache else None
    if found is not None:
        dense = found["dense_loss"]
    else:
        dense = mean_nll(net, windows)
        if key is not None:
            dense_store.save(f"{key}.dense", {"dense_loss": dense})
    have = set(zip(done["name"], np.round(done["sparsity"].to_numpy(float), 12)))
    todo = [(n, s) for n in wanted for s in levels if (n, round(s, 12)) not in have]
    by_name = table.set_index("name")
    new_rows = []
    for name, s in tqdm(todo, desc="loss increase", disable=not progress):
        with TopKSparsifier(net, {n: (s if n == name else 0.0) for n in table["name"]}, record=False):
            loss = mean_nll(net, windows)
        info = by_name.loc[name]
        new_rows.append(dict(layer=int(info["layer"]), projection=info["projection"], name=name,
                             n_params=int(info["n_params"]), sparsity=s, loss=loss, dense_loss=dense,
                             loss_increase=loss - dense, n_tokens=int(windows.numel())))
        if key is not None:
            rows_store.save(key, _join(done, new_rows))
    everything = _join(done, new_rows)
    pick = everything[everything["name"].isin(wanted)
                      & np.isin(np.round(everything["sparsity"].to_numpy(float), 12), np.round(levels, 12))]
    order = {n: i for i, n in enumerate(table["name"])}
    return pick.sort_values(["name", "sparsity"], key=lambda c: c.map(order) if c.name == "name" else c,
                            kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- summaries


# --------------------------------------------------------------------------- model-level cost


