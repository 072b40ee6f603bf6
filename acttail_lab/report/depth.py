"""Committed depth results: loaders, rank correlations, variance ratios and the sentences that summarise them.

Reads ``<model>_depth.csv`` and ``<model>_depth_variance.csv`` (written by
``scripts/reproduce_depth.py`` from :mod:`acttail_lab.measure.depth`).
:func:`depth_correlations` ranks layer scores against each other and against mean alpha and
ActTail's budget (Spearman, with Fisher-z intervals), :func:`variance_ratio` / :func:`growth_summary`
compare variance profiles under sparsity with dense, :func:`growth_change` / :func:`damping_sentences`
answer "does sparsity damp variance growth?" (per-layer growth against dense, with intervals from a
bootstrap over layers), and :func:`depth_conclusions` states the findings from the numbers.
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
    Returns one row per (score, predictor): score, predictor, rho, rho_low, rho_high (95% Fisher-z
    interval, ``report.rank_correlation.fisher_interval``), p_value, n (layers with both values finite).
    rho is NaN when either column is constant.
    """
    from .rank_correlation import fisher_interval
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
            low, high = fisher_interval(rho, len(pair))
            rows.append({"score": score, "predictor": predictor, "rho": rho, "rho_low": low, "rho_high": high,
                         "p_value": p, "n": len(pair)})
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


def _boot_mean(values: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    index = np.random.default_rng(seed).integers(0, len(values), size=(n_boot, len(values)))
    boot = values[index].mean(axis=1)
    return tuple(float(v) for v in np.percentile(boot, [50 * (1 - level), 50 * (1 + level)]))


def growth_change(long: pd.DataFrame, reference: str = "dense", suffix: str = "_median", n_boot: int = 2000,
                  seed: int = 0) -> pd.DataFrame:
    """Does sparsity change how fast the residual stream's variance grows? One row per condition but ``reference``.

    Per layer l >= 1, d_l = ln(growth_l) - ln(growth_ref_l) with growth = var_out / var_in (``suffix``
    "_median": per-token medians, "": means over tokens): how much faster (> 0) or slower (< 0) a layer
    grows the stream than the same layer dense. Layer 0 (embeddings -> first output) is reported apart: it
    sets the starting level. Columns: condition, growth_change_pct (100 (exp(mean d) - 1): per layer,
    layers 1..L-1), ci_low_pct / ci_high_pct (95% percentile bootstrap over those layers, ``n_boot`` resamples,
    ``seed``: an interval for the mean over this model's layers, not over models), n_faster (layers with
    d > 0) of n_layers, layer0_ratio (var_out of layer 0 / reference's), final_ratio (after the last
    layer), median_ratio with median_low / median_high (the median over layers of var_out / reference's,
    bootstrap over layers). DepthError when ``reference`` is absent.
    """
    ratios = variance_ratio(long, reference, f"var_out{suffix}")
    ref = long[long["condition"] == reference].set_index("layer")[f"growth{suffix}"]
    rows = []
    for condition, part in ratios.groupby("condition", sort=False):
        if condition == reference:
            continue
        part = part.sort_values("layer")
        later = part[part["layer"] > part["layer"].min()]
        d = np.log(later[f"growth{suffix}"].to_numpy(float)) - np.log(ref.reindex(later["layer"]).to_numpy(float))
        low, high = _boot_mean(d, n_boot, seed)
        r = part["ratio"].to_numpy(float)
        index = np.random.default_rng(seed + 1).integers(0, len(r), size=(n_boot, len(r)))
        med_low, med_high = np.percentile(np.median(r[index], axis=1), [2.5, 97.5])
        rows.append(dict(condition=condition, strategy=part["strategy"].iloc[0], target=float(part["target"].iloc[0]),
                         growth_change_pct=100 * float(np.expm1(d.mean())), ci_low_pct=100 * float(np.expm1(low)),
                         ci_high_pct=100 * float(np.expm1(high)), n_faster=int((d > 0).sum()), n_layers=len(d),
                         layer0_ratio=float(r[0]), final_ratio=float(r[-1]), median_ratio=float(np.median(r)),
                         median_low=float(med_low), median_high=float(med_high)))
    return pd.DataFrame(rows)


def damping_sentences(table: pd.DataFrame, long: pd.DataFrame, suffix: str = "_median") -> list[str]:
    """The answer to "does sparsity damp variance growth?" from :func:`growth_change`, then, per condition, the
    layer whose output variance sparsity cuts most, with that layer's budget (``budget_<strategy>@<target>``
    of ``table`` when present) and skip cost (``delta_nll``)."""
    change = growth_change(long, suffix=suffix)
    if change.empty:
        return []
    faster = change[change["ci_low_pct"] > 0]
    slower = change[change["ci_high_pct"] < 0]
    per = "; ".join(f"{r.condition} {r.growth_change_pct:+.2f}% [{r.ci_low_pct:+.2f}, {r.ci_high_pct:+.2f}] "
                    f"({r.n_faster} of {r.n_layers} layers faster)" for r in change.itertuples())
    signs = "above" if (change["growth_change_pct"] > 0).all() else "below" if (
        change["growth_change_pct"] < 0).all() else "on both sides of"
    if len(slower) == len(change):
        answer = "Yes on this model: every sparse condition grows the stream more slowly per layer than dense"
    elif len(slower):
        answer = (f"Only under {', '.join(slower.condition)}: there each layer grows the stream more slowly than "
                  "dense, elsewhere not")
    elif len(faster):
        answer = (f"No on this model: no sparse condition grows the stream more slowly per layer than dense, and "
                  f"{', '.join(faster.condition)} grow{'s' if len(faster) == 1 else ''} it faster")
    else:
        answer = ("No on this model: no sparse condition grows the stream measurably more slowly per layer than "
                  f"dense (every interval contains 0; the point estimates lie {signs} 0)")
    what = "a typical token's" if suffix == "_median" else "the mean token's"
    out = [f"Does sparsity damp variance growth? {answer}. Per layer after layer 0, the growth of {what} variance "
           f"differs from dense's by (95% bootstrap interval over layers): {per}; "
           f"{len(faster)} of {len(change)} intervals lie above 0, {len(slower)} below."]
    out.append("After the last layer the variance is " + ", ".join(
        f"{r.final_ratio:.2f}x dense's ({r.condition})" for r in change.itertuples())
        + "; at the median layer it is " + ", ".join(
        f"{r.median_ratio:.2f}x [{r.median_low:.2f}, {r.median_high:.2f}]" for r in change.itertuples())
        + ": the level is set by layer 0's output (" + ", ".join(
        f"{r.layer0_ratio:.2f}x" for r in change.itertuples()) + " dense's)"
        + (", not by slower growth." if slower.empty else "."))
    ratios = variance_ratio(long, "dense", f"var_out{suffix}")
    costliest = int(table.loc[table["delta_nll"].idxmax(), "layer"]) if "delta_nll" in table else None
    for row in change.itertuples():
        part = ratios[ratios["condition"] == row.condition]
        cut = part.loc[part["ratio"].idxmin()]
        layer = int(cut["layer"])
        text = f"{row.condition} cuts layer {layer}'s output variance most, to {cut['ratio']:.2f}x dense's"
        column = f"budget_{row.strategy}@{row.target:g}"
        if column in table.columns and row.strategy != "uniform":
            budget = float(table.loc[table["layer"] == layer, column].iloc[0])
            text += f"; {row.strategy} gives that layer {budget:.2f} sparsity ({'above' if budget > row.target else 'at or below'} the {row.target:g} target)"
        if "delta_nll" in table.columns:
            skip = float(table.loc[table["layer"] == layer, "delta_nll"].iloc[0])
            rank = int((table["delta_nll"] > skip).sum()) + 1
            text += (f", and skipping it costs {skip:+.2f} nats"
                     + (" (the costliest layer to skip)" if layer == costliest else f" (rank {rank} of {len(table)})"))
        out.append(text + ".")
    return out


SCORE_NAMES = {"delta_nll": "skip cost", "jacobian_gap": "Jacobian gap", "block_influence": "block influence",
               "growth_median": "median growth", "growth": "mean growth", "alpha_mean": "mean alpha",
               "rel_update": "relative update"}


def score_title(table: pd.DataFrame, score: str) -> str:
    """A per-layer panel's title from its numbers: where ``score`` is largest and its median over the layers
    after layer 0 (which turns the embeddings into the stream and is unlike the others)."""
    name = SCORE_NAMES.get(score, score)
    top = table.loc[table[score].idxmax()]
    rest = table[table["layer"] > table["layer"].min()][score]
    return f"{name}: largest at layer {int(top['layer'])} ({top[score]:.3g}); median after layer 0 {rest.median():.3g}"


def profile_title(long: pd.DataFrame, what: str, reference: str = "dense") -> str:
    """Title of a variance-profile panel: ``what`` and, per other condition, its variance after the last layer
    against ``reference``'s (per-token medians)."""
    growth = growth_summary(long, reference)
    others = growth[growth["condition"] != reference]
    return what + (": after the last layer " + ", ".join(
        f"{r.condition} {r.final_median_vs_reference:.2f}x {reference}" for r in others.itertuples())
        if len(others) else "")


def variance_titles(long: pd.DataFrame, reference: str = "dense") -> dict[str, str]:
    """Titles of the three variance panels (mean over tokens, median over tokens, median relative to
    ``reference``), each stating what its numbers show. Keys: "var_out", "var_out_median", "relative"."""
    ref = long[long["condition"] == reference].sort_values("layer")
    later = ref.iloc[1:]
    jump = later.loc[later["growth"].idxmax()]
    last = int(ref["layer"].max())
    median_growth = float(ref["var_out_median"].iloc[-1] / ref["var_out_median"].iloc[0])
    ratios = variance_ratio(long, reference, "var_out_median")
    sparse = ratios[ratios["condition"] != reference]
    final = sparse[sparse["layer"] == last]
    return {
        "var_out": (f"Mean over tokens: layer {int(jump['layer'])} multiplies it {jump['growth']:.0f}x\n"
                    f"(its per-token median {jump['growth_median']:.2f}x: a few tokens jump)"),
        "var_out_median": f"Median over tokens: {reference} grows\n{median_growth:.0f}x from layer 0's output to layer {last}'s",
        "relative": (f"Relative to {reference}: {sparse['ratio'].min():.2f}-{sparse['ratio'].max():.2f}x over layers,\n"
                     f"{final['ratio'].min():.2f}-{final['ratio'].max():.2f}x after layer {last}"),
    }


def depth_paths(model: str = DEFAULT_MODEL, results_dir=None) -> tuple[Path, Path]:
    """(per-layer table, variance long table) CSV paths under ``results_dir`` (default ``results.RESULTS_DIR``)."""
    return result_path("depth", model, results_dir), result_path("depth_variance", model, results_dir)


def load_depth(results_dir: str | os.PathLike | None = None,
               model: str = DEFAULT_MODEL) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The committed (per-layer table, variance long table), each with ``attrs["provenance"]`` from its sidecar."""
    from ..core.results_io import load_table

    table_path, variance_path = depth_paths(model, results_dir)
    return load_table(table_path), load_table(variance_path)


def _interval(row) -> str:
    """"[low, high]" of a :func:`depth_correlations` row (its 95% Fisher-z interval), "" without one."""
    low, high = row.get("rho_low", np.nan), row.get("rho_high", np.nan)
    return f"[{low:+.2f}, {high:+.2f}]" if np.isfinite(low) and np.isfinite(high) else ""


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
    tokens = f" on {int(table['skip_tokens'].iloc[0]):,} tokens" if "skip_tokens" in table.columns else ""
    out = [
        f"Dense perplexity {dense_ppl:.2f}; skipping layers {_layers_text(costly['layer'])} costs most "
        f"(+{costly['delta_nll'].iloc[0]:.3f} nats for layer {int(costly['layer'].iloc[0])}), skipping layers "
        f"{_layers_text(cheap['layer'])} costs least ({', '.join(f'{v:+.4f}' for v in cheap['delta_nll'])} nats); "
        f"each is one measurement{tokens} without an interval (the committed table keeps no per-window losses), "
        "so close costs, such as those of the cheapest layers, do not rank the layers.",
        f"Dense, the residual stream's variance grows {dense['total_growth']:.3g}x from the embeddings to the output "
        f"of layer {n_layers - 1}: {float(table.loc[table['layer'] == table['layer'].min(), 'growth'].iloc[0]):.3g}x "
        f"inside layer 0 (embeddings -> its output) and a further {dense['growth_after_first']:.3g}x from layer 0's "
        f"output to layer {n_layers - 1}'s (per-token medians {dense['growth_after_first_median']:.3g}x); in the "
        f"second half of the network a typical token's variance grows "
        f"{float(np.exp(np.log(late['growth_median']).mean())):.3f}x per layer and the relative update "
        f"||h_out - h_in|| / ||h_in|| averages {late['rel_update'].mean():.3f}.",
        f"Jacobian identity gap after layer 0: median {rest['jacobian_gap'].median():.2f}, lowest "
        f"{rest['jacobian_gap'].min():.2f} (layer {int(rest.loc[rest['jacobian_gap'].idxmin(), 'layer'])}), "
        f"highest {rest['jacobian_gap'].max():.2f} (layer {int(rest.loc[rest['jacobian_gap'].idxmax(), 'layer'])}); "
        f"1 - cos(h_in, h_out) after layer 0: median {rest['block_influence'].median():.3f}.",
    ]
    out += damping_sentences(table, variance)
    finite = correlations.dropna(subset=["rho"])
    if len(finite):
        strongest = finite.loc[finite["rho"].abs().idxmax()]
        n_sig = int((finite["p_value"] < 0.05).sum())
        out.append(f"{n_sig} of {len(finite)} score/predictor rank correlations reach p < 0.05; the largest |rho| is "
                   f"rho({strongest['score']}, {strongest['predictor']}) = {strongest['rho']:+.2f} "
                   f"{_interval(strongest)} (p = {strongest['p_value']:.2g}).")
    for score in ("delta_nll", "jacobian_gap", "block_influence"):
        for predictor in ("alpha_mean", budget):
            hit = correlations[(correlations["score"] == score) & (correlations["predictor"] == predictor)]
            if len(hit):
                r = hit.iloc[0]
                out.append(f"Spearman rho({score}, {predictor}) = {r['rho']:+.2f} {_interval(r)} "
                           f"(p = {r['p_value']:.2g}, n = {int(r['n'])} layers).")
    return out
