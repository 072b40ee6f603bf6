"""One command that checks every workbench stage on a device: `make gpu-check` (CUDA) or `--device cpu` (CI).

What runs: random-weight models of real shapes (no model files, no network), built on the CPU in float32 and
copied to the device in each dtype asked for (CUDA: float16 and bfloat16; CPU: float32 and bfloat16):

- ``llama2-7b``: LLaMA-2-7B layer shapes (hidden 4096, intermediate 11008, vocab 32000) with ``--layers``
  decoder layers (CUDA only; on the CPU the tiny LLaMA stands in for it),
- ``llama-tiny``, ``qwen2-tiny`` and ``gemma3-mm-tiny`` (a multimodal Gemma-3 whose vision tower comes
  first in the module tree, as in the 4B-27B checkpoints).

Checks, one row each per (model, dtype), from :data:`CHECKS`:

=============== ===========================================================================================
spectra         ``spectral.spectra.esd`` on the device against float64 on the CPU, top-10 eigenvalues of
                every projection: max relative difference <= 1e-6 (float64 on both sides)
allocation      ``spectral.spectra.analyze`` on the device, then ``allocate(..., "acttail", 0.5)``: the
                parameter-weighted mean equals 0.5 within 1e-6 and every budget lies in [0, 1)
dense_logits    log-probabilities of the model on the device against the float32 model on the CPU:
                max |difference| <= the dtype's tolerance (:data:`LOGPROB_TOL`)
topk            ``measure.perplexity.perplexity`` at uniform 0.5: perplexity within the dtype's relative
                tolerance of the CPU float32 run, realised sparsity 0.5 within 1e-3
threshold/cats  ``make_sparsifier(model, 0.5, method, stats=collect_stats(...))`` (CATS: down projections
                only, as it thresholds the gate): finite perplexity, realised sparsity in (0, 1)
rotated         the same with second moments and rotations (``sparsify.rotation``)
cost_table      ``measure.sensitivity.cost_table`` at 0.5 on one window: one finite row per projection
teal_greedy     ``measure.teal_greedy.greedy_path`` (delta 0.25, 32 tokens): finite, reaches its target
depth           ``measure.depth_profile.layer_profile`` dense and at 0.5: finite, one row per layer
sparse_decode   ``sparsify.kernels.decode.sparse_decoding`` (Triton on CUDA when installed) against
                ``TopKSparsifier`` at 0.5 on the same tokens: max |logit difference| / max |logit| <=
                :data:`DECODE_REL_TOL`
=============== ===========================================================================================

On CUDA it then runs the kernel tests (``pytest tests/test_kernels.py``) and the GEMV and decode benchmarks
with ``--tune`` (which write ``data/results/gemv_gpu.csv`` and ``decode_gpu.csv``); ``--skip-bench`` leaves
them out. It prints one pass/fail table and writes it with a provenance sidecar naming the device
(default ``data/results/gpu_check_gpu.csv`` on CUDA; on the CPU only with ``--out``).

Every number here is about correctness, memory and speed on random weights, never about model quality.

Run: OMP_NUM_THREADS=1 python benchmarks/gpu_check.py [--device cuda|cpu] [--layers 2] [--skip-bench]
     [--models llama2-7b,qwen2-tiny] [--out FILE]
Exit status: 0 when every check passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runs from a bare checkout too (a GPU machine without the venv)

import pandas as pd  # noqa: E402
import torch  # noqa: E402

SEED = 0
WINDOW = 64
LOGPROB_TOL = {torch.float32: 1e-3, torch.float16: 0.05, torch.bfloat16: 0.25}
"""Max |log-probability difference| against the CPU float32 model, per dtype (random weights, 2-4 layers)."""
PPL_REL_TOL = {torch.float32: 1e-4, torch.float16: 0.02, torch.bfloat16: 0.05}
DECODE_REL_TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
COLUMNS = ["model", "dtype", "check", "passed", "value", "tolerance", "detail", "wall_s"]
CHECKS: dict = {}


def check(name: str):
    """Register ``fn(case) -> (passed, value, tolerance, detail)`` as the check ``name``."""
    def decorator(fn):
        CHECKS[name] = fn
        return fn
    return decorator


# --------------------------------------------------------------------------- models
def build(name: str, layers: int):
    """The float32 CPU model ``name`` (random weights, seeded)."""
    from transformers import AutoConfig, AutoModelForCausalLM, Gemma3Config, Gemma3ForConditionalGeneration

    from acttail_lab.core.models import random_model

    torch.manual_seed(SEED)
    if name == "llama2-7b":
        return random_model("llama2-7b", seed=SEED, num_hidden_layers=layers)
    if name == "llama-tiny":
        return random_model("llama-tiny", seed=SEED)
    text = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=512, head_dim=16)
    if name == "qwen2-tiny":
        return AutoModelForCausalLM.from_config(AutoConfig.for_model("qwen2", **text)).eval()
    if name == "gemma3-mm-tiny":
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      image_size=32, patch_size=8)
        cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
        return Gemma3ForConditionalGeneration(cfg).eval()
    raise SystemExit(f"unknown model {name!r}; choose from llama2-7b, llama-tiny, qwen2-tiny, gemma3-mm-tiny")


class Case:
    """One model in one dtype on the device, with its CPU float32 reference and random token windows."""

    def __init__(self, name: str, reference, device: torch.device, dtype: torch.dtype):
        import copy

        self.name, self.reference, self.device, self.dtype = name, reference, device, dtype
        self.model = copy.deepcopy(reference).to(device=device, dtype=dtype).eval()
        vocab = reference.get_input_embeddings().weight.shape[0]
        gen = torch.Generator().manual_seed(SEED)
        self.windows = torch.randint(0, vocab, (4, WINDOW), generator=gen)

    def stats(self, moments: bool):
        from acttail_lab.sparsify.calibration import collect_stats

        windows = self.windows.repeat(max(1, math.ceil(self.widest() / self.windows.numel()) + 1), 1)
        return collect_stats(self.model, windows.to(self.device), moments=moments, progress=False,
                             key=f"gpu-check-{self.name}-{self.dtype}-{moments}")

    def widest(self) -> int:
        from acttail_lab.core.models import projection_table

        return int(projection_table(self.model)["d_in"].max())


def _ppl(model, windows, **kwargs):
    from acttail_lab.measure.perplexity import perplexity

    return perplexity(model, windows, batch_size=2, progress=False, **kwargs)


# --------------------------------------------------------------------------- checks
@check("spectra")
def _spectra(case: Case):
    from acttail_lab.core.models import iter_projections
    from acttail_lab.spectral.spectra import esd

    worst = 0.0
    for _, module in iter_projections(case.reference):
        top_cpu = esd(module.weight, device="cpu")[-10:]
        top_dev = esd(module.weight.to(case.device), device=case.device)[-10:]
        worst = max(worst, float(abs(top_dev - top_cpu).max() / top_cpu.max()))
    return worst <= 1e-6, worst, 1e-6, "top-10 eigenvalues, float64, device vs cpu"


@check("allocation")
def _allocation(case: Case):
    from acttail_lab.allocation import allocate
    from acttail_lab.allocation.solver import weighted_mean
    from acttail_lab.spectral.spectra import analyze

    table = analyze(case.model, xmin="ks", device=case.device, cache=False, progress=False)
    budgets = allocate(table, "acttail", 0.5)
    mean = weighted_mean(budgets["sparsity"], budgets["n_params"])
    ok = abs(mean - 0.5) <= 1e-6 and budgets["sparsity"].between(0, 1, inclusive="left").all()
    return ok, abs(mean - 0.5), 1e-6, f"{len(budgets)} budgets, range {budgets.sparsity.min():.3f}-" \
                                      f"{budgets.sparsity.max():.3f}"


@check("dense_logits")
def _dense_logits(case: Case):
    ids = case.windows[:2]
    with torch.inference_mode():
        ref = torch.log_softmax(case.reference(input_ids=ids).logits.float(), -1)
        got = torch.log_softmax(case.model(input_ids=ids.to(case.device)).logits.float(), -1).cpu()
    diff = float((got - ref).abs().max())
    return diff <= LOGPROB_TOL[case.dtype], diff, LOGPROB_TOL[case.dtype], "max |log p| difference vs cpu fp32"


@check("topk")
def _topk(case: Case):
    ref = _ppl(case.reference, case.windows, allocation=0.5)
    got = _ppl(case.model, case.windows, allocation=0.5)
    rel = abs(got.perplexity / ref.perplexity - 1)
    ok = rel <= PPL_REL_TOL[case.dtype] and abs(got.realised_sparsity - 0.5) <= 1e-3
    return ok, rel, PPL_REL_TOL[case.dtype], f"ppl {got.perplexity:.2f} vs cpu {ref.perplexity:.2f}, " \
                                              f"realised {got.realised_sparsity:.4f}"


def _method(case: Case, method: str, moments: bool, kinds=None):
    from acttail_lab.core.models import projection_table
    from acttail_lab.sparsify.methods import make_sparsifier

    table = projection_table(case.model)
    allocation = ({name: 0.5 if kind in kinds else 0.0 for name, kind in zip(table.name, table.projection)}
                  if kinds else 0.5)
    sparsifier = make_sparsifier(case.model, allocation, method, stats=case.stats(moments))
    got = _ppl(case.model, case.windows, sparsifier=sparsifier)
    ok = math.isfinite(got.perplexity) and 0 < got.realised_sparsity < 1
    return ok, got.realised_sparsity, None, f"ppl {got.perplexity:.2f}, realised {got.realised_sparsity:.4f}"


check("threshold")(lambda case: _method(case, "threshold", False))
check("cats")(lambda case: _method(case, "cats", False, kinds=("down",)))  # CATS thresholds the gate: down only
check("rotated")(lambda case: _method(case, "rotated", True))


@check("cost_table")
def _cost_table(case: Case):
    from acttail_lab.core.models import projection_table
    from acttail_lab.measure.sensitivity import cost_table

    table = cost_table(case.model, case.windows[:1].to(case.device), sparsities=(0.5,), max_tokens=WINDOW,
                       cache=False, progress=False)
    numeric = table.select_dtypes("number")
    ok = len(table) >= len(projection_table(case.model)) and bool(numeric.notna().all().all())
    return ok, float(len(table)), None, f"{len(table)} rows"


@check("teal_greedy")
def _teal_greedy(case: Case):
    from acttail_lab.measure.teal_greedy import greedy_path

    path = greedy_path(case.model, case.windows[:1].to(case.device), delta=0.25, max_target=0.5, max_tokens=32,
                       cache=False, progress=False)
    numeric = path.select_dtypes("number")
    ok = len(path) > 0 and bool(numeric.notna().all().all())
    return ok, float(len(path)), None, f"{len(path)} rows"


@check("depth")
def _depth(case: Case):
    from acttail_lab.core.models import decoder_layers
    from acttail_lab.measure.depth_profile import layer_profile

    n_layers = len(decoder_layers(case.model))
    frames = [layer_profile(case.model, case.windows[:2], allocation=a, batch_size=2, progress=False)
              for a in (None, 0.5)]
    ok = all(len(f) == n_layers and bool(f.select_dtypes("number").notna().all().all()) for f in frames)
    return ok, float(n_layers), None, f"{n_layers} layers, dense and 0.5"


@check("sparse_decode")
def _sparse_decode(case: Case):
    from acttail_lab.sparsify.kernels.decode import sparse_decoding
    from acttail_lab.sparsify.topk import TopKSparsifier

    ids = case.windows[:1, :8].to(case.device)

    def decode() -> torch.Tensor:
        """Last-token logits, one token at a time with the KV cache, as in decoding."""
        past, logits = None, None
        for t in range(ids.shape[1]):
            out = case.model(input_ids=ids[:, t:t + 1], past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1].float()
        return logits

    # Both sides decode the same way, so only the projections differ (sparse GEMV vs dense matmul on the
    # TopK-masked input). A full-sequence TopK reference would also compare two attention schedules, whose
    # bf16 rounding differs on CPUs without native bf16 dot products (AVX2) and flips near-tied TopK choices.
    with torch.inference_mode():
        with TopKSparsifier(case.model, 0.5):
            ref = decode()
        with sparse_decoding(case.model, 0.5):
            got = decode()
    diff = float((got - ref).abs().max() / ref.abs().max())
    tol = DECODE_REL_TOL[case.dtype]
    return diff <= tol, diff, tol, "last-token logits, sparse GEMV decode vs TopK hooks (relative to max |logit|)"


# --------------------------------------------------------------------------- runner
def run_checks(models, dtypes, device: torch.device, layers: int, only=None) -> pd.DataFrame:
    """Every check of :data:`CHECKS` (or ``only``) for every model x dtype: a tidy table (:data:`COLUMNS`)."""
    rows = []
    for name in models:
        reference = build(name, layers)
        for dtype in dtypes:
            case = Case(name, reference, device, dtype)
            for check_name, fn in CHECKS.items():
                if only and check_name not in only:
                    continue
                t0 = time.perf_counter()
                try:
                    passed, value, tol, detail = fn(case)
                except Exception as exc:  # noqa: BLE001 -- a crash is a failed check, reported in the table
                    passed, value, tol = False, float("nan"), None
                    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
                    traceback.print_exc(file=sys.stderr)
                rows.append(dict(model=name, dtype=str(dtype).replace("torch.", ""), check=check_name,
                                 passed=bool(passed), value=value, tolerance=tol, detail=detail,
                                 wall_s=round(time.perf_counter() - t0, 3)))
                print(f"[gpu-check] {name:>15s} {rows[-1]['dtype']:>8s} {check_name:>13s}: "
                      f"{'PASS' if passed else 'FAIL'}  {detail}", file=sys.stderr, flush=True)
            del case
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return pd.DataFrame(rows, columns=COLUMNS)


def run_gpu_extras(rows: list) -> None:
    """On CUDA: the kernel tests and the tuned GEMV / decode benchmarks, one row each."""
    steps = {"kernel_tests": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_kernels.py"],
             "bench_gemv": [sys.executable, "benchmarks/bench_gemv.py", "--device", "cuda", "--tune"],
             "bench_decode": [sys.executable, "benchmarks/bench_decode.py", "--device", "cuda", "--tune"]}
    for name, cmd in steps.items():
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
        print(f"[gpu-check] {name}: rc {done.returncode}\n{done.stdout[-3000:]}", file=sys.stderr, flush=True)
        rows.append(dict(model="-", dtype="-", check=name, passed=done.returncode == 0, value=done.returncode,
                         tolerance=None, detail=tail[0][:200], wall_s=round(time.perf_counter() - t0, 1)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--layers", type=int, default=2, help="decoder layers of the LLaMA-2-7B-shaped model")
    parser.add_argument("--models", default=None, help="comma-separated subset of the models")
    parser.add_argument("--checks", default=None, help="comma-separated subset of the checks")
    parser.add_argument("--skip-bench", action="store_true", help="on CUDA, skip kernel tests and benchmarks")
    parser.add_argument("--out", default=None, help="CSV path (default on CUDA: data/results/gpu_check_gpu.csv)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: --device cuda but no CUDA device is visible. Fix: run on a GPU machine, or pass "
              "--device cpu for the small CPU version.", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    models = args.models.split(",") if args.models else (
        ["llama2-7b", "qwen2-tiny", "gemma3-mm-tiny"] if cuda else ["llama-tiny", "qwen2-tiny", "gemma3-mm-tiny"])
    dtypes = [torch.float16, torch.bfloat16] if cuda else [torch.float32, torch.bfloat16]
    t0 = time.perf_counter()
    table = run_checks(models, dtypes, device, args.layers, args.checks.split(",") if args.checks else None)
    if cuda and not args.skip_bench:
        extra = []
        run_gpu_extras(extra)
        table = pd.concat([table, pd.DataFrame(extra, columns=COLUMNS)], ignore_index=True)
    print(table[["model", "dtype", "check", "passed", "value", "tolerance", "wall_s"]].to_string(index=False))
    failed = int((~table["passed"]).sum())
    print(f"gpu-check on {device}: {len(table) - failed} passed, {failed} failed, "
          f"{time.perf_counter() - t0:.0f} s")
    out = args.out or (str(REPO / "data" / "results" / "gpu_check_gpu.csv") if cuda else None)
    if out:
        from acttail_lab.core.results_io import write_results

        write_results(table, out, seed=SEED, device=args.device, command="python benchmarks/gpu_check.py "
                      + " ".join(argv if argv is not None else sys.argv[1:]), layers=args.layers, window=WINDOW,
                      note="random-weight models: correctness, memory and speed only, never quality")
        print(f"wrote {out}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
