"""scripts/stage_costs.py: each stage its own process, its cost recorded, recorded stages skipped."""
import importlib.util
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("stage_costs", ROOT / "scripts" / "stage_costs.py")
stage_costs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stage_costs)


def fake_stages(model):
    return {"big": [sys.executable, "-c", "b = bytearray(300_000_000); b[::4096] = b'x' * len(b[::4096]); "
                    "import time; time.sleep(1)"],
            "small": [sys.executable, "-c", "pass"],
            "fails": [sys.executable, "-c", "raise SystemExit(3)"]}


def test_costs_are_measured_per_stage_and_a_recorded_stage_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_costs, "stages", fake_stages)
    out = tmp_path / "costs.csv"
    assert stage_costs.main(["--model", "m", "--stages", "big,small", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == list(stage_costs.COLUMNS) and list(table["stage"]) == ["big", "small"]
    big, small = table.set_index("stage").loc["big"], table.set_index("stage").loc["small"]
    assert big["peak_rss_gb"] >= 0.3 > small["peak_rss_gb"]  # the child's own peak, not this process's
    assert (table["returncode"] == 0).all() and (table["wall_s"] >= 0).all()
    assert Path(str(out) + ".json").exists()
    before = out.read_text()
    assert stage_costs.main(["--model", "m", "--stages", "big", "--out", str(out)]) == 0
    assert out.read_text() == before  # recorded: skipped, nothing rewritten
    assert stage_costs.main(["--model", "m", "--stages", "fails", "--out", str(out)]) == 3
    assert pd.read_csv(out).set_index("stage").loc["fails", "returncode"] == 3


def test_unknown_stage_is_refused_before_anything_runs(tmp_path, capsys):
    try:
        stage_costs.main(["--model", "m", "--stages", "nope", "--out", str(tmp_path / "x.csv")])
    except SystemExit as exc:
        assert exc.code == 2
    assert "unknown stages ['nope']" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


def test_the_stages_cover_the_issue_list_in_order():
    names = list(stage_costs.stages("qwen2.5-coder-1.5b"))
    assert names[:3] == ["load", "spectra", "cost-table"]
    assert names.index("greedy-fine") < names.index("zeroshot")  # zero-shot reads the greedy path
    assert names.index("encyclopedic-topk") < names.index("encyclopedic")
    assert names.index("zeroshot-topk") < names.index("zeroshot") < names.index("zeroshot-70")
    at_70 = stage_costs.stages("qwen2.5-coder-1.5b")["zeroshot-70"]
    assert at_70[at_70.index("--sparsities") + 1] == "0.7" and "--add" in at_70 and "--no-dense" in at_70


def test_an_interrupted_stage_run_again_sums_the_cost_of_every_attempt(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_costs, "stages", fake_stages)
    out = tmp_path / "costs.csv"
    assert stage_costs.main(["--model", "m", "--stages", "fails", "--out", str(out)]) == 3
    first = pd.read_csv(out).set_index("stage").loc["fails"]
    assert first["attempts"] == 1
    # the stage now succeeds (its caches let it resume): its row counts both processes
    monkeypatch.setattr(stage_costs, "stages", lambda model: {"fails": [sys.executable, "-c", "import time; time.sleep(0.3)"]})
    assert stage_costs.main(["--model", "m", "--stages", "fails", "--out", str(out)]) == 0
    second = pd.read_csv(out).set_index("stage").loc["fails"]
    assert second["attempts"] == 2 and second["returncode"] == 0
    assert second["wall_s"] >= first["wall_s"] + 0.3 - 0.05
    assert second["cpu_s"] >= first["cpu_s"] and second["peak_rss_gb"] >= first["peak_rss_gb"]
    # --redo of a recorded success measures afresh: one attempt
    assert stage_costs.main(["--model", "m", "--stages", "fails", "--redo", "fails", "--out", str(out)]) == 0
    assert pd.read_csv(out).set_index("stage").loc["fails", "attempts"] == 1


def test_a_table_written_before_the_attempts_column_reads_as_one_attempt_each():
    earlier = pd.DataFrame([dict(stage="s", wall_s=10.0, cpu_s=5.0, peak_rss_gb=1.0, returncode=-15)])
    row = stage_costs.with_earlier_attempts(dict(stage="s", wall_s=1.0, cpu_s=1.0, peak_rss_gb=2.0, returncode=0), earlier)
    assert (row["attempts"], row["wall_s"], row["cpu_s"], row["peak_rss_gb"]) == (2, 11.0, 6.0, 2.0)
