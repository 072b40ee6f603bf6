"""scripts/verify_committed.py (make verify): which committed rows it samples, and bad arguments."""
import importlib.util
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("verify_committed", ROOT / "scripts" / "verify_committed.py")
verify = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verify)


def test_the_sample_takes_each_family_once_at_its_highest_target():
    table = pd.read_csv(ROOT / "data" / "results" / "perplexity_smollm2-135m.csv")
    sample = verify.sample_rows(table)
    assert list(sample["strategy"]) == [f for f in verify.FAMILIES if (table["strategy"] == f).any()]
    for _, row in sample.iterrows():
        assert row["sparsity"] == table.loc[table["strategy"] == row["strategy"], "sparsity"].max()
    assert set(sample["strategy"]) >= {"dense", "uniform", "acttail", "teal-greedy-fine", "rotated-uniform"}


def test_a_missing_table_is_refused_with_the_fix(capsys):
    assert verify.main(["--table", "no_such_table.csv"]) == 2
    assert "Fix: name files in data/results/" in capsys.readouterr().err


def test_the_empty_cache_links_inputs_only(tmp_path, monkeypatch):
    user = tmp_path / "user"
    for name in ("downloads", "corpus", "eval", "models"):
        (user / name).mkdir(parents=True)
    monkeypatch.setenv("ACTTAIL_CACHE", str(user))
    folder = verify.empty_cache(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["corpus", "downloads"]  # no rows, no dequantised model


def test_the_zeroshot_sample_is_dense_and_each_strategy_at_its_highest_target_on_one_task():
    table = pd.read_csv(ROOT / "data" / "results" / "zeroshot_smollm2-135m.csv")
    sample = verify.zeroshot_sample(table, "piqa")
    assert list(sample["strategy"]) == list(dict.fromkeys(table["strategy"]))  # each once, table order
    assert set(sample["task"]) == {"piqa"} and set(sample["metric"]) == {"acc"}
    for _, row in sample.iterrows():
        assert row["sparsity"] == table.loc[table["strategy"] == row["strategy"], "sparsity"].max()


def test_an_unknown_zeroshot_task_names_the_ones_there():
    table = pd.read_csv(ROOT / "data" / "results" / "zeroshot_smollm2-135m.csv")
    try:
        verify.zeroshot_sample(table, "hellaswag")
    except SystemExit as exc:
        assert "Fix: pass --task" in str(exc) and "piqa" in str(exc)
    else:
        raise AssertionError("no error")


def test_accuracy_fails_beyond_its_stderr_and_perplexity_beyond_the_tolerance():
    drift = pd.DataFrame([
        dict(table="p.csv", drift=0.004, stderr=float("nan"), tokens=10, committed_tokens=10),  # ok
        dict(table="p.csv", drift=-0.006, stderr=float("nan"), tokens=10, committed_tokens=10),  # beyond 0.5%
        dict(table="zeroshot_x.csv", drift=0.02, stderr=0.04, tokens=150, committed_tokens=150),  # inside stderr
        dict(table="zeroshot_x.csv", drift=-0.05, stderr=0.04, tokens=150, committed_tokens=150),  # beyond
        dict(table="p.csv", drift=0.0, stderr=float("nan"), tokens=9, committed_tokens=10),  # other size
    ])
    assert list(verify.beyond(drift, 0.005).index) == [1, 3, 4]
