"""The numeric floor of a perplexity comparison: how far a row moves between CPUs with the same code and inputs.

Float32 results differ in their low bits between CPU kernel capabilities (AVX2, AVX-512, ...), and TopK at high
sparsity amplifies them. ``data/results/numeric_floor.csv`` (``scripts/measure_numeric_floor.py``) holds, per
committed row regenerated on one host, its relative drift from the same row made on another host.

:func:`numeric_floor` turns that into a floor per target sparsity, in percent: the largest absolute drift among the
rows measured at the nearest measured target at or below it (collapsed runs left out: they are never compared
as numbers). The verdict engine calls a change better or worse only when its whole interval lies beyond the
floor; within it, the change is inside the noise, since another CPU could reverse it.
"""
from __future__ import annotations

import functools
import math

import pandas as pd

from ..core.paths import RESULTS_DIR
from .headline import collapsed

FLOOR_FILE = "numeric_floor.csv"


@functools.lru_cache(maxsize=1)
def floor_rows() -> pd.DataFrame:
    """The committed drift rows (empty when the file is missing), collapsed runs left out."""
    path = RESULTS_DIR / FLOOR_FILE
    if not path.exists():
        return pd.DataFrame(columns=["sparsity", "drift"])
    rows = pd.read_csv(path)
    keep = pd.Series(True, index=rows.index)
    for model, part in rows.groupby("model"):
        for column in ("perplexity", "perplexity_old"):
            keep.loc[part.index] &= ~collapsed(part.assign(perplexity=part[column]))
    return rows[keep & (rows["sparsity"] > 0)]


def floor_table(rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per measured target: number of rows and the largest absolute drift, in percent (``floor_pct``)."""
    rows = floor_rows() if rows is None else rows
    if rows.empty:
        return pd.DataFrame(columns=["sparsity", "rows", "floor_pct"])
    grouped = rows.assign(abs_pct=100.0 * rows["drift"].abs()).groupby("sparsity")["abs_pct"]
    return pd.DataFrame({"rows": grouped.size(), "floor_pct": grouped.max()}).reset_index()


def numeric_floor(sparsity: float, rows: pd.DataFrame | None = None) -> float:
    """The floor in percent at ``sparsity``: that of the nearest measured target at or below it (the lowest
    measured target's below all of them); 0 for dense (sparsity 0), for a NaN target, or with no measurements."""
    if sparsity is None or not math.isfinite(sparsity) or sparsity <= 0:
        return 0.0
    table = floor_table(rows)
    if table.empty:
        return 0.0
    below = table[table["sparsity"] <= sparsity + 1e-9]
    pick = below.iloc[-1] if not below.empty else table.iloc[0]
    return float(pick["floor_pct"])


def floor_sentence(rows: pd.DataFrame | None = None) -> str:
    """One sentence stating the measured floor per target and where it comes from."""
    table = floor_table(rows)
    if table.empty:
        return "No numeric floor across CPUs is committed; verdicts use the bootstrap interval alone."
    parts = ", ".join(f"{r.sparsity:.0%}: {r.floor_pct:.2f}% ({int(r.rows)} rows)" for r in table.itertuples())
    return ("Numeric floor across CPUs (largest drift of a committed row re-made on another CPU with the same code "
            f"and inputs, per target): {parts}. A change counts as better or worse only when its whole interval "
            "lies beyond it.")
