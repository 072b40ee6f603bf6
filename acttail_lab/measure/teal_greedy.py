"""TEAL's block-wise greedy allocation (Liu et al., ICLR 2025), on calibration text.

For each decoder layer ("block") on its own, all seven projections start
dense. One greedy step raises ONE projection's sparsity by
``delta * sum(P) / P_i`` (``P`` = parameters per projection), so every step
raises the block's parameter-weighted sparsity by exactly ``delta``; the step
taken is the one whose block output has the smallest relative error
``||y_s - y||_F / ||y||_F`` against the dense block output ``y`` on the
captured calibration inputs. Projections whose next step would pass ``s_max``
are skipped. Recording the sparsities after every step gives a *path*: one
allocation per block target ``0, delta, 2 delta, ...``, so one run serves
every target (:func:`teal_greedy_allocation` interpolates between recorded
targets). Every block gets the same target, so the model-level weighted mean
equals it too.

With coarse steps small projections hit ``s_max`` early (SmolLM2's k/v have
1/32 of the block's parameters: one step of 0.025 moves them by 0.8), so the
path ends at the largest block target reachable under ``s_max`` when that is
below ``max_target``.

``steps="fine"`` (:func:`greedy_block_fine`, the ``teal-greedy-fine`` preset) lifts that
limitation: every step raises ONE projection's own sparsity by at most ``fine_step``
(default 0.05, whatever its size), and the step taken is the one with the smallest
increase of the block error per unit of block sparsity gained. Block targets are then
irregular (the weighted sparsity after each step); reading the path interpolates
between them as before. It costs about ``7 * max_target / fine_step`` steps of up to
7 block forwards per layer (3.5x the coarse path at the defaults).

Sparsification is exact per-token TopK on each projection input
(:func:`acttail_lab.sparsify.topk.topk_sparsify`), every position. Results are
cached under ``cache_dir("teal_greedy")`` keyed by the weights, the token ids
and the options, written atomically.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..allocation.greedy_path import PATH_COLUMNS, STEP_MODES
from ..core.cache import stable_hash
from ..core.errors import AllocationError
from ..core.fingerprint import tokens_key, weights_fingerprint
from ..core.hooks import hooks
from ..core.models import decoder_layers, iter_projections
from ..core.result_cache import ResultCache
from ..sparsify.topk import keep_count, topk_sparsify
from .sensitivity import _resolve_windows

_CACHE_VERSION = 1
_DROPPED_KWARGS = ("past_key_values", "past_key_value", "use_cache")


@dataclass
class BlockInput:
    """What one decoder layer received during the dense forward: its hidden states and keyword arguments
    (attention mask, position ids, ``position_embeddings=(cos, sin)``, ...), cache arguments dropped."""

    hidden_states: torch.Tensor
    kwargs: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- inputs
@torch.no_grad()
def block_inputs(model, windows: torch.Tensor | None = None, max_tokens: int = 256, seed: int = 0,
                 corpus: str = "austen") -> list[BlockInput]:
    """Inputs of every decoder layer during one dense forward over CALIBRATION windows.

    Args:
        model: a supported causal LM, or a LoadedModel (needed when ``windows`` is None).
        windows: token ids ``[n_windows, window]``; default: one window of ``max_tokens``
            tokens from the start of the calibration split (``sensitivity.calibration_windows``).
        max_tokens: total tokens kept; whole windows only (attention needs the sequence),
            at least one window. ``seed``: accepted for API symmetry (no sampling is done:
            windows are kept in order).
    Returns:
        One :class:`BlockInput` per decoder layer, in order; hidden states ``[n_windows, T, d]``.
    """
    net, windows = _resolve_windows(model, windows, corpus, window=max_tokens, n_tokens=max_tokens)
    windows = windows[: max(1, max_tokens // windows.shape[1])]
    layers = decoder_layers(net)
    captured: list[BlockInput | None] = [None] * len(layers)

    def make_hook(index):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            rest = {k: v for k, v in kwargs.items() if k not in _DROPPED_KWARGS and k != "hidden_states"}
            captured[index] = BlockInput(hidden.detach().clone(), rest)
        return hook

    with hooks(pre=[(layer, make_hook(i)) for i, layer in enumerate(layers)], with_kwargs=True):
        device = next(net.parameters()).device
        net(windows.to(device), use_cache=False)
    return captured


def layer_forward(layer: nn.Module, block: BlockInput) -> torch.Tensor:
    """Output hidden states of ``layer`` on the captured ``block`` input (first element if a tuple)."""
    out = layer(block.hidden_states, **block.kwargs)
    return out[0] if isinstance(out, tuple) else out


# --------------------------------------------------------------------------- one block
class _SparseBlock:
    """One decoder layer with TopK pre-hooks on its projections; ``error(sparsities)`` runs it."""

    def __init__(self, layer: nn.Module, rows: list[dict], modules: list[nn.Module], block: BlockInput):
        self.layer, self.rows, self.block = layer, rows, block
        self.keep = [int(r["d_in"]) for r in rows]
        self._hooks = hooks(pre=[(m, self._hook(i)) for i, m in enumerate(modules)])
        self._hooks.__enter__()
        try:
            self.dense = self._forward([0.0] * len(rows))
        except BaseException:
            self.close()
            raise
        self.dense_norm = float(torch.linalg.vector_norm(self.dense))

    def _hook(self, i):
        def hook(module, args):
            k, d_in = self.keep[i], int(self.rows[i]["d_in"])
            if k >= d_in:
                return None
            return (topk_sparsify(args[0], k),) + tuple(args[1:])
        return hook

    @torch.no_grad()
    def _forward(self, sparsities) -> torch.Tensor:
        self.keep = [keep_count(s, int(r["d_in"])) for s, r in zip(sparsities, self.rows)]
        return layer_forward(self.layer, self.block)

    def error(self, sparsities) -> float:
        """Relative L2 error of the block output at ``sparsities`` (one per row) against the dense output."""
        out = self._forward(sparsities)
        return float(torch.linalg.vector_norm(out - self.dense)) / self.dense_norm

    def close(self) -> None:
        """Remove the block's hooks (idempotent)."""
        installed, self._hooks = self._hooks, None
        if installed is not None:
            installed.__exit__(None, None, None)


def greedy_block(block: _SparseBlock, delta: float, n_steps: int, s_max: float) -> list[dict]:
    """Greedy path of one block: after step j (0..n_steps), the sparsities and the block error.

    Returns one dict per recorded step: ``step``, ``sparsity`` (array, one per row),
    ``block_error``. Stops early when every projection's next step would pass ``s_max``.
    """
    n_params = np.array([r["n_params"] for r in block.rows], dtype=float)
    step = delta * n_params.sum() / n_params
    current = np.zeros(len(n_params))
    path = [dict(step=0, sparsity=current.copy(), block_error=0.0)]
    for j in range(1, n_steps + 1):
        best, best_error = None, np.inf
        for i in range(len(current)):
            if current[i] + step[i] > s_max + 1e-12:
                continue
            trial = current.copy()
            trial[i] += step[i]
            err = block.error(trial)
            if err < best_error:
                best, best_error = trial, err
        if best is None:
            break
        current = best
        path.append(dict(step=j, sparsity=current.copy(), block_error=best_error))
    return path


FINE_STEP = 0.05
"""The largest change of one projection's own sparsity in one fine step."""


def greedy_block_fine(block: _SparseBlock, fine_step: float, max_target: float, s_max: float) -> list[dict]:
    """Greedy path of one block with per-projection steps of ``fine_step`` (own sparsity, capped at ``s_max``).

    Each step tries raising every projection by ``min(fine_step, s_max - current)`` and takes the one with
    the smallest ``(error(trial) - error(current)) / gain``, ``gain`` = the block's weighted sparsity gained.
    Returns dicts ``step``, ``block_target`` (weighted sparsity after the step), ``sparsity``, ``block_error``,
    until ``max_target`` is reached or nothing can move.
    """
    weight = np.array([r["n_params"] for r in block.rows], dtype=float)
    weight /= weight.sum()
    current, error, reached = np.zeros(len(weight)), 0.0, 0.0
    path = [dict(step=0, block_target=0.0, sparsity=current.copy(), block_error=0.0)]
    while reached < max_target - 1e-12:
        best, best_score, best_error = None, np.inf, None
        for i in range(len(current)):
            move = min(fine_step, s_max - current[i])
            if move <= 1e-12:
                continue
            trial = current.copy()
            trial[i] += move
            trial_error = block.error(trial)
            score = (trial_error - error) / (weight[i] * move)
            if score < best_score:
                best, best_score, best_error = trial, score, trial_error
        if best is None:
            break
        current, error = best, best_error
        reached = float(weight @ current)
        path.append(dict(step=len(path), block_target=round(reached, 12), sparsity=current.copy(), block_error=error))
    return path


# --------------------------------------------------------------------------- whole model
def _check_options(delta: float, max_target: float, s_max: float) -> int:
    if not 0.0 < delta < 1.0:
        raise AllocationError(f"delta={delta} must be in (0, 1). Fix: pass e.g. delta=0.025.")
    if not 0.0 < s_max < 1.0:
        raise AllocationError(f"s_max={s_max} must be in (0, 1). Fix: pass e.g. s_max=0.99.")
    if not 0.0 < max_target < 1.0:
        raise AllocationError(f"max_target={max_target} must be in (0, 1). Fix: pass e.g. max_target=0.9.")
    return int(round(max_target / delta))


def greedy_path(model, windows: torch.Tensor | None = None, delta: float = 0.025, max_target: float = 0.9,
                s_max: float = 0.99, max_tokens: int = 256, corpus: str = "austen", progress: bool = True,
                cache: bool = True, steps: str = "block", fine_step: float = FINE_STEP) -> pd.DataFrame:
    """TEAL's greedy path for every block, on calibration inputs (:func:`block_inputs`).

    Args:
        model: a supported causal LM, or a LoadedModel (then ``windows`` defaults to calibration text).
        windows: token ids ``[n_windows, window]`` (keep them from the CALIBRATION split).
        delta: block-level step (fraction of the block's parameters); ``max_target``: last block target.
        s_max: cap on one projection's sparsity. ``max_tokens``: tokens kept by :func:`block_inputs`.
        steps: ``"block"`` (TEAL's) or ``"fine"`` (:func:`greedy_block_fine` with ``fine_step``).
        corpus: corpus of the default calibration windows.
        progress: tqdm bar over layers. cache: read / write ``cache_dir("teal_greedy")/path-<key>.csv``,
            key = (weights hash, token ids hash, delta, max_target, s_max, max_tokens), and each layer's
            part as ``path-<key>-layer<i>`` as soon as it is done (an interrupted run resumes there).
    Returns:
        Tidy DataFrame, one row per (layer, block target, projection): layer, projection, name,
        n_params, block_target (``step * delta``: the block's parameter-weighted sparsity),
        sparsity, block_error (relative L2 error of the block output at that point).
    Cost: about ``7 * max_target / delta`` block forwards per layer.
    """
    n_steps = _check_options(delta, max_target, s_max)
    if steps not in STEP_MODES:
        raise AllocationError(f"steps={steps!r} is not one of {list(STEP_MODES)}. Fix: pass steps='block' or 'fine'.")
    if steps == "fine" and not 0.0 < fine_step <= 1.0:
        raise AllocationError(f"fine_step={fine_step} must be in (0, 1]. Fix: pass e.g. fine_step=0.05.")
    mode = {} if steps == "block" else dict(steps=steps, fine_step=fine_step)  # coarse keys stay as they were
    net, windows = _resolve_windows(model, windows, corpus, window=max_tokens, n_tokens=max_tokens)
    windows = windows[: max(1, max_tokens // windows.shape[1])]
    store, key = ResultCache("teal_greedy", version=_CACHE_VERSION, fmt="csv", enabled=cache), None
    if cache:
        key = "path-" + stable_hash(dict(kind="teal_greedy", version=_CACHE_VERSION,
                                         model=weights_fingerprint(net, "full"), tokens=tokens_key(windows),
                                         delta=delta, max_target=max_target, s_max=s_max, max_tokens=max_tokens,
                                         **mode))
        found = store.load(key, check=lambda t: list(t.columns) == list(PATH_COLUMNS))
        if found is not None:
            return found
    inputs = block_inputs(net, windows, max_tokens=max_tokens)
    by_layer: dict[int, list] = {}
    for row, module in iter_projections(net):
        by_layer.setdefault(row["layer"], []).append((row, module))
    layers = decoder_layers(net)
    parts = []
    for index in tqdm(sorted(by_layer), desc="teal greedy", disable=not progress):
        # each layer's path is its own cache entry, so an interrupted run (hours on a 1.5B model) resumes
        layer_key = None if key is None else f"{key}-layer{index}"
        part = None if layer_key is None else store.load(layer_key, check=lambda t: list(t.columns) == list(PATH_COLUMNS))
        if part is None:
            part = _layer_path(layers[index], by_layer[index], inputs[index], steps, delta, n_steps, s_max,
                               fine_step, max_target)
            if layer_key is not None:
                store.save(layer_key, part)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(PATH_COLUMNS))
    if key is not None:
        store.save(key, table)
        for index in by_layer:  # the whole path now holds them
            store.path(f"{key}-layer{index}").unlink(missing_ok=True)
    return table


def _layer_path(layer: nn.Module, projections: list, inputs, steps: str, delta: float, n_steps: int,
                s_max: float, fine_step: float, max_target: float) -> pd.DataFrame:
    """The greedy path of one decoder layer: rows of :data:`PATH_COLUMNS` (module doc)."""
    rows = [r for r, _ in projections]
    block = _SparseBlock(layer, rows, [m for _, m in projections], inputs)
    try:
        if steps == "fine":
            points = greedy_block_fine(block, fine_step, max_target, s_max)
        else:
            points = greedy_block(block, delta, n_steps, s_max)
    finally:
        block.close()
    records = [dict(layer=row["layer"], projection=row["projection"], name=row["name"], n_params=row["n_params"],
                    block_target=point.get("block_target", round(point["step"] * delta, 12)),
                    sparsity=float(s), block_error=point["block_error"])
               for point in points for row, s in zip(rows, point["sparsity"])]
    return pd.DataFrame(records, columns=list(PATH_COLUMNS))


# --------------------------------------------------------------------------- allocation


