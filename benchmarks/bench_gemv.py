"""Per-GEMV time against sparsity: sparse GEMV vs the dense product, and the 1/(1-s) limit.

One batch-1 GEMV ``y = x W^T`` per call, for the weight shapes of
``speed_results.GEMV_SHAPES`` (GPU: LLaMA-2-7B's 4096x4096, 4096->11008,
11008->4096; CPU: a quarter of each), sparsities 0-0.9 (plus 0.95 and 0.99 so
that allocations reaching them can be interpolated). Methods:

* ``topk``: ``sparse_gemv(x, w_t, sparsity)``, selection included (GPU:
  Triton select + gather GEMV; CPU: PyTorch fallback, ``torch.topk`` selection
  (``topk_mask`` on ties) + ``embedding_bag`` row gather);
* ``topk_gemv_only``: the same product with the active positions given
  (selection excluded), to show what the selection costs;
* ``threshold``: a fixed threshold at the sparsity-quantile of ``|x|``
  (TEAL-style; GPU: one fused Triton kernel).

The dense baseline is ``F.linear(x, W)`` on the usual output-major weight
(cuBLAS on GPUs, BLAS on CPU), timed in the same rounds as every sparse call.

GPU timing: each method's calls over several weight copies (together > 4x the
L2 cache, so weights come from HBM as in decoding) are captured in one CUDA
graph and replayed; time per call = elapsed (CUDA events) / calls. Methods are
interleaved over rounds. CPU timing: one thread, rounds of interleaved
methods (order rotated every round), each method cycling over weight copies
of 256 MiB per layout (8x a 32 MiB L3, like decoding a model that size; near
s = 0.9 and above the active rows of a cycle start to fit in the cache, which
flatters the sparse times there), process CPU time (less disturbed by other
processes than wall time); speedup = median over rounds of the per-round ratio.
The CPU "topk" selection is numpy/torch work per call, so on CPU it costs a
visible share of the call; ``topk_gemv_only`` shows the product alone.

    python benchmarks/bench_gemv.py --device cpu            # writes data/results/gemv_cpu.csv (+ .json)
    python benchmarks/bench_gemv.py --device cuda --tune    # writes data/results/gemv_gpu.csv (+ .json)
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from acttail_lab.core.errors import ActTailError  # noqa: E402
from acttail_lab.core.models import resolve_device  # noqa: E402
from acttail_lab.core.provenance import describe_device  # noqa: E402
from acttail_lab.core.results_io import write_results  # noqa: E402
from acttail_lab.report.speed import GEMV_COLUMNS, GEMV_SHAPES, add_limits, result_path  # noqa: E402
from acttail_lab.sparsify.kernels import input_major, sparse_gemv  # noqa: E402
from acttail_lab.sparsify.kernels.dispatch import choose_backend  # noqa: E402
from acttail_lab.sparsify.kernels.reference import sparse_gemv_torch, topk_indices  # noqa: E402
from acttail_lab.sparsify.topk import keep_count  # noqa: E402

SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


# --------------------------------------------------------------------------- operands
def make_copies(d_in: int, d_out: int, dtype, device, n_copies: int, seed: int = 0) -> list[dict]:
    """``n_copies`` independent (x, W, w_t) triples; cycling through them keeps weights out of cache."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    copies = []
    for _ in range(n_copies):
        w = (torch.randn(d_out, d_in, generator=gen) * d_in ** -0.5).to(dtype).to(device)
        x = torch.randn(1, d_in, generator=gen).to(dtype).to(device)
        copies.append(dict(x=x, w=w, w_t=input_major(w)))
    return copies


def n_copies_for(d_in: int, d_out: int, dtype, device, minimum_bytes: int) -> int:
    """Enough copies that the weights of one cycle (both layouts) exceed ``minimum_bytes``."""
    per_copy = 2 * d_in * d_out * torch.empty((), dtype=dtype).element_size()
    return max(2, math.ceil(minimum_bytes / per_copy))


def calls_for(method: str, copies: list[dict], sparsity: float, backend: str) -> list:
    """One zero-argument callable per copy computing the method's product on that copy."""
    d_in = copies[0]["x"].shape[1]
    k = keep_count(sparsity, d_in)
    out = []
    for c in copies:
        x, w, w_t = c["x"], c["w"], c["w_t"]
        if method == "dense":
            out.append(lambda x=x, w=w: F.linear(x, w))
        elif method == "topk":
            out.append(lambda x=x, w_t=w_t: sparse_gemv(x, w_t, k=k, backend=backend))
        elif method == "topk_gemv_only":
            if backend == "triton":
                from acttail_lab.sparsify.kernels import triton_gemv as tg

                idx = tg.select_topk(x, k) if 0 < k < d_in else torch.arange(d_in, device=x.device,
                                                                                dtype=torch.int32)[None, :k]
                out.append(lambda x=x, w_t=w_t, idx=idx: tg.gemv_indices(x, w_t, idx))
            else:
                idx = topk_indices(x, k) if 0 < k < d_in else torch.arange(d_in)[None, :k]
                out.append(lambda x=x, w_t=w_t, idx=idx: sparse_gemv_torch(x, w_t, idx=idx))
        elif method == "threshold":
            m = int(round(sparsity * d_in))
            thr = -1.0 if m == 0 else float(x.abs().float().flatten().kthvalue(m).values)
            out.append(lambda x=x, w_t=w_t, thr=thr: sparse_gemv(x, w_t, threshold=thr, backend=backend))
        else:
            raise ValueError(method)
    return out


# --------------------------------------------------------------------------- timers
def cpu_rounds(calls: dict[str, list], rounds: int, reps: int) -> dict[str, list[float]]:
    """Per-call process CPU time (us) of each method, one value per round; methods interleaved, order rotated.

    Each method runs over all weight copies in turn (``reps`` times), so a
    copy's weights were last read 255 MiB of other weights ago, as in
    decoding a model larger than the cache.
    """
    names = list(calls)
    for fns in calls.values():  # warm-up (and page in)
        for f in fns:
            f()
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fns = calls[name]
            start = time.process_time()
            for _ in range(reps):
                for f in fns:
                    f()
            times[name].append((time.process_time() - start) / (reps * len(fns)) * 1e6)
    return times


def cuda_graph_timer(fns: list, reps: int):
    """Capture ``fns`` (one call each) in a CUDA graph; return a function timing ``reps`` replays (us per call)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for f in fns:  # compile / autotune outside the capture
            f()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for f in fns:
            f()
    graph.replay()
    torch.cuda.synchronize()

    def timed() -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e3 / (reps * len(fns))

    timed.graph = graph  # keep the graph alive with the timer
    return timed


def gpu_rounds(calls: dict[str, list], rounds: int, reps: int) -> dict[str, list[float]]:
    """Per-call GPU time (us) of each method, one value per round, methods interleaved."""
    timers = {name: cuda_graph_timer(fns, reps) for name, fns in calls.items()}
    times = {n: [] for n in calls}
    for r in range(rounds):
        names = list(calls)
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timers[name]())
    return times


# --------------------------------------------------------------------------- tuning (GPU)
def tune_shape(copies: list[dict], sparsity: float, reps: int) -> None:
    """Time the Triton candidate configs on the TopK GEMV at ``sparsity``; register the fastest for this shape
    (for every dtype of the same element size)."""
    from acttail_lab.sparsify.kernels import triton_gemv as tg

    x, w_t = copies[0]["x"], copies[0]["w_t"]
    k = keep_count(sparsity, x.shape[1])
    best = None
    for config in tg.candidate_configs():
        fns = [lambda c=c, config=config: tg.gemv_indices(c["x"], c["w_t"], tg.select_topk(c["x"], k),
                                                           config=config) for c in copies]
        try:
            timer = cuda_graph_timer(fns, reps)
            us = min(timer() for _ in range(3))
        except Exception as exc:  # a config the compiler rejects (registers, shared memory): skip it
            print(f"  config {config} failed: {type(exc).__name__}", file=sys.stderr)
            continue
        if best is None or us < best[0]:
            best = (us, config)
    same_size = [d for d in DTYPES.values() if d.itemsize == w_t.dtype.itemsize]  # fp16 tiles serve bf16 too
    for dtype in same_size:
        tg.register_config(x.shape[1], w_t.shape[1], dtype, best[1])
    print(f"  tuned {x.shape[1]}x{w_t.shape[1]} {w_t.dtype}: {best[1]} ({best[0]:.1f} us at s={sparsity}); "
          f"used for {', '.join(str(d) for d in same_size)}", flush=True)


# --------------------------------------------------------------------------- main
def measure(device: torch.device, dtype_names: list[str], sparsities, rounds: int, reps: int,
            methods: list[str], backend: str, tune: bool) -> pd.DataFrame:
    kind = "gpu" if device.type == "cuda" else "cpu"
    if device.type == "cuda":
        l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2 ** 20)
        minimum_bytes = 4 * l2
    else:
        minimum_bytes = 512 * 2 ** 20  # 256 MiB per layout: 8x this machine's 32 MiB L3
    rows = []
    for d_in, d_out, kinds in GEMV_SHAPES[kind]:
        for dname in dtype_names:
            dtype = DTYPES[dname]
            copies = make_copies(d_in, d_out, dtype, device, n_copies_for(d_in, d_out, dtype, device, minimum_bytes))
            if tune and backend == "triton" and dname == dtype_names[0]:
                tune_shape(copies, 0.5, reps)
            for s in sparsities:
                calls = {"dense": calls_for("dense", copies, s, backend)}
                for m in methods:
                    calls[m] = calls_for(m, copies, s, backend)
                timer = gpu_rounds if device.type == "cuda" else cpu_rounds
                times = timer(calls, rounds, reps)
                dense = statistics.median(times["dense"])
                for m in methods:
                    ratios = [d / t for d, t in zip(times["dense"], times[m])]
                    rows.append(dict(device=describe_device(device), shape=f"{d_in}x{d_out}", kinds=kinds,
                                     d_in=d_in, d_out=d_out, dtype=dname, method=m, sparsity=s,
                                     time_us=statistics.median(times[m]), dense_us=dense,
                                     speedup=statistics.median(ratios), rounds=rounds))
                line = "  ".join(f"{m} {statistics.median(times[m]):8.1f} us" for m in methods)
                ratios = " / ".join(f"{row['speedup']:.2f}" for row in rows[-len(methods):])
                print(f"{d_in:>5}x{d_out:<5} {dname} s={s:<4}: dense {dense:8.1f} us  {line}  "
                      f"speedup {ratios}  limit {1 / (1 - s):.2f}", flush=True)
            del copies
    return add_limits(pd.DataFrame(rows))[list(GEMV_COLUMNS)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--dtypes", default=None, help="comma list of fp16,bf16,fp32 (default: fp16,bf16 on "
                                                       "GPU, fp32 on CPU)")
    parser.add_argument("--sparsities", default=",".join(map(str, SPARSITIES)))
    parser.add_argument("--methods", default="topk,topk_gemv_only,threshold")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5 CPU, 10 GPU)")
    parser.add_argument("--reps", type=int, default=None, help="calls per copy per round (default 1 CPU, 20 GPU)")
    parser.add_argument("--backend", default="auto", help="sparse backend: auto, triton or torch")
    parser.add_argument("--tune", action="store_true", help="GPU: time Triton tile configs per shape first")
    parser.add_argument("--out", default=None, help="CSV path (default data/results/gemv_<cpu|gpu>.csv)")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        backend = choose_backend(args.backend, device)
    except ActTailError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1) if device.type == "cpu" else None
    gpu = device.type == "cuda"
    dtypes = (args.dtypes or ("fp16,bf16" if gpu else "fp32")).split(",")
    rounds = args.rounds or (10 if gpu else 5)
    reps = args.reps or (20 if gpu else 1)
    sparsities = [float(s) for s in args.sparsities.split(",")]
    methods = args.methods.split(",")
    print(f"{describe_device(device)}; backend {backend}; {rounds} interleaved rounds; "
          f"{'CUDA graphs, CUDA events' if gpu else 'process CPU time, 1 thread'}"
          + ("" if gpu else f"; load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}"))
    start = time.perf_counter()
    table = measure(device, dtypes, sparsities, rounds, reps, methods, backend, args.tune)
    out = args.out or result_path("gemv", "gpu" if gpu else "cpu")
    write_results(table, out, device=device, seed=0, backend=backend, timing=(
        "CUDA graph replays over weight copies > 4x L2, CUDA events" if gpu else
        "process CPU time, 1 thread, interleaved rounds, weights cycled over 256 MiB per layout"),
        rounds=rounds, reps=reps, seconds=round(time.perf_counter() - start, 1),
        load_average=None if gpu else os.getloadavg())
    print(f"wrote {out} ({len(table)} rows) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
