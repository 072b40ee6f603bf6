"""One power-law fit: acttail-lab vs ``powerlaw.Fit`` (and WeightWatcher's fitter), one run, single thread.

Spectra: three projections of the default model (576 or 192 eigenvalues, float64
Gram route) and a synthetic 2000-value sample (log-normal body + Pareto tail).
Each is fitted with the full KS xmin search by

- ``tails.fit_power_law(eigs, xmin="ks")``;
- ``powerlaw.Fit(eigs, parameter_ranges={"alpha": [1, None]}, verbose=False)``
  (powerlaw 2.0.0; the range lifts its default alpha cap of 3, see docs/notes.md, "powerlaw's alpha range");
- WeightWatcher 0.7.7's ``WW_powerlaw.WWFit`` (its default fitter), if installed.

Reported per spectrum: alpha and xmin of each, |alpha difference|, the median
time per fit, and the speed ratio powerlaw / ours (target >= 50x).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fit.py
"""
from __future__ import annotations

import os
import statistics
import time
import warnings

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import powerlaw  # noqa: E402
import torch  # noqa: E402

from acttail_lab.core.models import iter_projections, load_model  # noqa: E402
from acttail_lab.spectral.spectra import esd  # noqa: E402
from acttail_lab.spectral.tails import fit_power_law  # noqa: E402


def median_time(fn, repeats: int) -> tuple[object, float]:
    """Result of ``fn()`` and the median CPU time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return result, statistics.median(times)


def spectra_to_fit() -> dict[str, np.ndarray]:
    model = load_model().model
    wanted = {"model.layers.0.self_attn.q_proj", "model.layers.14.self_attn.v_proj", "model.layers.25.mlp.up_proj"}
    out = {row["name"]: esd(lin.weight, name=row["name"]) for row, lin in iter_projections(model) if row["name"] in wanted}
    rng = np.random.default_rng(0)
    out["synthetic (2000 values)"] = np.concatenate([rng.lognormal(0, 0.5, 1800),
                                                     2.0 * (rng.pareto(2.5, 200) + 1.0)])
    return out


def main() -> None:
    torch.set_num_threads(1)
    try:
        from weightwatcher.WW_powerlaw import WWFit
    except ImportError:
        WWFit = None
    ratios = []
    for name, eigs in spectra_to_fit().items():
        ours, t_ours = median_time(lambda: fit_power_law(eigs, xmin="ks"), 200)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, t_pl = median_time(
                lambda: powerlaw.Fit(eigs, parameter_ranges={"alpha": [1, None]}, verbose=False), 3)
        ratios.append(t_pl / t_ours)
        print(f"{name}  ({len(eigs)} eigenvalues)")
        print(f"  acttail-lab  alpha {ours.alpha:.12f}  xmin {ours.xmin:.6g}  {t_ours * 1e3:8.3f} ms")
        print(f"  powerlaw     alpha {ref.alpha:.12f}  xmin {ref.xmin:.6g}  {t_pl * 1e3:8.3f} ms"
              f"  |d alpha| {abs(ours.alpha - ref.alpha):.1e}  same xmin {ours.xmin == ref.xmin}"
              f"  ratio {t_pl / t_ours:6.0f}x")
        if WWFit is not None:
            ww_fit, t_ww = median_time(lambda: WWFit(np.sort(eigs)), 5)
            print(f"  WeightWatcher alpha {ww_fit.alpha:.12f}  xmin {ww_fit.xmin:.6g}  {t_ww * 1e3:8.3f} ms"
                  f"  |d alpha| {abs(ours.alpha - ww_fit.alpha):.1e}  ratio {t_ww / t_ours:6.0f}x")
    print(f"speed ratio powerlaw / ours: min {min(ratios):.0f}x, median {statistics.median(ratios):.0f}x"
          " (target >= 50x; CPU time, one thread)")


if __name__ == "__main__":
    main()
