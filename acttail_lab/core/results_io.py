"""Perplexity of a (TopK-sparsified) model, and a cached grid over strategies x sparsities.

Scoring protocols (say which one a number uses):

* ``"all"``: every projection input is sparsified at every position, and all
  ``T - 1`` next-token targets of each window of ``T`` tokens are scored.
* ``"last_half"``: TEAL's prefill rule. Positions ``t >= T // 2`` are
  sparsified, earlier positions are dense, and only the targets predicted at
  sparsified positions are scored (tokens ``T // 2 + 1 ... T - 1``:
  ``T - 1 - T // 2`` per window). A dense row under this protocol is scored on
  exactly the same tokens, so rows compare like for like.

Perplexity is ``exp(mean NLL)`` over scored tokens, NLL in nats. Windows are
non-overlapping (no sliding context), so numbers depend on the window length.

:func:`evaluate_grid` caches every row as a small JSON file under
``cache_dir("eval")``, keyed by the model (source and a weight fingerprint),
the token windows (corpus, split, window, tokens and a hash of the ids), the
sparsity vector, the protocol and the dtype/device type. Re-running resumes:
an interrupted run loses at most the row in progress.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .cache import atomic_path
from .provenance import write_sidecar


def write_results(df: pd.DataFrame, path_csv, **provenance) -> Path:
    """Write ``df`` as CSV (atomically) and ``<path_csv>.json`` with provenance; return the CSV path.

    ``provenance`` goes to :func:`acttail_lab.core.provenance.provenance` (seed,
    device, command, and any extra settings such as model or tokens).
    """
    path = Path(path_csv)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    write_sidecar(path, **provenance)
    return path


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """The provenance dict of ``<path>.json`` (``provenance.write_sidecar``), or None when there is none."""
    from .provenance import sidecar_path

    side = sidecar_path(path)
    if not side.exists():
        return None
    return json.loads(side.read_text(encoding="utf-8"))


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """Any committed result CSV with its provenance sidecar in ``attrs["provenance"]`` (dict or None).

    Raises FileNotFoundError naming the file when it is missing.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No results file at {path}. Fix: regenerate it with the command in its "
                                "notebook or README (scripts/reproduce_*.py).")
    table = pd.read_csv(path)
    table.attrs.update(path=str(path), provenance=read_sidecar(path))
    return table
