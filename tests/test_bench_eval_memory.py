"""benchmarks/bench_eval_memory.py: the child's own peak is read, and a missed target is exit code 1."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_eval_memory", ROOT / "benchmarks" / "bench_eval_memory.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_target_met_or_missed_sets_the_exit_code(monkeypatch, capsys):
    monkeypatch.setattr(bench, "measure", lambda model, tokens: dict(peak_gb=3.7, wall_s=60.0, returncode=0))
    assert bench.main(["--target-gb", "5"]) == 0
    assert "peak RSS 3.70 GB against a target of 5 GB (ratio 0.74; met)" in capsys.readouterr().out
    assert bench.main(["--target-gb", "3"]) == 1
    assert "MISSED" in capsys.readouterr().out
    monkeypatch.setattr(bench, "measure", lambda model, tokens: dict(peak_gb=0.0, wall_s=1.0, returncode=7))
    assert bench.main([]) == 7


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_the_childs_own_peak_is_measured(monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # restored after the test
        monkeypatch.setenv(name, "4")
    # a child that touches 300 MB and lives a second: its peak, not this process's, is reported
    monkeypatch.setattr(bench, "_CHILD", "b = bytearray(300_000_000); b[::4096] = b'x' * len(b[::4096]); "
                                         "import time; time.sleep(1)  # {model} {tokens}")
    result = bench.measure("m", 1)
    assert result["returncode"] == 0 and 0.3 <= result["peak_gb"] < 0.6 and result["wall_s"] >= 1.0
    assert os.environ["OMP_NUM_THREADS"] == "1"
