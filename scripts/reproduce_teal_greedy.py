"""Regenerate data/results/smollm2-135m_teal_greedy_path.csv (+ .json sidecar).

TEAL's greedy block-wise allocation path for SmolLM2-135M on calibration text
(Sense and Sensibility, one 256-token window): delta 0.025, max_target 0.9,
s_max 0.99. Cached by content; about 4 minutes on one CPU thread.
Usage:  python scripts/reproduce_teal_greedy.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from acttail_lab.allocation import greedy_path
from acttail_lab.core.cache import atomic_path
from acttail_lab.core.models import load_model
from acttail_lab.core.provenance import write_sidecar
from acttail_lab.core.reference import TEAL_LLAMA2_7B_50
from acttail_lab.measure import teal_greedy

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data/results/smollm2-135m_teal_greedy_path.csv"
SETTINGS = dict(delta=0.025, max_target=0.9, s_max=0.99, max_tokens=256)


def main() -> int:
    torch.manual_seed(0)
    start = time.time()
    path = teal_greedy.greedy_path(load_model("smollm2-135m"), progress=True, **SETTINGS)
    elapsed = time.time() - start
    rounded = path.copy()
    for column in ("sparsity", "block_error", "block_target"):
        rounded[column] = rounded[column].map(lambda v: float(f"{v:.6g}"))
    with atomic_path(OUT) as tmp:
        rounded.to_csv(tmp, index=False)
    write_sidecar(OUT, seed=0, device="cpu", command="python scripts/reproduce_teal_greedy.py",
                  model="smollm2-135m", corpus="austen", split="calibration", windows=1, window=256,
                  tokens=256, error="relative L2 error of the decoder-layer output vs dense, TopK on all positions",
                  elapsed_s=round(elapsed, 1), **SETTINGS)
    means = greedy_path.kind_means(path)
    means["teal_llama2_7b_50"] = means["projection"].map(TEAL_LLAMA2_7B_50)
    print(means.round(3).to_string(index=False))
    print(f"wrote {OUT} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
