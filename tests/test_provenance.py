"""core.provenance and core.results_io: where a result came from, written next to it and read back with it."""
import json
import re
import shutil
import subprocess

import pandas as pd
import pytest

from acttail_lab.core import provenance as prov
from acttail_lab.core.provenance import (
    describe_device,
    git_state,
    provenance,
    sidecar_path,
    write_sidecar,
)
from acttail_lab.core.results_io import load_table, read_sidecar, write_results

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def test_provenance_fields():
    record = provenance(seed=7, device="cpu", command="python run.py --fast", model="smollm2-135m", tokens=4096)
    assert {"versions", "device", "seed", "git_sha", "git_dirty", "command", "timestamp", "settings"} <= set(record)
    assert {"python", "torch", "numpy", "pandas", "transformers", "acttail_lab"} <= set(record["versions"])
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", record["versions"]["python"])
    assert record["versions"]["torch"] and record["versions"]["numpy"] and record["versions"]["pandas"]
    assert record["device"].startswith("cpu (") and "torch thread" in record["device"]
    assert record["seed"] == 7 and record["command"] == "python run.py --fast"
    assert record["settings"] == {"model": "smollm2-135m", "tokens": 4096}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", record["timestamp"])
    assert record["git_sha"] is None or re.fullmatch(r"[0-9a-f]{40}", record["git_sha"])
    assert record["git_dirty"] in (None, True, False)
    json.dumps(record)  # JSON-ready as it is


def test_provenance_defaults():
    record = provenance()
    assert record["seed"] is None and record["settings"] == {}
    assert record["device"] == describe_device("cpu") and isinstance(record["command"], str)


def test_package_versions_marks_missing_packages(monkeypatch):
    monkeypatch.setattr(prov.environment, "PACKAGES", ("numpy", "no-such-package-acttail"))
    versions = prov.package_versions()
    assert versions["no_such_package_acttail"] is None and versions["numpy"]


def test_git_state_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    folder = tmp_path / "not-a-repo"
    folder.mkdir()
    assert git_state(folder) == {"git_sha": None, "git_dirty": None}


def test_git_state_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable anywhere
    assert git_state(tmp_path) == {"git_sha": None, "git_dirty": None}


@needs_git
def test_git_state_of_a_repository_clean_then_dirty(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
                               *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (repo / "a.txt").write_text("one")
    (repo / "data" / "results").mkdir(parents=True)
    (repo / "data" / "results" / "r.csv").write_text("x\n1\n")
    git("add", "a.txt", "data/results/r.csv")
    git("commit", "-q", "-m", "first")
    sha = git("rev-parse", "HEAD")
    assert git_state(repo) == {"git_sha": sha, "git_dirty": False}
    (repo / "data" / "results" / "r.csv").write_text("x\n2\n")  # a reproduce script rewriting its output
    assert git_state(repo / "data")["git_dirty"] is False
    (repo / "untracked.txt").write_text("ignored by the dirty flag")
    assert git_state(repo)["git_dirty"] is False
    (repo / "a.txt").write_text("two")
    assert git_state(repo) == {"git_sha": sha, "git_dirty": True}


def test_write_sidecar_next_to_the_csv(tmp_path):
    csv = tmp_path / "results.csv"
    target = write_sidecar(csv, seed=3, device="cpu", command="make results", corpus="austen")
    assert target == tmp_path / "results.csv.json" == sidecar_path(csv)
    data = json.loads(target.read_text(encoding="utf-8"))
    assert data["seed"] == 3 and data["command"] == "make results" and data["settings"] == {"corpus": "austen"}
    assert "git_sha" in data and "versions" in data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv.json"]  # no temporary file left


def test_write_results_and_load_table_round_trip(tmp_path):
    df = pd.DataFrame({"strategy": ["dense", "uniform"], "sparsity": [0.0, 0.5], "perplexity": [20.25, 23.5]})
    path = write_results(df, tmp_path / "grid.csv", seed=0, device="cpu", command="x", model="tiny")
    assert path == tmp_path / "grid.csv" and (tmp_path / "grid.csv.json").exists()
    table = load_table(path)
    pd.testing.assert_frame_equal(table, df)
    assert table.attrs["path"] == str(path)
    side = table.attrs["provenance"]
    assert side == read_sidecar(path)
    assert side["seed"] == 0 and side["command"] == "x" and side["settings"] == {"model": "tiny"}


def test_load_table_without_sidecar_and_missing_file(tmp_path):
    path = tmp_path / "plain.csv"
    pd.DataFrame({"a": [1]}).to_csv(path, index=False)
    assert read_sidecar(path) is None
    assert load_table(path).attrs["provenance"] is None
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_table(tmp_path / "missing.csv")
