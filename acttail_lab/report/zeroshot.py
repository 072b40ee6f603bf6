"""Notebook 08's tables: committed zero-shot accuracy, the papers' layout, differences beyond two standard
errors, closeness to chance, and whether perplexity ranks the runs the way accuracy does.

Input: a zero-shot table (``measure.zeroshot.evaluate_zeroshot`` / ``data/results/zeroshot_<model>.csv``):
one row per (strategy, sparsity, task, metric) with value, stderr (lm-eval's), n and realised sparsity.
Accuracies are fractions in the table and percentages in the layouts printed here.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from ..core.errors import ActTailError
from ..core.paths import DEFAULT_MODEL, result_path
from ..core.results_io import load_table

DENSE = "dense"
PAPER_METRIC = {"piqa": "acc", "arc_easy": "acc", "arc_challenge": "acc_norm", "hellaswag": "acc_norm",
                "winogrande": "acc", "openbookqa": "acc_norm", "lambada_openai": "acc", "boolq": "acc"}
"""The accuracy each task is usually reported with (length-normalised where the choices differ in length
and the papers use it); other tasks: ``acc``."""
CHANCE = {"piqa": 0.5, "arc_easy": 0.25, "arc_challenge": 0.25, "hellaswag": 0.25, "winogrande": 0.5,
          "openbookqa": 0.25, "boolq": 0.5, "lambada_openai": 0.0}
"""Accuracy of guessing (uniform over the choices; ARC has 3-5 choices, mostly 4)."""
ZEROSHOT_REQUIRED = ("strategy", "sparsity", "task", "metric", "value", "stderr", "n")


def load_zeroshot(model: str = DEFAULT_MODEL, path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The committed zero-shot table of ``model`` (with its sidecar in ``attrs["provenance"]``), checked."""
    table = load_table(path or result_path("zeroshot", model))
    missing = [c for c in ZEROSHOT_REQUIRED if c not in table]
    if missing:
        raise ActTailError(f"{table.attrs.get('path')} lacks the column(s) {missing}. Fix: regenerate it with "
                           "`acttail-lab zeroshot ... --out <csv>`.")
    return table


def committed_perplexity(model: str = DEFAULT_MODEL, results_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Perplexity of every committed run of ``model``: the main grid, then the related-methods table (same text,
    windows and protocol) for runs the grid lacks (e.g. ``rotated-uniform``); one row per (label, sparsity), with
    ``label`` by settings (``report.labels``: the related grid's KS ``acttail`` is ``acttail-ks``) in ``strategy``."""
    from .related import load_related
    from .results import load_perplexity, run_labels

    tables = [load_perplexity(model, results_dir)]
    try:
        tables.append(load_related(model, results_dir))
    except (FileNotFoundError, ActTailError):
        pass
    both = pd.concat([t.assign(strategy=run_labels(t))[["strategy", "sparsity", "perplexity"]] for t in tables],
                     ignore_index=True)
    return both.drop_duplicates(["strategy", "sparsity"], keep="first").reset_index(drop=True)


def main_metric_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Only each task's reported accuracy (:data:`PAPER_METRIC`), with a ``label`` column (strategy)."""
    want = df["task"].map(lambda t: PAPER_METRIC.get(t, "acc"))
    return df[df["metric"] == want].assign(label=df["strategy"]).reset_index(drop=True)


def run_order(df: pd.DataFrame) -> list[tuple]:
    """(strategy, sparsity) pairs: dense first, then by sparsity, strategies in table order."""
    pairs = list(dict.fromkeys(zip(df["strategy"], df["sparsity"])))
    order = {s: i for i, s in enumerate(dict.fromkeys(df["strategy"]))}
    return sorted(pairs, key=lambda p: (p[0] != DENSE, p[1], order[p[0]]))


def accuracy_table(df: pd.DataFrame, stderr: bool = False) -> pd.DataFrame:
    """The papers' layout: one row per (strategy, sparsity), tasks as columns (% accuracy, each task's reported
    metric), and ``average`` over the tasks. ``stderr=True``: the standard errors in the same layout (the
    average's is sqrt(sum of squares) / number of tasks, treating tasks as independent)."""
    rows = main_metric_rows(df)
    column = "stderr" if stderr else "value"
    wide = rows.pivot_table(index=["strategy", "sparsity"], columns="task", values=column, sort=False) * 100
    tasks = list(dict.fromkeys(rows["task"]))
    wide = wide[tasks]
    if stderr:
        wide["average"] = np.sqrt((wide[tasks] ** 2).sum(axis=1)) / len(tasks)
    else:
        wide["average"] = wide[tasks].mean(axis=1)
    wide = wide.reindex(pd.MultiIndex.from_tuples(run_order(rows), names=["strategy", "sparsity"]))
    wide.columns.name = None
    return wide


def formatted_table(df: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """:func:`accuracy_table` as text cells ``"65.3 ± 3.9"`` (percent ± one standard error)."""
    values, errors = accuracy_table(df), accuracy_table(df, stderr=True)
    cells = {c: [f"{a:.{digits}f} ± {b:.{digits}f}" for a, b in zip(values[c], errors[c])] for c in values}
    return pd.DataFrame(cells, index=values.index)


def differences(df: pd.DataFrame, reference: str = "uniform") -> pd.DataFrame:
    """Each strategy minus ``reference`` at the same sparsity and task (and dense minus each run), in points
    of %: ``diff``, ``se`` = sqrt(se1^2 + se2^2) (conservative: the same examples make the errors correlated,
    so the paired error is smaller), ``z`` = diff / se, ``beyond_2se`` = |z| > 2."""
    rows = main_metric_rows(df)
    out = []
    for (task, sparsity), group in rows.groupby(["task", "sparsity"], sort=False):
        ref = group[group["strategy"] == reference]
        if ref.empty or sparsity == 0:
            continue
        r = ref.iloc[0]
        for _, row in group[group["strategy"] != reference].iterrows():
            se = math.hypot(row["stderr"], r["stderr"]) * 100
            diff = (row["value"] - r["value"]) * 100
            out.append({"task": task, "sparsity": sparsity, "strategy": row["strategy"], "versus": reference,
                        "diff": diff, "se": se, "z": diff / se if se > 0 else math.nan,
                        "beyond_2se": bool(se > 0 and abs(diff) > 2 * se)})
    return pd.DataFrame(out, columns=["task", "sparsity", "strategy", "versus", "diff", "se", "z", "beyond_2se"])


def near_chance(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose reported accuracy is within two standard errors of guessing (:data:`CHANCE`): do not read
    differences between them as differences in ability."""
    rows = main_metric_rows(df)
    chance = rows["task"].map(CHANCE)
    close = (rows["value"] - chance).abs() <= 2 * rows["stderr"]
    return rows.loc[close & chance.notna(), ["strategy", "sparsity", "task", "metric", "value", "stderr", "n"]]


def perplexity_join(df: pd.DataFrame, perplexity: pd.DataFrame) -> pd.DataFrame:
    """Average accuracy (%) beside perplexity for every (strategy, sparsity) that both tables hold."""
    average = accuracy_table(df)["average"].rename("accuracy").reset_index()
    ppl = perplexity[["strategy", "sparsity", "perplexity"]].drop_duplicates(["strategy", "sparsity"])
    average["sparsity"], ppl = average["sparsity"].round(6), ppl.assign(sparsity=ppl["sparsity"].round(6))
    return average.merge(ppl, on=["strategy", "sparsity"], how="inner")


def rank_agreement(df: pd.DataFrame, perplexity: pd.DataFrame) -> dict:
    """Spearman rank correlation between -perplexity and average accuracy, pooled and within each sparsity level.

    Returns ``{"pooled", "by_level", "rho", "p", "n", "rows"}``: ``pooled`` is a ``report.verdicts.Correlation``
    over every shared run (dense and all levels together: it mostly says that sparser runs are worse on both),
    ``by_level`` maps each sparsity > 0 to the Correlation over the runs at that level (the question that matters:
    does perplexity order the *allocations* as accuracy does?), each with a 95% Fisher-z interval; ``rho``/``p``/
    ``n`` repeat the pooled values."""
    from .verdicts import rank_correlation

    rows = perplexity_join(df, perplexity)
    pooled = rank_correlation(-rows["perplexity"], rows["accuracy"])
    by_level = {float(s): rank_correlation(-g["perplexity"], g["accuracy"])
                for s, g in rows[rows["sparsity"] > 0].groupby("sparsity", sort=True)}
    return {"pooled": pooled, "by_level": by_level, "rho": pooled.rho, "p": pooled.p, "n": pooled.n, "rows": rows}


def rank_sentences(agree: dict) -> list[str]:
    """The rank agreement in words: within each level first (with its interval), then the pooled value."""
    out = [f"Within {s:.0%} sparsity, Spearman rank correlation of -perplexity with average accuracy: "
           f"{c.text()}, " + ("95% Fisher-z interval." if math.isfinite(c.low) else
                              "no interval (Fisher z needs 4 runs and |rho| < 1).")
           for s, c in agree["by_level"].items()]
    out.append(f"Pooled over dense and every level ({agree['pooled'].text()}), the correlation mostly says that "
               "sparser runs are worse on both measures.")
    return out


def verdict_table(df: pd.DataFrame, reference: str = "uniform") -> pd.DataFrame:
    """Every run against ``reference`` at the same sparsity and task (each task's reported metric), through
    ``report.verdicts.accuracy_verdicts``: change in points with a +-1.96 combined-se interval and a verdict;
    pairs where both accuracies are 0 (LAMBADA at high sparsity) are "not compared: both 0"."""
    from .verdicts import accuracy_verdicts

    return accuracy_verdicts(main_metric_rows(df).drop(columns="label"), baseline=reference)


def setting_line(df: pd.DataFrame) -> str:
    """One sentence: model, examples per task, tasks, data source and split."""
    tasks = ", ".join(f"{t} ({s})" for t, s in dict(zip(df["task"], df.get("split", df["task"]))).items())
    limit = int(df["n"].max()) if len(df) else 0
    data = "/".join(sorted(set(df["data"]))) if "data" in df else "?"
    model = df["model"].iloc[0] if "model" in df and len(df) else "?"
    return f"{model}: first {limit} examples per task of {tasks}; data: {data}; lm-eval's prompts and metrics."


def conclusions(df: pd.DataFrame, perplexity: pd.DataFrame | None = None, reference: str = "uniform") -> list[str]:
    """Sentences written from the numbers by the verdict engine: which differences to ``reference`` are beyond
    their 95% interval (0-vs-0 pairs not compared), chance-level rows, and the rank agreement with perplexity
    within each sparsity level."""
    from .verdicts import BETTER, BOTH_ZERO, WORSE

    lines = []
    table = verdict_table(df, reference)
    zero = table[table["verdict"] == BOTH_ZERO]
    compared = table[table["verdict"] != BOTH_ZERO]
    big = compared[compared["verdict"].isin([BETTER, WORSE])]
    lines.append(f"{len(big)} of {len(compared)} differences to {reference} lie outside their 95% interval "
                 "(+-1.96 combined standard errors)"
                 + (": " + "; ".join(f"{r.label} @ {r.sparsity:g} on {r.task} {r.change:+.1f} points "
                                     f"[{r.low:+.1f}, {r.high:+.1f}], {r.verdict}" for r in big.itertuples())
                    if len(big) else "")
                 + (f"; {len(zero)} more pair{'s' if len(zero) > 1 else ''} score{'' if len(zero) > 1 else 's'} 0 on both sides ("
                    + ", ".join(sorted({f"{r.task} @ {r.sparsity:g}" for r in zero.itertuples()}))
                    + ") and are not compared" if len(zero) else "") + ".")
    chance = near_chance(df)
    if len(chance):
        per_task = chance.groupby("task").size()
        lines.append("Within two standard errors of chance: " + ", ".join(
            f"{t} ({k} run{'s' if k > 1 else ''})" for t, k in per_task.items()) + "; do not over-read them.")
    if perplexity is not None:
        agree = rank_agreement(df, perplexity)
        if agree["n"] >= 3:
            lines += rank_sentences(agree)
    return lines


def _model_names(models) -> tuple[str, ...]:
    """``models``, or every built-in model (``core.builtin_models.BUILTIN_MODELS``, in their order) when None."""
    from ..core.builtin_models import BUILTIN_MODELS

    return tuple(BUILTIN_MODELS) if models is None else tuple(models)


def committed_by_model(results_dir: str | os.PathLike | None = None, models=None) -> dict[str, pd.DataFrame]:
    """``{model: zero-shot table}`` for every built-in model (``core.builtin_models.BUILTIN_MODELS``, in their
    order, or ``models``) whose ``zeroshot_<model>.csv`` is in ``results_dir`` (default: the committed tables);
    models without one are left out here and named by :func:`coverage_sentence`."""
    out = {}
    for model in _model_names(models):
        path = result_path("zeroshot", model, results_dir)
        if path.exists():
            out[model] = load_zeroshot(model, path)
    return out


def coverage_sentence(tables: dict[str, pd.DataFrame], models=None) -> str:
    """Which models have a zero-shot table (with their runs and examples per task) and which have none yet."""
    models = _model_names(models)
    have = [f"{m} ({len(run_order(main_metric_rows(t)))} runs, {int(t['n'].max())} examples per task of "
            f"{', '.join(dict.fromkeys(t['task']))})" for m, t in tables.items()]
    missing = [m for m in models if m not in tables]
    text = "Zero-shot tables: " + ("; ".join(have) if have else "none") + "."
    return text + (f" Not yet measured: {', '.join(missing)}." if missing else "")
