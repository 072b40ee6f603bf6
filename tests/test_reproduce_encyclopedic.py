"""scripts/reproduce_encyclopedic.py: --strategies writes a subset (dense always), the model's set otherwise."""
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

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


def _table(path, tokens=8192):
    rows = pd.DataFrame({"strategy": ["dense", "uniform", "acttail"], "sparsity": [0.0, 0.5, 0.5],
                         "perplexity": [10.0, 12.0, 13.0], "method": [None, "topk", "topk"],
                         "window_nll": [(1.0, 2.0), (1.5, 2.5), (1.6, 2.6)]})
    script.write_grid(rows, path, seed=0, command="earlier", model="qwen2.5-coder-1.5b", tokens=tokens, window=512)


def test_add_runs_only_the_new_strategies_and_keeps_the_earlier_rows(monkeypatch, tmp_path):
    import json

    out = tmp_path / "e.csv"
    _table(out)
    calls = {}

    def fake_grid(model, strategies, include_dense, **kwargs):
        calls.update(strategies=tuple(strategies), include_dense=include_dense)
        return pd.DataFrame({"strategy": ["teal-greedy-fine"], "sparsity": [0.5], "perplexity": [11.0],
                             "method": ["topk"], "window_nll": [(1.4, 2.4)], "cached": [False]})

    monkeypatch.setattr(script, "evaluate_grid", fake_grid)
    script.main(["--model", "qwen2.5-coder-1.5b", "--strategies", "teal-greedy-fine", "--add", "--out", str(out)])
    assert calls == {"strategies": ("teal-greedy-fine",), "include_dense": False}
    assert pd.read_csv(out)["strategy"].tolist() == ["dense", "uniform", "acttail", "teal-greedy-fine"]
    windows = pd.read_csv(tmp_path / "e_windows.csv")
    assert windows.groupby("strategy")["nll"].apply(list).to_dict()["teal-greedy-fine"] == [1.4, 2.4]
    assert len(windows) == 8
    side = json.loads((tmp_path / "e.csv.json").read_text())
    assert side["settings"]["earlier_rows"]["command"] == "earlier" and "--add" in side["command"]


def test_add_refuses_other_tokens_a_missing_table_and_no_strategies(monkeypatch, tmp_path):
    monkeypatch.setattr(script, "evaluate_grid", lambda *a, **k: pytest.fail("evaluated"))
    out = tmp_path / "e.csv"
    with pytest.raises(SystemExit, match="No grid table"):
        script.main(["--model", "qwen2.5-coder-1.5b", "--strategies", "wina", "--add", "--out", str(out)])
    _table(out, tokens=4096)
    with pytest.raises(SystemExit, match="Fix: pass the matching --tokens"):
        script.main(["--model", "qwen2.5-coder-1.5b", "--strategies", "wina", "--add", "--out", str(out)])
    with pytest.raises(SystemExit):
        script.main(["--model", "qwen2.5-coder-1.5b", "--add", "--out", str(out)])
