"""End-to-end batch-1 decoding speed: dense vs uniform vs ActTail allocations at 40-80% sparsity.

The model is a LLaMA-2-7B-shaped ``random_model("llama2-7b")`` with RANDOM
weights (speed does not depend on the weight values; never read quality into
it). On CPU it is LLaMA-2-7B scaled by 1/4 in width (``speed_results.CPU_MODEL``:
hidden 1024, intermediate 2752, 32 layers, vocab 8000; the CPU GEMV shapes).
Allocations come from
``allocate(published_alphas("llama2-7b"), strategy, target)``: AlphaPruning's
published alphas of the real LLaMA-2-7B, layer by layer (the CPU model has the
same 32 layers and proportional shapes, so the same budgets apply).

Each configuration decodes ``--tokens`` tokens greedily from position 0 with
``kernels.graph_decode.StaticDecoder`` (static KV cache of ``--tokens`` slots,
no host synchronisation). Selection modes: ``topk`` (exact per-token TopK,
selection pass included) and ``threshold`` (TEAL-style thresholds calibrated
on 64 random tokens; the realised sparsity during decoding is measured and
reported). GPU: each configuration's decoding step, greedy argmax included,
is captured in a CUDA graph and replayed (``GraphedDecoder``), timed with CUDA
events. CPU: eager steps, one thread, process CPU time. Configurations are
interleaved over rounds (order rotated); speedup = median over rounds of the
per-round ratio to the dense model.

Columns: ``limit = 1 / (1 - target)``; ``bytes_limit`` the limit from the
weight bytes actually read per token (projections at their realised sparsity,
plus the dense LM head), which is what a memory-bound decoder can reach.

    python benchmarks/bench_decode.py --device cpu     # data/results/decode_cpu.csv (+ .json)
    python benchmarks/bench_decode.py --device cuda    # data/results/decode_gpu.csv (+ .json)
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from acttail_lab.allocation import allocate  # noqa: E402
from acttail_lab.core.errors import ActTailError  # noqa: E402
from acttail_lab.core.models import projection_table, random_model, resolve_device  # noqa: E402
from acttail_lab.core.provenance import describe_device  # noqa: E402
from acttail_lab.core.reference import published_alphas  # noqa: E402
from acttail_lab.core.results_io import write_results  # noqa: E402
from acttail_lab.report.speed import CPU_MODEL, DECODE_COLUMNS, result_path  # noqa: E402
from acttail_lab.sparsify.kernels.decode import (
    SparseLinear,
    calibrate_thresholds,
    sparse_decoding,
)
from acttail_lab.sparsify.kernels.dispatch import choose_backend  # noqa: E402
from acttail_lab.sparsify.kernels.graph_decode import GraphedDecoder, StaticDecoder  # noqa: E402

TARGETS = (0.4, 0.5, 0.6, 0.7, 0.8)
STRATEGIES = ("uniform", "acttail")


def build_model(device: torch.device, dtype: torch.dtype, layers: int | None):
    """The random-weight LLaMA-2-7B-shaped model (scaled down on CPU), on ``device``."""
    overrides = dict(CPU_MODEL) if device.type == "cpu" else {}
    if layers:
        overrides["num_hidden_layers"] = layers
    with torch.device(device):  # on a GPU the random initialisation runs there too (seconds, not minutes)
        model = random_model("llama2-7b", seed=0, dtype=dtype, **overrides)
    model = model.to(device)
    c = model.config
    shape = (f"hidden {c.hidden_size}, intermediate {c.intermediate_size}, {c.num_hidden_layers} layers, "
             f"vocab {c.vocab_size}")
    name = "llama2-7b-shaped" if device.type == "cuda" and not overrides else "llama2-7b scaled 1/4 in width"
    if device.type == "cuda" and overrides:
        name = "llama2-7b-shaped, fewer layers"
    return model, f"{name} (random weights: {shape})"


def allocations(model, targets, strategies) -> dict:
    """``(strategy, target) -> allocation`` over the model's projections (7B published alphas, layer by layer)."""
    alphas = published_alphas("llama2-7b")
    n_layers = projection_table(model)["layer"].max() + 1
    alphas = alphas[alphas["layer"] < n_layers].reset_index(drop=True)  # --layers: the first layers only
    return {(s, t): allocate(alphas, s, t) for s in strategies for t in targets}


def bytes_limit(model, table: pd.DataFrame, sparsity: dict[str, float]) -> float:
    """Weight bytes read per dense token / per sparse token (projections scaled by 1 - s; LM head dense)."""
    proj = table["n_params"].to_numpy(dtype=float)
    s = np.array([sparsity.get(n, 0.0) for n in table["name"]])
    other = float(model.lm_head.weight.numel())  # one embedding row and the norms are negligible
    return (proj.sum() + other) / (float((proj * (1 - s)).sum()) + other)


def realised_sparsity(decoder: StaticDecoder, model, n_tokens: int) -> dict[str, float]:
    """Per projection, the share of inputs skipped while decoding ``n_tokens`` eagerly (SparseLinear rules)."""
    zeros: dict[str, list[float]] = {}
    handles = []
    for module in model.modules():
        if isinstance(module, SparseLinear):
            def hook(mod, args):
                x = args[0]
                kept = mod.k if mod.k is not None else int((x.abs() > mod.threshold).sum())
                zeros.setdefault(mod.name, []).append(1.0 - kept / mod.in_features)
            handles.append(module.register_forward_pre_hook(hook))
    try:
        decoder.reset()
        decoder.decode(first_token=1, n_tokens=n_tokens)
    finally:
        for h in handles:
            h.remove()
    return {name: float(np.mean(v)) for name, v in zeros.items()}


def weighted(table: pd.DataFrame, sparsity: dict[str, float]) -> float:
    """Parameter-weighted mean sparsity over the projections of ``table`` (missing names: 0)."""
    s = np.array([sparsity.get(n, 0.0) for n in table["name"]])
    return float((s * table["n_params"]).sum() / table["n_params"].sum())


def tune_shapes(table: pd.DataFrame, dtype: torch.dtype, device: torch.device) -> None:
    """Register the fastest Triton tiles for every projection shape (``bench_gemv.tune_shape`` at s = 0.5)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_gemv import make_copies, n_copies_for, tune_shape

    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2 ** 20)
    for d_in, d_out in table[["d_in", "d_out"]].drop_duplicates().itertuples(index=False):
        copies = make_copies(d_in, d_out, dtype, device, n_copies_for(d_in, d_out, dtype, device, 4 * l2))
        tune_shape(copies, 0.5, reps=20)  # registers the tiles for this shape (same-size dtypes too)
        del copies


@contextlib.contextmanager
def configuration(model, cfg: dict, backend: str, weights: dict):
    if cfg["strategy"] == "dense":
        yield
        return
    with sparse_decoding(model, cfg["allocation"], backend=backend, mode=cfg["mode"],
                         thresholds=cfg.get("thresholds"), weights=weights):
        yield


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--dtype", default=None, help="fp16 or bf16 on GPU (default fp16); fp32 on CPU")
    parser.add_argument("--targets", default=",".join(map(str, TARGETS)))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--modes", default="topk,threshold")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per timed run (default 128 GPU, 8 CPU)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5 GPU, 3 CPU)")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers (quick checks only)")
    parser.add_argument("--backend", default="auto", help="sparse backend: auto, triton or torch")
    parser.add_argument("--tune", action="store_true", help="GPU: time Triton tile configs per weight shape first "
                                                            "(bench_gemv.tune_shape)")
    parser.add_argument("--out", default=None, help="CSV path (default data/results/decode_<cpu|gpu>.csv)")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        backend = choose_backend(args.backend, device)
    except ActTailError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gpu = device.type == "cuda"
    if not gpu:
        torch.set_num_threads(1)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[
        args.dtype or ("fp16" if gpu else "fp32")]
    n_tokens = args.tokens or (128 if gpu else 8)
    rounds = args.rounds or (5 if gpu else 3)
    targets = [float(t) for t in args.targets.split(",")]
    start = time.perf_counter()

    model, model_label = build_model(device, dtype, args.layers)
    print(f"{describe_device(device)}; {model_label}, {str(dtype).removeprefix('torch.')}; backend {backend}; "
          f"{n_tokens} tokens x {rounds} interleaved rounds; "
          f"{'CUDA graphs, CUDA events' if gpu else 'eager, 1 thread, process CPU time'}"
          + ("" if gpu else f"; load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}"), flush=True)
    calib_ids = torch.randint(0, model.config.vocab_size, (1, 64), generator=torch.Generator().manual_seed(0))
    configs = [dict(strategy="dense", target=0.0, mode="dense")]
    for (strategy, target), alloc in allocations(model, targets, args.strategies.split(",")).items():
        for mode in args.modes.split(","):
            cfg = dict(strategy=strategy, target=target, mode=mode, allocation=alloc)
            if mode == "threshold":
                with torch.no_grad():
                    cfg["thresholds"] = calibrate_thresholds(model, alloc, calib_ids.to(device))
            configs.append(cfg)

    table = projection_table(model)  # before any swap: iter_projections wants nn.Linear modules
    if args.tune and gpu and backend == "triton":
        tune_shapes(table, dtype, device)
    decoder = StaticDecoder(model, max_len=n_tokens)
    weights: dict = {}
    for cfg in configs:  # realised sparsity (eager) and, on GPU, one captured graph per configuration
        with torch.no_grad(), configuration(model, cfg, backend, weights):
            per_proj = realised_sparsity(decoder, model, min(n_tokens, 8)) if cfg["strategy"] != "dense" else {}
            cfg["realised"] = weighted(table, per_proj)
            cfg["bytes_limit"] = bytes_limit(model, table, per_proj)
            if gpu:
                cfg["graph"] = GraphedDecoder(decoder, first_token=1)

    seconds = {id(c): [] for c in configs}
    for r in range(rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for cfg in order:
            if gpu:
                graph = cfg["graph"]
                graph.restart()
                torch.cuda.synchronize()
                t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                t0.record()
                for _ in range(n_tokens):
                    graph.replay()
                t1.record()
                t1.synchronize()
                seconds[id(cfg)].append(t0.elapsed_time(t1) / 1e3)
            else:
                with torch.no_grad(), configuration(model, cfg, backend, weights):
                    decoder.reset()
                    c0 = time.process_time()
                    decoder.decode(first_token=1, n_tokens=n_tokens)
                    seconds[id(cfg)].append(time.process_time() - c0)
        print(f"round {r + 1}/{rounds} done ({time.perf_counter() - start:.0f} s)", flush=True)

    dense_s = seconds[id(configs[0])]
    rows = []
    for cfg in configs:
        s = seconds[id(cfg)]
        speedup = statistics.median(d / x for d, x in zip(dense_s, s))
        target = cfg["target"]
        rows.append(dict(device=describe_device(device), model=model_label, dtype=str(dtype).removeprefix("torch."),
                         strategy=cfg["strategy"], target=target, mode=cfg["mode"],
                         backend="cuBLAS/torch" if cfg["strategy"] == "dense" else backend,
                         tokens_per_s=n_tokens / statistics.median(s),
                         dense_tokens_per_s=n_tokens / statistics.median(dense_s), speedup=speedup,
                         limit=1.0 / (1.0 - target), frac_of_limit=speedup * (1.0 - target),
                         bytes_limit=cfg["bytes_limit"] if cfg["strategy"] != "dense" else 1.0,
                         realised_sparsity=cfg["realised"], n_tokens=n_tokens, rounds=rounds, cuda_graphs=gpu))
        print(f"{cfg['strategy']:>8s} {target:.1f} {cfg['mode']:>9s}: {rows[-1]['tokens_per_s']:8.2f} tokens/s  "
              f"speedup {speedup:5.2f}  limit {rows[-1]['limit']:4.2f}  bytes-limit {rows[-1]['bytes_limit']:4.2f}  "
              f"realised {cfg['realised']:.3f}")
    table = pd.DataFrame(rows)[list(DECODE_COLUMNS)]
    out = args.out or result_path("decode", "gpu" if gpu else "cpu")
    write_results(table, out, device=device, seed=0, backend=backend, model=model_label,
                  weights="random (speed only)", allocation_source="published alphas of LLaMA-2-7B (AlphaPruning)",
                  timing=("CUDA graph per configuration, greedy step inside, CUDA events" if gpu else
                          "eager StaticDecoder, 1 thread, process CPU time"),
                  rounds=rounds, n_tokens=n_tokens, seconds=round(time.perf_counter() - start, 1),
                  load_average=None if gpu else os.getloadavg())
    print(f"wrote {out} ({len(table)} rows) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
