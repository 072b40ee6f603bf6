"""`make gpu-check`'s script in its CPU mode: every stage runs and passes on tiny models, and a failure shows."""
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_check_passes_on_cpu_for_llama_and_multimodal_gemma(gpu_check, tmp_path, capsys):
    out = tmp_path / "check.csv"
    code = gpu_check.main(["--device", "cpu", "--models", "llama-tiny,gemma3-mm-tiny", "--out", str(out)])
    table = pd.read_csv(out)
    assert code == 0, table[~table.passed].to_string()
    assert len(table) == 2 * 2 * len(gpu_check.CHECKS)  # models x dtypes x checks
    assert set(table["check"]) == set(gpu_check.CHECKS) >= {"spectra", "allocation", "dense_logits", "topk",
                                                             "threshold", "cats", "rotated", "cost_table",
                                                             "teal_greedy", "depth", "sparse_decode"}
    assert set(table["dtype"]) == {"float32", "bfloat16"}
    assert json.loads(out.with_name("check.csv.json").read_text())["device"].startswith("cpu")
    assert "0 failed" in capsys.readouterr().out


def test_a_failing_check_fails_the_command(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setitem(gpu_check.LOGPROB_TOL, torch.bfloat16, 0.0)  # bf16 can never match fp32 exactly
    code = gpu_check.main(["--device", "cpu", "--models", "llama-tiny", "--checks", "dense_logits",
                           "--out", str(tmp_path / "c.csv")])
    table = pd.read_csv(tmp_path / "c.csv")
    assert code == 1
    assert table.set_index("dtype").loc["bfloat16", "passed"] == False  # noqa: E712
    assert table.set_index("dtype").loc["float32", "passed"] == True  # noqa: E712


def test_a_crashing_stage_is_a_failed_row_not_a_crash(gpu_check, tmp_path, monkeypatch):
    def broken(case):
        raise RuntimeError("boom")
    monkeypatch.setitem(gpu_check.CHECKS, "spectra", broken)
    code = gpu_check.main(["--device", "cpu", "--models", "llama-tiny", "--checks", "spectra",
                           "--out", str(tmp_path / "c.csv")])
    table = pd.read_csv(tmp_path / "c.csv")
    assert code == 1 and not table["passed"].any() and table["detail"].str.contains("RuntimeError: boom").all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_says_what_to_do(gpu_check, capsys):
    assert gpu_check.main(["--device", "cuda"]) == 2
    assert "--device cpu" in capsys.readouterr().err
