"""Decode-speed results: where they live, how to load them, and per-kind speedups.

Two tables per device kind (``"cpu"`` or ``"gpu"``), made by the benchmarks
with a provenance sidecar (``.json``) naming the device. The GPU tables are the
ones ``make bench-gpu`` commits; on CPU the committed tables are those of
``report.speed_cpu`` (LLaMA-2-7B's real shapes, the numba kernel), and the
quarter-width CPU tables below are only written when a user runs
``bench_gemv.py`` / ``bench_decode.py --device cpu``:

* ``gemv_<kind>.csv`` (``benchmarks/bench_gemv.py``): one row per weight shape x
  dtype x sparsity x method; ``time_us`` per call, ``dense_us`` (the dense
  baseline timed in the same rounds: cuBLAS on GPUs, BLAS via ``F.linear`` on
  CPU), ``speedup = dense / sparse`` (median of per-round ratios),
  ``limit = 1 / (1 - s)`` (memory-bound limit) and ``frac_of_limit``.
* ``decode_<kind>.csv`` (``benchmarks/bench_decode.py``): one row per strategy
  x target sparsity x selection mode for end-to-end batch-1 decoding of a
  random-weight LLaMA-shaped model; ``tokens_per_s`` and ``speedup`` against
  the dense model timed in the same rounds, ``limit = 1 / (1 - target)`` and
  ``bytes_limit`` (dense weight bytes per token / sparse ones, LM head
  included: the reachable limit of a memory-bound decoder).

``kind_speedups`` turns a GEMV table and allocations into a predicted speedup
per projection kind (each projection's time interpolated at its own sparsity).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..core import paths
from ..core.errors import ModelNotFoundError
from ..core.models import PROJECTIONS
from ..core.paths import RESULTS_DIR  # noqa: F401

DEVICE_KINDS = ("gpu", "cpu")

GEMV_SHAPES: dict[str, list[tuple[int, int, str]]] = {
    "gpu": [(4096, 4096, "q,k,v,o"), (4096, 11008, "gate,up"), (11008, 4096, "down")],
    "cpu": [(1024, 1024, "q,k,v,o"), (1024, 2752, "gate,up"), (2752, 1024, "down")],
}
"""(d_in, d_out, projection kinds) per device kind: LLaMA-2-7B's shapes on GPUs, a quarter of them on CPU."""

CPU_MODEL = dict(hidden_size=1024, intermediate_size=2752, num_attention_heads=8, num_key_value_heads=8,
                 vocab_size=8000)
"""Overrides of ``random_model("llama2-7b")`` for CPU decoding: LLaMA-2-7B scaled by 1/4 in width (the CPU
GEMV shapes; head_dim 128 kept; vocab also 1/4), all 32 layers, so the 7B allocation (from its published
alphas) applies layer by layer. 0.4 B parameters, 1.6 GB in fp32."""

GEMV_COLUMNS = ("device", "shape", "kinds", "d_in", "d_out", "dtype", "method", "sparsity", "time_us",
                "dense_us", "speedup", "limit", "frac_of_limit", "rounds")
DECODE_COLUMNS = ("device", "model", "dtype", "strategy", "target", "mode", "backend", "tokens_per_s",
                  "dense_tokens_per_s", "speedup", "limit", "frac_of_limit", "bytes_limit", "realised_sparsity",
                  "n_tokens",
                  "rounds", "cuda_graphs")
_MAKE = {"gemv": "benchmarks/bench_gemv.py", "decode": "benchmarks/bench_decode.py"}


def result_path(table: str, kind: str, results_dir: str | os.PathLike | None = None) -> Path:
    """``<results_dir>/<table>_<kind>.csv`` for table ``"gemv"``/``"decode"`` and kind ``"cpu"``/``"gpu"``."""
    if table not in _MAKE or kind not in DEVICE_KINDS:
        raise ValueError(f"Unknown result {table!r}/{kind!r}: tables {tuple(_MAKE)}, kinds {DEVICE_KINDS}.")
    return paths.result_path(table, results_dir=results_dir, kind=kind)


def add_limits(df: pd.DataFrame, sparsity: str = "sparsity") -> pd.DataFrame:
    """Add ``limit = 1 / (1 - s)`` (the memory-bound speedup limit) and ``frac_of_limit = speedup / limit``."""
    out = df.copy()
    out["limit"] = 1.0 / (1.0 - out[sparsity].astype(float))
    out["frac_of_limit"] = out["speedup"] / out["limit"]
    return out


def load_speed(table: str, kind: str, results_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """A committed speed table, ``attrs["provenance"]`` = its sidecar (device, versions, command), ``attrs["path"]``.

    Raises ModelNotFoundError naming the command that makes the file when it is missing.
    """
    from ..core.results_io import read_sidecar

    path = result_path(table, kind, results_dir)
    if not path.exists():
        raise ModelNotFoundError(
            f"No {kind.upper()} {table} results at {path}. Fix: run `python {_MAKE[table]} --device "
            f"{'cuda' if kind == 'gpu' else 'cpu'}`{' on a GPU machine' if kind == 'gpu' else ''}.")
    df = pd.read_csv(path)
    missing = set(GEMV_COLUMNS if table == "gemv" else DECODE_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path} lacks the columns {sorted(missing)}; re-run {_MAKE[table]}.")
    df.attrs.update(path=str(path), provenance=read_sidecar(path))
    return df


def available(results_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Which speed tables exist: one row per table x kind with ``exists`` and the ``device`` of its sidecar."""
    from ..core.results_io import read_sidecar

    rows = []
    for table in _MAKE:
        for kind in DEVICE_KINDS:
            path = result_path(table, kind, results_dir)
            side = read_sidecar(path) if path.exists() else None
            rows.append(dict(table=table, kind=kind, exists=path.exists(),
                             device=None if side is None else side.get("device"), path=str(path)))
    return pd.DataFrame(rows)


def device_label(df: pd.DataFrame) -> str:
    """The device a loaded table was measured on (sidecar first, else its ``device`` column)."""
    side = df.attrs.get("provenance") or {}
    if side.get("device"):
        return str(side["device"])
    return ", ".join(sorted(set(map(str, df["device"])))) if "device" in df else "unknown device"


def _kind_shapes(gemv: pd.DataFrame) -> dict[str, tuple[int, int]]:
    shapes = {}
    for (d_in, d_out, kinds) in gemv[["d_in", "d_out", "kinds"]].drop_duplicates().itertuples(index=False):
        for kind in str(kinds).split(","):
            shapes[kind] = (int(d_in), int(d_out))
    return shapes


def kind_speedups(gemv: pd.DataFrame, allocations: pd.DataFrame, method: str = "topk",
                  dtype: str | None = None) -> pd.DataFrame:
    """Predicted speedup of each projection kind under each allocation, from the per-GEMV curves.

    Args:
        gemv: a GEMV table (:func:`load_speed` ``("gemv", ...)``).
        allocations: concatenated ``allocate(...)`` tables (columns label or
            strategy, target, projection, sparsity); kinds are matched to
            the GEMV shapes by the table's ``kinds`` column.
        method: which sparse method's times to use.
        dtype: which dtype's rows (default: the first in the table).
    Returns:
        One row per strategy x target x kind (allocation order, kinds in
        ``PROJECTIONS`` order): ``mean_sparsity`` (over layers), ``speedup`` =
        sum of dense times / sum of sparse times, each projection's sparse
        time interpolated linearly in sparsity on the measured curve of its
        shape (clamped to the measured range, e.g. 0.99 at most); ``limit``
        of the mean sparsity.
    """
    dtype = dtype or str(gemv["dtype"].iloc[0])
    rows_m = gemv[(gemv["method"] == method) & (gemv["dtype"] == dtype)]
    if rows_m.empty:
        raise ValueError(f"No {method!r} rows in dtype {dtype} (methods: {sorted(set(gemv['method']))}).")
    shapes = _kind_shapes(rows_m)
    label = "label" if "label" in allocations else "strategy"
    out = []
    for (name, target), allocation in allocations.groupby([label, "target"], sort=False):
        for kind in PROJECTIONS:
            group = allocation[allocation["projection"] == kind]
            if group.empty or kind not in shapes:
                continue
            curve = rows_m[(rows_m["d_in"] == shapes[kind][0]) & (rows_m["d_out"] == shapes[kind][1])]
            curve = curve.sort_values("sparsity")
            s = group["sparsity"].to_numpy(dtype=float)
            sparse = np.interp(s, curve["sparsity"], curve["time_us"])
            dense = float(curve["dense_us"].median())
            out.append(dict(strategy=name, target=float(target), projection=kind, mean_sparsity=float(s.mean()),
                            speedup=dense * len(s) / float(sparse.sum()), limit=1.0 / (1.0 - float(s.mean()))))
    return pd.DataFrame(out)


GEMV_TARGET = 0.9
"""Per-GEMV target: at 50% sparsity at least this fraction of the 2x limit (on a GPU)."""
DECODE_TARGET = 1.8
"""End-to-end target at 50%: TEAL's published decoding speedup (on a GPU)."""


def target_check(gemv: pd.DataFrame, decode: pd.DataFrame, method: str = "topk") -> pd.DataFrame:
    """The issue's targets at 50% sparsity, one row per GEMV shape x dtype and per decoding configuration.

    Columns: device, check (what is compared), measured (text), value, goal,
    met. The targets are GPU targets: on a table measured on a CPU ``met`` is
    ``"n/a (CPU)"`` (shown, not judged), otherwise True/False.
    """
    rows = []
    at50 = gemv[(gemv["method"] == method) & np.isclose(gemv["sparsity"], 0.5)]
    for r in at50.itertuples():
        rows.append(dict(check=f"GEMV {r.shape} {r.dtype} {method} at 50%: fraction of the 2x limit",
                         measured=f"{r.speedup:.2f}x = {r.frac_of_limit:.0%} of limit", value=r.frac_of_limit,
                         goal=GEMV_TARGET))
    e2e = decode[np.isclose(decode["target"], 0.5) & (decode["strategy"] != "dense")]
    for r in e2e.itertuples():
        rows.append(dict(check=f"end to end {r.strategy} ({r.mode}) at 50%: speedup (TEAL 1.8x)",
                         measured=f"{r.speedup:.2f}x", value=r.speedup, goal=DECODE_TARGET))
    out = pd.DataFrame(rows, columns=["check", "measured", "value", "goal"])
    device = device_label(gemv)
    out.insert(0, "device", device)
    on_cpu = device.startswith("cpu")
    out["met"] = ["n/a (CPU)" if on_cpu else bool(v >= g) for v, g in zip(out["value"], out["goal"])]
    return out


# --------------------------------------------------------------------------- the end-to-end table, one definition
SPREAD_COLUMNS = ("tokens_per_s_min", "tokens_per_s_max")
"""Per-round spread of tokens/s (the slowest and fastest round), when the decode table has it: tables written
before it (``decode_cpu.csv`` of 2026-11) keep only the median over rounds."""


def decode_table(decode: pd.DataFrame) -> pd.DataFrame:
    """The end-to-end table with ONE speedup: ``speedup = tokens_per_s / dense_tokens_per_s`` (both medians over
    the same interleaved rounds), so it always agrees with the tokens/s shown beside it.

    Columns: strategy, target, mode, tokens_per_s, dense_tokens_per_s, speedup, ``tokens_per_s_min`` /
    ``tokens_per_s_max`` (the spread over rounds; NaN when the table has none), ``speedup_low`` / ``speedup_high``
    (the same spread divided by dense), rounds, limit, bytes_limit, realised_sparsity. The benchmark's own
    ``speedup`` column (the median of per-round ratios, which can order two runs differently from their tokens/s)
    is kept as ``median_round_ratio`` for reference only."""
    out = decode.copy()
    if "dense_tokens_per_s" not in out:  # older / hand-made tables: the dense row's rate
        out["dense_tokens_per_s"] = float(out.loc[out["strategy"] == "dense", "tokens_per_s"].iloc[0])
    out["median_round_ratio"] = out["speedup"] if "speedup" in out else np.nan
    out["speedup"] = out["tokens_per_s"] / out["dense_tokens_per_s"]
    for column in SPREAD_COLUMNS:
        if column not in out:
            out[column] = np.nan
    out["speedup_low"] = out["tokens_per_s_min"] / out["dense_tokens_per_s"]
    out["speedup_high"] = out["tokens_per_s_max"] / out["dense_tokens_per_s"]
    keep = ["strategy", "target", "mode", "tokens_per_s", "dense_tokens_per_s", "speedup", *SPREAD_COLUMNS,
            "speedup_low", "speedup_high", "rounds", "limit", "bytes_limit", "realised_sparsity", "median_round_ratio"]
    return out[[c for c in keep if c in out.columns]].reset_index(drop=True)


def allocation_sentences(decode: pd.DataFrame, reference: str = "uniform", modes=None) -> list[str]:
    """What each allocation buys over ``reference`` at equal target sparsity, per mode: its tokens/s against the
    reference's (percent). With a per-round spread (:data:`SPREAD_COLUMNS`) a difference counts only when the two
    ranges do not overlap; without one the sentence says that no spread was committed, so no verdict is given."""
    table = decode_table(decode)
    body = table[table["strategy"] != "dense"]
    out = []
    for mode in (modes or list(dict.fromkeys(body["mode"]))):
        part = body[body["mode"] == mode]
        ref = part[part["strategy"] == reference].set_index("target")
        for strategy in [s for s in dict.fromkeys(part["strategy"]) if s != reference]:
            mine = part[part["strategy"] == strategy].set_index("target")
            cells = []
            for target in [t for t in mine.index if t in ref.index]:
                a, b = mine.loc[target], ref.loc[target]
                change = 100.0 * (a["tokens_per_s"] / b["tokens_per_s"] - 1.0)
                if np.isfinite(a["tokens_per_s_min"]) and np.isfinite(b["tokens_per_s_min"]):
                    apart = a["tokens_per_s_min"] > b["tokens_per_s_max"] or a["tokens_per_s_max"] < b["tokens_per_s_min"]
                    word = ("faster" if change > 0 else "slower") if apart else "inside the spread over rounds"
                else:
                    word = "no spread committed"
                cells.append(f"{target:.0%} {change:+.1f}% ({a['tokens_per_s']:.1f} vs {b['tokens_per_s']:.1f} "
                             f"tokens/s, {word})")
            if cells:
                rounds = int(part["rounds"].max()) if "rounds" in part and part["rounds"].notna().any() else None
                out.append(f"{strategy} vs {reference} ({mode}, equal target, median of "
                           f"{rounds or '?'} rounds): " + "; ".join(cells) + ".")
    return out


def decode_title(decode: pd.DataFrame, mode: str = "topk") -> str:
    """A title stating the end-to-end finding at the highest target: each strategy's speedup (tokens/s over
    dense), fastest first, e.g. "at 80% (topk): uniform 1.72x, acttail 1.62x of dense tokens/s"."""
    table = decode_table(decode)
    body = table[(table["strategy"] != "dense") & (table["mode"] == mode)]
    if body.empty:
        return ""
    top = body[body["target"] == body["target"].max()].sort_values("speedup", ascending=False)
    return (f"at {top['target'].iloc[0]:.0%} ({mode}): "
            + ", ".join(f"{r.strategy} {r.speedup:.2f}x" for r in top.itertuples()) + " of dense tokens/s")
