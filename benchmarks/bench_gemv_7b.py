"""Batch-1 CPU sparse GEMV on LLaMA-2-7B matrix shapes, against the right dense baseline.

For each weight shape ``d_in x d_out`` (default 4096x4096, 4096x11008, 11008x4096
and 8192x28672 when memory allows), dtype (fp32, bf16), thread count (1, 2) and
sparsity (0-0.9), every candidate is timed in interleaved rounds (order rotated
each round, wall clock) on weight copies that together exceed 256 MiB per layout
(so weights come from DRAM, as in decoding a 7B model). Candidates:

* products over given kept positions (exact TopK, increasing order):
  ``numba`` (``kernels.cpu_gemv``: kept rows of the input-major weight read in
  place, bf16 widened in registers, float32 sums; ``numba-b<N>`` with
  ``--blocks`` sweeps its column block), ``bag`` (the PyTorch embedding-bag sum
  of ``kernels.reference``), ``gather-mv`` (``index_select`` of the kept rows,
  then ``mv``: a copy; ``--candidates`` to add it);
* whole calls, selection included: ``numba+topk``, ``numba+threshold``, ``bag+topk``;
* selection alone: ``select:torch-topk`` (``reference.topk_indices``),
  ``select:threshold-mask`` (``(|x| > t).nonzero()``), ``select:numba-topk``,
  ``select:numba-threshold``;
* dense: ``dense:F.linear`` (the call a model runs), ``dense:torch.mv``, and the
  two product kernels over all rows (``dense:numba@k=d_in``, ``dense:bag@k=d_in``),
  timed in every round with the others.

Each row (shape x dtype x threads x sparsity x candidate) gives the median time
per call, GB/s (weight bytes read / time: kept rows only for sparse products),
``vs_linear`` (= F.linear time / candidate time) and ``vs_best`` against the
fastest dense GEMV found: the best (lowest median) of the four dense candidates
(measured in every round of every point); ratios are medians of per-round ratios. ``limit = 1/(1-s)`` applies to ``vs_best`` only
(``frac_of_limit = vs_best * (1 - s)``). Selection rows carry
``frac_of_gemv`` = selection time / ``numba`` product time at the same point.

Targets (issue 27): ``numba`` at >= 90% of the limit at s = 0.5 and >= 70% at
s = 0.8 against (b), in fp32 and bf16; selection a few percent of the GEMV.

Needs a quiet machine: refuses to start when the 1-minute load is above
``--max-load`` (0.5); the sidecar records the load before and after.

    python benchmarks/bench_gemv_7b.py                      # data/results/gemv_7b_cpu.csv (+ .json)
    python benchmarks/bench_gemv_7b.py --smoke --out /tmp/gemv_smoke.csv   # tiny shapes: NOT a measurement
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from acttail_lab.core.provenance import describe_device  # noqa: E402
from acttail_lab.core.results_io import write_results  # noqa: E402
from acttail_lab.sparsify.kernels import cpu_gemv  # noqa: E402
from acttail_lab.sparsify.kernels.reference import sparse_gemv_torch, topk_indices  # noqa: E402
from acttail_lab.sparsify.topk import keep_count  # noqa: E402
from bench_gemv import make_copies, n_copies_for  # noqa: E402
from quiet import SMOKE_NOTE, add_quiet_options, check_output, check_quiet, load_record  # noqa: E402

SHAPES = ((4096, 4096), (4096, 11008), (11008, 4096), (8192, 28672))
SMOKE_SHAPES = ((64, 96), (97, 33))
SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
PRODUCTS = ("numba", "bag")
WHOLE = ("numba+topk", "numba+threshold", "bag+topk")
SELECTIONS = ("select:torch-topk", "select:threshold-mask", "select:numba-topk", "select:numba-threshold")
DENSE = ("dense:F.linear", "dense:torch.mv", "dense:numba@k=d_in", "dense:bag@k=d_in")
OUT = "data/results/gemv_7b_cpu.csv"
COLUMNS = ("device", "shape", "d_in", "d_out", "dtype", "threads", "sparsity", "k", "candidate", "kind",
           "time_us", "gb_per_s", "linear_us", "best_dense", "best_dense_us", "vs_linear", "vs_best", "limit",
           "frac_of_limit", "frac_of_gemv", "rounds", "reps")


def fits(d_in: int, d_out: int, itemsize: int, copies: int) -> bool:
    """Whether ``copies`` copies of both layouts fit in half of MemAvailable (Linux; True elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return True
    return 2 * copies * d_in * d_out * itemsize < avail / 2


def prepare(copies: list[dict], s: float) -> list[dict]:
    """Per copy: numpy views, the exact TopK positions (increasing) and the s-quantile threshold of ``|x|``."""
    d_in = copies[0]["x"].shape[1]
    k = keep_count(s, d_in)
    out = []
    for c in copies:
        xs = cpu_gemv.activation_row(c["x"])
        work = cpu_gemv.Workspace(d_in, rows=1)
        pos = work.topk(xs, np.array([k], dtype=np.int64))[0, :k].copy() if k < d_in else np.arange(d_in)
        m = int(round(s * d_in))
        thr = -1.0 if m == 0 else float(c["x"].abs().float().flatten().kthvalue(m).values)
        out.append(dict(c, xs=xs, w_np=cpu_gemv.weight_array(c["w_t"]), pos=pos, pos_t=torch.from_numpy(pos)[None],
                        k=k, thr=thr, thr_np=np.array([cpu_gemv.threshold_in_dtype(thr, c["x"].dtype)],
                                                      dtype=np.float32),
                        work=work, ks=np.array([k], dtype=np.int64), out=np.empty(c["w"].shape[0], np.float32),
                        all=cpu_gemv.all_positions(d_in), all_t=torch.arange(d_in)[None]))
    return out


def call_for(name: str, c: dict, threads: int):
    """A zero-argument callable running candidate ``name`` on prepared copy ``c``."""
    x, w, w_t, k = c["x"], c["w"], c["w_t"], c["k"]
    if name == "dense:F.linear":
        return lambda: F.linear(x, w)
    if name == "dense:torch.mv":
        return lambda: torch.mv(w, x[0])
    if name == "dense:numba@k=d_in":
        return lambda: cpu_gemv.gemv(c["w_np"], c["xs"], c["all"], x.shape[1], threads, None, c["out"])
    if name == "dense:bag@k=d_in":
        return lambda: sparse_gemv_torch(x, w_t, idx=c["all_t"])
    if name == "numba" or name.startswith("numba-b"):
        block = int(name[7:]) if name.startswith("numba-b") else None
        return lambda: cpu_gemv.gemv(c["w_np"], c["xs"], c["pos"], k, threads, block, c["out"])
    if name == "bag":
        return lambda: sparse_gemv_torch(x, w_t, idx=c["pos_t"])
    if name == "gather-mv":
        return lambda: torch.mv(w_t.index_select(0, c["pos_t"][0]).t(), x[0, c["pos_t"][0]])
    if name == "numba+topk":
        def run():
            xs = cpu_gemv.activation_row(x)
            pos = c["work"].topk(xs, c["ks"])[0] if k < x.shape[1] else cpu_gemv.all_positions(x.shape[1])
            return cpu_gemv.gemv(c["w_np"], xs, pos, k, threads, None, c["out"])
        return run
    if name == "numba+threshold":
        def run():
            xs = cpu_gemv.activation_row(x)
            idx, counts = c["work"].threshold(xs, c["thr_np"])
            return cpu_gemv.gemv(c["w_np"], xs, idx[0], int(counts[0]), threads, None, c["out"])
        return run
    if name == "bag+topk":
        return lambda: sparse_gemv_torch(x, w_t, k=k)
    if name == "select:torch-topk":
        return lambda: topk_indices(x, k) if 0 < k < x.shape[1] else None
    if name == "select:threshold-mask":
        return lambda: (x[0].abs() > c["thr"]).nonzero()
    if name == "select:numba-topk":
        return lambda: c["work"].topk(cpu_gemv.activation_row(x), c["ks"])
    if name == "select:numba-threshold":
        return lambda: c["work"].threshold(cpu_gemv.activation_row(x), c["thr_np"])
    raise ValueError(f"unknown candidate {name!r}")


def time_rounds(calls: dict[str, list], rounds: int, reps: dict[str, int]) -> dict[str, list[float]]:
    """Wall-clock microseconds per call of each candidate, one value per round; order rotated every round."""
    names = list(calls)
    for fns in calls.values():  # warm-up: compile, page in
        for f in fns:
            f()
    times = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fns, n = calls[name], reps[name]
            start = time.perf_counter_ns()
            for _ in range(n):
                for f in fns:
                    f()
            times[name].append((time.perf_counter_ns() - start) / 1e3 / (n * len(fns)))
    return times


def kind_of(name: str) -> str:
    return name.split(":")[0] if ":" in name else ("whole" if "+" in name else "product")


def measure_point(copies, s, threads, candidates, rounds, reps):
    """Rows of one (shape, dtype, threads, sparsity): every candidate and the dense set, in the same rounds."""
    prepared = prepare(copies, s)
    dense_names = [n for n in DENSE if cpu_gemv.numba_available() or "numba" not in n]
    names = dense_names + [c for c in candidates if c not in DENSE]
    calls = {n: [call_for(n, c, threads) for c in prepared] for n in names}
    is_select = {n: n.startswith("select:") for n in names}
    times = time_rounds(calls, rounds, {n: reps * (20 if is_select[n] else 1) for n in names})
    dense = {n: times[n] for n in dense_names}
    best = min(dense, key=lambda n: statistics.median(dense[n]))
    d_in, d_out = copies[0]["w"].shape[1], copies[0]["w"].shape[0]
    item, k = copies[0]["w"].element_size(), prepared[0]["k"]
    rows = []
    for n in names:
        t = statistics.median(times[n])
        kept = d_in if n.startswith("dense:") else k
        ratio = (lambda base: statistics.median(b / x for b, x in zip(base, times[n])))
        rows.append(dict(candidate=n, kind=kind_of(n), sparsity=s, k=k, time_us=t,
                         gb_per_s=np.nan if is_select[n] else kept * d_out * item / t / 1e3,
                         linear_us=statistics.median(times["dense:F.linear"]), best_dense=best,
                         best_dense_us=statistics.median(dense[best]),
                         vs_linear=ratio(times["dense:F.linear"]),
                         vs_best=ratio(dense[best]),
                         frac_of_gemv=t / statistics.median(times["numba"]) if is_select[n] and "numba" in times
                         else np.nan))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(f"{a}x{b}" for a, b in SHAPES), help="d_in x d_out list")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--sparsities", default=",".join(map(str, SPARSITIES)))
    parser.add_argument("--candidates", default=",".join(PRODUCTS + WHOLE + SELECTIONS),
                        help="also: gather-mv (a copy of the kept rows, then mv)")
    parser.add_argument("--blocks", default="", help="comma list of extra numba column blocks (numba-b<N>)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=1, help="passes over the weight copies per round")
    parser.add_argument("--cycle-mib", type=int, default=256, help="weight MiB per layout cycled per call")
    add_quiet_options(parser, "tiny shapes, one round: NOT a measurement", OUT)
    args = parser.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",")]
    # before numba is first imported (numba_available): its pool size is read once (see bench_decode_7b.py)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(max(threads_list)))
    if not cpu_gemv.numba_available():
        print("numba is not installed: the numba candidates are skipped, the PyTorch kernel is measured alone. "
              + cpu_gemv.NUMBA_FIX, file=sys.stderr)
    out = check_output(args.out or OUT, args.smoke)
    load = check_quiet(args.max_load, args.force, args.smoke)
    shapes = SMOKE_SHAPES if args.smoke else [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")]
    rounds, cycle = (1, 1) if args.smoke else (args.rounds, args.cycle_mib)
    candidates = [c for c in args.candidates.split(",") + [f"numba-b{b}" for b in args.blocks.split(",") if b]
                  if cpu_gemv.numba_available() or "numba" not in c]
    start, rows = time.perf_counter(), []
    for d_in, d_out in shapes:
        for dname in args.dtypes.split(","):
            dtype = DTYPES[dname]
            n = n_copies_for(d_in, d_out, dtype, torch.device("cpu"), 2 * cycle * 2 ** 20)
            if not fits(d_in, d_out, dtype.itemsize, n):
                print(f"skipping {d_in}x{d_out} {dname}: {n} copies of both layouts do not fit in memory")
                continue
            copies = make_copies(d_in, d_out, dtype, torch.device("cpu"), n)
            for threads in threads_list:
                torch.set_num_threads(threads)
                if cpu_gemv.numba_available():
                    cpu_gemv.set_threads(threads)
                for s in [float(v) for v in args.sparsities.split(",")]:
                    point = measure_point(copies, s, threads, candidates, rounds, args.reps)
                    for row in point:
                        rows.append(dict(device=describe_device("cpu"), shape=f"{d_in}x{d_out}", d_in=d_in,
                                         d_out=d_out, dtype=dname, threads=threads, rounds=rounds, reps=args.reps,
                                         limit=1 / (1 - s), frac_of_limit=row["vs_best"] * (1 - s), **row))
                    got = {r["candidate"]: r for r in point}
                    line = "  ".join(f"{c} {got[c]['time_us']:8.1f}us x{got[c]['vs_best']:.2f}"
                                     for c in ("numba", "bag") if c in got)
                    print(f"{d_in:>5}x{d_out:<5} {dname} t={threads} s={s:.1f}: F.linear "
                          f"{got['dense:F.linear']['time_us']:8.1f}us  best dense {point[0]['best_dense']}  {line}"
                          f"  limit {1 / (1 - s):.2f}", flush=True)
            del copies
    table = pd.DataFrame(rows)[list(COLUMNS)]
    record = load_record(load)
    write_results(table, out, device=torch.device("cpu"), seed=0, timing="wall clock (perf_counter_ns), "
                  "interleaved rounds, order rotated, weight copies cycled", cycle_mib_per_layout=cycle,
                  rounds=rounds, reps=args.reps, load=record, smoke=args.smoke,
                  numba=cpu_gemv.numba_available(), seconds=round(time.perf_counter() - start, 1),
                  note=(SMOKE_NOTE if args.smoke else "quiet machine" if record["quiet"] else
                        "NOT QUIET: the load exceeded max_load; do not report"))
    print(f"wrote {out} ({len(table)} rows) in {time.perf_counter() - start:.0f} s; load {record['load_before']} "
          f"-> {record['load_after']}" + (f"\n{SMOKE_NOTE}" if args.smoke else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
