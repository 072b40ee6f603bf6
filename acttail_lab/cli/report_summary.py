"""The summary page of one ``acttail-lab report``: ``OUT/index.html``.

Everything on it is computed from the tables in ``OUT/results`` by the verdict engine (:mod:`report.verdicts`):

* the verdict of every strategy x target against uniform (better / inside the noise / worse), with the change in
  perplexity and its 95% paired-bootstrap interval over the evaluation windows, and the count sentence;
* zero-shot accuracy against uniform per task (points, +-1.96 combined standard errors);
* the headline figure (perplexity against target, every strategy; title computed over every drawn line);
* the correlation of alpha with the TopK error at 80% when the sensitivity part ran;
* the settings, the versions, and the seconds each part took; links to the executed notebooks' pages.
"""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from .report_plan import ReportPlan

STYLE = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;line-height:1.4}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
         ".better{background:#d9f2d9}.worse{background:#f7d4d4}.noise{background:#eee}")


def perplexity_section(plan: ReportPlan, results: Path) -> tuple[str, pd.DataFrame]:
    """HTML of the perplexity verdicts, and the verdict table (:data:`report.verdicts.VERDICT_COLUMNS`)."""
    from ..core.paths import result_path
    from ..report import verdicts
    from ..report.bootstrap import load_windows
    from ..report.results import load_results

    runs = load_results(result_path("perplexity", plan.model_key, results))
    windows = load_windows("perplexity", plan.model_key, results)
    table = verdicts.perplexity_verdicts(runs, windows)
    shown = table.assign(
        target=table["sparsity"].map("{:.0%}".format),
        change=table["change"].map("{:+.1f}%".format),
        interval=[f"[{lo:+.1f}%, {hi:+.1f}%]" for lo, hi in zip(table["low"], table["high"])],
        perplexity=table["value"].map("{:.2f}".format), uniform=table["baseline_value"].map("{:.2f}".format))
    rows = "".join(
        f"<tr class='{_css(r.verdict)}'><td>{html.escape(r.label)}</td><td>{r.target}</td><td>{r.perplexity}</td>"
        f"<td>{r.uniform}</td><td>{r.change}</td><td>{r.interval}</td><td>{html.escape(r.verdict)}"
        f"{' (' + html.escape(r.note) + ')' if r.note else ''}</td></tr>" for r in shown.itertuples())
    dense = runs.loc[runs["strategy"] == "dense", "perplexity"]
    lead = f"Dense perplexity {dense.iloc[0]:.2f}. " if len(dense) else ""
    body = (f"<h2>Perplexity against uniform</h2><p>{lead}{html.escape(verdicts.count_sentence(table))}</p>"
            "<table><tr><th>strategy</th><th>target</th><th>perplexity</th><th>uniform</th><th>change</th>"
            f"<th>95% interval</th><th>verdict</th></tr>{rows}</table>")
    return body, table


def zeroshot_section(plan: ReportPlan, results: Path) -> str:
    """HTML of the zero-shot verdicts (accuracy, against uniform at the same target, per task)."""
    from ..report import verdicts

    path = results / f"zeroshot_{plan.model_key}.csv"
    if not path.exists():
        return "<h2>Zero-shot accuracy</h2><p>Not measured in this report.</p>"
    scores = pd.read_csv(path)
    acc = scores[scores["metric"] == "acc"]
    table = verdicts.accuracy_verdicts(acc)
    dense = acc[acc["strategy"] == "dense"].set_index("task")["value"]
    rows = "".join(
        f"<tr class='{_css(r.verdict)}'><td>{html.escape(r.task)}</td><td>{html.escape(r.label)}</td>"
        f"<td>{r.sparsity:.0%}</td><td>{r.value:.1f}</td><td>{r.baseline_value:.1f}</td><td>{r.change:+.1f}</td>"
        f"<td>[{r.low:+.1f}, {r.high:+.1f}]</td><td>{html.escape(r.verdict)}</td></tr>" for r in table.itertuples())
    n = int(acc["n"].iloc[0]) if len(acc) else 0
    dense_text = ", ".join(f"{task} {100 * value:.1f}%" for task, value in dense.items())
    return (f"<h2>Zero-shot accuracy against uniform</h2><p>lm-eval, first {n} examples per task; dense: "
            f"{dense_text}. {html.escape(verdicts.count_sentence(table))}</p>"
            "<table><tr><th>task</th><th>strategy</th><th>target</th><th>accuracy %</th><th>uniform %</th>"
            f"<th>change (points)</th><th>95% interval</th><th>verdict</th></tr>{rows}</table>")


def sensitivity_section(plan: ReportPlan, results: Path) -> str:
    """One sentence: Spearman rho of alpha (peak rule) with the TopK error at 80%, when measured."""
    path = results / f"{plan.model_key}_correlations.csv"
    if not path.exists():
        return "<h2>Does alpha predict sensitivity?</h2><p>Not measured at this size (no TopK-error table).</p>"
    table = pd.read_csv(path)
    pick = table[(table["group_by"] == "all") & (table["metric"] == "alpha") & (table["rule"] == "peak")]
    lines = [f"rho(alpha, {r.sensitivity}) = {r.rho:+.2f} over {int(r.n)} projections" for r in pick.itertuples()]
    return ("<h2>Does alpha predict sensitivity?</h2><p>ActTail's premise is a negative correlation (heavier tails, "
            "smaller alpha, tolerate less sparsity). Spearman rank correlations, alpha from the peak rule: "
            + html.escape("; ".join(lines) or "none") + ".</p>")


def headline_figure(plan: ReportPlan, results: Path, folder: Path) -> str:
    """The headline figure as ``OUT/figures/headline.png``; its ``<img>`` tag (a pyplot-free Figure, as every plot
    helper returns: nothing to close)."""
    from ..core.paths import result_path
    from ..plots.perplexity import plot_headline
    from ..report.bootstrap import load_windows
    from ..report.results import load_results

    runs = load_results(result_path("perplexity", plan.model_key, results))
    ax = plot_headline(runs, what=plan.label, windows=load_windows("perplexity", plan.model_key, results))
    folder.mkdir(exist_ok=True)
    path = folder / "headline.png"
    ax.figure.savefig(path, dpi=110, bbox_inches="tight")
    return f"<img src='figures/{path.name}' alt='perplexity against target sparsity' style='max-width:100%'>"


def write_summary(plan: ReportPlan, results: Path, pages: list[Path], manifest: dict) -> Path:
    """Write ``OUT/index.html`` from the report's tables; returns its path."""
    from ..core.cache import atomic_write_text

    perplexity, _ = perplexity_section(plan, results)
    parts = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.0f}</td></tr>" for k, v in manifest["seconds"].items())
    settings = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in manifest["settings"].items())
    versions = ", ".join(f"{k} {v}" for k, v in manifest["versions"].items() if v)
    links = "".join(f"<li><a href='pages/{p.name}'>{html.escape(p.stem)}</a></li>" for p in pages)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>acttail-lab report: {html.escape(plan.label)}"
            f"</title><style>{STYLE}</style></head><body><h1>Does HT-SR-guided sparsity help on "
            f"{html.escape(plan.label)}?</h1><p>Corpus {html.escape(plan.corpus)!s}, size {plan.size.name}; "
            f"made by <code>{html.escape(plan.command)}</code>.</p>"
            f"{headline_figure(plan, results, plan.out / 'figures')}{perplexity}{zeroshot_section(plan, results)}"
            f"{sensitivity_section(plan, results)}<h2>Notebooks</h2><ul>{links}</ul>"
            f"<h2>Settings</h2><table>{settings}</table><h2>Seconds per part</h2><p>Of the run that wrote this "
            f"page (runs so far: {manifest.get('runs', 1)}); a resumed run reads the parts that finished before "
            f"from the caches, in seconds.</p><table>{parts}</table>"
            f"<h2>Versions</h2><p>{html.escape(versions)}; git {html.escape(str(manifest['git']))}</p></body></html>")
    index = plan.out / "index.html"
    atomic_write_text(index, page)
    return index


def _css(verdict: str) -> str:
    return {"better": "better", "worse": "worse", "inside the noise": "noise"}.get(verdict, "")
