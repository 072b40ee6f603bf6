"""Result files: a tidy DataFrame written as CSV with its JSON provenance sidecar, and read back.

:func:`write_results` writes ``<name>.csv`` atomically and ``<name>.csv.json`` (versions,
device, seed, git commit, command, settings; :mod:`acttail_lab.core.provenance`);
:func:`load_table` reads a CSV with its sidecar in ``attrs["provenance"]``;
:func:`read_sidecar` reads the sidecar alone.
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
