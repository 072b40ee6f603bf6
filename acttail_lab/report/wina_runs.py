"""Notebook 09's perplexity tables: WINA and FARMS runs beside the TopK runs they change, from committed CSVs.

Inputs: the committed WINA/FARMS grid (``perplexity_wina_farms_<model>.csv``,
``scripts/reproduce_wina_farms.py``) and the TopK references measured on the same evaluation tokens,
windows and protocol: the perplexity grid (``perplexity_<model>.csv``, 50-80%) and the related-methods
grid (``perplexity_related_<model>.csv``, 40-80%, which also holds ``rotated-uniform``).
:func:`compare_runs` pairs every new run with its TopK counterpart (:data:`COUNTERPART`) and with uniform
TopK at the same target; a counterpart not measured at that target is NaN (never interpolated).
``counterpart_source`` says which grid a counterpart came from: the related grid was measured in an earlier
software environment (its uniform rows differ from the perplexity grid's by about 0.4%), so differences
that small against a ``related`` counterpart are not resolved.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.paths import result_path
from ..core.results_io import load_table

COUNTERPART = {
    "wina": "uniform",
    "acttail-wina[xmin=ks]": "acttail-ks",
    "teal-greedy-wina": "teal-greedy",
    "acttail-farms[xmin=ks]": "acttail-ks",
    "acttail-block-farms[xmin=ks]": "acttail-block[xmin=ks]",
    "rotated-wina": "rotated-uniform",
}
"""Each new strategy -> the TopK strategy with the same budgets (or, for FARMS, the same rule on plain alphas).
The committed alpha-based rows use KS alphas, so they pair with the grid's KS rows."""

COMPARE_COLUMNS = ("strategy", "sparsity", "perplexity", "realised_sparsity", "counterpart", "counterpart_ppl",
                   "counterpart_source", "change_vs_counterpart", "uniform_ppl", "change_vs_uniform")


def load_runs(model: str = "smollm2-135m", results_dir=None) -> pd.DataFrame:
    """The committed WINA/FARMS grid (one row per run, with its sidecar in ``attrs["provenance"]``)."""
    return load_table(result_path("wina_farms", model, results_dir))


def load_references(model: str = "smollm2-135m", results_dir=None) -> pd.DataFrame:
    """TopK reference runs: the perplexity grid's rows, plus the related grid's rows at targets (or
    strategies) the perplexity grid lacks. Columns strategy, sparsity, perplexity, source."""
    main = load_table(result_path("perplexity", model, results_dir)).assign(source="perplexity")
    related = load_table(result_path("related", model, results_dir)).assign(source="related")
    related = related[related["method"].fillna("topk").isin(["topk", "rotated"]) | (related["strategy"] == "dense")]
    both = pd.concat([main, related], ignore_index=True)
    both = both.drop_duplicates(["strategy", "sparsity"], keep="first")
    return both[["strategy", "sparsity", "perplexity", "source"]].reset_index(drop=True)


def compare_runs(runs: pd.DataFrame, references: pd.DataFrame) -> pd.DataFrame:
    """One row per new run (dense excluded): its perplexity, the counterpart's and uniform TopK's at the same
    target, and the relative changes ``ppl / reference - 1`` (negative = better). Columns :data:`COMPARE_COLUMNS`."""
    ref = {(r.strategy, round(float(r.sparsity), 6)): float(r.perplexity) for r in references.itertuples()}
    source = {(r.strategy, round(float(r.sparsity), 6)): r.source for r in references.itertuples()}
    rows = []
    for run in runs[runs["strategy"] != "dense"].itertuples():
        s = round(float(run.sparsity), 6)
        counterpart = COUNTERPART.get(run.strategy)
        c_ppl = ref.get((counterpart, s), np.nan)
        u_ppl = ref.get(("uniform", s), np.nan)
        rows.append({"strategy": run.strategy, "sparsity": float(run.sparsity), "perplexity": float(run.perplexity),
                     "realised_sparsity": float(run.realised_sparsity), "counterpart": counterpart,
                     "counterpart_ppl": c_ppl, "counterpart_source": source.get((counterpart, s)),
                     "change_vs_counterpart": float(run.perplexity) / c_ppl - 1,
                     "uniform_ppl": u_ppl, "change_vs_uniform": float(run.perplexity) / u_ppl - 1})
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS)).sort_values(["strategy", "sparsity"], kind="stable")


def change_matrix(comparison: pd.DataFrame, column: str = "change_vs_counterpart") -> pd.DataFrame:
    """``column`` as a strategy x sparsity matrix (percent, rounded to 0.1)."""
    return (comparison.pivot(index="strategy", columns="sparsity", values=column) * 100).round(1)


def runs_conclusions(comparison: pd.DataFrame) -> list[str]:
    """One sentence per strategy: how often it beats its counterpart and uniform TopK, and the range of the
    change, over the targets where both were measured."""
    lines = []
    for strategy, part in comparison.groupby("strategy", sort=False):
        paired = part.dropna(subset=["change_vs_counterpart"])
        if paired.empty:
            continue
        wins = int((paired["change_vs_counterpart"] < 0).sum())
        low, high = paired["change_vs_counterpart"].min() * 100, paired["change_vs_counterpart"].max() * 100
        uni = part.dropna(subset=["change_vs_uniform"])
        lines.append(f"{strategy}: better than {paired['counterpart'].iloc[0]} (TopK) at {wins} of {len(paired)} "
                     f"targets (change {low:+.1f}% to {high:+.1f}%); better than uniform TopK at "
                     f"{int((uni['change_vs_uniform'] < 0).sum())} of {len(uni)}.")
    return lines
