"""Cost of a sparsified zero-shot run against the dense one, through lm-evaluation-harness.

Real default model (SmolLM2-135M), CPU, one thread, the same task examples (first ``--limit`` of
``--task``, local data) for every configuration; repeats interleaved (dense, uniform, dense, uniform, ...) so
machine load affects both alike; nothing read from the result cache. Prints, per configuration, the median
wall and process-CPU seconds of one evaluation (task set-up, tokenisation, every loglikelihood request and
lm-eval's scoring), and the ratio sparsified / dense. Target: <= 1.3x (issue 13).

    OMP_NUM_THREADS=1 python benchmarks/bench_zeroshot_overhead.py [--task piqa] [--limit 40] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402

from acttail_lab.core.models import load_model  # noqa: E402
from acttail_lab.measure.zeroshot import run_task  # noqa: E402
from acttail_lab.measure.zeroshot_tasks import task_setup  # noqa: E402
from acttail_lab.sparsify.topk import TopKSparsifier  # noqa: E402

TARGET = 1.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="piqa")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm = load_model(args.model)
    setup = task_setup([args.task], data="local")
    configs = {"dense": lambda: None, f"uniform@{args.sparsity:g}": lambda: TopKSparsifier(lm.model, args.sparsity)}
    wall, cpu = {k: [] for k in configs}, {k: [] for k in configs}
    run_task(lm, setup, setup.tasks[0], 2)  # warm-up: task set-up, first-call costs
    for _ in range(args.repeats):
        for name, make in configs.items():
            start_cpu, start = time.process_time(), time.perf_counter()
            out = run_task(lm, setup, setup.tasks[0], args.limit, sparsifier=make())
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            print(f"  {name:>12s}: {wall[name][-1]:.1f} s wall, {cpu[name][-1]:.1f} s CPU "
                  f"(acc {out['records'][0]['value']:.3f}, realised {out['realised_sparsity']:.3f})", flush=True)
    dense_w, dense_c = statistics.median(wall["dense"]), statistics.median(cpu["dense"])
    print(f"{args.task}, first {args.limit} examples, {args.repeats} interleaved repeats, 1 thread:")
    for name in configs:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:>12s}: {w:7.1f} s wall ({w / dense_w:.2f}x dense), {c:7.1f} s CPU ({c / dense_c:.2f}x dense)")
    ratio = statistics.median(cpu[f"uniform@{args.sparsity:g}"]) / dense_c
    print(f"sparsified / dense (CPU time): {ratio:.2f}x -> {'meets' if ratio <= TARGET else 'misses'} the "
          f"<= {TARGET}x target")


if __name__ == "__main__":
    main()
