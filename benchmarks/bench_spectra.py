"""Whole-model alpha: acttail-lab vs WeightWatcher 0.7.7, same projections, one run, single thread.

What is compared, for the default model's 210 projections (q/k/v/o/gate/up/down
of every layer) under the full KS xmin search:

- acttail-lab: ``spectra.analyze(model, xmin="ks", cache=False)``: float64
  Gram + ``eigvalsh`` per matrix, then the vectorised power-law fit;
- WeightWatcher: ``WeightWatcher(model).analyze(layers=ids)`` where ``ids`` are
  the layer ids whose ``longname`` is one of our projection names (found with
  ``describe()``; the embedding and ``lm_head`` are left out). Everything else
  is WeightWatcher's default: no normalisation, float64 SVD (scipy: its "fast"
  torch SVD needs CUDA and falls back to the accurate one on a CPU), its own
  ``ww`` fitter with the full xmin search, no finger fixing, no plots, no
  randomisation, no MP fit. WeightWatcher drops eigenvalues below 1e-5 before
  fitting; acttail-lab keeps them (they are never the chosen xmin here, so the
  alphas still agree).

Rows are matched by name (WeightWatcher's ``longname`` == our ``name``).
Reported: max |alpha difference| (target < 1e-6), xmin agreement, wall and CPU
times of both and their ratio (target >= 3x), and memory (target < 2 GB): the
peak resident memory of the process after our run (the model included: its
memory-mapped weights are paged in as they are read) and, from a second,
untimed run under ``tracemalloc``, the peak of the arrays our run allocates.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_spectra.py [--model smollm2-135m]
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import time
import tracemalloc
import warnings

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from acttail_lab.core.models import load_model  # noqa: E402
from acttail_lab.spectral.spectra import analyze  # noqa: E402


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (VmHWM), in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run_weightwatcher(model, names):
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    watcher = ww.WeightWatcher(model=model)
    described = watcher.describe()
    ids = described.loc[described["longname"].isin(names), "layer_id"].astype(int).tolist()
    if len(ids) != len(names):
        raise RuntimeError(f"WeightWatcher found {len(ids)} of the {len(names)} projections")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        details, wall, cpu = timed(lambda: watcher.analyze(layers=ids))
    return details.set_index("longname"), wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = load_model(args.model).model
    print(f"model {args.model}; {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    rss_before = peak_rss_mb()
    ours, our_wall, our_cpu = timed(lambda: analyze(model, xmin="ks", device="cpu", cache=False, progress=False))
    rss_after = peak_rss_mb()
    names = ours["name"].tolist()
    tracemalloc.start()
    analyze(model, xmin="ks", device="cpu", cache=False, progress=False)
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()

    details, ww_wall, ww_cpu = run_weightwatcher(model, names)
    theirs = details.loc[names]
    diff = np.abs(ours["alpha"].to_numpy() - theirs["alpha"].to_numpy())
    xmin_same = np.isclose(ours["xmin"].to_numpy(), theirs["xmin"].to_numpy(), rtol=1e-9, atol=0)

    print(f"projections compared        {len(names)} (matched by name)")
    print(f"max |alpha difference|      {diff.max():.3g}   (target < 1e-6); worst: {names[int(diff.argmax())]}")
    print(f"same xmin (rtol 1e-9)       {int(xmin_same.sum())} / {len(names)}")
    print(f"acttail-lab analyze         wall {our_wall:7.2f} s   cpu {our_cpu:7.2f} s   (spectra + fits, no cache)")
    print(f"WeightWatcher analyze       wall {ww_wall:7.2f} s   cpu {ww_cpu:7.2f} s")
    print(f"speed ratio WW / ours       wall {ww_wall / our_wall:5.1f}x   cpu {ww_cpu / our_cpu:5.1f}x   (target >= 3x)")
    print(f"peak RSS after our run      {rss_after:7.0f} MB (before: {rss_before:.0f} MB, model loaded; target < 2048)")
    print(f"peak traced allocations     {traced_peak:7.1f} MB (tracemalloc: the arrays of our run, one matrix at a time)")


if __name__ == "__main__":
    main()
