"""Notebook 04's live steps: benchmark command lines, the no-GPU error, and the sparse decoding check."""
import pytest

from acttail_lab.core.errors import DeviceError
from acttail_lab.report import speed_checks


def test_benchmark_commands_fast_and_full(tmp_path):
    fast = speed_checks.benchmark_commands(fast=True, python="py", benchmarks=tmp_path)
    assert fast == [["py", str(tmp_path / "bench_gemv.py"), "--device", "cuda", "--sparsities", "0,0.5,0.8",
                     "--dtypes", "fp16"],
                    ["py", str(tmp_path / "bench_decode.py"), "--device", "cuda", "--targets", "0.5"]]
    full = speed_checks.benchmark_commands(fast=False, python="py", benchmarks=tmp_path)
    assert [c[4:] for c in full] == [["--tune"], []]
    assert speed_checks.BENCHMARKS.name == "benchmarks" and (speed_checks.BENCHMARKS / "bench_gemv.py").exists()


def test_run_gpu_benchmarks_needs_a_gpu_and_runs_in_order(capsys):
    calls = []
    with pytest.raises(DeviceError, match="no GPU"):
        speed_checks.run_gpu_benchmarks(run=lambda *a, **k: calls.append(a), cuda_available=lambda: False)
    assert calls == []
    done = speed_checks.run_gpu_benchmarks(fast=True, run=lambda cmd, check: calls.append((cmd, check)),
                                           cuda_available=lambda: True)
    assert [c for c, _ in calls] == done and all(check for _, check in calls)
    assert [c[1].rsplit("/", 1)[-1] for c in done] == ["bench_gemv.py", "bench_decode.py"]
    assert capsys.readouterr().out.count("running: ") == 2


def test_decode_path_check_matches_topk_masking():
    check = speed_checks.decode_path_check("llama-tiny", seed=0, n_tokens=4)
    assert set(check) == {"backend", "sparse_vs_masked", "masked_vs_dense"}
    assert check["sparse_vs_masked"] < 1e-4 < check["masked_vs_dense"]
    line = speed_checks.decode_check_line(dict(backend="torch", sparse_vs_masked=1.5e-6, masked_vs_dense=2.345))
    assert line == "backend torch: max |sparse path - TopK masking| = 1.50e-06; max |TopK masking - dense| = 2.35"
