"""Committed perplexity results: load them, compare strategies with uniform, tabulate them.

A *runs* table is what :func:`acttail_lab.measure.grid.evaluate_grid` returns and
``data/results/perplexity_<model>.csv`` holds: one row per (strategy label,
target sparsity) plus a dense row (``strategy == "dense"``, ``sparsity == 0``),
with columns strategy, sparsity, perplexity, nll, tokens, realised_sparsity,
protocol, window, model, corpus, split, xmin_rule, options, wall_s, ...
Perplexity is ``exp(mean NLL)`` over the scored tokens (see ``evaluation``).

Rows compare only within one *setting* (:data:`SETTING_COLUMNS`: same model,
text, window, scored tokens and protocol). Where a table holds runs of one
strategy under several xmin rules, the rows are told apart by :func:`run_labels`
(``"acttail (xmin=peak)"``).

Also here: ActTail's per-kind budgets for the published LLaMA alphas beside
TEAL's published per-kind means (:func:`reference_kind_budgets`), the table
behind the kind-budget figure of notebook 02.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..core.corpus import DEFAULT_CORPUS
from ..core.errors import ActTailError, ModelNotFoundError
from ..core.models import PROJECTIONS
from ..core.paths import DEFAULT_MODEL, RESULTS_DIR, result_path
from ..core.results_io import read_sidecar

DENSE = "dense"
UNIFORM = "uniform"
RUN_COLUMNS = ("strategy", "sparsity", "perplexity")
SETTING_COLUMNS = ("model", "corpus", "split", "window", "tokens", "protocol")
"""Rows differing in any of these were measured on different text or scoring: never compare them."""
LLAMA2_MODELS = {"LLaMA-2-7B": "llama2-7b", "LLaMA-2-13B": "llama2-13b", "LLaMA-2-70B": "llama2-70b"}


# --------------------------------------------------------------------------- files
def perplexity_path(model: str = DEFAULT_MODEL, results_dir: str | os.PathLike | None = None) -> Path:
    """``<results_dir>/perplexity_<model>.csv`` (``results_dir`` defaults to :data:`RESULTS_DIR`)."""
    return result_path("perplexity", model, results_dir)


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """A runs CSV with its sidecar: ``attrs["provenance"]`` (dict or None) and ``attrs["path"]``.

    Raises ModelNotFoundError (naming the command that makes the file) when it is
    missing, ActTailError when it lacks the columns strategy, sparsity, perplexity.
    """
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(
            f"No results file at {path}. Fix: make it with `acttail-lab evaluate --model <model> "
            f"--strategies uniform,acttail --out {path}` (or core.results_io.write_results on an evaluate_grid frame).")
    runs = pd.read_csv(path)
    check_runs(runs, str(path))
    runs.attrs.update(path=str(path), provenance=read_sidecar(path))
    return runs


def load_perplexity(model: str = DEFAULT_MODEL, results_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The committed perplexity grid of ``model`` (:func:`load_results` of :func:`perplexity_path`)."""
    return load_results(perplexity_path(model, results_dir))


def check_runs(runs: pd.DataFrame, where: str = "runs") -> None:
    """Raise ActTailError unless ``runs`` has the columns strategy, sparsity and perplexity, and rows."""
    missing = [c for c in RUN_COLUMNS if c not in runs.columns]
    if missing or runs.empty:
        raise ActTailError(f"{where}: not a perplexity grid (missing {missing or 'rows'}). "
                           "Fix: pass a measure.grid.evaluate_grid frame or a data/results/perplexity_*.csv.")


def provenance_summary(runs: pd.DataFrame) -> pd.Series:
    """Where the committed numbers came from: git SHA (and dirty flag), device, time, command, versions."""
    prov = runs.attrs.get("provenance") or {}
    versions = prov.get("versions") or {}
    return pd.Series({
        "file": runs.attrs.get("path"), "git_sha": prov.get("git_sha"), "git_dirty": prov.get("git_dirty"),
        "device": prov.get("device"), "timestamp": prov.get("timestamp"), "seed": prov.get("seed"),
        "command": prov.get("command"),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items() if v) or None,
    }, name="provenance", dtype=object)


# --------------------------------------------------------------------------- labels and settings
def run_labels(runs: pd.DataFrame) -> pd.Series:
    """Display label of each row, a function of its settings (:func:`report.labels.row_labels`): the strategy
    name plus whatever of its xmin rule, options, method and kinds the name does not imply, so a label means one
    setting in every table (the related grid's KS ``acttail`` rows read ``acttail-ks``; the current grids'
    names, e.g. ``acttail-block[xmin=ks]``, already say everything and come back unchanged)."""
    from .labels import row_labels

    return row_labels(runs)


def labels(runs: pd.DataFrame, strategies=None) -> list[str]:
    """Run labels (:func:`run_labels`, dense left out) in table order; with ``strategies``, only
    the labels of those strategies, in the order given (a strategy run under two xmin rules gives two)."""
    tidy = runs.assign(label=run_labels(runs))
    tidy = tidy[tidy["strategy"] != DENSE]
    if strategies is None:
        return list(dict.fromkeys(tidy["label"]))
    return [label for strategy in strategies
            for label in dict.fromkeys(tidy.loc[tidy["strategy"] == strategy, "label"])]


def xmin_rules(runs: pd.DataFrame) -> list[str]:
    """The xmin rules behind the alpha-based rows, in table order (empty when none needs alphas)."""
    return [str(r) for r in dict.fromkeys(runs["xmin_rule"].dropna())] if "xmin_rule" in runs.columns else []


def xmin_rule(runs: pd.DataFrame, default: str = "ks") -> str:
    """The xmin rule behind the alpha-based rows (``default`` when none); ActTailError if several."""
    rules = runs["xmin_rule"].dropna().unique() if "xmin_rule" in runs.columns else []
    if len(rules) > 1:
        raise ActTailError(f"The runs mix xmin rules {sorted(rules)}. "
                           "Fix: select one, e.g. runs[runs.xmin_rule != 'peak'].")
    return str(rules[0]) if len(rules) else default


def _settings(runs: pd.DataFrame) -> list[str]:
    return [c for c in SETTING_COLUMNS if c in runs.columns]


def check_one_setting(runs: pd.DataFrame, what: str = "this table") -> None:
    """Raise ActTailError when ``runs`` mixes settings (:data:`SETTING_COLUMNS`), naming those that vary."""
    varying = [c for c in _settings(runs) if runs[c].nunique(dropna=False) > 1]
    if varying:
        values = {c: sorted(map(str, runs[c].unique())) for c in varying}
        raise ActTailError(f"{what} needs runs from one setting, but {values} vary. Fix: select one setting first, "
                           f"e.g. runs[runs.{varying[0]} == {runs[varying[0]].iloc[0]!r}].")


# --------------------------------------------------------------------------- comparisons
def relative_to_uniform(runs: pd.DataFrame, include_uniform: bool = False) -> pd.DataFrame:
    """Each sparsified run's perplexity next to uniform's at the same target and setting.

    Inputs: a runs table (several settings allowed: uniform is matched within each).
    Output: one row per run (dense dropped, uniform kept only if
    ``include_uniform``), in the input order, columns ``label`` (:func:`run_labels`),
    strategy, [xmin_rule], sparsity, the setting columns present, perplexity,
    ``uniform_perplexity`` and ``change_pct`` = 100 (ppl / ppl_uniform - 1):
    negative means lower perplexity than uniform (ActTail's claim is e.g. -21.8
    for LLaMA-2-7B at 0.8). NaN where uniform was not run at that target.
    Raises ActTailError when the table has no uniform row at all.
    """
    check_runs(runs)
    runs = runs.assign(label=run_labels(runs)).reset_index(drop=True)
    is_uniform = runs["strategy"] == UNIFORM
    if not is_uniform.any():
        raise ActTailError("No 'uniform' rows to compare against. Fix: evaluate the uniform strategy at the "
                           "same sparsities (evaluate_grid(strategies=('uniform', ...))).")
    keys = ["sparsity"] + _settings(runs)
    uniform = runs.loc[is_uniform, keys + ["perplexity"]]
    duplicated = uniform.duplicated(keys)
    if duplicated.any():
        raise ActTailError(f"Uniform was run twice at {uniform.loc[duplicated, keys].iloc[0].to_dict()}. "
                           "Fix: drop the repeated rows.")
    uniform = uniform.rename(columns={"perplexity": "uniform_perplexity"})
    keep = (runs["strategy"] != DENSE) & (include_uniform | ~is_uniform)
    front = ["label", "strategy"] + (["xmin_rule"] if "xmin_rule" in runs.columns else [])
    out = runs.loc[keep, front + keys + ["perplexity"]].merge(uniform, on=keys, how="left", validate="many_to_one")
    out["change_pct"] = 100.0 * (out["perplexity"] / out["uniform_perplexity"] - 1.0)
    return out


def family_members(labels, family: str = "acttail", include_controls: bool = False) -> list[str]:
    """The labels whose strategy is ``family`` (e.g. acttail, acttail-block, acttail[eps=0.2]).

    Labels are parsed with ``allocation.parse_strategy``; a label that does not
    parse counts when it starts with ``family``. Unless ``include_controls``,
    runs with ``direction="alpha_down"`` (the reversed control, acttail-rev) are left out.
    """
    from ..allocation import parse_strategy
    from ..core.errors import AllocationError

    members = []
    for label in dict.fromkeys(map(str, labels)):
        try:
            spec = parse_strategy(label)
        except AllocationError:
            if label.startswith(family):
                members.append(label)
            continue
        control = spec.options.get("direction") == "alpha_down"
        if spec.strategy == family and (include_controls or not control):
            members.append(label)
    return members


def best_per_sparsity(runs: pd.DataFrame, family: str = "acttail", include_controls: bool = False) -> pd.DataFrame:
    """The lowest-perplexity member of ``family`` at each target, against uniform.

    Output: one row per (setting, sparsity) with columns sparsity, the setting
    columns, ``best`` (its label), perplexity, uniform_perplexity, change_pct and
    ``n_candidates``. The pick is made on the evaluation text itself, so it is an
    optimistic (oracle) choice of variant, not a held-out result.
    """
    rel = relative_to_uniform(runs)
    members = family_members(rel["strategy"], family, include_controls)
    rel = rel[rel["strategy"].isin(members)]
    if rel.empty:
        raise ActTailError(f"No runs of the {family!r} family in this table. Fix: evaluate e.g. "
                           f"strategies=({family!r}, 'uniform').")
    keys = ["sparsity"] + [c for c in SETTING_COLUMNS if c in rel.columns]
    best = rel.loc[rel.groupby(keys, sort=True)["perplexity"].idxmin()]
    counts = rel.groupby(keys, sort=True).size().rename("n_candidates").reset_index()
    best = best.rename(columns={"label": "best"}).merge(counts, on=keys)
    columns = keys + ["best", "perplexity", "uniform_perplexity", "change_pct", "n_candidates"]
    return best[columns].reset_index(drop=True)


def headline_table(runs: pd.DataFrame, value: str = "perplexity", include_dense: bool = True) -> pd.DataFrame:
    """``value`` as a strategy x sparsity table (rows: labels in order of appearance; columns: targets).

    Works on a runs table or on :func:`relative_to_uniform`'s output
    (``value="change_pct"``). With ``include_dense`` and a dense row present, the
    first row is ``"dense"`` with its value repeated in every column (the
    reference line). Raises ActTailError on a table that mixes settings.
    """
    if value not in runs.columns:
        raise ActTailError(f"Column {value!r} is not in the table (has {list(runs.columns)}).")
    check_one_setting(runs, "headline_table")
    tidy = runs.assign(label=runs["label"] if "label" in runs.columns else run_labels(runs))
    is_dense = tidy["strategy"] == DENSE
    body = tidy[~is_dense]
    table = body.pivot(index="label", columns="sparsity", values=value)
    table = table.reindex(index=list(dict.fromkeys(body["label"])), columns=sorted(table.columns))
    if include_dense and is_dense.any():
        dense = pd.DataFrame([[float(tidy.loc[is_dense, value].iloc[0])] * table.shape[1]],
                             index=[DENSE], columns=table.columns)
        table = pd.concat([dense, table])
    table.index.name = "strategy"
    table.columns.name = "sparsity"
    return table


# --------------------------------------------------------------------------- re-running
def _requested_tokens(scored: int, window: int, protocol: str) -> int:
    per_window = window - 1 - (window // 2 if protocol == "last_half" else 0)
    return int(round(scored / per_window)) * window


def rerun_arguments(runs: pd.DataFrame, **overrides) -> list[dict]:
    """``evaluate_grid`` keyword arguments that re-measure the grid in ``runs``, one dict per xmin rule.

    Strategies, sparsities, window, protocol, corpus, split, model and xmin rule
    come from the rows; ``tokens`` from the sidecar's settings when present,
    else from the scored-token count. The first dict also re-runs the dense row
    and the strategies that need no alpha. ``overrides`` (e.g. ``tokens=1024,
    window=256`` for a fast pass) are applied to every dict.
    """
    check_runs(runs)
    check_one_setting(runs, "rerun_arguments")
    first = runs.iloc[0]
    settings = ((runs.attrs.get("provenance") or {}).get("settings") or {})
    window = int(first["window"]) if "window" in runs else 512
    protocol = str(first["protocol"]) if "protocol" in runs else "all"
    tokens = settings.get("tokens") or (_requested_tokens(int(first["tokens"]), window, protocol)
                                        if "tokens" in runs else 16384)
    common = dict(model_name=str(first.get("model", DEFAULT_MODEL)), corpus=str(first.get("corpus", DEFAULT_CORPUS)),
                  split=str(first.get("split", "evaluation")), window=window, protocol=protocol, tokens=int(tokens))
    body = runs[runs["strategy"] != DENSE]
    rules = body["xmin_rule"] if "xmin_rule" in body else pd.Series([None] * len(body), index=body.index)
    groups = [r for r in dict.fromkeys(rules.dropna())] or [None]
    out = []
    for i, rule in enumerate(groups):
        mine = body[(rules == rule) | (rules.isna() if i == 0 else False)]
        out.append({**common, "strategies": tuple(dict.fromkeys(mine["strategy"])),
                    "sparsities": tuple(sorted(mine["sparsity"].unique())), "xmin": rule or "ks",
                    "include_dense": i == 0 and bool((runs["strategy"] == DENSE).any()), **overrides})
    return out


# --------------------------------------------------------------------------- per-kind budgets
def teal_kind_budgets() -> pd.DataFrame:
    """TEAL's published per-kind means for LLaMA-2-7B at 50% (``reference.TEAL_LLAMA2_7B_50``).

    Columns: label ``"TEAL (published)"``, model, source, target 0.5, projection,
    sparsity, n_params (per kind, LLaMA-2-7B shapes, so parameter-weighted means
    can be taken).
    """
    from ..core.reference import TEAL_LLAMA2_7B_50, shape_table

    n_params = shape_table("llama2-7b").groupby("projection")["n_params"].sum()
    return pd.DataFrame([dict(label="TEAL (published)", model="LLaMA-2-7B", source="TEAL", target=0.5,
                              projection=kind, sparsity=TEAL_LLAMA2_7B_50[kind], n_params=int(n_params[kind]))
                         for kind in PROJECTIONS])


def reference_kind_budgets(target: float = 0.5, strategy: str = "acttail",
                           models: Mapping[str, str] | None = None, teal: bool = True) -> pd.DataFrame:
    """Per-kind sparsity that ``strategy`` gives each LLaMA model from AlphaPruning's published alphas.

    Inputs: ``target`` (model-wide, parameter-weighted), a strategy or preset,
    ``models`` label -> ``reference.MODEL_SHAPES`` key (default LLaMA-2 7B/13B/70B).
    Output: ``allocation.summary`` rows (label ``"ActTail <model>"``, target,
    projection, sparsity = parameter-weighted mean over layers, sparsity_min,
    sparsity_max, n_params, alpha_mean) with model and source columns; then, if
    ``teal``, :func:`teal_kind_budgets` (published for LLaMA-2-7B at 0.5 only).
    """
    from ..allocation import allocate, summary
    from ..core.reference import published_alphas

    frames = []
    for name, key in (models or LLAMA2_MODELS).items():
        allocation = allocate(published_alphas(key), strategy, target, label=f"ActTail {name}")
        frames.append(summary(allocation).assign(model=name, source="AlphaPruning alphas"))
    if teal:
        frames.append(teal_kind_budgets())
    return pd.concat(frames, ignore_index=True)


def kind_table(budgets: pd.DataFrame) -> pd.DataFrame:
    """Projection kind x label table of sparsity, plus a last row ``"all (weighted)"``: the
    parameter-weighted mean over kinds (it equals each allocation's target)."""
    table = budgets.pivot(index="projection", columns="label", values="sparsity")
    table = table.reindex(index=[k for k in PROJECTIONS if k in table.index],
                          columns=list(dict.fromkeys(budgets["label"])))
    weighted = budgets.assign(w=budgets["sparsity"] * budgets["n_params"]).groupby("label", sort=False)
    table.loc["all (weighted)"] = (weighted["w"].sum() / weighted["n_params"].sum()).reindex(table.columns)
    return table


def allocation_extremes(allocations, high: float = 0.9) -> pd.DataFrame:
    """How far each allocation's budgets spread: one row per allocation (index: its label).

    Columns: target, min and max sparsity, ``above_<high>`` (projections sparser than
    ``high``) and ``at_cap`` (projections clipped at the allocation's ``s_max``; 1.0
    when it has none). A projection at the cap keeps only ``1 - s_max`` of its inputs.
    """
    rows = []
    for allocation in allocations:
        cap = allocation["s_max"].to_numpy(float) if "s_max" in allocation.columns else 1.0
        sparsity = allocation["sparsity"].to_numpy(float)
        rows.append({"label": str(allocation["label"].iloc[0]) if "label" in allocation.columns else len(rows),
                     "target": float(allocation["target"].iloc[0]) if "target" in allocation.columns else None,
                     "min": sparsity.min(), "max": sparsity.max(), f"above_{high:g}": int((sparsity > high).sum()),
                     "at_cap": int((sparsity >= cap - 1e-9).sum())})
    return pd.DataFrame(rows).set_index("label")


__all__ = [
    "RESULTS_DIR", "DEFAULT_MODEL", "SETTING_COLUMNS", "LLAMA2_MODELS", "perplexity_path", "read_sidecar",
    "load_results", "load_perplexity", "check_runs", "provenance_summary", "run_labels", "labels", "xmin_rules",
    "xmin_rule",
    "check_one_setting", "relative_to_uniform", "family_members", "best_per_sparsity", "headline_table",
    "rerun_arguments", "teal_kind_budgets", "reference_kind_budgets", "kind_table", "allocation_extremes",
]
