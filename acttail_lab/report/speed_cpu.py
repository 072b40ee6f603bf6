"""CPU decode speed on LLaMA-2-7B shapes, and speed beside quality on a real model.

The committed tables (each with a provenance sidecar naming the CPU, the load
average before and after, and the command), made on a quiet machine:

* ``gemv_7b_cpu.csv`` (``benchmarks/bench_gemv_7b.py``): one row per shape x
  dtype x threads x sparsity x candidate; ``time_us`` per call, ``gb_per_s``,
  ``vs_linear`` (against the dense call a model runs, ``F.linear``) and
  ``vs_best`` (against the fastest dense GEMV found), ``limit = 1/(1-s)``,
  ``frac_of_limit = vs_best / limit``; selection rows carry ``frac_of_gemv``.
* ``decode_7b_cpu_<dtype>_t<threads>.csv`` (``benchmarks/bench_decode_7b.py``):
  batch-1 greedy decoding of a random-weight model with LLaMA-2-7B layer shapes;
  one row per strategy x target x mode: ``tokens_per_s`` (median over rounds,
  ``tokens_per_s_min`` / ``_max`` the slowest and fastest round), ``speedup``
  against the model's own dense path, and the time per token in the GEMVs
  (``gemv_ms``), selection (``select_ms``), wrapper work (``wrap_ms``) and the
  rest (``other_ms``).
* ``decode_<model>_cpu.csv``: the same benchmark on a real built-in model, whose
  rows :func:`speed_quality` pairs with that model's committed perplexity.

Speed depends on weight shapes, not values, so the 7B tables use random weights;
quality is never read from them.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..core import paths
from ..core.errors import ModelNotFoundError

GEMV_COMMAND = "python benchmarks/bench_gemv_7b.py --blocks 4096,8192"
DECODE_DTYPES = ("fp32", "bf16")
DECODE_MODES = {"fp32": "topk,threshold", "bf16": "topk"}
"""Selection modes of each committed 7B decode table (bf16 TopK only: its 32 layers take twice fp32's time)."""
GEMV_GOALS = {0.5: 0.9, 0.8: 0.7}
"""Issue 27's per-GEMV targets: at s = 0.5 at least 90% of the 1/(1-s) limit against the fastest dense GEMV,
at s = 0.8 at least 70%."""
DECODE_GOAL = 1.6
"""Issue 27's end-to-end target at 50% on the 7B shapes, against the model's own dense path."""
PRODUCT = "numba"
"""The product candidate judged against the targets (kept positions given; selection timed separately)."""


def decode_command(dtype: str | None = None, model: str | None = None) -> str:
    """The command that makes a committed decode table (LLaMA-2-7B shapes in ``dtype``, or a real ``model``)."""
    if model is not None:
        return (f"python benchmarks/bench_decode_7b.py --model {model} "
                f"--out data/results/decode_{model}_cpu.csv")
    return (f"python benchmarks/bench_decode_7b.py --dtype {dtype} --modes {DECODE_MODES[dtype]} "
            f"--out data/results/decode_7b_cpu_{dtype}_t1.csv")


def _load(path, command: str) -> pd.DataFrame:
    """``core.results_io.load_table`` (the CSV, its sidecar in ``attrs``), with the command that makes it."""
    from ..core.results_io import load_table

    if not os.path.exists(path):
        raise ModelNotFoundError(f"No CPU speed table at {path}. Fix: on a quiet machine run `{command}`.")
    df = load_table(path)
    df.attrs["command"] = command
    return df


def load_gemv(results_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The committed GEMV table on 7B shapes (``attrs``: path, provenance, command)."""
    return _load(paths.result_path("gemv_7b", results_dir=results_dir), GEMV_COMMAND)


def load_decode(dtype: str = "fp32", model: str | None = None,
                results_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """A committed decode table: the 7B shapes in ``dtype`` (``"fp32"``/``"bf16"``, one thread), or a real
    built-in ``model`` (e.g. ``"smollm2-135m"``). Raises ModelNotFoundError naming the command when missing."""
    if model is None and dtype not in DECODE_DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}: committed decode tables exist for {DECODE_DTYPES}.")
    path = (paths.result_path("decode_model", model, results_dir) if model is not None
            else paths.result_path("decode_7b", results_dir=results_dir, dtype=dtype, threads="1"))
    return _load(path, decode_command(dtype, model))


def load_note(df: pd.DataFrame) -> str:
    """One line on how quiet the machine was: the sidecar's 1-minute load before and after the run."""
    side = df.attrs.get("provenance") or {}
    load = (side.get("settings") or {}).get("load") or {}  # the benchmarks record it among their settings
    before, after = load.get("load_before"), load.get("load_after")
    if not before:
        return "the sidecar records no load average"
    quiet = "quiet" if load.get("quiet") else "NOT quiet: do not read these timings"
    return f"1-minute load {before[0]:.2f} before, {after[0]:.2f} after ({quiet})"


# --------------------------------------------------------------------------- GEMV
def gemv_targets(gemv: pd.DataFrame, candidate: str = PRODUCT) -> pd.DataFrame:
    """Issue 27's GEMV targets, one row per shape x dtype x threads x goal sparsity (0.5, 0.8).

    Columns: shape, dtype, threads, sparsity, time_us, gb_per_s, vs_linear, vs_best, limit, frac_of_limit
    (``vs_best * (1 - s)``), goal, met (``frac_of_limit >= goal``), best_dense (which dense call was fastest).
    """
    rows = gemv[(gemv["candidate"] == candidate) & gemv["sparsity"].round(6).isin(list(GEMV_GOALS))].copy()
    if rows.empty:
        raise ValueError(f"No {candidate!r} rows at s in {tuple(GEMV_GOALS)} (candidates: "
                         f"{sorted(set(gemv['candidate']))}).")
    rows["goal"] = rows["sparsity"].round(6).map(GEMV_GOALS)
    rows["met"] = rows["frac_of_limit"] >= rows["goal"]
    keep = ["shape", "dtype", "threads", "sparsity", "time_us", "gb_per_s", "vs_linear", "vs_best", "limit",
            "frac_of_limit", "goal", "met", "best_dense"]
    return rows[keep].reset_index(drop=True)


def selection_costs(gemv: pd.DataFrame, sparsities=(0.5, 0.8)) -> pd.DataFrame:
    """Selection time as a share of the product at the same point: one row per shape x dtype x threads x
    sparsity, one column per selection candidate (``select:torch-topk``, ``select:numba-topk``, ...)."""
    rows = gemv[gemv["kind"].eq("select") & gemv["sparsity"].round(6).isin(list(sparsities))]
    return rows.pivot_table(index=["shape", "dtype", "threads", "sparsity"], columns="candidate",
                            values="frac_of_gemv", sort=False)


def gemv_sentence(targets: pd.DataFrame) -> str:
    """How many of the GEMV target cells are met, and the weakest one."""
    worst = targets.assign(margin=targets["frac_of_limit"] - targets["goal"]).sort_values("margin").iloc[0]
    return (f"{int(targets['met'].sum())} of {len(targets)} shape x dtype x threads cells meet the target "
            f"(>= {GEMV_GOALS[0.5]:.0%} of the limit at 50%, >= {GEMV_GOALS[0.8]:.0%} at 80%, against the fastest "
            f"dense GEMV); the weakest: {worst['shape']} {worst['dtype']} on {int(worst['threads'])} thread(s) at "
            f"{worst['sparsity']:.0%}, {worst['frac_of_limit']:.0%} of the limit ({worst['vs_best']:.2f}x).")


# --------------------------------------------------------------------------- end to end
BREAKDOWN = ("gemv_ms", "select_ms", "wrap_ms", "other_ms")


def decode_breakdown(decode: pd.DataFrame, mode: str | None = None) -> pd.DataFrame:
    """Time per token by part, one row per configuration (dense path first): strategy, target, mode,
    ms_per_token, gemv_ms, select_ms, wrap_ms, other_ms (NaN for the dense path, which has no kernel),
    tokens_per_s with its spread over rounds, and speedup (tokens/s over the dense path's tokens/s)."""
    from .speed import decode_table

    table = decode_table(decode)
    extra = decode[[c for c in ("ms_per_token", *BREAKDOWN, "speedup_vs_kernel_dense") if c in decode]]
    out = pd.concat([table, extra.reset_index(drop=True)], axis=1)
    if mode is not None:
        out = out[out["mode"].isin([mode, "dense"]) | out["strategy"].eq("dense-kernel")]
    return out.reset_index(drop=True)


def decode_target_sentence(decode: pd.DataFrame, target: float = 0.5) -> str:
    """The end-to-end target at ``target``: the fastest configuration's speedup over the model's own dense path,
    with its spread over rounds, against :data:`DECODE_GOAL`."""
    from .speed import decode_table

    table = decode_table(decode)
    at = table[np.isclose(table["target"], target) & ~table["strategy"].isin(["dense", "dense-kernel"])]
    best = at.sort_values("speedup", ascending=False).iloc[0]
    verdict = "meets" if best["speedup"] >= DECODE_GOAL else "misses"
    return (f"At {target:.0%} the fastest configuration, {best['strategy']} ({best['mode']}), decodes "
            f"{best['tokens_per_s']:.2f} tokens/s (rounds {best['tokens_per_s_min']:.2f}-"
            f"{best['tokens_per_s_max']:.2f}) = {best['speedup']:.2f}x the dense path's "
            f"{best['dense_tokens_per_s']:.2f}: it {verdict} the {DECODE_GOAL}x target.")


def gemv_time_sentence(decode: pd.DataFrame, target: float = 0.5, mode: str = "topk",
                       reference: str = "uniform") -> str:
    """Why allocations decode at different speeds at the same target: each strategy's GEMV and selection time
    per token against ``reference``'s (percent). Every allocation skips the same parameter-weighted share of the
    weights, so a difference in GEMV time comes from where the sparsity goes: the kernel's fraction of the limit
    differs between shapes and falls with sparsity (section 2's table), so uneven budgets can cost time."""
    rows = decode[np.isclose(decode["target"], target) & decode["mode"].isin([mode, "wina"])].set_index("strategy")
    if reference not in rows.index:
        raise ValueError(f"No {reference!r} row at {target:.0%} ({mode}).")
    ref = rows.loc[reference]
    cells = "; ".join(f"{name} {r.gemv_ms:.1f} ms ({100 * (r.gemv_ms / ref.gemv_ms - 1):+.1f}%), selection "
                      f"{r.select_ms:.1f} ms" for name, r in rows.drop(index=reference).iterrows())
    return (f"GEMV time per token at {target:.0%} ({mode}; wina its own scores): {reference} {ref.gemv_ms:.1f} ms "
            f"(selection {ref.select_ms:.1f} ms); {cells}.")


# --------------------------------------------------------------------------- speed beside quality
def pareto_mask(tokens_per_s, perplexity) -> np.ndarray:
    """True where no other point is at least as fast AND at least as good (lower perplexity), one strictly."""
    t, p = np.asarray(tokens_per_s, float), np.asarray(perplexity, float)
    dominated = ((t[None, :] >= t[:, None]) & (p[None, :] <= p[:, None])
                 & ((t[None, :] > t[:, None]) | (p[None, :] < p[:, None]))).any(axis=1)
    return ~dominated


QUALITY_TABLES = ("perplexity", "wina_farms")
"""The committed perplexity grids whose rows :func:`speed_quality` pairs with a real model's decode rows (the
TopK allocations, and WINA)."""


def quality_runs(model: str, results_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """``model``'s committed perplexity runs of :data:`QUALITY_TABLES`, concatenated (the ``runs`` of
    :func:`speed_quality`)."""
    from .results import load_results

    return pd.concat([load_results(paths.result_path(t, model, results_dir)) for t in QUALITY_TABLES],
                     ignore_index=True)


def speed_quality(decode: pd.DataFrame, runs: pd.DataFrame, mode: str = "topk") -> pd.DataFrame:
    """Pair each decode configuration of a real model with the perplexity of the same strategy at the same
    sparsity from that model's committed runs (labels of :func:`report.results.run_labels`).

    Args:
        decode: a decode table of a real model (:func:`load_decode` with ``model``).
        runs: perplexity runs of the same model (one or more committed grids concatenated); TopK rows are
            paired with ``mode`` rows, WINA rows with the ``wina`` mode.
    Returns:
        One row per paired configuration (dense included at sparsity 0): strategy, target, mode, tokens_per_s
        (+ min/max over rounds), speedup, perplexity, pareto (on the front of tokens/s up, perplexity down).
    """
    from .results import run_labels
    from .speed import decode_table

    table = decode_table(decode)
    table = table[table["mode"].isin([mode, "wina", "dense"]) & (table["strategy"] != "dense-kernel")]
    ppl = runs.assign(label=run_labels(runs))[["label", "sparsity", "perplexity"]]
    ppl = ppl.drop_duplicates(["label", "sparsity"]).assign(sparsity=lambda d: d["sparsity"].round(6))
    merged = table.assign(sparsity=table["target"].round(6)).merge(
        ppl, left_on=["strategy", "sparsity"], right_on=["label", "sparsity"], how="inner")
    if merged.empty:
        raise ValueError("No decode configuration matches a perplexity run (same strategy label and sparsity).")
    merged["pareto"] = pareto_mask(merged["tokens_per_s"], merged["perplexity"])
    keep = ["strategy", "target", "mode", "tokens_per_s", "tokens_per_s_min", "tokens_per_s_max", "speedup",
            "perplexity", "pareto"]
    return merged[keep].sort_values(["strategy", "target"]).reset_index(drop=True)


def _speed_at(part: pd.DataFrame, log_ppl: float, column: str) -> float:
    """``column`` of a strategy's curve interpolated at perplexity ``exp(log_ppl)`` (in log perplexity);
    NaN outside the strategy's measured range."""
    part = part.sort_values("perplexity")
    x = np.log(part["perplexity"].to_numpy(float))
    if not x[0] <= log_ppl <= x[-1]:
        return float("nan")
    return float(np.interp(log_ppl, x, part[column].to_numpy(float)))


def equal_quality(table: pd.DataFrame, reference: str = "uniform") -> pd.DataFrame:
    """Tokens/s of each strategy at the perplexity of each ``reference`` point, interpolated along the strategy's
    own curve in log perplexity (its slowest and fastest rounds interpolated the same way).

    Returns one row per reference target x strategy: target (the reference's), perplexity, strategy,
    tokens_per_s, tokens_per_s_min, tokens_per_s_max, change_pct (against the reference's tokens/s) and
    verdict (``faster``/``slower`` when the round ranges do not overlap, else ``inside the spread``).
    Strategies whose curve does not reach that perplexity are left out.
    """
    body = table[table["strategy"] != "dense"]
    ref = body[body["strategy"] == reference].sort_values("target")
    rows = []
    for r in ref.itertuples():
        log_p = float(np.log(r.perplexity))
        for strategy, part in body.groupby("strategy", sort=False):
            speeds = {c: _speed_at(part, log_p, c) for c in ("tokens_per_s", "tokens_per_s_min", "tokens_per_s_max")}
            if not np.isfinite(speeds["tokens_per_s"]):
                continue
            apart = speeds["tokens_per_s_min"] > r.tokens_per_s_max or speeds["tokens_per_s_max"] < r.tokens_per_s_min
            change = 100.0 * (speeds["tokens_per_s"] / r.tokens_per_s - 1.0)
            rows.append(dict(target=r.target, perplexity=r.perplexity, strategy=strategy, **speeds, change_pct=change,
                             verdict=("faster" if change > 0 else "slower") if apart else "inside the spread"))
    return pd.DataFrame(rows)


def equal_quality_sentences(table: pd.DataFrame, reference: str = "uniform") -> list[str]:
    """One sentence per reference target: the fastest strategy at the reference's perplexity, and every
    strategy's change in tokens/s with its verdict against the spread over rounds."""
    eq = equal_quality(table, reference)
    out = []
    for (target, perplexity), part in eq.groupby(["target", "perplexity"], sort=True):
        part = part.sort_values("tokens_per_s", ascending=False)
        top = part.iloc[0]
        cells = "; ".join(f"{r.strategy} {r.tokens_per_s:.1f} ({r.change_pct:+.1f}%, {r.verdict})"
                          for r in part.itertuples() if r.strategy != reference)
        out.append(f"At the perplexity of {reference}@{target:.0%} ({perplexity:.1f}): fastest {top['strategy']} "
                   f"({top['tokens_per_s']:.1f} tokens/s); against {reference}'s "
                   f"{part.loc[part['strategy'] == reference, 'tokens_per_s'].iloc[0]:.1f}: {cells or 'no other'}.")
    return out


def pareto_title(table: pd.DataFrame, model: str) -> str:
    """A title stating which strategies make up the front of tokens/s against perplexity."""
    front = table[table["pareto"] & (table["strategy"] != "dense")]
    names = list(dict.fromkeys(front.sort_values("perplexity")["strategy"]))
    return (f"{model}: the speed-quality front is made of " + ", ".join(names)
            + f" ({len(front)} of {int((table['strategy'] != 'dense').sum())} sparse points)")
