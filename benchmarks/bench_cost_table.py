"""Time the measured-sensitivity pipeline on the real model, single thread.

Measures: (1) the dense capture forward alone, (2) the whole cost table
(capture + 12 levels x 210 projections, cache off), (3) the optimal solve at
50% and 80% for the 210 projections and for a 560-projection table (the cost
table tiled to 80 layers, LLaMA-2-13B-sized count), (4) estimate_cost per call
on pre-built curves (the interactive-slider path).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cost_table.py [--tokens 2048]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from acttail_lab.allocation.cost_model import cost_curves, estimate_cost
from acttail_lab.allocation.cost_solvers import optimal_allocation  # noqa: E402
from acttail_lab.core.models import load_model  # noqa: E402
from acttail_lab.measure.sensitivity import (
    DEFAULT_SPARSITIES,
    calibration_windows,
    capture_inputs,
    cost_table,
)


def _timed(fn, repeat: int = 1):
    start = time.perf_counter()
    for _ in range(repeat):
        result = fn()
    return result, (time.perf_counter() - start) / repeat


def _tiled(cost: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    """The cost table repeated over more layers (same curves), for a solver timing at larger scale."""
    layers = cost["layer"].nunique()
    parts = []
    for copy in range(-(-n_layers // layers)):
        part = cost.assign(layer=cost["layer"] + copy * layers)
        part["name"] = part["name"] + f"#{copy}"
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    return out[out["layer"] < n_layers].reset_index(drop=True)


def matmul_gflops() -> float:
    """fp32 rate of one 2048x576 @ 576x576 product right now (the cost table's typical product)."""
    a, b = torch.randn(2048, 576), torch.randn(576, 576)
    a @ b
    _, seconds = _timed(lambda: a @ b, repeat=20)
    return 2 * 2048 * 576 * 576 / seconds / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048, help="calibration tokens (512-token windows)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (other processes share the machine)")
    print(f"reference fp32 matmul rate at start: {matmul_gflops():.0f} GFLOP/s")

    loaded, t_load = _timed(lambda: load_model("smollm2-135m"))
    windows = calibration_windows(loaded.tokenizer, window=512, n_tokens=args.tokens)
    print(f"model load {t_load:.1f} s; calibration windows {tuple(windows.shape)} (Sense and Sensibility)")

    _, t_capture = _timed(lambda: capture_inputs(loaded.model, windows, max_tokens=args.tokens))
    cost, t_table = _timed(lambda: cost_table(loaded.model, windows, max_tokens=args.tokens, cache=False,
                                              progress=False))
    n_proj = cost["name"].nunique()
    print(f"capture forward alone: {t_capture:.1f} s")
    print(f"cost table (capture + {len(DEFAULT_SPARSITIES)} levels x {n_proj} projections, cache off): "
          f"{t_table:.1f} s  [{'PASS' if t_table < 120 else 'FAIL'} < 120 s]")

    for label, table in (("210", cost), ("560", _tiled(cost, 80))):
        for target in (0.5, 0.8):
            alloc, t_solve = _timed(lambda: optimal_allocation(table, target), repeat=3)
            mean = float(np.dot(alloc["sparsity"], alloc["n_params"]) / alloc["n_params"].sum())
            print(f"optimal solve {label} projections x {len(DEFAULT_SPARSITIES)} levels, target {target}: "
                  f"{t_solve * 1e3:.1f} ms (|mean - target| = {abs(mean - target):.1e})  "
                  f"[{'PASS' if t_solve < 1 else 'FAIL'} < 1 s]")

    big = _tiled(cost, 80)
    curves = cost_curves(big)
    alloc = optimal_allocation(curves, 0.5)
    _, t_est = _timed(lambda: estimate_cost(alloc, curves), repeat=1000)
    _, t_est_df = _timed(lambda: estimate_cost(alloc, big), repeat=20)
    print(f"estimate_cost, 560 projections: {t_est * 1e3:.3f} ms on cost_curves(...) "
          f"[{'PASS' if t_est < 5e-3 else 'FAIL'} < 5 ms], {t_est_df * 1e3:.1f} ms from the raw table")
    print(f"reference fp32 matmul rate at end: {matmul_gflops():.0f} GFLOP/s; "
          f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
