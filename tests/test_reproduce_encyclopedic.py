"""scripts/reproduce_encyclopedic.py: --strategies writes a subset (dense always), the model's set otherwise."""
import importlib.util
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("reproduce_encyclopedic", ROOT / "scripts" / "reproduce_encyclopedic.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


def _record(monkeypatch):
    calls = {}

    def fake_grid(model, strategies, **kwargs):
        calls.update(model=model, strategies=tuple(strategies), **kwargs)
        return pd.DataFrame({"strategy": ["dense"], "cached": [False]})

    monkeypatch.setattr(script, "evaluate_grid", fake_grid)
    monkeypatch.setattr(script, "write_grid", lambda runs, out, **meta: calls.update(out=out, command=meta["command"]))
    return calls


def test_strategies_option_runs_the_subset_and_names_it_in_the_command(monkeypatch, tmp_path):
    calls = _record(monkeypatch)
    out = str(tmp_path / "t.csv")
    assert script.main(["--model", "qwen2.5-coder-1.5b", "--strategies", "uniform,acttail", "--out", out]) == 0
    assert calls["strategies"] == ("uniform", "acttail") and calls["include_dense"] is True
    assert calls["tokens"] == 8192 and calls["corpus"] == "encyclopedic" and calls["out"] == out
    assert "--strategies uniform,acttail" in calls["command"]


def test_default_is_the_models_set(monkeypatch, tmp_path):
    calls = _record(monkeypatch)
    script.main(["--model", "qwen2.5-coder-1.5b", "--out", str(tmp_path / "t.csv")])
    assert calls["strategies"] == script.STRATEGIES_BY_MODEL["qwen2.5-coder-1.5b"]
    script.main(["--model", "gemma3-270m", "--out", str(tmp_path / "t.csv")])
    assert calls["strategies"] == script.STRATEGIES
