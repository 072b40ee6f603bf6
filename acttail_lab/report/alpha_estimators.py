"""Plain alpha vs FARMS alpha: per-kind means, the aspect-ratio check on synthetic matrices, and which one
predicts the measured TopK error better. Tables in, tables and sentences out.

* :func:`kind_alpha_table`: one row per (source, estimator, kind) with the mean / median / std of alpha
  over the layers and the rank of the kind's mean (1 = smallest alpha = heaviest tail);
* :func:`synthetic_aspect_table`: the same rows for heavy-tailed random matrices
  (``spectral.rmt.heavy_tailed_matrix``, a known entry tail index) at two aspect ratios, where the plain
  fit's dependence on the aspect ratio is known to be a bias (same entries' law, only the shape differs);
* :func:`estimator_correlations`: Spearman rho of alpha (each estimator) against the committed TopK output
  error and loss increase (``report.correlations.spectral_correlations``), over all projections and
  within each kind;
* :func:`estimator_conclusions`: the sentences, computed from those tables.

The committed tables are written by ``scripts/reproduce_alpha_estimators.py``.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ..core.paths import result_path
from ..core.results_io import load_table
from ..spectral.farms import farms_esd
from ..spectral.rmt import heavy_tailed_matrix
from ..spectral.spectra import esd
from ..spectral.tails import fit_power_law
from .correlations import spectral_correlations

KIND_COLUMNS = ("source", "estimator", "kind", "n", "alpha_mean", "alpha_median", "alpha_std", "kind_rank")
CORRELATION_TARGETS = ("rel_error@0.5", "rel_error@0.8", "rel_error_auc", "loss_increase@0.5", "loss_increase@0.8")


def load_kind_table(model: str = "smollm2-135m", results_dir=None) -> pd.DataFrame:
    """The committed per-kind alpha table (``<model>_alpha_estimators.csv``), sidecar in ``attrs``."""
    return load_table(result_path("alpha_estimators", model, results_dir))


def load_correlations(model: str = "smollm2-135m", results_dir=None) -> pd.DataFrame:
    """The committed estimator correlations (``<model>_alpha_estimator_correlations.csv``)."""
    return load_table(result_path("alpha_estimator_correlations", model, results_dir))


def kind_alpha_table(tables: Mapping[str, pd.DataFrame], source: str) -> pd.DataFrame:
    """Per-kind alpha summary of ``{estimator: analyze table}``: columns :data:`KIND_COLUMNS`."""
    rows = []
    for estimator, table in tables.items():
        groups = table.groupby("projection", sort=False)["alpha"]
        stats = pd.DataFrame({"n": groups.size(), "alpha_mean": groups.mean(), "alpha_median": groups.median(),
                              "alpha_std": groups.std(ddof=1)})
        stats["kind_rank"] = stats["alpha_mean"].rank(method="min").astype(int)
        for kind, row in stats.iterrows():
            rows.append({"source": source, "estimator": estimator, "kind": kind, **row.to_dict()})
    out = pd.DataFrame(rows, columns=list(KIND_COLUMNS))
    return out.astype({"n": int, "kind_rank": int})


def synthetic_aspect_table(tail_indices=(2.5, 3.0), short: int = 384, long: int = 1024, seeds: int = 3,
                           rows: int = 128, windows: int = 8, xmin: str = "ks") -> pd.DataFrame:
    """Heavy-tailed random matrices (Student-t entries, tail index ``mu``) of shape ``short x short`` (kind
    ``"1:1"``) and ``short x long`` (kind ``"1:{long/short:.2f}"``), ``seeds`` draws each; alpha by the plain
    fit and by FARMS (square ``rows x rows`` windows, ``windows`` per dimension). Columns
    :data:`KIND_COLUMNS`, source ``"synthetic mu=<mu>"``; ``n`` = draws."""
    rows_out = []
    wide = f"1:{long / short:.2f}"
    for mu in tail_indices:
        fits = {"plain": {"1:1": [], wide: []}, "farms": {"1:1": [], wide: []}}
        for seed in range(seeds):
            for kind, cols, offset in (("1:1", short, 0), (wide, long, 100)):
                w = heavy_tailed_matrix(short, cols, mu, seed + offset)
                fits["plain"][kind].append(fit_power_law(esd(w), xmin).alpha)
                fits["farms"][kind].append(fit_power_law(farms_esd(w, rows, 1.0, windows), xmin).alpha)
        for estimator, kinds in fits.items():
            means = {k: float(np.mean(v)) for k, v in kinds.items()}
            order = sorted(means, key=means.get)
            for kind, values in kinds.items():
                rows_out.append({"source": f"synthetic mu={mu:g}", "estimator": estimator, "kind": kind,
                                 "n": len(values), "alpha_mean": means[kind], "alpha_median": float(np.median(values)),
                                 "alpha_std": float(np.std(values, ddof=1)), "kind_rank": order.index(kind) + 1})
    return pd.DataFrame(rows_out, columns=list(KIND_COLUMNS))


def aspect_gaps(kinds: pd.DataFrame, square=("q", "o", "1:1"), wide=("gate", "up", "down")) -> pd.DataFrame:
    """Per (source, estimator): mean alpha of the square kinds, of the rectangular kinds, and their gap
    (rectangular minus square). On SmolLM2 q/o are square (576 x 576) and gate/up/down 576 x 1536; k/v
    (192 x 576) are left out, as their shape is neither."""
    rows = []
    for (source, estimator), part in kinds.groupby(["source", "estimator"], sort=False):
        sq = part[part["kind"].isin(square)]["alpha_mean"].mean()
        rect = part[part["kind"].isin(wide) | part["kind"].str.startswith("1:") & (part["kind"] != "1:1")]
        rows.append({"source": source, "estimator": estimator, "square_mean": float(sq),
                     "rectangular_mean": float(rect["alpha_mean"].mean()),
                     "gap": float(rect["alpha_mean"].mean() - sq)})
    return pd.DataFrame(rows)


def kind_rank_agreement(kinds: pd.DataFrame, source: str) -> float:
    """Spearman rho between the plain and the FARMS ranking of the kinds' mean alpha for ``source``."""
    part = kinds[kinds["source"] == source].pivot(index="kind", columns="estimator", values="alpha_mean")
    return float(spearmanr(part["plain"], part["farms"]).statistic)


def estimator_correlations(tables: Mapping[str, pd.DataFrame], cost: pd.DataFrame,
                           loss: pd.DataFrame | None = None) -> pd.DataFrame:
    """Spearman rho of each estimator's alpha against the TopK output error (``cost``: rel_error at 50% and
    80% and the curve mean) and, when given, the loss increase (``loss``), over all projections and within
    each kind. Columns: estimator, sensitivity, group_by, group, rho, p_value, n."""
    parts = [spectral_correlations(dict(tables), cost, metrics=("alpha",), by=("all", "projection"))]
    if loss is not None:
        parts.append(spectral_correlations(dict(tables), loss, metrics=("alpha",), by=("all", "projection"),
                                           auc=False, value="loss_increase"))
    out = pd.concat(parts, ignore_index=True).rename(columns={"rule": "estimator"}).drop(columns="metric")
    return out[out["sensitivity"].isin(CORRELATION_TARGETS)].reset_index(drop=True)


def correlation_summary(correlations: pd.DataFrame) -> pd.DataFrame:
    """Per (estimator, sensitivity): rho over all projections with its 95% Fisher-z interval (``rho_all_low`` /
    ``rho_all_high``, over ``n_all`` projections) and the median rho within kinds."""
    from .rank_correlation import fisher_interval

    overall = correlations[correlations["group_by"] == "all"].set_index(["estimator", "sensitivity"])
    within = correlations[correlations["group_by"] == "projection"].groupby(["estimator", "sensitivity"])["rho"]
    out = pd.DataFrame({"rho_all": overall["rho"], "rho_within_kind_median": within.median()})
    n = overall["n"] if "n" in overall else pd.Series(np.nan, index=overall.index)
    bounds = [fisher_interval(r, int(k) if pd.notna(k) else None) for r, k in zip(overall["rho"], n)]
    out["n_all"] = n
    out["rho_all_low"] = pd.Series([b[0] for b in bounds], index=overall.index)
    out["rho_all_high"] = pd.Series([b[1] for b in bounds], index=overall.index)
    return out.reset_index()


def gap_effect(plain: float, farms: float) -> str:
    """What FARMS does to a square-vs-rectangular alpha gap: it is meant to shrink it (same entry law, different
    shape should give the same alpha); says "widens ... the opposite of its purpose" when |farms| > |plain|."""
    if abs(farms) > abs(plain):
        return (f"FARMS widens the gap ({abs(plain):.2f} -> {abs(farms):.2f}), the opposite of its purpose "
                "(removing the aspect-ratio bias)")
    return f"FARMS narrows the gap ({abs(plain):.2f} -> {abs(farms):.2f}), as intended"


def estimator_conclusions(kinds: pd.DataFrame, correlations: pd.DataFrame, model: str) -> list[str]:
    """Sentences from the tables: aspect-ratio gaps (synthetic and model), kind ranking, which alpha
    predicts the TopK error better. Nothing is stated that the numbers do not show."""
    lines = []
    gaps = aspect_gaps(kinds).set_index(["source", "estimator"])["gap"]
    for source in [s for s in dict.fromkeys(kinds["source"]) if s.startswith("synthetic")]:
        lines.append(f"{source}: alpha gap rectangular - square {gaps[(source, 'plain')]:+.2f} (plain) vs "
                     f"{gaps[(source, 'farms')]:+.2f} (FARMS); {gap_effect(gaps[(source, 'plain')], gaps[(source, 'farms')])}.")
    if (model, "plain") in gaps:
        lines.append(f"{model}: mean alpha of gate/up/down minus q/o {gaps[(model, 'plain')]:+.2f} (plain) vs "
                     f"{gaps[(model, 'farms')]:+.2f} (FARMS): {gap_effect(gaps[(model, 'plain')], gaps[(model, 'farms')])}; "
                     f"kind ranking plain vs FARMS Spearman {kind_rank_agreement(kinds, model):+.2f}.")
    summary = correlation_summary(correlations).set_index(["sensitivity", "estimator"])
    for target in [t for t in CORRELATION_TARGETS if (t, "plain") in summary.index and (t, "farms") in summary.index]:
        p, f = summary.loc[(target, "plain")], summary.loc[(target, "farms")]
        apart = p["rho_all_high"] < f["rho_all_low"] or f["rho_all_high"] < p["rho_all_low"]
        better = "FARMS" if abs(f["rho_all"]) > abs(p["rho_all"]) else "plain"
        verdict = f"{better} larger in magnitude" if apart else "the 95% intervals overlap: not told apart"
        lines.append(f"{target}: rho(alpha, error) over all {int(p['n_all'])} projections {p['rho_all']:+.2f} "
                     f"[{p['rho_all_low']:+.2f}, {p['rho_all_high']:+.2f}] plain vs {f['rho_all']:+.2f} "
                     f"[{f['rho_all_low']:+.2f}, {f['rho_all_high']:+.2f}] FARMS ({verdict}; Fisher z); within "
                     f"kinds (median) {p['rho_within_kind_median']:+.2f} vs {f['rho_within_kind_median']:+.2f}.")
    return lines
