"""Peak memory beyond the weights, per workbench stage, on a random model with LLaMA-2-7B layer shapes.

What is measured: a RANDOM-weight LLaMA model with LLaMA-2-7B's layer shapes
(``core.models.random_model("llama2-7b", num_hidden_layers=L)``: hidden 4096,
intermediate 11008, 32 heads, vocab 32000, float32; default L=2) is built in a
fresh subprocess per stage, so each stage's peak is its own:

    peak beyond weights = ru_maxrss at the end of the child - RSS right after the model is built

(``resource.getrusage(RUSAGE_SELF).ru_maxrss``; right after the build the
kernel's high-water mark is reset with ``/proc/self/clear_refs`` so that the
transient peak of the random initialisation is not mistaken for the stage's; the
CSV says whether the reset worked). Inputs are random token ids (no corpus, no
tokenizer); every number is about memory and time, never about quality.

Stages (public functions of the package, single thread, batch 1 where there is a
batch):

=============== =====================================================================================
spectra         ``spectral.spectra.analyze(model, xmin="ks", cache=False)``
calib_hist      ``sparsify.calibration.collect_stats(model, calib, moments=False)``
calib_rotation  histograms (``collect_stats(moments=False)``), then ``sparsify.rotation.rotations_for`` on
                deferred moments: streamed ``--moment-budget-gb`` of float64 moments at a time
                (``sparsify.moment_stream``; default 1.4 GB = one 7B layer, as at 32 layers, where the
                4 GiB default budget is 3 of 32 layers) (needs >= 11008 calibration tokens: 22 x 512)
eval_topk       ``measure.perplexity.perplexity(model, eval, allocation=0.5, batch_size=1)``
eval_threshold  same with ``sparsify.methods.make_sparsifier(model, 0.5, "threshold", stats=...)``
eval_rotated    same with ``make_sparsifier(model, 0.5, "rotated", stats=...)``
cost_table      ``measure.sensitivity.cost_table(model, one window, max_tokens=256, cache=False)``
teal_greedy     ``measure.teal_greedy.greedy_path(model, one window, delta=0.1, max_tokens=128)``
depth_profile   ``measure.depth_profile.layer_profile(model, eval, batch_size=1)``
sparse_decode   ``sparsify.kernels.decode.sparse_decoding(model, 0.5, backend="torch")``: 32 batch-1
                decoding steps with a KV cache
=============== =====================================================================================

The threshold and rotated evaluations read the statistics (histograms; and the
rotations, moments already freed) that the ``calib_rotation`` child saved to a
temporary file; loading them is part of their peak (the rotations are what a
rotated evaluation must hold). When ``calib_rotation`` is not among the stages
asked for, it is run first as an unrecorded prerequisite.

Extrapolation (LINEAR, stated in the sidecar): stages whose memory is held per
layer (``calib_rotation``: one Q per layer and site, plus one group of second
moments, counted per layer too, which over-states it at 32 layers;
``eval_rotated``: one Q per layer and site) use ``per_layer_gb = peak / L`` times 32
(7B) and times 80 x r (70B shapes), r = ratio of per-layer parameter counts,
70B (hidden 8192, intermediate 28672, 64 heads, 8 KV heads) / 7B = 4.23. Every
other stage's peak is taken as independent of depth (one matrix, or one layer's
activations, at a time): 7B = the measured peak, 70B = peak x r. This is a
linear extrapolation: second moments and their eigenvectors grow as d_in^2
(down: 28672^2 / 11008^2 = 6.8x), more than r, so the 70B numbers of those
stages are under-estimates.

Targets, beyond the weights: spectra <= 1 GB per layer; calibration (histograms,
and moments + rotation set-up) <= 2 GB per layer; evaluation (topk, threshold,
rotated, depth profile, sparse decoding, cost table, TEAL greedy) <= the
activations of one decoder layer at batch 1 for the window T plus the logits:
``4 bytes x (T (9 h + 4 i) + 2 heads T^2 + 3 T vocab)`` = 0.43 GB for 7B shapes
at T=512 (hidden states, q/k/v, attention scores and probabilities, MLP
gate/up/act/product, and the logits with two float32 copies for the loss).
``holds`` compares the 7B extrapolation: per-layer targets against
``extrapolated_7b_gb / 32``, the evaluation target against ``extrapolated_7b_gb``.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_memory_7b.py [--layers 2] [--stages spectra,eval_topk]
     [--tokens 11264] [--jobs 1] [--small] [--out data/results/memory_7b_shapes.csv]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import gc
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "data" / "results" / "memory_7b_shapes.csv"
STAGES = ("spectra", "calib_hist", "calib_rotation", "eval_topk", "eval_threshold", "eval_rotated",
          "cost_table", "teal_greedy", "depth_profile", "sparse_decode")
NEEDS_STATS = ("eval_threshold", "eval_rotated")
PER_LAYER = ("calib_rotation", "eval_rotated")
# sparse_decode holds one copy of each weight (the Linear views the input-major W^T), so beyond the weights only
# one matrix at a time (the transpose on entry and exit) and one token's activations: independent of depth.
"""Stages that hold memory for every layer at once (the others: one matrix / one layer's activations at a time)."""
TARGET_KIND = {"spectra": "per_layer", "calib_hist": "per_layer", "calib_rotation": "per_layer"}
TARGET_PER_LAYER_GB = {"spectra": 1.0, "calib_hist": 2.0, "calib_rotation": 2.0}
SEED = 0
GB = 1e9

SHAPES = {
    "7b": dict(hidden=4096, intermediate=11008, heads=32, kv_heads=32, vocab=32000, layers=32),
    "70b": dict(hidden=8192, intermediate=28672, heads=64, kv_heads=8, vocab=32000, layers=80),
}
COLUMNS = ["stage", "layers_run", "peak_beyond_weights_gb", "per_layer_gb", "s_per_layer", "extrapolated_7b_gb",
           "extrapolated_70b_gb", "target_gb", "holds", "scales_with_layers", "target_basis", "wall_s",
           "weights_rss_gb", "build_peak_gb", "hwm_reset"]


def layer_params(shape: dict) -> int:
    """Parameters of one decoder layer (the seven projections; norms left out)."""
    h, i = shape["hidden"], shape["intermediate"]
    kv = h * shape["kv_heads"] // shape["heads"]
    return 2 * h * h + 2 * h * kv + 3 * h * i


def eval_target_gb(shape: dict, window: int) -> float:
    """One decoder layer's activations at batch 1 for ``window`` tokens plus the logits (2 float32 copies)."""
    h, i, t = shape["hidden"], shape["intermediate"], window
    floats = t * (9 * h + 4 * i) + 2 * shape["heads"] * t * t + 3 * t * shape["vocab"]
    return 4 * floats / GB


# --------------------------------------------------------------------------- child
def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); True when it took effect."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss <= _rss_kb() + 1024


def _windows(n: int, length: int, vocab: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, length), generator=gen)


def _run_stage(stage: str, model, cfg: dict, workdir: Path) -> None:
    import torch

    vocab, window = model.config.vocab_size, cfg["window"]
    calib = _windows(max(1, cfg["tokens"] // window), window, vocab, SEED)
    evalw = _windows(cfg["eval_windows"], window, vocab, SEED + 1)
    stats_hist, stats_rot = workdir / "stats_hist.pt", workdir / "stats_rot.pt"

    if stage == "spectra":
        from acttail_lab.spectral.spectra import analyze

        analyze(model, xmin="ks", device="cpu", cache=False, progress=False)
    elif stage == "calib_hist":
        from acttail_lab.sparsify.calibration import collect_stats

        collect_stats(model, calib, moments=False, progress=False)
    elif stage == "calib_rotation":
        import dataclasses

        from acttail_lab.sparsify import moment_stream
        from acttail_lab.sparsify.calibration import collect_stats
        from acttail_lab.sparsify.rotation import rotations_for

        # the production path (activation_stats(..., moments=True) + rotations_for): histograms in one pass,
        # then second moments streamed a group of layers at a time (at most moment_budget_gb alive)
        moment_stream.MOMENT_BUDGET_BYTES = int(cfg["moment_budget_gb"] * 2 ** 30)
        hist = collect_stats(model, calib, moments=False, progress=False, key="bench_memory_7b")
        stats = dataclasses.replace(hist, has_moments=True, windows=calib)
        rotations_for(model, stats, progress=False)
        if cfg.get("save_stats"):
            torch.save(dataclasses.replace(stats, rotations=None), stats_hist)
            torch.save(stats, stats_rot)
    elif stage in ("eval_topk", "eval_threshold", "eval_rotated"):
        from acttail_lab.measure.perplexity import perplexity
        from acttail_lab.sparsify.methods import make_sparsifier

        if stage == "eval_topk":
            perplexity(model, evalw, allocation=0.5, batch_size=1, progress=False)
        else:
            method = stage.split("_", 1)[1]
            stats = torch.load(stats_hist if method == "threshold" else stats_rot, weights_only=False)
            sparsifier = make_sparsifier(model, 0.5, method, stats=stats)
            perplexity(model, evalw, batch_size=1, progress=False, sparsifier=sparsifier)
    elif stage == "cost_table":
        from acttail_lab.measure.sensitivity import cost_table

        cost_table(model, calib[:1], max_tokens=cfg["cost_tokens"], cache=False, progress=False)
    elif stage == "teal_greedy":
        from acttail_lab.measure.teal_greedy import greedy_path

        greedy_path(model, calib[:1], delta=0.1, max_tokens=cfg["greedy_tokens"], cache=False, progress=False)
    elif stage == "depth_profile":
        from acttail_lab.measure.depth_profile import layer_profile

        layer_profile(model, evalw, batch_size=1, progress=False)
    elif stage == "sparse_decode":
        from acttail_lab.sparsify.kernels.decode import sparse_decoding

        ids = evalw[:1, :1]
        with torch.inference_mode(), sparse_decoding(model, 0.5, backend="torch"):
            past = None
            for _ in range(cfg["decode_steps"]):
                out = model(input_ids=ids, past_key_values=past, use_cache=True)
                past = out.past_key_values
                ids = out.logits[:, -1:].argmax(-1)
    else:
        raise ValueError(f"Unknown stage {stage!r}; choose from {STAGES}.")


def child(stage: str, cfg: dict, workdir: Path) -> dict:
    import torch

    from acttail_lab.core.models import random_model

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = random_model(cfg["preset"], seed=SEED, num_hidden_layers=cfg["layers"])
    build_s = time.perf_counter() - t0
    gc.collect()
    build_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = _reset_hwm()
    base_kb = _rss_kb()
    t0 = time.perf_counter()
    _run_stage(stage, model, cfg, workdir)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if not reset:  # without a reset the peak may be the build's: report what is known, flagged
        peak_kb = max(peak_kb, base_kb)
    return dict(stage=stage, wall_s=wall, build_s=build_s, weights_rss_gb=base_kb * 1024 / GB,
                build_peak_gb=build_peak_kb * 1024 / GB, peak_beyond_weights_gb=max(peak_kb - base_kb, 0) * 1024 / GB,
                hwm_reset=reset)


# --------------------------------------------------------------------------- parent
def run_child(stage: str, cfg: dict, workdir: Path, log) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--cfg", json.dumps(cfg),
           "--workdir", str(workdir)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        log(f"{stage:15s} FAILED (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        return dict(stage=stage, error=proc.stderr[-400:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"{stage:15s} peak beyond weights {result['peak_beyond_weights_gb']:7.3f} GB   wall {result['wall_s']:7.1f} s"
        f"   (child {time.perf_counter() - t0:.0f} s, weights RSS {result['weights_rss_gb']:.2f} GB)")
    return result


def table_row(result: dict, cfg: dict) -> dict:
    stage, layers = result["stage"], cfg["layers"]
    peak = result["peak_beyond_weights_gb"]
    ratio = layer_params(SHAPES["70b"]) / layer_params(SHAPES["7b"])
    per_layer = peak / layers
    scales = stage in PER_LAYER
    if scales:
        e7, e70 = per_layer * SHAPES["7b"]["layers"], per_layer * ratio * SHAPES["70b"]["layers"]
    else:
        e7, e70 = peak, peak * ratio
    if stage in TARGET_KIND:
        target = TARGET_PER_LAYER_GB[stage]
        holds = e7 / SHAPES["7b"]["layers"] <= target
        basis = "GB per layer beyond weights (7B extrapolation / 32)"
    else:
        target = eval_target_gb(SHAPES["7b"], cfg["window"])
        holds = e7 <= target
        basis = f"GB total: one layer's activations at batch 1, T={cfg['window']}, + logits (7B shapes)"
    return dict(stage=stage, layers_run=layers, peak_beyond_weights_gb=peak, per_layer_gb=per_layer,
                s_per_layer=result["wall_s"] / layers, extrapolated_7b_gb=e7, extrapolated_70b_gb=e70,
                target_gb=target, holds=bool(holds), scales_with_layers=scales, target_basis=basis,
                wall_s=result["wall_s"], weights_rss_gb=result["weights_rss_gb"],
                build_peak_gb=result["build_peak_gb"], hwm_reset=result["hwm_reset"])


def write_table(results: dict, stages, cfg: dict, args):
    """The table of the finished stages (in the order asked for), written with its sidecar."""
    import pandas as pd

    from acttail_lab.core.results_io import write_results

    rows = [table_row(results[s], cfg) for s in stages if s in results and "error" not in results[s]]
    table = pd.DataFrame(rows, columns=COLUMNS)
    failed = {s: r["error"] for s, r in results.items() if "error" in r}
    ratio = layer_params(SHAPES["70b"]) / layer_params(SHAPES["7b"])
    write_results(
        table, args.out, seed=SEED, device="cpu", failed_stages=failed,
        model=f"random_model({cfg['preset']!r}, num_hidden_layers={cfg['layers']}), float32, random weights",
        inputs="random token ids (no corpus)", settings=cfg, torch_threads=1, jobs=args.jobs,
        memory="peak beyond weights = ru_maxrss at the end of a per-stage child - RSS right after the model "
               "build (peak mark reset after the build via /proc/self/clear_refs when hwm_reset)",
        extrapolation=(f"LINEAR. Stages {list(PER_LAYER)}: per_layer_gb x 32 (7B) and per_layer_gb x {ratio:.3f} "
                       "x 80 (70B shapes: hidden 8192, intermediate 28672, 8 KV heads; ratio of per-layer "
                       "parameter counts). Other stages: peak independent of depth, 7B = peak, 70B = peak x ratio. "
                       "Second moments / rotations grow as d_in^2 (6.8x for down), so 70B figures of those "
                       "stages are under-estimates."),
        targets=dict(spectra_gb_per_layer=1.0, calibration_gb_per_layer=2.0,
                     evaluation_gb_total=round(eval_target_gb(SHAPES["7b"], cfg["window"]), 4),
                     evaluation_basis="4 B x (T(9h+4i) + 2 heads T^2 + 3 T vocab), 7B shapes, batch 1"),
    )
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2, help="decoder layers of the random model (default 2)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--tokens", type=int, default=None,
                        help="calibration tokens (whole windows; default 11264 = 22 x 512, >= 11008 for rotation)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output CSV (a .json sidecar is written next to it)")
    parser.add_argument("--moment-budget-gb", type=float, default=1.4,
                        help="second moments alive at once in calib_rotation (default 1.4 = one 7B layer)")
    parser.add_argument("--small", action="store_true", help="tiny config (llama-tiny shapes) for a quick smoke run")
    parser.add_argument("--jobs", type=int, default=1,
                        help="stage subprocesses at once (peaks stay per stage; times get slower when > 1)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cfg", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, json.loads(args.cfg), Path(args.workdir))))
        return 0

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        parser.error(f"unknown stage(s) {bad}; choose from {', '.join(STAGES)}")
    if args.small:
        cfg = dict(preset="llama-tiny", layers=args.layers, window=64, tokens=args.tokens or 256, eval_windows=2,
                   cost_tokens=64, greedy_tokens=64, decode_steps=4, moment_budget_gb=1e-4)
    else:
        cfg = dict(preset="llama2-7b", layers=args.layers, window=512, tokens=args.tokens or 22 * 512,
                   eval_windows=2, cost_tokens=256, greedy_tokens=128, decode_steps=32,
                   moment_budget_gb=args.moment_budget_gb)

    def log(msg):
        print(msg, flush=True)

    log(f"bench_memory_7b: preset {cfg['preset']}, {cfg['layers']} layers, calibration {cfg['tokens']} tokens, "
        f"evaluation {cfg['eval_windows']} x {cfg['window']} tokens, jobs {args.jobs}, "
        f"load average {os.getloadavg()[0]:.2f} (other processes share the machine)")
    import pandas as pd

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_memory_7b_") as tmp:
        workdir = Path(tmp)
        dependants = [s for s in stages if s in NEEDS_STATS]
        first = [s for s in stages if s not in NEEDS_STATS]
        prereq_only = bool(dependants) and "calib_rotation" not in stages
        if dependants:  # the statistics producer first, so the dependants can start as soon as it is done
            first = ["calib_rotation"] + [s for s in first if s != "calib_rotation"]
        with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {}
            for stage in first:
                stage_cfg = dict(cfg, save_stats=stage == "calib_rotation" and bool(dependants))
                futures[pool.submit(run_child, stage, stage_cfg, workdir, log)] = stage
            pending_dependants = list(dependants)
            while futures:
                done, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    stage = futures.pop(fut)
                    results[stage] = fut.result()
                    if stage != "calib_rotation" or not prereq_only:
                        write_table(results, stages, cfg, args)  # partial table after every stage
                    if stage == "calib_rotation":
                        for dep in pending_dependants:
                            futures[pool.submit(run_child, dep, cfg, workdir, log)] = dep
                        pending_dependants = []
        if prereq_only:
            results.pop("calib_rotation", None)
    table = write_table(results, stages, cfg, args)
    out = args.out

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        log(table[COLUMNS[:9]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    log(f"wrote {out} (+ .json sidecar)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
