"""The tables of a perplexity grid on disk: :func:`write_grid` writes an :func:`~.grid.evaluate_grid` result
as its runs CSV plus a ``_windows`` CSV of per-window losses (each with a provenance sidecar), and
:func:`read_grid` reads the two back as that result, so rows can be added to a committed table later
(``scripts/reproduce_perplexity.py --tier``, ``reproduce_encyclopedic.py --add``) without remaking it.

Inputs and outputs: pandas DataFrames and CSV paths; losses in nats per scored token.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.results_io import load_table, write_results
from .settings import RunSettings

WINDOW_COLUMN = "window_nll"
"""The extra column :func:`evaluate_grid` returns after :data:`GRID_COLUMNS`: each row's per-window mean NLL
(nats per scored token, a tuple in window order). Result CSVs keep it apart (:func:`window_table`)."""
WINDOW_TABLE_COLUMNS = ("strategy", "sparsity", "method", "window_index", "nll")


def window_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-window losses of ``runs`` (an :func:`evaluate_grid` result) as a tidy table: one row per
    (run, window), columns :data:`WINDOW_TABLE_COLUMNS` (``nll`` in nats per scored token). Every run of one
    grid is scored on the same windows, so ``window_index`` pairs the rows of two strategies."""
    rows = [{"strategy": run.strategy, "sparsity": run.sparsity, "method": run.method, "window_index": i,
             "nll": nll} for run in runs.itertuples() for i, nll in enumerate(getattr(run, WINDOW_COLUMN))]
    return pd.DataFrame(rows, columns=list(WINDOW_TABLE_COLUMNS))


def windows_path(path_csv) -> Path:
    """Where the per-window losses of the grid CSV ``path_csv`` go: ``<stem>_windows.csv`` beside it."""
    path = Path(path_csv)
    return path.with_name(f"{path.stem}_windows{path.suffix or '.csv'}")


EARLIER_PROVENANCE = ("command", "git_sha", "git_dirty", "timestamp", "cache", "lock")
"""What :func:`earlier_provenance` keeps of the sidecar of a table that new rows are added to."""
EARLIER_KEYS = ("earlier_rows", "earlier_tiers")
"""The sidecar settings under which a table that rows were added to keeps the provenance of the rows before."""


def read_grid(path_csv) -> pd.DataFrame:
    """A table :func:`write_grid` wrote, back as :func:`evaluate_grid` returned it: its runs with each run's
    per-window losses in :data:`WINDOW_COLUMN` (a tuple in window order, from :func:`windows_path`); the sidecar
    in ``attrs["provenance"]`` (a dict, or None). Used to add rows to a committed table without remaking it.

    Raises FileNotFoundError naming the fix when the table or its ``_windows`` table is missing, ValueError when
    a run has no per-window losses.
    """
    path = Path(path_csv)
    for needed in (path, windows_path(path)):
        if not needed.exists():
            raise FileNotFoundError(f"No grid table at {needed}. Fix: make the whole table (the script without "
                                    "the option that adds rows), or restore the committed one.")
    runs, windows = load_table(path), load_table(windows_path(path))
    keys = ["strategy", "sparsity", "method"]
    windows = windows.assign(method=windows["method"].fillna("")).sort_values("window_index", kind="stable")
    losses = windows.groupby(keys, sort=False)["nll"].agg(tuple).rename(WINDOW_COLUMN).reset_index()
    merged = runs.assign(method=runs["method"].fillna("")).merge(losses, on=keys, how="left", validate="one_to_one")
    if merged[WINDOW_COLUMN].isna().any():
        missing = merged.loc[merged[WINDOW_COLUMN].isna(), "strategy"].tolist()
        raise ValueError(f"{windows_path(path)} has no per-window losses for {missing}. Fix: make the whole "
                         "table again.")
    merged["method"] = runs["method"]
    merged.attrs.update(runs.attrs)
    return merged


def read_grid_scored_on(path_csv, tokens: int, window: int) -> pd.DataFrame:
    """:func:`read_grid` of a table that new rows will be added to: raises ValueError naming both settings when
    its sidecar says it was scored on other ``tokens`` or another ``window`` (its rows would not pair with the new
    ones), FileNotFoundError as :func:`read_grid`."""
    table = read_grid(path_csv)
    settings = (table.attrs.get("provenance") or {}).get("settings", {})
    if settings.get("tokens") != tokens or settings.get("window") != window:
        raise ValueError(f"{path_csv} was scored on {settings.get('tokens')} tokens in windows of "
                         f"{settings.get('window')}, not {tokens} in {window}.")
    return table


def earlier_provenance(table: pd.DataFrame) -> dict:
    """The part of ``table``'s sidecar (a :func:`read_grid` result) that a table adding rows to it keeps: its
    command, commit, time, cache stamps and lock (:data:`EARLIER_PROVENANCE`), and, when ``table`` itself had
    rows added to an earlier one, that earlier provenance (its :data:`EARLIER_KEYS` settings) under
    ``"earlier"``: a chain back to the first table, so every row of a table added to twice keeps its origin."""
    provenance = table.attrs.get("provenance") or {}
    kept = {key: provenance.get(key) for key in EARLIER_PROVENANCE}
    settings = provenance.get("settings") or {}
    before = {key: settings[key] for key in EARLIER_KEYS if settings.get(key)}
    if before:
        kept["earlier"] = before
    return kept


def write_grid(runs: pd.DataFrame, path_csv, settings: RunSettings | None = None, **provenance) -> Path:
    """Write an :func:`evaluate_grid` result: the runs (without the per-window column) to ``path_csv`` and
    :func:`window_table` to :func:`windows_path`, each with its provenance sidecar; return ``path_csv``.

    ``settings``: the run's :class:`RunSettings`, recorded in each sidecar's ``settings`` (``to_dict``: model,
    corpus, split, tokens, window, protocol, xmin, dtype, device_map, batch_size, calibration_tokens, cache,
    include_dense; the device asked for as ``requested_device``) and its seed as the sidecar's seed. Keywords in
    ``provenance`` (seed, device = the device it ran on, command, strategies, ...) win over the settings.
    """
    if settings is not None:
        fields = settings.to_dict()
        seed = fields.pop("seed")
        fields["requested_device"] = fields.pop("device")
        provenance = {"seed": seed, **fields, **provenance}
    path = write_results(runs.drop(columns=[WINDOW_COLUMN], errors="ignore"), path_csv, **provenance)
    if WINDOW_COLUMN in runs:
        write_results(window_table(runs), windows_path(path), **provenance,
                      table="per-window mean NLL (nats per scored token) of every run in " + path.name)
    return path
