"""Smoke test of benchmarks/bench_memory_7b.py: the --small config on two stages, in a subprocess."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_memory_7b.py"
COLUMNS = ["stage", "layers_run", "peak_beyond_weights_gb", "per_layer_gb", "s_per_layer", "extrapolated_7b_gb",
           "extrapolated_70b_gb", "target_gb", "holds"]
NUMERIC = COLUMNS[1:8]


def test_bench_memory_small_two_stages(tmp_path):
    out = tmp_path / "memory.csv"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--small", "--stages", "spectra,eval_topk", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    table = pd.read_csv(out)
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS
    assert table["stage"].tolist() == ["spectra", "eval_topk"]
    assert (table["layers_run"] == 2).all()
    for column in NUMERIC:
        values = table[column].astype(float)
        assert all(math.isfinite(v) and v >= 0 for v in values), (column, values.tolist())
    assert table["holds"].isin([True, False]).all()

    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["seed"] == 0
    assert "LINEAR" in sidecar["settings"]["extrapolation"]
    assert sidecar["settings"]["failed_stages"] == {}
