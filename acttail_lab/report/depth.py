"""Committed depth results: loaders, rank correlations, variance ratios and the sentences that summarise them.

Reads ``<model>_depth.csv`` and ``<model>_depth_variance.csv`` (written by
``scripts/reproduce_depth.py`` from :mod:`acttail_lab.measure.depth`).
:func:`depth_correlations` ranks layer scores against each other and against mean alpha and
ActTail's budget (Spearman), :func:`variance_ratio` / :func:`growth_summary` compare variance
profiles under sparsity with dense, and :func:`depth_conclusions` states the findings from the
numbers.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import DepthError
from ..core.paths import DEFAULT_MODEL, result_path

DEPTH_SCORES = ("delta_nll", "jacobian_gap", "block_influence", "rel_update", "growth", "growth_median")
"""Per-layer utilisation scores correlated by :func:`depth_correlations`."""


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


def depth_paths(model: str = DEFAULT_MODEL, results_dir=None) -> tuple[Path, Path]:
    """(per-layer table, variance long table) CSV paths under ``results_dir`` (default ``results.RESULTS_DIR``)."""
    return result_path("depth", model, results_dir), result_path("depth_variance", model, results_dir)


def load_depth(results_dir: str | os.PathLike | None = None,
               model: str = DEFAULT_MODEL) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The committed (per-layer table, variance long table), each with ``attrs["provenance"]`` from its sidecar."""
    from ..core.results_io import load_table

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
