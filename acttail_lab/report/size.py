"""The answer as a function of size: each allocation's perplexity change against uniform, per built-in model, beside
the model's parameter count and ActTail's claimed points at 7B-13B.

Inputs: the committed *Pride and Prejudice* grids ``perplexity_<model>.csv`` with their ``_windows`` tables of
per-window losses (``report.cross_model.load_grids``; regenerate with ``python scripts/reproduce_perplexity.py
--model M``), for every built-in model (``core.builtin_models.BUILTIN_MODELS``). Outputs:

- :func:`size_table`: tidy, one row per model x strategy x target (:data:`SIZE_COLUMNS`): the parameter count
  (:data:`PARAMETERS`), the % change of perplexity against uniform at the same target on the same windows with its
  95% paired-bootstrap interval and the verdict engine's verdict (``report.cross_model.cross_model_table``: judged
  beyond the committed numeric floor across CPUs; a collapsed side as in ``report.verdicts``). A model whose grid
  is not committed, or a row its grid lacks, is a row with ``status`` "no grid" / "no row" and verdict
  :data:`MISSING`, never left out;
- :func:`claimed_points` (the abstract's three points), :func:`size_title`, :func:`size_sentences`,
  :func:`size_wide` (strategy x (model, target) texts).
"""
from __future__ import annotations

import math

import pandas as pd

from ..core.builtin_models import BUILTIN_MODELS
from ..core.errors import ActTailError
from .cross_model import cross_model_table, load_grids
from .headline import PAPER_CLAIMS, collapse_threshold
from .verdicts import BETTER, COLLAPSED, NOISE, WORSE

SIZE_MODELS = tuple(BUILTIN_MODELS)
"""Every built-in model, smallest first as registered; those without a committed grid read "not yet measured"."""
SIZE_STRATEGIES = ("acttail", "acttail-block", "teal-greedy-fine", "rotated-uniform")
"""ActTail per projection and per layer, the upper reference of TopK allocations, and another method (rotation)."""
ALPHA_GUIDED = ("acttail", "acttail-block")
SIZE_TARGETS = (0.5, 0.7, 0.8)
TEXT = "austen"
MISSING = "not yet measured"
"""Verdict of a row with no measurement (``status`` says why: ``"no grid"`` or ``"no row"``)."""
MEASURED = "measured"
SIZE_COLUMNS = ("model", "parameters", "strategy", "sparsity", "change_pct", "ci_low_pct", "ci_high_pct", "verdict",
                "status", "perplexity", "uniform", "n_windows", "tokens", "collapsed", "uniform_collapsed")
"""Columns of :func:`size_table`; percentages are 100 (ppl / ppl_uniform - 1); NaN where ``status`` is not measured."""

ARCHITECTURES = {
    "smollm2-135m": dict(vocab=49152, hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, head_dim=64,
                         qkv_bias=False, layer_norms=2, qk_norm=False),
    "gemma3-270m": dict(vocab=262144, hidden=640, intermediate=2048, layers=18, heads=4, kv_heads=1, head_dim=256,
                        qkv_bias=False, layer_norms=4, qk_norm=True),
    "qwen2.5-coder-1.5b": dict(vocab=151936, hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2,
                               head_dim=128, qkv_bias=True, layer_norms=2, qk_norm=False),
}
"""Shapes of the built-in models, from each checkpoint's ``config.json`` (HuggingFaceTB/SmolLM2-135M-Instruct,
google/gemma-3-270m, Qwen/Qwen2.5-Coder-1.5B-Instruct); all three tie the output layer to the embedding. The
projections' part agrees with the committed spectra tables (``d_out x d_in`` summed over projections)."""


def parameter_count(vocab: int, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int,
                    head_dim: int, qkv_bias: bool, layer_norms: int, qk_norm: bool) -> int:
    """Parameters of a tied-embedding LLaMA-style decoder: embedding, per layer the seven projections (q/k/v biases
    when ``qkv_bias``), ``layer_norms`` RMSNorm weights of width ``hidden`` (and per-head q/k norms when
    ``qk_norm``), and the final norm. SmolLM2-135M: 134,515,008; Gemma 3 270M: 268,098,176; Qwen2.5-1.5B:
    1,543,714,304 (its model card: 1.54B)."""
    q, kv = heads * head_dim, kv_heads * head_dim
    attention = hidden * q + 2 * hidden * kv + q * hidden + (q + 2 * kv if qkv_bias else 0)
    per_layer = attention + 3 * hidden * intermediate + layer_norms * hidden + (2 * head_dim if qk_norm else 0)
    return vocab * hidden + layers * per_layer + hidden


PARAMETERS = {name: parameter_count(**shape) for name, shape in ARCHITECTURES.items()}
"""Parameter count of each built-in model (:func:`parameter_count` of :data:`ARCHITECTURES`)."""
CLAIMED_PARAMETERS = {"LLaMA-2-7B": 6.74e9, "LLaMA-2-13B": 13.0e9, "Mistral-7B": 7.24e9}
"""Parameter counts of the models ActTail's abstract reports on (LLaMA-2 paper, arXiv 2307.09288: 6.74B and 13.0B;
Mistral-7B-v0.1 model card: 7.24B)."""


def claimed_points() -> pd.DataFrame:
    """ActTail's three claimed points (its abstract, arXiv 2603.12272; ``report.headline.PAPER_CLAIMS``): acttail
    against uniform at 80%. Columns model, parameters, sparsity, change_pct (percent), source."""
    claims = PAPER_CLAIMS.assign(parameters=PAPER_CLAIMS["model"].map(CLAIMED_PARAMETERS),
                                 source="ActTail abstract (arXiv 2603.12272)")
    return claims[["model", "parameters", "sparsity", "change_pct", "source"]]


def size_text(parameters: float) -> str:
    """A parameter count in words: 134515008 -> "135M", 1.54e9 -> "1.5B", 13e9 -> "13B"."""
    return f"{parameters / 1e9:.2g}B" if parameters >= 1e9 else f"{parameters / 1e6:.0f}M"


def load_size_grids(results_dir=None, models=SIZE_MODELS) -> dict:
    """``{(model, "austen"): (runs, windows)}`` of the committed *Pride and Prejudice* grids (missing ones left
    out; :func:`size_table` reports them)."""
    return load_grids(models, results_dir, {"perplexity": TEXT})


def _measured(grid, strategies, n_boot: int, seed: int) -> pd.DataFrame:
    """One grid's cross-model rows with the uniform side's collapse (empty when it has no comparable run)."""
    try:
        rows = cross_model_table({("model", TEXT): grid}, strategies, n_boot=n_boot, seed=seed)
    except ActTailError:
        return pd.DataFrame()
    try:
        limit = collapse_threshold(grid[0])
    except ActTailError:
        limit = math.inf
    return rows.assign(uniform_collapsed=rows["uniform"] >= limit)


def _verdict(row) -> str:
    """The verdict engine's rule for a collapsed side (``report.verdicts``), else the interval's verdict."""
    if row.collapsed and row.uniform_collapsed:
        return COLLAPSED
    if row.collapsed or row.uniform_collapsed:
        return WORSE if row.collapsed else BETTER
    return row.verdict


def size_table(grids: dict, models=SIZE_MODELS, strategies=SIZE_STRATEGIES, targets=SIZE_TARGETS,
               parameters: dict | None = None, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Perplexity change against uniform per model x strategy x target, with each model's parameter count.

    Args:
        grids: ``{(model, text): (runs, windows)}`` (:func:`load_size_grids`); the first grid of each model counts.
        models: every model to report, measured or not; parameters: model -> count (default :data:`PARAMETERS`).
        strategies, targets: the cells to report. n_boot, seed: of the paired bootstrap over windows.
    Returns:
        :data:`SIZE_COLUMNS`, one row per model x strategy x target in that order; rows without a measurement keep
        their place with ``status`` "no grid" or "no row", verdict :data:`MISSING` and NaN numbers.
    """
    counts = PARAMETERS if parameters is None else parameters
    unknown = [m for m in models if m not in counts]
    if unknown:
        raise ActTailError(f"No parameter count for {unknown}. Fix: add its shape to report.size.ARCHITECTURES or "
                           "pass parameters={model: count}.")
    by_model = {}
    for (model, _text), grid in grids.items():
        by_model.setdefault(model, grid)
    rows = []
    for model in models:
        measured = _measured(by_model[model], strategies, n_boot, seed) if model in by_model else pd.DataFrame()
        found = {(r.strategy, round(float(r.sparsity), 6)): r for r in measured.itertuples()}
        for strategy in strategies:
            for target in targets:
                row = found.get((strategy, round(float(target), 6)))
                base = dict(model=model, parameters=int(counts[model]), strategy=strategy, sparsity=float(target))
                if row is None:
                    rows.append(dict(base, verdict=MISSING, status="no grid" if model not in by_model else "no row"))
                    continue
                rows.append(dict(base, change_pct=row.change_pct, ci_low_pct=row.ci_low_pct,
                                 ci_high_pct=row.ci_high_pct, verdict=_verdict(row), status=MEASURED,
                                 perplexity=row.perplexity, uniform=row.uniform, n_windows=int(row.n_windows),
                                 tokens=int(row.tokens), collapsed=bool(row.collapsed),
                                 uniform_collapsed=bool(row.uniform_collapsed)))
    return pd.DataFrame(rows).reindex(columns=list(SIZE_COLUMNS))


# --------------------------------------------------------------------------- words
def measured(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`size_table` that were measured."""
    return table[table["status"] == MEASURED]


def unmeasured_models(table: pd.DataFrame) -> list[str]:
    """Models of the table with no measured row at all."""
    done = set(measured(table)["model"])
    return [m for m in dict.fromkeys(table["model"]) if m not in done]


def not_yet_measured(table: pd.DataFrame) -> str:
    """The models with no measured row (``"m3"``), and those measured at some targets only (``"m2 at 70%, 80%"``),
    comma-separated; "" when every model has a row at every target."""
    parts = []
    for model, rows in table.groupby("model", sort=False):
        done = set(rows.loc[rows["status"] == MEASURED, "sparsity"])
        if not done:
            parts.append(model)
        elif len(done) < rows["sparsity"].nunique():
            parts.append(f"{model} at " + ", ".join(f"{t:.0%}" for t in sorted(set(rows["sparsity"]) - done)))
    return ", ".join(parts)


def _cell(row) -> str:
    """``"+9% [+7, +10]"``, ``"collapsed"`` or ``"not yet measured"``."""
    if row.status != MEASURED:
        return MISSING
    if row.collapsed or row.uniform_collapsed:
        return "collapsed" if row.collapsed else "uniform collapsed"
    return f"{row.change_pct:+.0f}% [{row.ci_low_pct:+.0f}, {row.ci_high_pct:+.0f}]" + (" ~" if row.verdict == NOISE
                                                                                           else "")


def size_wide(table: pd.DataFrame) -> pd.DataFrame:
    """Strategy x (model with its size, target) texts of :func:`_cell` (``~``: inside the noise)."""
    cells = table.assign(cell=[_cell(r) for r in table.itertuples()],
                         size=[f"{m} ({size_text(p)})" for m, p in zip(table["model"], table["parameters"])])
    wide = cells.pivot(index="strategy", columns=["size", "sparsity"], values="cell")
    return wide.loc[list(dict.fromkeys(table["strategy"])), list(dict.fromkeys(zip(cells["size"], cells["sparsity"])))]


def _by_size(rows: pd.DataFrame) -> str:
    """``"+1% (135M), +366% (268M), not yet measured (1.5B)"`` over the rows' models."""
    return ", ".join(f"{_cell(r).split(' [')[0]} ({size_text(r.parameters)})" for r in rows.itertuples())


def _falls_with_size(table: pd.DataFrame, strategy: str) -> tuple[int, int]:
    """(targets where the change falls at every step up in size, targets with two or more measured models)."""
    rows = measured(table)
    rows = rows[(rows["strategy"] == strategy) & ~rows["collapsed"] & ~rows["uniform_collapsed"]]
    falls = compared = 0
    for _, part in rows.groupby("sparsity"):
        if len(part) >= 2:
            compared += 1
            falls += int(part.sort_values("parameters")["change_pct"].diff().dropna().lt(0).all())
    return falls, compared


def size_title(table: pd.DataFrame, strategy: str = "acttail", target: float = 0.8) -> str:
    """The figure's finding: ``strategy`` against uniform at ``target`` per model size, beside the abstract's claims,
    the alpha-guided verdict counts, and the models not yet measured."""
    claims = claimed_points()
    at = table[(table["strategy"] == strategy) & ((table["sparsity"] - target).abs() < 1e-9)]
    done = measured(table)
    guided = done[done["strategy"].isin(ALPHA_GUIDED)]
    text = (f"At {target:.0%}, {strategy} against uniform: {_by_size(at.sort_values('parameters'))}; "
            f"ActTail's abstract claims {claims['change_pct'].max():+.0f}% to {claims['change_pct'].min():+.0f}% at "
            f"{size_text(claims['parameters'].min())}-{size_text(claims['parameters'].max())}. Alpha-guided budgets "
            f"({', '.join(ALPHA_GUIDED)}) beat uniform beyond the noise in {int((guided['verdict'] == BETTER).sum())} "
            f"of {len(guided)} measured cells, worse in {int((guided['verdict'] == WORSE).sum())}")
    missing = not_yet_measured(table)
    return text + (f"; not yet measured: {missing}" if missing else "") + "."


def size_sentences(table: pd.DataFrame) -> list[str]:
    """The size comparison as sentences computed from :func:`size_table`: what was measured, per strategy the
    verdicts and the trend with size, and the claims beside the largest measured model."""
    done = measured(table)
    sizes = table.drop_duplicates("model")
    missing = unmeasured_models(table)
    gaps = not_yet_measured(table)
    lines = ["Models by size: " + ", ".join(f"{r.model} ({r.parameters:,} parameters)" for r in sizes.itertuples())
             + (f"; not yet measured: {gaps}" if gaps else "; every one measured at every target") + "."]
    holes = table[(table["status"] == "no row") & ~table["model"].isin(missing)]
    if len(holes):
        lines.append("Rows not yet measured in committed grids: " + ", ".join(
            f"{r.model} {r.strategy} at {r.sparsity:.0%}" for r in holes.itertuples()) + ".")
    for strategy, rows in done.groupby("strategy", sort=False):
        falls, compared = _falls_with_size(table, strategy)
        counts = {v: int((rows["verdict"] == v).sum()) for v in (BETTER, NOISE, WORSE)}
        lines.append(f"{strategy}: better than uniform in {counts[BETTER]} of {len(rows)} measured model x target "
                     f"cells, inside the noise in {counts[NOISE]}, worse in {counts[WORSE]}; its change against uniform falls "
                     f"at every step up in size at {falls} of {compared} targets with two or more models measured.")
    if len(done):
        largest = done[done["parameters"] == done["parameters"].max()]
        own = largest[(largest["strategy"] == "acttail") & ((largest["sparsity"] - 0.8).abs() < 1e-9)]
        claims = claimed_points()
        said = ", ".join(f"{c.change_pct:+.1f}% on {c.model}" for c in claims.itertuples())
        lines.append(f"ActTail's abstract claims {said} at 80%; the largest model measured here, {largest['model'].iloc[0]} "
                     f"({size_text(largest['parameters'].iloc[0])}), gives "
                     + (f"{_cell(own.iloc[0])} ({own['verdict'].iloc[0]})." if len(own) else "no acttail row at 80%."))
    return lines
