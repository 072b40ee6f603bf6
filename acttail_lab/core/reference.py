"""Published reference numbers: LLaMA shapes, AlphaPruning's alphas, TEAL's budgets.

Nothing here touches a model: the shapes come from the public configs and the
alphas from files committed under ``data/reference/published_alphas`` (see the
README and licence there). The data folder is found next to the package
(``<repo>/data``), which is where it is for the editable install the project
uses (``pip install -e .``); with any other install, pass ``folder=`` (for
example any folder holding the ``<model>-hf.alpha_peak.npy`` files).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import AllocationError, ModelNotFoundError
from .models import _PROJECTION_PATHS, PROJECTIONS
from .paths import DATA_DIR, PUBLISHED_ALPHAS_DIR  # noqa: F401  (DATA_DIR re-exported)

ALPHAPRUNING_ATTRIBUTION = (
    "alpha_peak values from AlphaPruning (Lu et al., NeurIPS 2024, MIT licence), "
    "github.com/haiquanlu/AlphaPruning commit 5f0e9845549ec8ee6dc395f1410566f26cc9e54e, "
    "data/<model>/alpha_peak.npy; Hill estimator with AlphaPruning's xmin_peak rule."
)

TEAL_LLAMA2_7B_50: dict[str, float] = {
    "q": 0.50, "k": 0.53, "v": 0.49, "o": 0.65, "gate": 0.455, "up": 0.405, "down": 0.587,
}
"""TEAL's shipped greedy allocation for LLaMA-2-7B at 50% model-wide sparsity, mean per projection kind."""

TEAL_ATTRIBUTION = (
    "TEAL (Liu et al., ICLR 2025), greedy per-layer allocation shipped in "
    "github.com/FasterDecoding/TEAL, models/Llama-2-7B/lookup/layer-*/results.csv "
    "(commit 536a61fe778e7134dff7bb62976f013b12c4a437), row at 50% effective sparsity, "
    "averaged over the 32 layers per projection kind (values as listed in docs/method.md)."
)


@dataclass(frozen=True)
class ModelShape:
    """Public config numbers of a LLaMA-style decoder (enough for the 7 projection shapes)."""

    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    layers: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


MODEL_SHAPES: dict[str, ModelShape] = {
    "llama-7b": ModelShape(hidden=4096, intermediate=11008, heads=32, kv_heads=32, layers=32),
    "llama-13b": ModelShape(hidden=5120, intermediate=13824, heads=40, kv_heads=40, layers=40),
    "llama-30b": ModelShape(hidden=6656, intermediate=17920, heads=52, kv_heads=52, layers=60),
    "llama-65b": ModelShape(hidden=8192, intermediate=22016, heads=64, kv_heads=64, layers=80),
    "llama2-7b": ModelShape(hidden=4096, intermediate=11008, heads=32, kv_heads=32, layers=32),
    "llama2-13b": ModelShape(hidden=5120, intermediate=13824, heads=40, kv_heads=40, layers=40),
    "llama2-70b": ModelShape(hidden=8192, intermediate=28672, heads=64, kv_heads=8, layers=80),
}


def _model_key(model_key: str) -> str:
    """Accept ``llama2-7b`` and the AlphaPruning folder spelling ``llama2-7b-hf``."""
    key = model_key.lower().removesuffix("-hf")
    if key not in MODEL_SHAPES:
        raise ModelNotFoundError(
            f"No published shapes for model key {model_key!r}. Known keys: {', '.join(MODEL_SHAPES)}. "
            "Fix: use one of them, or build the table from a loaded model with "
            "acttail_lab.core.models.projection_table(model)."
        )
    return key


def _projection_dims(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(d_out, d_in) of each projection kind; nn.Linear stores weights as (out, in)."""
    kv = shape.kv_heads * shape.head_dim
    return {
        "q": (shape.hidden, shape.hidden),
        "k": (kv, shape.hidden),
        "v": (kv, shape.hidden),
        "o": (shape.hidden, shape.hidden),
        "gate": (shape.intermediate, shape.hidden),
        "up": (shape.intermediate, shape.hidden),
        "down": (shape.hidden, shape.intermediate),
    }


def shape_table(model_key: str) -> pd.DataFrame:
    """Projection table of a published model, same schema as ``models.projection_table``.

    Columns: layer, projection, name (``model.layers.{i}.self_attn.q_proj``...),
    d_out, d_in, n_params (number of weights). One row per projection, layer by
    layer in forward order (q, k, v, o, gate, up, down).
    """
    shape = MODEL_SHAPES[_model_key(model_key)]
    dims = _projection_dims(shape)
    rows = [
        dict(layer=layer, projection=kind, name=f"model.layers.{layer}.{_PROJECTION_PATHS[kind]}",
             d_out=dims[kind][0], d_in=dims[kind][1], n_params=dims[kind][0] * dims[kind][1])
        for layer in range(shape.layers)
        for kind in PROJECTIONS
    ]
    return pd.DataFrame(rows)


def published_alphas_path(model_key: str, folder: str | os.PathLike | None = None) -> Path:
    """Path of AlphaPruning's ``<model>-hf.alpha_peak.npy`` in ``folder`` (default: the repo's data)."""
    key = _model_key(model_key)
    path = Path(folder or PUBLISHED_ALPHAS_DIR) / f"{key}-hf.alpha_peak.npy"
    if not path.exists():
        raise ModelNotFoundError(
            f"Published alphas for {key} not found at {path}. acttail-lab reads them from the "
            "repository's data/ folder, which needs an editable install (pip install -e .). "
            "Fix: install editable, or pass folder= pointing at a copy of published_alphas/."
        )
    return path


def published_alphas(model_key: str, folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """``shape_table(model_key)`` plus AlphaPruning's published ``alpha`` per projection.

    The file holds 7 values per layer in the order q, k, v, o, gate, up, down.
    ``attrs`` carries ``source`` (the file), ``attribution`` and ``xmin_rule``
    (``"xmin_peak"``). Raises ModelNotFoundError if the file is missing.
    """
    from .reference import with_alphas

    path = published_alphas_path(model_key, folder)
    table = with_alphas(shape_table(model_key), np.load(path), source=str(path))
    table.attrs.update(source=str(path), attribution=ALPHAPRUNING_ATTRIBUTION, xmin_rule="xmin_peak")
    return table


def with_alphas(shapes: pd.DataFrame, alphas, source: str = "alphas") -> pd.DataFrame:
    """``shapes`` (one row per projection, in order) plus an ``alpha`` column from a 1-D array."""
    alphas = np.asarray(alphas, dtype=float).ravel()
    if len(alphas) != len(shapes):
        per_layer = len(alphas) / 7
        raise AllocationError(
            f"{source} holds {len(alphas)} alphas ({per_layer:g} layers of 7) but the shape table has "
            f"{len(shapes)} projections ({shapes['layer'].nunique()} layers). Fix: pass the shapes of the "
            "model the alphas were computed on."
        )
    table = shapes.copy()
    table["alpha"] = alphas
    return table
