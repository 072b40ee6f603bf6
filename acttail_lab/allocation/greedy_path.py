"""Budgets read off TEAL's greedy path (pure: a path table in, an allocation out).

A greedy path (:func:`acttail_lab.measure.teal_greedy.greedy_path`, measured on calibration
text) lists, per block target on a grid of steps, the sparsity of every projection.
:func:`teal_greedy_allocation` interpolates it at a model-wide target so that the
parameter-weighted mean equals the target; :func:`kind_means` summarises a path per projection
kind (TEAL's published LLaMA-2-7B table has this layout). Registers the ``teal-greedy``
strategy.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.errors import AllocationError
from .registry import PathStrategy, register_strategy

STEP_MODES = ("block", "fine")
"""Greedy step modes (``teal-greedy[steps=...]``): ``block``, TEAL's steps (the block's weighted sparsity
+ delta each; small projections move in big jumps); ``fine``, at most 0.05 of one projection's own sparsity
per step (``measure.teal_greedy.greedy_block_fine``; the ``teal-greedy-fine`` preset)."""


def _steps(value):
    if value not in STEP_MODES:
        raise AllocationError(f"steps={value!r} is not one of {list(STEP_MODES)}. Fix: pass steps=block or steps=fine.")
    return value


PATH_COLUMNS = ("layer", "projection", "name", "n_params", "block_target", "sparsity", "block_error")


def teal_greedy_allocation(path: pd.DataFrame, target: float, label: str = "teal-greedy") -> pd.DataFrame:
    """Per-projection sparsities at block target ``target``, read off a :func:`greedy_path`.

    Each block's sparsities are interpolated linearly between the two recorded
    block targets around ``target``; the block's weighted sparsity is linear in
    them, so every block (and the model) meets ``target`` exactly.
    Output: the allocation schema: layer, projection, name, n_params, ratio
    (sparsity / target), sparsity, label, strategy="teal-greedy", target.
    """
    missing = set(PATH_COLUMNS[:-1]) - set(path.columns)
    if missing:
        raise AllocationError(f"The greedy path lacks column(s) {sorted(missing)}. "
                              "Fix: pass the output of teal_greedy.greedy_path(model).")
    target = float(target)
    reach = path.groupby("layer")["block_target"].max().min()
    if not 0.0 <= target <= reach + 1e-12:
        raise AllocationError(
            f"target={target} is outside the greedy path, which reaches block target {reach:g} in every layer. "
            "Fix: recompute greedy_path with a larger max_target or a smaller delta (finer steps reach closer "
            "to s_max), or ask for a lower target."
        )
    order = path.drop_duplicates("name")[["layer", "projection", "name", "n_params"]].reset_index(drop=True)
    wide = path.pivot_table(index="block_target", columns="name", values="sparsity", aggfunc="first")
    sparsity = {}
    for layer, names in order.groupby("layer")["name"]:
        points = wide[list(names)].dropna()
        grid = points.index.to_numpy(dtype=float)
        for name in names:
            sparsity[name] = float(np.interp(target, grid, points[name].to_numpy(dtype=float)))
    out = order.copy()
    out["sparsity"] = out["name"].map(sparsity)
    out["ratio"] = out["sparsity"] / target if target > 0 else 1.0
    out["label"] = label
    out["strategy"] = "teal-greedy"
    out["target"] = target
    return out[["layer", "projection", "name", "n_params", "ratio", "sparsity", "label", "strategy", "target"]]


def kind_means(path: pd.DataFrame, targets=(0.5, 0.8)) -> pd.DataFrame:
    """Plain mean sparsity per projection kind (across layers) at each block target: one row per kind."""
    out = {f"at_{t:g}": teal_greedy_allocation(path, t).groupby("projection", sort=False)["sparsity"].mean()
           for t in targets}
    return pd.DataFrame(out).rename_axis("projection").reset_index()


register_strategy(PathStrategy(
    "teal-greedy", {"s_max": 0.99, "steps": "block"}, validators={"steps": _steps}, read=teal_greedy_allocation,
    missing_fix="Strategy 'teal-greedy' is read off a measured greedy path, and no path was given. "
                "Fix: pass greedy_path=acttail_lab.measure.teal_greedy.greedy_path(model) (calibration data)."))
