"""Depth utilisation tables: per-layer scores joined with mean alpha and ActTail's budget.

Inputs: a model (or LoadedModel), evaluation token windows and, optionally, its spectra table.
:func:`depth_table` runs :func:`acttail_lab.measure.depth_profile.layer_profile`,
:func:`~acttail_lab.measure.depth_profile.jacobian_identity_gap` and
:func:`acttail_lab.measure.skip_layer.skip_layer_perplexity`, then joins them (one row per
layer) with :func:`layer_alpha` (mean alpha of the layer's 7 projections) and
:func:`layer_budgets` (the sparsity ActTail gives the layer at each target).
:func:`variance_under_sparsity` compares variance profiles under dense / uniform / ActTail
conditions such as ``"acttail@0.5"`` (:func:`parse_condition`). Background (the curse of
depth, arXiv 2603.15389) is in docs/method.md; the committed tables are read by
:mod:`acttail_lab.report.depth`.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from ..core.errors import DepthError
from ..core.models import unwrap
from .depth_profile import (
    PROFILE_COLUMNS,
    check_windows,
    jacobian_identity_gap,
    layer_profile,
)
from .skip_layer import skip_layer_perplexity

DEFAULT_CONDITIONS = ("dense", "uniform@0.5", "acttail@0.5", "uniform@0.7", "acttail@0.7")


# --------------------------------------------------------------------------- inputs


# --------------------------------------------------------------------------- per-token statistics


# --------------------------------------------------------------------------- variance profile


# --------------------------------------------------------------------------- Jacobian vs identity


# --------------------------------------------------------------------------- skip-layer perplexity


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
    model = unwrap(lm)
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

        spectra = analyze(unwrap(model), xmin=xmin, progress=False)
    table = spectra if spectra is not None else projection_table(unwrap(model))
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
    model, windows = unwrap(model), check_windows(windows)
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


# --------------------------------------------------------------------------- committed results


