"""Forward-pass throughput: dense vs TopK vs WINA (uniform 0.5), ratios from one interleaved run.

Real default model (SmolLM2-135M), CPU, one thread, the same evaluation windows for every configuration,
repeats interleaved (dense, topk, wina, dense, ...) so machine load affects all alike (the harness of
``bench_topk_throughput.py``). Prints tokens/s per configuration (median over repeats) from wall time and
from process CPU time, the ratio to dense and WINA's ratio to TopK. WINA selects per projection (q/k/v and
gate/up no longer share one selection) and multiplies by the column norms first, so it does more selection
work than TopK; the target is a WINA-sparsified run >= 0.7x dense throughput.

    OMP_NUM_THREADS=1 python benchmarks/bench_wina_throughput.py [--tokens 2048] [--repeats 3]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from bench_topk_throughput import interleaved_times, report, setup  # noqa: E402

from acttail_lab.sparsify.topk import TopKSparsifier  # noqa: E402
from acttail_lab.sparsify.wina import WinaSparsifier  # noqa: E402

TARGET = 0.7
"""WINA-sparsified throughput / dense throughput that the run should reach."""


def main() -> None:
    args, lm, windows = setup(__doc__.splitlines()[0])
    s = args.sparsity
    configs = {"dense": None, f"topk-{s:g}": TopKSparsifier(lm.model, s), f"wina-{s:g}": WinaSparsifier(lm.model, s)}
    medians = report(interleaved_times(lm.model, windows, args.batch_size, configs, args.repeats),
                     configs, windows, args)
    for label, median in medians.items():
        wina_vs_dense = median["dense"] / median[f"wina-{s:g}"]
        verdict = "met" if wina_vs_dense >= TARGET else "NOT met"
        print(f"{label:>4s} wina / topk throughput {median[f'topk-{s:g}'] / median[f'wina-{s:g}']:.3f}; "
              f"wina / dense {wina_vs_dense:.3f} (target >= {TARGET}: {verdict})")


if __name__ == "__main__":
    main()
