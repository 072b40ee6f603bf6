"""scripts/reproduce_perplexity.py --tier N: tier N alone, added to the table the earlier tiers wrote."""
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from acttail_lab.measure.grid import WINDOW_COLUMN
from acttail_lab.measure.grid_tables import write_grid

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("reproduce_perplexity", ROOT / "scripts" / "reproduce_perplexity.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)
MODEL = "qwen2.5-coder-1.5b"


def _rows(strategies, targets, nll):
    rows = [{"strategy": "dense", "sparsity": 0.0, "perplexity": 10.0, "method": None, WINDOW_COLUMN: (1.0, 2.0)}]
    rows = rows if "dense" in strategies else []
    for strategy in (s for s in strategies if s != "dense"):
        rows += [{"strategy": strategy, "sparsity": t, "perplexity": 20.0 + t, "method": "topk",
                  WINDOW_COLUMN: (nll, nll + t)} for t in targets]
    return pd.DataFrame(rows)


def _fake(monkeypatch, calls):
    def fake_grid(lm, strategies, sparsities, include_dense, **kwargs):
        calls.append((tuple(strategies), tuple(sparsities), include_dense))
        return _rows(("dense",) * include_dense + tuple(strategies), sparsities, 3.0).assign(cached=False)

    monkeypatch.setattr(script, "evaluate_grid", fake_grid)
    monkeypatch.setattr(script, "load_model", lambda name: name)


def _earlier_table(out: Path, tiers_done: int = 2, tokens: int = 8192):
    runs = _rows(("dense", "uniform", "acttail", "acttail-ks", "acttail-block", "wina"), (0.5, 0.7, 0.8), 2.0)
    write_grid(runs, out, seed=0, command="earlier", model=MODEL, tokens=tokens, window=512, tiers_done=tiers_done)


def test_tier_adds_its_rows_to_the_earlier_table_with_their_windows_and_provenance(monkeypatch, tmp_path):
    out, calls = tmp_path / "p.csv", []
    _earlier_table(out)
    _fake(monkeypatch, calls)
    assert script.main(["--model", MODEL, "--tier", "3", "--out", str(out)]) == 0
    assert calls == [(("teal-greedy-fine",), (0.5, 0.7, 0.8), False)]  # tier 3 alone, no second dense row
    runs = pd.read_csv(out)
    assert list(runs["strategy"]).count("dense") == 1 and len(runs) == 1 + 5 * 3 + 3
    windows = pd.read_csv(out.with_name("p_windows.csv"))
    assert len(windows) == 2 * len(runs)  # every row, old and new, keeps its two windows
    greedy = windows[windows["strategy"] == "teal-greedy-fine"].sort_values(["sparsity", "window_index"])
    assert greedy["nll"].round(6).tolist() == [3.0, 3.5, 3.0, 3.7, 3.0, 3.8]
    dense = windows[windows["strategy"] == "dense"]
    assert dense["nll"].tolist() == [1.0, 2.0]
    side = json.loads(Path(str(out) + ".json").read_text())
    assert side["settings"]["tiers_done"] == 3 and side["settings"]["earlier_tiers"]["command"] == "earlier"
    assert "--tier 3" in side["command"]


@pytest.mark.parametrize("tiers_done, tokens", [(1, 8192), (2, 4096)])
def test_tier_refuses_a_table_without_the_earlier_tiers_before_the_model_loads(monkeypatch, tmp_path, tiers_done,
                                                                              tokens):
    out, calls = tmp_path / "p.csv", []
    _earlier_table(out, tiers_done=tiers_done, tokens=tokens)
    _fake(monkeypatch, calls)
    monkeypatch.setattr(script, "load_model", lambda name: pytest.fail("loaded the model"))
    with pytest.raises(SystemExit, match="Fix: run --tiers 3"):
        script.main(["--model", MODEL, "--tier", "3", "--out", str(out)])


def test_tier_refuses_a_missing_table_and_tier_one(monkeypatch, tmp_path):
    _fake(monkeypatch, [])
    with pytest.raises(SystemExit, match="No grid table.*Fix"):
        script.main(["--model", MODEL, "--tier", "3", "--out", str(tmp_path / "none.csv")])
    with pytest.raises(SystemExit):
        script.main(["--model", MODEL, "--tier", "1", "--out", str(tmp_path / "none.csv")])
