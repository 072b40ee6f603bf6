"""Forward-pass throughput: dense vs TopK-sparsified (uniform 0.5, and ActTail 0.5 when alphas are available).

Real default model (SmolLM2-135M), CPU, one thread, the same evaluation
windows for every configuration, repeats interleaved (dense, uniform,
acttail, dense, ...) so machine load affects all alike. Prints tokens/s per
configuration (median over repeats), from wall time and from process CPU time
(less disturbed by other processes), and the ratio to dense; the target is
sparsified >= 0.7x dense (the TopK selection must cost less than 30% of a
dense forward; dense matmuls do not get faster from zeros on CPU).

    OMP_NUM_THREADS=1 python benchmarks/bench_topk_throughput.py [--tokens 2048] [--repeats 3]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402

from acttail_lab.core.corpus import corpus_text, token_windows  # noqa: E402
from acttail_lab.core.models import load_model  # noqa: E402
from acttail_lab.sparsify.topk import TopKSparsifier, weighted_sparsity  # noqa: E402


def acttail_allocation(model, target: float):
    """ActTail allocation from the model's KS alphas (``acttail-ks``), or None (with the reason) when spectra
    are unavailable."""
    try:
        from acttail_lab.allocation import allocate
        from acttail_lab.spectral.spectra import analyze
    except ImportError as exc:
        print(f"(no acttail row: {exc})")
        return None
    return allocate(analyze(model, xmin="ks", progress=False), "acttail-ks", target)


def time_forward(model, windows, batch_size: int, sparsifier) -> tuple[float, float]:
    """(wall, CPU) seconds for one pass over ``windows`` (inference mode), with ``sparsifier`` active if given.

    Single-threaded, the process CPU time is the work done, much less disturbed
    by other processes on a shared machine than the wall time.
    """
    with torch.inference_mode(), (sparsifier or contextlib.nullcontext()):
        wall, cpu = time.perf_counter(), time.process_time()
        for batch in windows.split(batch_size):
            model(input_ids=batch, use_cache=False)
        return time.perf_counter() - wall, time.process_time() - cpu


def interleaved_times(model, windows, batch_size: int, configs: dict, repeats: int) -> dict:
    """``{"wall": {name: [s, ...]}, "cpu": {...}}``: every config of ``configs`` (name -> sparsifier or None)
    timed ``repeats`` times, interleaved (config after config in each round), after one warm-up pass."""
    time_forward(model, windows[:1, :64], 1, None)  # warm-up
    times = {"wall": {name: [] for name in configs}, "cpu": {name: [] for name in configs}}
    for _ in range(repeats):
        for name, sparsifier in configs.items():
            wall, cpu = time_forward(model, windows, batch_size, sparsifier)
            times["wall"][name].append(wall)
            times["cpu"][name].append(cpu)
    return times


def setup(description: str):
    """``(args, lm, windows)`` of the throughput benchmarks: their command-line options (tokens, window, batch
    size, repeats, sparsity), the default model on the CPU with one thread, and its evaluation windows."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm = load_model("smollm2-135m", device="cpu")
    windows = token_windows(lm.tokenizer, corpus_text("austen", "evaluation"), args.window, args.tokens)
    return args, lm, windows


def report(times: dict, configs: dict, windows, args) -> dict:
    """Print the setting, then per clock (wall, CPU) and config: tokens/s from the median time, every
    repeat, the ratio to dense and (wall) the realised sparsity. Returns ``{clock: {config: median s}}``."""
    n_tokens = windows.numel()
    print(f"SmolLM2-135M fp32, CPU, {torch.get_num_threads()} thread, {windows.shape[0]} x {windows.shape[1]} "
          f"tokens, batch {args.batch_size}, {args.repeats} interleaved repeats; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    medians = {}
    for label, by_config in times.items():
        median = medians[label] = {name: statistics.median(values) for name, values in by_config.items()}
        for name, values in by_config.items():
            realised = ""
            if configs[name] is not None and label == "wall":
                realised = f"  realised {weighted_sparsity(configs[name].realised()):.4f}"
            print(f"{label:>4s} {name:>14s}: {n_tokens / median[name]:7.1f} tokens/s median "
                  f"({', '.join(f'{v:.2f}' for v in values)} s)  ratio to dense {median['dense'] / median[name]:.3f}"
                  f"{realised}")
    return medians


def main() -> None:
    args, lm, windows = setup(__doc__.splitlines()[0])
    configs = {"dense": None, f"uniform-{args.sparsity:g}": TopKSparsifier(lm.model, args.sparsity)}
    alloc = acttail_allocation(lm.model, args.sparsity)
    if alloc is not None:
        configs[f"acttail-ks-{args.sparsity:g}"] = TopKSparsifier(lm.model, alloc)
    report(interleaved_times(lm.model, windows, args.batch_size, configs, args.repeats), configs, windows, args)


if __name__ == "__main__":
    main()
