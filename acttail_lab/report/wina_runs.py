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
    strategies) the perplexity grid lacks. Columns strategy (the row's label, ``report.labels``), sparsity,
    perplexity, source."""
    from .results import run_labels

    main = load_table(result_path("perplexity", model, results_dir)).assign(source="perplexity")
    related = load_table(result_path("related", model, results_dir)).assign(source="related")
    related = related[related["method"].fillna("topk").isin(["topk", "rotated"]) | (related["strategy"] == "dense")]
    # by label (report.labels): the related grid's KS `acttail` rows are `acttail-ks`, the counterpart they are
    both = pd.concat([t.assign(strategy=run_labels(t)) for t in (main, related)], ignore_index=True)
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


# --------------------------------------------------------------------------- verdicts (report.verdicts)
def _paired_tables(model: str, results_dir=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, windows) holding the WINA/FARMS runs and their TopK counterparts and uniform, with ``strategy``
    set to each row's label (``report.labels``), so that the per-window losses of the two committed grids
    (same evaluation tokens, windows and protocol) can be paired; counterparts only in the related grid (40%)
    have no per-window losses, so their comparisons carry no interval."""
    from .bootstrap import load_windows
    from .results import run_labels

    runs = load_runs(model, results_dir)
    main = load_table(result_path("perplexity", model, results_dir))
    related = load_table(result_path("related", model, results_dir))
    related = related[related["method"].fillna("topk").isin(["topk", "rotated"])]
    frames = [t.assign(strategy=run_labels(t)) for t in (runs, main, related)]
    needed = set(COUNTERPART.values()) | {"uniform"}
    refs = pd.concat([f[f["strategy"].isin(needed)] for f in frames[1:]], ignore_index=True)
    refs = refs.drop_duplicates(["strategy", "sparsity"], keep="first")
    table = pd.concat([frames[0], refs], ignore_index=True)
    keep = ["strategy", "sparsity", "perplexity", "model", "method", "xmin_rule", "options"]
    table = table[[c for c in keep if c in table.columns]].assign(xmin_rule=None, options="{}")
    wins = load_windows("wina_farms", model, results_dir)
    main_windows = load_windows("perplexity", model, results_dir)
    windows = pd.concat([wins[wins["strategy"] != "dense"], main_windows[main_windows["strategy"].isin(needed)]],
                        ignore_index=True)[["strategy", "sparsity", "window_index", "nll"]]
    return table, windows


def comparison_verdicts(model: str = "smollm2-135m", results_dir=None, against: str = "counterpart",
                        **bootstrap) -> pd.DataFrame:
    """Each WINA/FARMS run against its TopK counterpart (``against="counterpart"``) or uniform TopK
    (``"uniform"``) at the same target, through ``report.verdicts.perplexity_verdicts``: the change, its 95%
    paired-bootstrap interval over the shared evaluation windows, the verdict; both collapsed -> not compared."""
    from .verdicts import VERDICT_COLUMNS, perplexity_verdicts

    table, windows = _paired_tables(model, results_dir)
    frames = []
    for strategy, counterpart in COUNTERPART.items():
        baseline = counterpart if against == "counterpart" else "uniform"
        pair = table[table["strategy"].isin([strategy, baseline])]
        if (pair["strategy"] == strategy).any() and (pair["strategy"] == baseline).any():
            mine = windows[windows["strategy"].isin([strategy, baseline])]
            v = perplexity_verdicts(pair, mine, baseline=baseline, **bootstrap)
            frames.append(v[v["label"] == strategy])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(VERDICT_COLUMNS))


def verdict_conclusions(verdicts: pd.DataFrame) -> list[str]:
    """One sentence per strategy from :func:`comparison_verdicts`: at each target the change with its interval
    and verdict (collapsed sides named), then how many targets are better beyond the noise."""
    from .verdicts import BETTER, verdict_objects

    lines = []
    for label, part in verdicts.groupby("label", sort=False):
        detail = "; ".join(f"{v.sparsity:g}: {v.short()}" for v in verdict_objects(part))
        better = int((part["verdict"] == BETTER).sum())
        lines.append(f"{label} against {part['baseline'].iloc[0]}: {detail}. Better beyond the noise at {better} of "
                     f"{len(part)} targets.")
    return lines
