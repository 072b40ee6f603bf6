"""Tables around an allocation: checking inputs, attaching alphas, saving, loading, summarising.

An *allocation* is a DataFrame with one row per projection: identity columns
(layer, projection, [name, d_out, d_in], n_params, [alpha, xmin_rule]), the
relative budget ``ratio``, the ``sparsity`` (fraction of input channels zeroed,
in [0, 1)), and the columns that say how it was made (label, strategy, target
and every option used), so a saved CSV describes itself.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.cache import atomic_path
from ..core.errors import AllocationError
from ..core.models import PROJECTIONS
from ..core.reference import with_alphas

REQUIRED_COLUMNS = ("layer", "projection", "n_params")
IDENTITY_COLUMNS = ("layer", "projection", "name", "d_out", "d_in", "n_params", "alpha", "xmin_rule")
ALLOCATION_COLUMNS = REQUIRED_COLUMNS + ("sparsity",)


def validate_table(table: pd.DataFrame, needs_alpha: bool) -> None:
    """Raise AllocationError unless ``table`` can be allocated (columns, n_params, alpha, duplicates)."""
    if not isinstance(table, pd.DataFrame) or table.empty:
        raise AllocationError("The projection table is empty or not a DataFrame. Fix: pass projection_table(model) "
                              "or a spectra / published_alphas table.")
    needed = REQUIRED_COLUMNS + (("alpha",) if needs_alpha else ())
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise AllocationError(
            f"The table lacks column(s) {missing} (has {list(table.columns)}). Fix: "
            + ("add alphas with with_alphas(shapes, alphas) or use a spectra table. " if "alpha" in missing else "")
            + "Start from models.projection_table(model) or reference.shape_table(key)."
        )
    n_params = pd.to_numeric(table["n_params"], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(n_params)) or np.any(n_params <= 0):
        raise AllocationError("n_params must be a positive number on every row. Fix: check the shape table.")
    if table.duplicated(["layer", "projection"]).any():
        dup = table.loc[table.duplicated(["layer", "projection"]), ["layer", "projection"]].iloc[0].tolist()
        raise AllocationError(f"Row (layer, projection) = {dup} appears twice. Fix: one row per projection.")
    if needs_alpha:
        alpha = pd.to_numeric(table["alpha"], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(alpha)
        if bad.any():
            rows = table.loc[bad, ["layer", "projection"]].head(3).to_dict("records")
            raise AllocationError(
                f"{int(bad.sum())} alpha value(s) are NaN or inf (first: {rows}). Fix: re-fit those spectra "
                "(see the spectra module's warnings) or drop the rows before allocating."
            )


def check_matches(allocation: pd.DataFrame, projection_table: pd.DataFrame) -> None:
    """Raise AllocationError if ``allocation`` was made for a different model than ``projection_table``.

    Compares row count, (layer, projection) order, names (when both have them)
    and n_params, and names the first mismatch.
    """
    what = "allocation vs model"
    if len(allocation) != len(projection_table):
        raise AllocationError(
            f"{what}: the allocation has {len(allocation)} projections "
            f"({allocation['layer'].nunique()} layers), the model {len(projection_table)} "
            f"({projection_table['layer'].nunique()} layers). Fix: allocate from this model's own alphas."
        )
    a = allocation.reset_index(drop=True)
    b = projection_table.reset_index(drop=True)
    columns = ["layer", "projection", "n_params"] + (["name"] if "name" in a and "name" in b else [])
    for column in columns:
        differs = a[column].astype(str) != b[column].astype(str)
        if differs.any():
            i = int(np.flatnonzero(differs.to_numpy())[0])
            raise AllocationError(
                f"{what}: {column} differs at row {i} (allocation {a[column][i]!r}, model {b[column][i]!r}; "
                f"{int(differs.sum())} rows differ). Fix: this allocation was made for another model; "
                "re-allocate from this model's projection table."
            )


def summary(allocation: pd.DataFrame, by: str = "projection") -> pd.DataFrame:
    """Parameter-weighted mean sparsity per ``by`` ("projection" kind or "layer").

    Columns: [label, target,] ``by``, sparsity (weighted mean), sparsity_min,
    sparsity_max, n_params, and alpha_mean when alphas are present. If the frame
    concatenates several allocations, it is split by label and target too.
    """
    if by not in ("projection", "layer"):
        raise AllocationError(f"by={by!r}: summarise by 'projection' or 'layer'.")
    keys = [c for c in ("label", "target") if c in allocation.columns] + [by]
    df = allocation.assign(_weighted=allocation["sparsity"] * allocation["n_params"])
    aggregations = dict(_weighted=("_weighted", "sum"), n_params=("n_params", "sum"),
                        sparsity_min=("sparsity", "min"), sparsity_max=("sparsity", "max"))
    if "alpha" in df.columns:
        aggregations["alpha_mean"] = ("alpha", "mean")
    out = df.groupby(keys, sort=False).agg(**aggregations).reset_index()
    out.insert(len(keys), "sparsity", out.pop("_weighted") / out["n_params"])
    if by == "projection":
        order = {kind: i for i, kind in enumerate(PROJECTIONS)}
        out = out.sort_values(keys[:-1] + [by], key=lambda s: s.map(order) if s.name == by else s, kind="stable")
    return out.reset_index(drop=True)


def save_allocation(allocation: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``allocation`` as CSV atomically (never a half-written file); returns the path."""
    _check_allocation(allocation, str(path))
    path = Path(path)
    with atomic_path(path) as tmp:
        allocation.to_csv(tmp, index=False)
    return path


def load_allocation(path: str | os.PathLike) -> pd.DataFrame:
    """Read an allocation CSV and check it (required columns, sparsity finite in [0, 1))."""
    path = Path(path)
    if not path.exists():
        raise AllocationError(f"No allocation file at {path}. Fix: create one with `acttail-lab allocate ... --out {path}`.")
    allocation = pd.read_csv(path)
    _check_allocation(allocation, str(path))
    return allocation


def _check_allocation(allocation: pd.DataFrame, where: str) -> None:
    missing = [c for c in ALLOCATION_COLUMNS if c not in allocation.columns]
    if missing:
        raise AllocationError(f"{where}: not an allocation, missing column(s) {missing}. "
                              "Fix: make it with acttail_lab.allocation.allocate().")
    sparsity = pd.to_numeric(allocation["sparsity"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(sparsity) | (sparsity < 0) | (sparsity >= 1)
    if bad.any():
        raise AllocationError(f"{where}: {int(bad.sum())} sparsity value(s) outside [0, 1) "
                              f"(e.g. {sparsity[bad][:3].tolist()}). Fix: re-allocate with s_max < 1.")


def load_alpha_table(path: str | os.PathLike, shapes: str | os.PathLike | pd.DataFrame | None = None) -> pd.DataFrame:
    """Projection table with alphas from a ``.csv`` (spectra output) or a ``.npy`` of 7 alphas per layer.

    A ``.npy`` needs ``shapes``: a model key of ``reference.MODEL_SHAPES``, a CSV
    with the projection-table columns, or a DataFrame. For AlphaPruning's files
    (``<key>-hf.alpha_peak.npy``) the key is read from the file name if omitted.
    """
    from ..core import reference

    path = Path(path)
    if not path.exists():
        raise AllocationError(f"No alphas file at {path}. Fix: run `acttail-lab spectra` or point at "
                              "data/reference/published_alphas/<model>-hf.alpha_peak.npy.")
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix != ".npy":
        raise AllocationError(f"{path}: alphas must be a .csv (from `acttail-lab spectra`) or a .npy file.")
    if shapes is None:
        key = path.name.split(".")[0].removesuffix("-hf")
        if key not in reference.MODEL_SHAPES:
            raise AllocationError(f"{path.name}: a .npy of alphas needs shapes. Fix: pass --shapes with one of "
                                  f"{', '.join(reference.MODEL_SHAPES)} or a projection-table CSV.")
        shapes = key
    if isinstance(shapes, pd.DataFrame):
        table = shapes
    elif str(shapes).endswith(".csv"):
        table = pd.read_csv(shapes)
    else:
        table = reference.shape_table(str(shapes))
    result = with_alphas(table, np.load(path), source=str(path))
    if "alpha_peak" in path.name:  # AlphaPruning's file naming for its xmin_peak rule
        result.attrs["xmin_rule"] = "xmin_peak"
    return result
