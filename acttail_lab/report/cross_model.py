"""Is the answer general? Every committed grid (model x text) against uniform, with paired-bootstrap intervals.

Inputs: the committed grids ``perplexity_<model>.csv`` (*Pride and Prejudice*) and
``perplexity_encyclopedic_<model>.csv`` (Wikipedia paragraphs), each with its ``_windows`` table of
per-window losses. Outputs: :func:`cross_model_table` (tidy: one row per model x text x strategy x
target, the % change of perplexity against uniform on the same windows with its 95% interval) and
:func:`cross_model_sentences` (the conclusions, computed from that table). Regenerate the grids with
``python scripts/reproduce_perplexity.py --model M`` and ``python scripts/reproduce_encyclopedic.py --model M``.
"""
from __future__ import annotations

import pandas as pd

from ..core.errors import ActTailError
from ..core.paths import result_path
from ..core.results_io import load_table
from .bootstrap import paired_bootstrap

TEXTS = {"perplexity": "austen", "perplexity_encyclopedic": "encyclopedic"}
"""Grid table -> text label (the built-in corpus each grid is scored on)."""
MODELS = ("smollm2-135m", "gemma3-270m")
COMPARED = ("acttail", "acttail-ks", "acttail-block", "acttail[fit=block-mean]", "shuffled", "acttail-rev",
            "teal-greedy", "teal-greedy-fine", "rotated-uniform")
"""The strategies the cross-model table compares with uniform (each grid has the ones it ran): the alpha-guided
ones, their two controls (random order, reversed order), TEAL's greedy search and the upper reference, and
uniform budgets on LaRoSA-rotated inputs (another method, for scale)."""
ALPHA_GUIDED = ("acttail", "acttail-ks", "acttail-block", "acttail[fit=block-mean]")
CROSS_COLUMNS = ("model", "text", "strategy", "sparsity", "perplexity", "uniform", "change_pct", "ci_low_pct",
                 "ci_high_pct", "inside_noise", "verdict", "n_windows", "tokens")
"""Columns of :func:`cross_model_table`; ``verdict`` is ``better`` / ``worse`` (interval excludes 0) or ``noise``."""


def load_grids(models=MODELS, results_dir=None, tables=TEXTS) -> dict[tuple[str, str], tuple[pd.DataFrame, pd.DataFrame]]:
    """``{(model, text): (runs, windows)}`` for every committed grid of ``models`` (missing ones left out);
    ``tables``: grid table (a ``core.paths.RESULT_FILES`` key with a ``_windows`` twin) -> text label."""
    grids = {}
    for model in models:
        for table, text in tables.items():
            path = result_path(table, model, results_dir)
            windows = result_path(f"{table}_windows", model, results_dir)
            if path.exists() and windows.exists():
                grids[(model, text)] = (load_table(path), load_table(windows))
    return grids


def _verdict(row) -> str:
    if row.ci_low_pct > 0:
        return "worse"
    if row.ci_high_pct < 0:
        return "better"
    return "noise"


def cross_model_table(grids, strategies=COMPARED, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """% change of perplexity against uniform per model x text x strategy x target, with 95% paired intervals.

    ``grids``: :func:`load_grids` output. Only ``strategies`` a grid ran appear; the interval is the paired
    bootstrap over that grid's evaluation windows (``report.bootstrap.paired_bootstrap``).
    """
    parts = []
    for (model, text), (runs, windows) in grids.items():
        chosen = windows[windows["strategy"].isin([*strategies, "uniform"])]
        if chosen["strategy"].nunique() < 2:
            continue
        ci = paired_bootstrap(chosen, n_boot=n_boot, seed=seed)
        ppl = runs.set_index(["strategy", "sparsity"])["perplexity"]
        ci["perplexity"] = [float(ppl[(s, t)]) for s, t in zip(ci["strategy"], ci["sparsity"])]
        ci["uniform"] = [float(ppl[("uniform", t)]) for t in ci["sparsity"]]
        ci["tokens"] = int(runs["tokens"].iloc[0])
        parts.append(ci.assign(model=model, text=text))
    if not parts:
        raise ActTailError(f"No grid with uniform and one of {list(strategies)} was given (grids: {sorted(grids)}). "
                           "Fix: regenerate them (scripts/reproduce_perplexity.py --model M, "
                           "scripts/reproduce_encyclopedic.py --model M, scripts/reproduce_upper_reference.py --model M).")
    table = pd.concat(parts, ignore_index=True)
    table["verdict"] = [_verdict(r) for r in table.itertuples()]
    order = {name: {v: i for i, v in enumerate(dict.fromkeys(values))} for name, values in
             (("strategy", strategies), ("model", [m for m, _ in grids]), ("text", [t for _, t in grids]))}
    table = table.sort_values(["model", "text", "strategy", "sparsity"],
                              key=lambda c: c.map(order[c.name]) if c.name in order else c, kind="stable")
    return table[list(CROSS_COLUMNS)].reset_index(drop=True)


def verdict_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per strategy: how many model x text x target cells are better / noise / worse than uniform."""
    counts = table.groupby(["strategy", "verdict"], sort=False).size().unstack(fill_value=0)
    counts = counts.reindex(columns=["better", "noise", "worse"], fill_value=0)
    counts["cells"] = counts.sum(axis=1)
    return counts


def wide_table(table: pd.DataFrame, digits: int = 0) -> pd.DataFrame:
    """``"+5 [+3, +8]"`` texts (percent vs uniform; ``~`` = inside the noise), strategy x (model, text, target)."""
    cells = [f"{r.change_pct:+.{digits}f} [{r.ci_low_pct:+.{digits}f}, {r.ci_high_pct:+.{digits}f}]"
             + (" ~" if r.inside_noise else "") for r in table.itertuples()]
    wide = table.assign(cell=cells).pivot(index="strategy", columns=["model", "text", "sparsity"], values="cell")
    columns = list(dict.fromkeys(zip(table["model"], table["text"], table["sparsity"])))
    return wide.loc[list(dict.fromkeys(table["strategy"])), columns]


def _cells(frame: pd.DataFrame) -> str:
    return ", ".join(f"{r.model}/{r.text} {r.sparsity:g} ({r.change_pct:+.0f}%)" for r in frame.itertuples())


def cross_model_sentences(table: pd.DataFrame) -> list[str]:
    """The cross-model conclusions as sentences computed from :func:`cross_model_table` (one per statement)."""
    settings = table[["model", "text"]].drop_duplicates()
    lines = [f"{len(settings)} model x text settings ({', '.join(f'{m}/{t}' for m, t in settings.itertuples(index=False))}); "
             f"every change is against uniform at the same target on the same windows, with a 95% paired-bootstrap "
             "interval; 'noise' means the interval contains 0."]
    for strategy, counts in verdict_counts(table).iterrows():
        line = (f"{strategy}: better than uniform in {counts['better']} of {counts['cells']} cells, inside the noise "
                f"in {counts['noise']}, worse in {counts['worse']}")
        rows = table[table["strategy"] == strategy]
        if 0 < counts["better"] < counts["cells"]:
            line += f"; better at {_cells(rows[rows['verdict'] == 'better'])}"
        if 0 < counts["worse"] < counts["cells"]:
            line += f"; worse at {_cells(rows[rows['verdict'] == 'worse'])}"
        lines.append(line + ".")
    alpha = table[table["strategy"].isin(ALPHA_GUIDED)]
    if len(alpha):
        beat = alpha[alpha["verdict"] == "better"]
        lines.append(f"Alpha-guided budgets beat uniform beyond the noise in {len(beat)} of {len(alpha)} cells"
                     + (f" ({_cells(beat)})" if len(beat) else "") + "; "
                     + ("so on these models and texts alpha does not reliably predict which projections tolerate "
                        "sparsity." if len(beat) < len(alpha) / 2 else "so alpha-guided budgets mostly help here."))
    pair = table[table["strategy"] == "acttail"].merge(table[table["strategy"] == "acttail-rev"],
                                                       on=["model", "text", "sparsity"], suffixes=("", "_rev"))
    if len(pair):
        lower = int((pair["change_pct_rev"] < pair["change_pct"]).sum())
        lines.append(f"Reversing alpha's direction (acttail-rev: more sparsity to heavier tails) gives lower perplexity "
                     f"than acttail in {lower} of {len(pair)} cells where both ran.")
    return lines


def calibration_check(models=MODELS, results_dir=None, strategies=("teal-greedy", "teal-greedy-fine"),
                      n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The upper reference checked where it was chosen: each of ``strategies`` against uniform on the
    CALIBRATION split (committed ``upper_reference_<model>_windows.csv``), with paired 95% intervals and a
    ``verdict``. Columns as :func:`cross_model_table` with ``text`` = ``"austen (calibration)"``."""
    grids = load_grids(models, results_dir, {"upper_reference": "austen (calibration)"})
    return cross_model_table(grids, strategies, n_boot=n_boot, seed=seed)


def upper_reference_sentence(check: pd.DataFrame, strategy: str = "teal-greedy-fine") -> str:
    """One sentence: is ``strategy`` at least as good as uniform on calibration text at every target and model?"""
    rows = check[check["strategy"] == strategy]
    worse = rows[rows["verdict"] == "worse"]
    head = (f"On calibration text {strategy} is better than uniform in {int((rows['verdict'] == 'better').sum())} "
            f"of {len(rows)} model x target cells, inside the noise in {int((rows['verdict'] == 'noise').sum())}")
    if len(worse):
        return head + f" and worse in {len(worse)} ({_cells(worse)}): it is NOT an upper reference there."
    return head + ", worse in none: at least as good as uniform everywhere it was measured."


SENSITIVITIES = ("rel_error@0.8", "loss_increase@0.8")
"""Measured sensitivities compared across models: one projection's TopK output error, and the loss increase
with only that projection sparsified (a subset of layers), both at 80% and on calibration text."""


def sensitivity_table(models=MODELS, results_dir=None, sensitivities=SENSITIVITIES) -> pd.DataFrame:
    """Does a spectral metric predict a projection's TopK sensitivity, per model? From the committed
    ``<model>_correlations.csv`` (``scripts/reproduce_sensitivity.py --model M``): one row per (model,
    sensitivity, metric, rule) with the Spearman rho over all projections (``rho_all``) and the medians of
    the within-kind (across layers) and within-layer (across kinds) rhos. ActTail's premise (higher alpha,
    more tolerant) predicts a NEGATIVE rho of alpha with the error."""
    rows = []
    for model in models:
        path = result_path("correlations", model, results_dir)
        if not path.exists():
            continue
        corr = load_table(path)
        corr = corr[corr["sensitivity"].isin(sensitivities)]
        for (sens, metric, rule), part in corr.groupby(["sensitivity", "metric", "rule"], sort=False):
            within = part.groupby("group_by")["rho"]
            rows.append(dict(model=model, sensitivity=sens, metric=metric, rule=rule,
                             rho_all=float(part.loc[part["group_by"] == "all", "rho"].iloc[0]),
                             within_kind=float(within.median().get("projection", float("nan"))),
                             within_layer=float(within.median().get("layer", float("nan"))),
                             n=int(part.loc[part["group_by"] == "all", "n"].iloc[0])))
    return pd.DataFrame(rows)


def sensitivity_sentences(table: pd.DataFrame, rule: str = "peak") -> list[str]:
    """Per model and sensitivity: alpha's rho (``rule``) overall and within kinds, and the best single metric."""
    lines = []
    for (model, sens), part in table.groupby(["model", "sensitivity"], sort=False):
        alpha = part[(part["metric"] == "alpha") & (part["rule"] == rule)].iloc[0]
        best = part.loc[part["rho_all"].abs().idxmax()]
        sign = "supports" if alpha.rho_all < 0 else "is the opposite of"
        lines.append(f"{model}, {sens} ({alpha.n} projections): rho(alpha {rule}) = {alpha.rho_all:+.2f} overall "
                     f"({sign} ActTail's premise), median {alpha.within_kind:+.2f} within a kind across layers; "
                     f"the strongest single metric is {best.metric} ({best.rule}) with rho {best.rho_all:+.2f}.")
    return lines


def grid_summary(grids) -> pd.DataFrame:
    """One row per grid: model, text, scored tokens, windows, targets, strategies run, dense perplexity."""
    rows = []
    for (model, text), (runs, windows) in grids.items():
        dense = runs.loc[runs["strategy"] == "dense", "perplexity"]
        rows.append(dict(model=model, text=text, tokens=int(runs["tokens"].iloc[0]),
                         windows=int(windows["window_index"].nunique()),
                         targets=", ".join(f"{t:g}" for t in sorted(runs.loc[runs["sparsity"] > 0, "sparsity"].unique())),
                         strategies=int(runs.loc[runs["strategy"] != "dense", "strategy"].nunique()),
                         dense_perplexity=float(dense.iloc[0]) if len(dense) else float("nan")))
    return pd.DataFrame(rows)
