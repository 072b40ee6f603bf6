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

import argparse
import os
import statistics

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402
from bench_topk_throughput import interleaved_times  # noqa: E402

from acttail_lab.core.corpus import corpus_text, token_windows  # noqa: E402
from acttail_lab.core.models import load_model  # noqa: E402
from acttail_lab.sparsify.topk import TopKSparsifier, weighted_sparsity  # noqa: E402
from acttail_lab.sparsify.wina import WinaSparsifier  # noqa: E402

TARGET = 0.7
"""WINA-sparsified throughput / dense throughput that the run should reach."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()

    torch.set_num_threads(1)
    lm = load_model("smollm2-135m", device="cpu")
    windows = token_windows(lm.tokenizer, corpus_text("austen", "evaluation"), args.window, args.tokens)
    s = args.sparsity
    configs = {"dense": None, f"topk-{s:g}": TopKSparsifier(lm.model, s), f"wina-{s:g}": WinaSparsifier(lm.model, s)}

    times = interleaved_times(lm.model, windows, args.batch_size, configs, args.repeats)

    n_tokens = windows.numel()
    print(f"SmolLM2-135M fp32, CPU, {torch.get_num_threads()} thread, {windows.shape[0]} x {windows.shape[1]} "
          f"tokens, batch {args.batch_size}, {args.repeats} interleaved repeats; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    for label, by_config in times.items():
        median = {name: statistics.median(values) for name, values in by_config.items()}
        for name, values in by_config.items():
            realised = ""
            if configs[name] is not None and label == "wall":
                realised = f"  realised {weighted_sparsity(configs[name].realised()):.4f}"
            print(f"{label:>4s} {name:>10s}: {n_tokens / median[name]:7.1f} tokens/s median "
                  f"({', '.join(f'{v:.2f}' for v in values)} s)  ratio to dense {median['dense'] / median[name]:.3f}"
                  f"{realised}")
        wina_vs_dense = median["dense"] / median[f"wina-{s:g}"]
        verdict = "met" if wina_vs_dense >= TARGET else "NOT met"
        print(f"{label:>4s} wina / topk throughput {median[f'topk-{s:g}'] / median[f'wina-{s:g}']:.3f}; "
              f"wina / dense {wina_vs_dense:.3f} (target >= {TARGET}: {verdict})")


if __name__ == "__main__":
    main()
