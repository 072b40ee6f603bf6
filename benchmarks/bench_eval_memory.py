"""Peak resident memory of one perplexity evaluation of a real built-in model, against a target.

Issue 22's "nothing gets worse": the Gemma 3 270M evaluation of 4,096 tokens stays under 5 GB peak RSS, now that
the workbench also runs a 1.5B model. The evaluation runs in a fresh child process (so its peak is its own):
``measure.grid.evaluate_grid(model, strategies=("uniform",), sparsities=(0.5,), tokens=N, cache=False)``, dense and
uniform@50% on the default corpus in 512-token windows, float32, one thread, nothing read from or written to the
row cache (the model's prepared files are; fetch them first: ``acttail-lab fetch --model M``). The child is run and
measured by ``scripts/stage_costs.py``'s ``run_stage`` (the child's own ``VmHWM`` of ``/proc/<pid>/status``).

Prints the peak (GB, 1e9 bytes), the target and their ratio, and exits 1 when the target is missed. Usage::

    python benchmarks/bench_eval_memory.py [--model gemma3-270m] [--tokens 4096] [--target-gb 5]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = ("import torch; torch.set_num_threads(1); from acttail_lab.measure.grid import evaluate_grid; "
          "runs = evaluate_grid({model!r}, strategies=('uniform',), sparsities=(0.5,), tokens={tokens}, cache=False, "
          "progress=False); print(runs[['strategy', 'sparsity', 'perplexity', 'tokens']].to_string(index=False))")


def _stage_costs():
    """``scripts/stage_costs.py`` as a module: its ``run_stage`` runs a child and reads its own peak RSS."""
    spec = importlib.util.spec_from_file_location("stage_costs", REPO / "scripts" / "stage_costs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(model: str, tokens: int) -> dict:
    """Run the child evaluation (one thread); ``{"peak_gb", "wall_s", "returncode"}``."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    row = _stage_costs().run_stage("evaluation", [sys.executable, "-c", _CHILD.format(model=model, tokens=tokens)])
    return dict(peak_gb=row["peak_rss_gb"], wall_s=row["wall_s"], returncode=row["returncode"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--target-gb", type=float, default=5.0)
    args = parser.parse_args(argv)
    result = measure(args.model, args.tokens)
    if result["returncode"] != 0:
        print(f"the evaluation failed (return code {result['returncode']})", file=sys.stderr)
        return result["returncode"]
    met = result["peak_gb"] <= args.target_gb
    print(f"{args.model}, {args.tokens} tokens, dense + uniform@50%, float32, one thread: peak RSS "
          f"{result['peak_gb']:.2f} GB against a target of {args.target_gb:g} GB (ratio "
          f"{result['peak_gb'] / args.target_gb:.2f}; {'met' if met else 'MISSED'}), {result['wall_s']:.0f} s wall")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
