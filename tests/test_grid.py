"""Perplexity, the cached evaluation grid, result files with provenance, and the evaluate CLI."""
import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from acttail_lab.cli import main
from acttail_lab.core.models import LoadedModel, random_model
from acttail_lab.core.results_io import write_results
from acttail_lab.measure import grid as evaluation
from acttail_lab.measure.grid import GRID_COLUMNS, WINDOW_COLUMN, evaluate_grid
from acttail_lab.measure.grid_tables import window_table
from acttail_lab.measure.perplexity import perplexity

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife. ") * 40


class ByteTokenizer:
    """Bytes as token ids (< 256, the llama-tiny vocabulary); no BOS."""

    bos_token_id = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": list(text.encode("utf-8"))}


@pytest.fixture(scope="module")
def tiny():
    return LoadedModel(model=random_model("llama-tiny", seed=0), tokenizer=ByteTokenizer(),
                       name="llama-tiny-random", source="random:llama-tiny:seed0")


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "novel.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ACTTAIL_CACHE", str(root))
    return root


@pytest.fixture
def counted(monkeypatch):
    """Count the perplexity() calls the grid makes (forward passes happen only there)."""
    calls = []
    real = perplexity

    def wrapper(*args, **kwargs):
        calls.append(kwargs.get("desc"))
        return real(*args, **kwargs)
    monkeypatch.setattr(evaluation, "perplexity", wrapper)
    return calls


def windows(n=3, length=32, seed=0):
    return torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(seed))


def manual_nll(model, ids, start=0):
    with torch.inference_mode():
        logits = model(ids).logits[:, start:-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, start + 1:].reshape(-1)).item()


# --------------------------------------------------------------------------- perplexity
def test_perplexity_is_exp_of_manual_cross_entropy(tiny):
    ids = windows()
    result = perplexity(tiny.model, ids, batch_size=2, progress=False)
    expected = manual_nll(tiny.model, ids)
    assert result.nll == pytest.approx(expected, rel=1e-6)
    assert result.perplexity == pytest.approx(math.exp(expected), rel=1e-6)
    assert result.tokens == 3 * 31
    assert result.realised_sparsity == 0.0 and result.projections is None
    assert set(result.as_row()) == {"perplexity", "nll", "tokens", "realised_sparsity", "wall_s", "protocol"}


def test_last_half_scores_only_sparsified_positions(tiny):
    ids = windows(length=32)
    dense = perplexity(tiny, ids, protocol="last_half", progress=False)
    assert dense.tokens == 3 * (31 - 16)
    assert dense.nll == pytest.approx(manual_nll(tiny.model, ids, start=16), rel=1e-6)
    sparse = perplexity(tiny, ids, allocation=0.5, protocol="last_half", progress=False)
    assert sparse.tokens == dense.tokens
    assert sparse.nll != pytest.approx(dense.nll, rel=1e-4)
    assert (sparse.projections["tokens"] == 3 * 16).all()


def test_perplexity_with_allocation_reports_realised_sparsity(tiny):
    result = perplexity(tiny, windows(), allocation=0.5, batch_size=4, progress=False)
    assert result.realised_sparsity == pytest.approx(0.5, abs=1e-12)
    assert len(result.projections) == 14
    assert result.perplexity > 0 and math.isfinite(result.perplexity)
    assert not tiny.model.training


def test_perplexity_is_deterministic_and_batch_size_independent(tiny):
    ids = windows(n=4)
    a = perplexity(tiny, ids, allocation=0.6, batch_size=1, progress=False)
    b = perplexity(tiny, ids, allocation=0.6, batch_size=4, progress=False)
    c = perplexity(tiny, ids, allocation=0.6, batch_size=4, progress=False)
    assert b.nll == c.nll
    assert a.nll == pytest.approx(b.nll, rel=1e-5)


# --------------------------------------------------------------------------- grid
def grid(tiny, corpus_file, **kwargs):
    options = dict(strategies=("uniform", "acttail"), sparsities=(0.3, 0.6), tokens=96, window=32,
                   corpus=corpus_file, progress=False)
    return evaluate_grid(tiny, **{**options, **kwargs})


def test_grid_rows_columns_and_cache_resume(tiny, corpus_file, cache_root, counted):
    first = grid(tiny, corpus_file)
    assert list(first.columns) == [*GRID_COLUMNS, WINDOW_COLUMN]
    assert first["strategy"].tolist() == ["dense", "uniform", "uniform", "acttail", "acttail"]
    assert first["sparsity"].tolist() == [0.0, 0.3, 0.6, 0.3, 0.6]
    assert len(counted) == 5 and not first["cached"].any()
    assert (first["tokens"] == 3 * 31).all()
    assert first["realised_sparsity"].iloc[1:].tolist() == pytest.approx([0.3, 0.6, 0.3, 0.6], abs=0.02)
    assert first["perplexity"].iloc[0] < first["perplexity"].iloc[2]
    assert json.loads(first["options"].iloc[3])["epsilon"] == 0.3
    assert first["perplexity"].iloc[3] != first["perplexity"].iloc[1]  # acttail allocates differently
    assert first["xmin_rule"].isna().tolist() == [True, True, True, False, False]
    assert first["xmin_rule"].iloc[3] == "peak"  # the default rule (AlphaPruning's)
    dense = perplexity(tiny, evaluation.token_windows(tiny.tokenizer, TEXT[len(TEXT) // 2:], 32, 96), progress=False)
    assert first["perplexity"].iloc[0] == pytest.approx(dense.perplexity, rel=1e-9)

    second = grid(tiny, corpus_file)
    assert len(counted) == 5  # every row came from the cache
    assert second["cached"].all()
    cols = [c for c in GRID_COLUMNS if c != "cached"] + [WINDOW_COLUMN]
    pd.testing.assert_frame_equal(first[cols], second[cols])  # per-window losses come back from the cache too

    grid(tiny, corpus_file, sparsities=(0.3, 0.6, 0.8))  # resumes: only the new target runs
    assert len(counted) == 7


def test_window_table_pairs_every_run_on_the_same_windows(tiny, corpus_file, cache_root):
    runs = grid(tiny, corpus_file)
    table = window_table(runs)
    assert len(table) == len(runs) * 3  # 96 tokens in windows of 32
    assert all(list(idx) == [0, 1, 2] for _, idx in table.groupby(["strategy", "sparsity"])["window_index"])
    means = table.groupby(["strategy", "sparsity"], sort=False)["nll"].mean().to_numpy()
    assert means == pytest.approx(runs["nll"].to_numpy(), rel=1e-12)
    dense = table[table.strategy == "dense"]["nll"].to_numpy()
    sparse = table[(table.strategy == "uniform") & (table.sparsity == 0.6)]["nll"].to_numpy()
    assert (sparse != dense).all()


def test_cached_row_without_window_losses_is_recomputed(tiny, corpus_file, cache_root, counted):
    grid(tiny, corpus_file, strategies=("uniform",), sparsities=(0.5,))
    for path in (cache_root / "eval").glob("*.json"):
        payload = json.loads(path.read_text())
        payload.pop(WINDOW_COLUMN)
        path.write_text(json.dumps(payload))
    grid(tiny, corpus_file, strategies=("uniform",), sparsities=(0.5,))
    assert len(counted) == 4


def test_grid_cache_depends_on_protocol_and_windows(tiny, corpus_file, cache_root, counted):
    grid(tiny, corpus_file, strategies=("uniform",), sparsities=(0.5,))
    grid(tiny, corpus_file, strategies=("uniform",), sparsities=(0.5,), protocol="last_half")
    grid(tiny, corpus_file, strategies=("uniform",), sparsities=(0.5,), window=16)
    assert len(counted) == 6


def test_corrupt_cache_file_is_recomputed_not_trusted(tiny, corpus_file, cache_root, counted):
    first = grid(tiny, corpus_file, strategies=("uniform",), sparsities=(0.5,))
    files = sorted((cache_root / "eval").glob("*.json"))
    assert len(files) == 2
    files[0].write_text('{"key": "truncated", "perplexity": 1.0', encoding="utf-8")
    payload = json.loads(files[1].read_text())
    payload["perplexity"] = 1.0  # inconsistent with its nll
    files[1].write_text(json.dumps(payload))
    with pytest.warns(UserWarning, match="recomputing"):
        again = grid(tiny, corpus_file, strategies=("uniform",), sparsities=(0.5,))
    assert len(counted) == 4
    assert not again["cached"].any()
    assert again["perplexity"].tolist() == pytest.approx(first["perplexity"].tolist(), rel=1e-9)
    assert grid(tiny, corpus_file, strategies=("uniform",), sparsities=(0.5,))["cached"].all()


def test_grid_without_dense_and_without_cache(tiny, corpus_file, cache_root, counted):
    df = grid(tiny, corpus_file, strategies=("uniform",), sparsities=(0.5,), include_dense=False, cache=False)
    assert df["strategy"].tolist() == ["uniform"]
    assert not (cache_root / "eval").exists() or not list((cache_root / "eval").glob("*.json"))


def test_grid_logs_one_line_per_row_only_when_asked(tiny, corpus_file, cache_root, capsys):
    grid(tiny, corpus_file, strategies=("uniform",), sparsities=(0.5,), progress=True, log_rows=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[evaluate]")]
    assert len(lines) == 2 and "ppl" in lines[1] and "uniform" in lines[1]
    grid(tiny, corpus_file, strategies=("uniform",), sparsities=(0.5,), progress=True)  # notebooks: bars only
    assert "[evaluate]" not in capsys.readouterr().err


# --------------------------------------------------------------------------- files and CLI
def test_write_results_csv_and_sidecar(tmp_path):
    df = pd.DataFrame({"strategy": ["dense"], "perplexity": [25.0]})
    path = write_results(df, tmp_path / "out.csv", seed=3, device="cpu", model="m")
    assert pd.read_csv(path).equals(df)
    meta = json.loads((tmp_path / "out.csv.json").read_text())
    assert set(meta["versions"]) >= {"python", "torch", "transformers", "numpy", "acttail_lab"}
    assert meta["seed"] == 3 and meta["device"].startswith("cpu") and meta["settings"] == {"model": "m"}
    assert "git_sha" in meta and "git_dirty" in meta and meta["timestamp"] and meta["command"]


def test_cli_evaluate_writes_csv(tiny, corpus_file, cache_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluation, "load_model", lambda *a, **k: tiny)
    out = tmp_path / "res.csv"
    code = main(["evaluate", "--model", "tiny", "--strategies", "uniform,acttail[eps=0.2]", "--sparsities", "0.5,0.7",
                 "--tokens", "64", "--window", "32", "--corpus", corpus_file, "--protocol", "last_half",
                 "--quiet", "--out", str(out)])
    assert code == 0
    df = pd.read_csv(out)
    assert df["strategy"].tolist() == ["dense", "uniform", "uniform", "acttail[epsilon=0.2]", "acttail[epsilon=0.2]"]
    assert json.loads(df["options"].iloc[-1])["epsilon"] == 0.2
    assert (df["protocol"] == "last_half").all() and (df["tokens"] == 2 * 15).all()
    meta = json.loads((tmp_path / "res.csv.json").read_text())
    assert meta["settings"]["protocol"] == "last_half" and "evaluate" in meta["command"]
    assert WINDOW_COLUMN not in df.columns
    windows = pd.read_csv(tmp_path / "res_windows.csv")  # two windows of 32 tokens per run
    assert len(windows) == 2 * len(df) and set(windows["window_index"]) == {0, 1}
    assert windows.groupby(["strategy", "sparsity"], sort=False)["nll"].mean().to_numpy() == \
        pytest.approx(df["nll"].to_numpy(), rel=1e-9)
    assert (tmp_path / "res_windows.csv.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cli_cuda_without_gpu_is_a_clean_error(tmp_path, capsys):
    code = main(["evaluate", "--device", "cuda", "--strategies", "uniform", "--out", str(tmp_path / "x.csv")])
    assert code == 2
    assert "no GPU" in capsys.readouterr().err


# --------------------------------------------------------------------------- real model
@pytest.mark.real
def test_real_smollm2_dense_and_uniform_half(real_model):
    from acttail_lab.core.corpus import corpus_text, token_windows

    ids = token_windows(real_model.tokenizer, corpus_text("austen", "evaluation"), window=256, n_tokens=512)
    assert ids.shape == (2, 256)
    dense = perplexity(real_model, ids, batch_size=2, progress=False)
    sparse = perplexity(real_model, ids, allocation=0.5, batch_size=2, progress=False)
    assert 10 < dense.perplexity < 60
    assert sparse.perplexity > dense.perplexity
    assert sparse.realised_sparsity == pytest.approx(0.5, abs=1e-3)


def test_teal_greedy_specs_with_different_s_max_get_one_path_each(tiny, corpus_file, cache_root, monkeypatch):
    """Each teal-greedy s_max reads its own greedy path (was: every spec shared the first one's)."""
    from acttail_lab.core.models import projection_table
    from acttail_lab.measure import teal_greedy

    calls = []

    def fake_greedy_path(lm, corpus="austen", s_max=0.99, progress=False, **kwargs):
        calls.append(s_max)
        ident = projection_table(lm.model)[["layer", "projection", "name", "n_params"]]
        return pd.concat([ident.assign(block_target=t, sparsity=t, block_error=t) for t in (0.0, 0.5, s_max)],
                         ignore_index=True)

    monkeypatch.setattr(teal_greedy, "greedy_path", fake_greedy_path)
    specs = ["teal-greedy", "teal-greedy[s_max=0.9]", "teal-greedy[s_max=0.99]"]
    df = evaluate_grid(tiny, strategies=specs, sparsities=(0.5, 0.9), tokens=256, window=64, corpus=corpus_file,
                       progress=False, include_dense=False)
    assert sorted(calls) == [0.9, 0.99]  # one path per distinct s_max, computed once each
    assert df["strategy"].tolist() == [s for s in specs for _ in (0.5, 0.9)]
    assert df["perplexity"].notna().all()


@pytest.mark.parametrize("argv", [["evaluate", "--out", "x.csv"], ["zeroshot", "--limit", "5", "--out", "x.csv"]])
def test_sidecar_command_line_names_its_own_subcommand(argv):
    from acttail_lab.cli import build_parser
    from acttail_lab.cli.options import command_line

    line = command_line(build_parser().parse_args(argv))
    assert line.startswith(f"acttail-lab {argv[0]} --model ") and line.endswith("--out x.csv")


def test_earlier_provenance_keeps_the_chain_of_a_table_added_to_twice():
    from acttail_lab.measure.grid_tables import earlier_provenance

    first = {"command": "first", "git_sha": "a" * 40, "settings": {}}
    second = {"command": "second", "git_sha": "b" * 40,
              "settings": {"earlier_tiers": earlier_provenance(_with_provenance(pd.DataFrame(), first))}}
    kept = earlier_provenance(_with_provenance(pd.DataFrame(), second))
    assert kept["command"] == "second" and kept["earlier"]["earlier_tiers"]["command"] == "first"
    assert "earlier" not in kept["earlier"]["earlier_tiers"]  # the first table had no rows before it
    assert earlier_provenance(pd.DataFrame())["command"] is None  # no sidecar: nothing to keep, no error


def _with_provenance(table: pd.DataFrame, provenance: dict) -> pd.DataFrame:
    table.attrs["provenance"] = provenance
    return table
