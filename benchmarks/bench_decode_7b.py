"""Batch-1 greedy decoding on CPU with LLaMA-2-7B layer shapes: tokens/s per allocation strategy and sparsity.

The model has RANDOM weights (speed does not depend on their values; never read
quality into it) and LLaMA-2-7B's shapes (hidden 4096, intermediate 11008, 32
heads, vocab 32000), with as many layers as ``--mem-gb`` holds (default 16 GB:
18 layers in fp32, 32 in bf16; ``--layers`` overrides). Decoding: greedy, KV
cache, ``kernels.graph_decode.StaticDecoder`` (eager), ``--tokens`` tokens from
position 0, wall clock, ``--threads`` torch and numba threads.

Configurations (interleaved in every round; the order rotates):

* ``dense``: the model's own path (``nn.Linear`` on row-major weights, BLAS);
* ``dense-kernel``: every projection through the numba kernel at k = d_in;
* strategies ``uniform``, ``acttail``, ``acttail-block``, ``teal-greedy-fine``
  and ``wina`` at 40-80% (``allocate`` on AlphaPruning's published LLaMA-2-7B
  alphas of the first layers), through ``kernels.cpu_decode``: one selection per
  shared input (q/k/v, gate/up), ``--modes topk`` and / or ``threshold``
  (calibrated on 64 random tokens). ``teal-greedy-fine`` needs a greedy path of
  this model (``--greedy-path``); without one, ``teal-greedy-proxy`` is used:
  SmolLM2-135M's committed greedy path mapped by relative depth and projection
  kind, rescaled to the target on these shapes (``solve_scale``), labelled so.

Each round: the dense path, then (one transpose of every weight) all kernel
configurations via ``CpuDecoding.reconfigure``; the next round starts with the
kernel block. Per configuration: tokens/s (median over rounds; ``tokens_per_s_min`` / ``_max``: the
slowest and fastest round; ``dense_tokens_per_s``: the dense path's median), speedup against
``dense`` and against ``dense-kernel`` (medians of per-round ratios),
``limit = 1/(1-target)``, ``bytes_limit`` (weight bytes per token dense / as
read, LM head included), and the time per token in the GEMVs, the selection,
the groups' wrapper work (conversions, outputs) and everything else (attention,
norms, LM head, module calls). Needs a quiet machine (refuses above ``--max-load``).

    python benchmarks/bench_decode_7b.py                         # data/results/decode_7b_cpu.csv (+ .json)
    python benchmarks/bench_decode_7b.py --dtype bf16 --out data/results/decode_7b_cpu_bf16.csv
    python benchmarks/bench_decode_7b.py --smoke --out /tmp/decode_smoke.csv   # tiny model: NOT a measurement

``--model NAME`` decodes a real built-in model instead (e.g. ``smollm2-135m``, ``qwen2.5-coder-1.5b``; float32 or
bf16 cast after loading): the allocations then come from that model's committed peak-rule spectra
(``data/results/<model>_spectra_peak.csv``), and ``teal-greedy-fine`` from ``--greedy-path`` or, where one is
committed, the model's own (coarse) greedy path, labelled ``teal-greedy``:

    python benchmarks/bench_decode_7b.py --model smollm2-135m --out data/results/decode_smollm2-135m_cpu.csv
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

from acttail_lab.allocation import allocate  # noqa: E402
from acttail_lab.allocation.greedy_path import teal_greedy_allocation  # noqa: E402
from acttail_lab.allocation.solver import solve_scale  # noqa: E402
from acttail_lab.core.models import projection_table, random_model  # noqa: E402
from acttail_lab.core.paths import result_path  # noqa: E402
from acttail_lab.core.provenance import describe_device  # noqa: E402
from acttail_lab.core.reference import published_alphas  # noqa: E402
from acttail_lab.core.results_io import write_results  # noqa: E402
from acttail_lab.report.explorer_sources import load_spectra  # noqa: E402
from acttail_lab.sparsify.kernels import cpu_gemv  # noqa: E402
from acttail_lab.sparsify.kernels.cpu_decode import cpu_sparse_decoding  # noqa: E402
from acttail_lab.sparsify.kernels.decode import calibrate_thresholds  # noqa: E402
from acttail_lab.sparsify.kernels.graph_decode import StaticDecoder  # noqa: E402
from quiet import SMOKE_NOTE, add_quiet_options, check_output, check_quiet, load_record  # noqa: E402

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                 vocab_size=32000)
STRATEGIES = ("uniform", "acttail", "acttail-block", "teal-greedy-fine", "wina")
TARGETS = (0.4, 0.5, 0.6, 0.7, 0.8)
SMOLLM2_PATH = "data/results/smollm2-135m_teal_greedy_path.csv"
OUT = "data/results/decode_7b_cpu.csv"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def layers_for(mem_gb: float, itemsize: int) -> int:
    """Decoder layers of LLaMA-2-7B shapes whose weights, with embeddings and LM head, fit in ``mem_gb``."""
    h, f, v = LLAMA2_7B["hidden_size"], LLAMA2_7B["intermediate_size"], LLAMA2_7B["vocab_size"]
    per_layer, fixed = (4 * h * h + 3 * h * f) * itemsize, 2 * v * h * itemsize
    return max(1, min(32, int((mem_gb * 1e9 - fixed) // per_layer)))


def build_model(dtype: torch.dtype, layers: int, smoke: bool, name: str | None = None):
    """The random-weight model (made directly in ``dtype``: no float32 copy of a bf16 model), or built-in ``name``."""
    if name is not None:
        from acttail_lab.core.models import load_model

        model = load_model(name).model.to(dtype).eval()
        return model, f"{name} (real weights, {len(projection_table(model)['layer'].unique())} layers)"
    if smoke:
        return random_model("llama-tiny", seed=0, dtype=dtype), "llama-tiny (smoke)"
    from transformers import LlamaConfig, LlamaForCausalLM

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**LLAMA2_7B, num_hidden_layers=layers)).eval()
    finally:
        torch.set_default_dtype(previous)
    return model, f"llama2-7b-shaped, {layers} layers (random weights)"


def greedy_proxy(table: pd.DataFrame, target: float, path: pd.DataFrame) -> dict:
    """SmolLM2's greedy allocation at ``target`` mapped onto ``table`` by relative depth and kind, rescaled."""
    src = teal_greedy_allocation(path, target)
    n_src, n_dst = src["layer"].max() + 1, table["layer"].max() + 1
    by = {(r.layer, r.projection): r.sparsity for r in src.itertuples()}
    ratios = [by[(round(layer * (n_src - 1) / max(n_dst - 1, 1)), proj)]
              for layer, proj in zip(table["layer"], table["projection"])]
    return dict(zip(table["name"], solve_scale(ratios, table["n_params"], target, s_max=0.99)))


def alphas_for(model, name: str | None) -> pd.DataFrame:
    """The alphas the allocations read: a real model's committed peak-rule spectra, else LLaMA-2-7B's published
    alphas of the first layers (the random model has LLaMA-2-7B's shapes)."""
    if name is not None:
        return load_spectra(name, "peak", compute=False)
    table = projection_table(model)
    alphas = published_alphas("llama2-7b")
    return alphas[alphas["layer"] <= table["layer"].max()].reset_index(drop=True)


def greedy_source(name: str | None, greedy_path: str | None) -> tuple[str | None, str]:
    """(path CSV or None, label) of the greedy allocation: a given path, a real model's committed coarse path,
    or None (the SmolLM2 proxy)."""
    if greedy_path:
        return greedy_path, "teal-greedy-fine"
    own = result_path("teal_greedy_path", name) if name else None
    if own and own.exists():
        return str(own), "teal-greedy"
    return None, "teal-greedy-proxy"


def configurations(model, strategies, targets, modes, greedy_path, calib_ids, name=None) -> list[dict]:
    """One dict per (strategy, target, mode): the allocation and, for thresholds, calibrated thresholds."""
    table = projection_table(model)
    alphas = alphas_for(model, name)
    greedy_path, greedy_label = greedy_source(name, greedy_path)
    path = pd.read_csv(greedy_path or SMOLLM2_PATH)
    configs = []
    for strategy in strategies:
        for target in targets:
            if strategy == "wina":
                label, alloc, cfg_modes = "wina", allocate(alphas, "uniform", target), ["wina"]
            elif strategy == "teal-greedy-fine" and greedy_path is None:
                label, alloc, cfg_modes = greedy_label, greedy_proxy(table, target, path), modes
            elif strategy == "teal-greedy-fine":
                preset = "teal-greedy-fine" if greedy_label == "teal-greedy-fine" else "teal-greedy"
                label, alloc, cfg_modes = greedy_label, allocate(alphas, preset, target, greedy_path=path), modes
            else:
                label, alloc, cfg_modes = strategy, allocate(alphas, strategy, target), modes
            for mode in cfg_modes:
                cfg = dict(strategy=label, target=target, mode=mode, allocation=alloc, thresholds=None)
                if mode == "threshold":
                    with torch.no_grad():
                        cfg["thresholds"] = calibrate_thresholds(model, alloc, calib_ids)
                configs.append(cfg)
    return configs


def timed_decode(decoder: StaticDecoder, n_tokens: int) -> float:
    decoder.reset()
    start = time.perf_counter()
    decoder.decode(first_token=1, n_tokens=n_tokens)
    return time.perf_counter() - start


def run_rounds(model, configs, args, threads) -> None:
    """Fill ``cfg["seconds"]`` (one per round) and ``cfg["stats"]`` for the dense path and every kernel config."""
    decoder = StaticDecoder(model, max_len=args.tokens)
    dense, kernel = configs[0], configs[1:]
    for r in range(args.rounds):
        def dense_run():
            with torch.no_grad():
                timed_decode(decoder, min(2, args.tokens))  # warm-up after the weights moved
                dense["seconds"].append(timed_decode(decoder, args.tokens))

        if r % 2 == 0:
            dense_run()
        order = kernel[r % len(kernel):] + kernel[:r % len(kernel)]
        if cpu_gemv.numba_available():
            with torch.no_grad(), cpu_sparse_decoding(model, 0.0, backend="numba", threads=threads,
                                                      dense_through_kernel=True) as run:
                for cfg in order:
                    run.reconfigure(cfg["allocation"], mode=cfg["mode"], thresholds=cfg["thresholds"])
                    timed_decode(decoder, min(2, args.tokens))
                    run.reset_stats()
                    cfg["seconds"].append(timed_decode(decoder, args.tokens))
                    cfg["stats"].append(run.stats())
        else:  # the PyTorch path, one swap per configuration (cpu_sparse_decoding warns why)
            for cfg in order:
                with torch.no_grad(), cpu_sparse_decoding(model, cfg["allocation"], mode=cfg["mode"],
                                                          thresholds=cfg["thresholds"],
                                                          dense_through_kernel=True):
                    cfg["seconds"].append(timed_decode(decoder, args.tokens))
        if r % 2 == 1:
            dense_run()
        print(f"round {r + 1}/{args.rounds} done", flush=True)


def rows_of(configs, model, args, label, dtype_name, threads) -> list[dict]:
    dense_s = configs[0]["seconds"]
    kernel_s = configs[1]["seconds"]
    head = model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    rows = []
    for cfg in configs:
        s = cfg["seconds"]
        st = {key: statistics.median(d[key] for d in cfg["stats"]) for key in cfg["stats"][0]} if cfg["stats"] \
            else {}
        per_token = statistics.median(s) / args.tokens
        parts = {p: st.get(f"{p}_s", np.nan) / args.tokens for p in ("gemv", "select", "wrap")}
        proj = st.get("dense_bytes", np.nan)
        rows.append(dict(
            device=describe_device("cpu"), model=label, dtype=dtype_name, threads=threads,
            strategy=cfg["strategy"], target=cfg["target"], mode=cfg["mode"],
            tokens_per_s=1.0 / per_token, tokens_per_s_min=args.tokens / max(s), tokens_per_s_max=args.tokens / min(s),
            dense_tokens_per_s=args.tokens / statistics.median(dense_s),
            speedup=statistics.median(d / x for d, x in zip(dense_s, s)),
            speedup_vs_kernel_dense=statistics.median(d / x for d, x in zip(kernel_s, s)),
            limit=1.0 / (1.0 - cfg["target"]),
            bytes_limit=(proj + head) / (st.get("read_bytes", np.nan) + head) if st else np.nan,
            read_fraction=st.get("read_fraction", np.nan), ms_per_token=per_token * 1e3,
            gemv_ms=parts["gemv"] * 1e3, select_ms=parts["select"] * 1e3, wrap_ms=parts["wrap"] * 1e3,
            other_ms=(per_token - sum(parts.values())) * 1e3 if st else np.nan,
            n_tokens=args.tokens, rounds=args.rounds))
        r = rows[-1]
        print(f"{r['strategy']:>18s} {r['target']:.1f} {r['mode']:>9s}: {r['tokens_per_s']:7.3f} tok/s  "
              f"x{r['speedup']:.2f} vs dense, x{r['speedup_vs_kernel_dense']:.2f} vs kernel-dense  "
              f"limit {r['limit']:.2f}  gemv {r['gemv_ms']:.1f} select {r['select_ms']:.2f} "
              f"wrap {r['wrap_ms']:.2f} other {r['other_ms']:.1f} ms/token")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mem-gb", type=float, default=16.0, help="weight memory budget (sets the layers)")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--targets", default=",".join(map(str, TARGETS)))
    parser.add_argument("--modes", default="topk", help="topk and / or threshold (wina always uses its scores)")
    parser.add_argument("--greedy-path", default=None, help="a teal_greedy.greedy_path CSV of this model")
    parser.add_argument("--model", default=None, help="a built-in model with committed spectra (real weights)")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    add_quiet_options(parser, "tiny model, 1 round, 3 tokens: NOT a measurement", OUT)
    args = parser.parse_args(argv)
    # before numba is first imported (numba_available): its pool size is read once, and a later change of the
    # variable fails at the next compilation ("Cannot set NUMBA_NUM_THREADS ... once the threads have been launched")
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    if not cpu_gemv.numba_available():
        print("numba is not installed: kernel configurations run on the PyTorch kernel. " + cpu_gemv.NUMBA_FIX,
              file=sys.stderr)
    out = check_output(args.out or OUT, args.smoke)
    load = check_quiet(args.max_load, args.force, args.smoke)
    if args.smoke:
        args.tokens, args.rounds = 3, 1
    dtype = DTYPES[args.dtype]
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    layers = args.layers or layers_for(args.mem_gb, dtype.itemsize)
    model, label = build_model(dtype, layers, args.smoke, args.model)
    print(f"{describe_device('cpu')}; {label}, {args.dtype}, {args.threads} thread(s); {args.tokens} tokens x "
          f"{args.rounds} rounds; model built in {time.perf_counter() - start:.0f} s", flush=True)
    calib = torch.randint(0, model.config.vocab_size, (1, 64), generator=torch.Generator().manual_seed(0))
    configs = [dict(strategy="dense", target=0.0, mode="dense"),
               dict(strategy="dense-kernel", target=0.0, mode="topk", allocation=0.0, thresholds=None)]
    configs += configurations(model, args.strategies.split(","), [float(t) for t in args.targets.split(",")],
                              args.modes.split(","), args.greedy_path, calib, args.model)
    for cfg in configs:
        cfg.update(seconds=[], stats=[])
    run_rounds(model, configs, args, args.threads)
    table = pd.DataFrame(rows_of(configs, model, args, label, args.dtype, args.threads))
    record = load_record(load)
    write_results(table, check_output(out, args.smoke), device=torch.device("cpu"), seed=0, model=label,
                  weights="random (speed only)" if args.model is None else "real (built-in model)",
                  layers=None if args.model else layers, threads=args.threads,
                  allocation_source=("published alphas of LLaMA-2-7B (AlphaPruning), first layers; "
                                     if args.model is None else f"committed peak-rule spectra of {args.model}; ")
                  + "greedy: " + (greedy_source(args.model, args.greedy_path)[0]
                                  or "teal-greedy-proxy: SmolLM2-135M's greedy path mapped by depth and kind"),
                  timing="eager StaticDecoder, wall clock (perf_counter), interleaved rounds", load=record,
                  smoke=args.smoke, numba=cpu_gemv.numba_available(), seconds=round(time.perf_counter() - start, 1),
                  note=(SMOKE_NOTE if args.smoke else "quiet machine" if record["quiet"] else
                        "NOT QUIET: the load exceeded max_load; do not report"))
    print(f"wrote {out} ({len(table)} rows); load {record['load_before']} -> {record['load_after']}"
          + (f"\n{SMOKE_NOTE}" if args.smoke else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
