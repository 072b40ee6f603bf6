"""Run settings are one object (``measure.settings.RunSettings``): checked when made, shared by the grid and the
command line, recorded in every grid sidecar; the grid's keyword API keeps working and keys the same rows."""
import dataclasses
import json

import pandas as pd
import pytest
import torch

from acttail_lab.cli import main
from acttail_lab.core.errors import ActTailError, AllocationError, CalibrationError, CorpusError
from acttail_lab.core.models import LoadedModel, random_model
from acttail_lab.measure import grid
from acttail_lab.measure.grid import evaluate_grid
from acttail_lab.measure.grid_tables import write_grid
from acttail_lab.measure.settings import PERPLEXITY_FIELDS, RunSettings, merged_fields, resolve_settings

TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune. " * 40


class ByteTokenizer:
    bos_token_id = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [min(b, 250) + 1 for b in text.encode("utf-8")]}


@pytest.fixture(scope="module")
def tiny():
    return LoadedModel(model=random_model("llama-tiny", seed=0), tokenizer=ByteTokenizer(),
                       name="llama-tiny-random", source="random:llama-tiny:seed0")


@pytest.fixture
def corpus_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "novel.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------- the object
def test_defaults_are_the_grids_former_defaults_and_frozen():
    s = RunSettings()
    assert (s.tokens, s.window, s.split, s.protocol, s.xmin, s.device, s.dtype, s.seed, s.batch_size) == \
        (16384, 512, "evaluation", "all", "peak", "cpu", "float32", 0, 4)
    assert s.cache and s.include_dense and s.progress and not s.log_rows and s.calibration_tokens is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.tokens = 1


BAD = [
    (dict(protocol="first_half"), AllocationError, "Unknown protocol"),
    (dict(window=1), CorpusError, "at least 2 tokens"),
    (dict(tokens=16, window=32), CorpusError, "fewer than one window"),
    (dict(batch_size=0), AllocationError, "batch_size"),
    (dict(calibration_tokens=0), CalibrationError, "calibration_tokens=0"),
    (dict(split="train"), CorpusError, "Unknown split"),
    (dict(xmin="mean"), AllocationError, "not an xmin rule"),
    (dict(dtype="int8"), ActTailError, "floating-point dtype"),
    (dict(seed=1.5), ActTailError, "seed"),
    (dict(model=""), ActTailError, "is not a model"),
    (dict(model=3), ActTailError, "is not a model"),
]


@pytest.mark.parametrize("bad, error, fragment", BAD, ids=[str(b) for b, _, _ in BAD])
def test_a_bad_field_fails_when_the_settings_are_made(bad, error, fragment):
    with pytest.raises(error, match=fragment) as info:
        RunSettings(**bad)
    assert "Fix:" in str(info.value) or error is ActTailError


def test_dtype_by_name_or_torch_dtype_and_replace_checks_again():
    s = RunSettings(dtype=torch.float16)
    assert s.dtype == "float16" and s.torch_dtype is torch.float16
    assert s.replace(tokens=1024).tokens == 1024 and s.tokens == 16384
    with pytest.raises(TypeError, match="no field 'tokenz'"):
        s.replace(tokenz=1)
    with pytest.raises(CorpusError):
        s.replace(window=1)


def test_to_dict_is_json_and_names_a_loaded_model_by_its_source(tiny):
    s = RunSettings(model=tiny, corpus="austen", log_rows=True)
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d and d["model"] == "random:llama-tiny:seed0"
    assert "progress" not in d and "log_rows" not in d and d["dtype"] == "float32"
    assert not set(PERPLEXITY_FIELDS) & set(s.to_dict(leave_out=PERPLEXITY_FIELDS))
    assert s.zeroshot_options()["corpus"] == "austen" and s.load() is tiny


def test_merged_fields_refuse_unknown_names_and_a_model_given_twice():
    with pytest.raises(TypeError, match="unexpected keyword argument 'tokenz'"):
        merged_fields(None, None, caller="evaluate_grid", tokenz=3)
    with pytest.raises(TypeError, match="model twice"):
        merged_fields(None, "a", model="b")
    with pytest.raises(TypeError, match="not a RunSettings"):
        merged_fields({"tokens": 3})
    base = RunSettings(tokens=1024)
    assert resolve_settings(base) is base and resolve_settings(base, "m", window=256).model == "m"


# --------------------------------------------------------------------------- the grid
def test_grid_with_settings_equals_the_keyword_call_and_keywords_win(tiny, corpus_file):
    settings = RunSettings(model=tiny, tokens=64, window=32, corpus=corpus_file, progress=False, cache=False)
    by_object = evaluate_grid(strategies=("uniform",), sparsities=(0.5,), settings=settings)
    by_keywords = evaluate_grid(tiny, strategies=("uniform",), sparsities=(0.5,), tokens=64, window=32,
                                corpus=corpus_file, progress=False, cache=False)
    columns = ["strategy", "sparsity", "perplexity", "tokens", "window", "protocol", "corpus"]
    pd.testing.assert_frame_equal(by_object[columns], by_keywords[columns])
    last_half = evaluate_grid(strategies=("uniform",), sparsities=(0.5,), settings=settings, protocol="last_half",
                              include_dense=False)
    assert last_half["protocol"].tolist() == ["last_half"] and last_half["strategy"].tolist() == ["uniform"]


def test_grid_checks_keep_their_order_and_unknown_keywords_fail(tiny, corpus_file, monkeypatch):
    monkeypatch.setattr(grid, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(AllocationError, match="outside"):  # sparsities first, then the settings
        evaluate_grid("m", strategies=("uniform",), sparsities=(2.0,), window=1, corpus=corpus_file)
    with pytest.raises(TypeError, match="unexpected keyword argument 'windw'"):
        evaluate_grid("m", strategies=("uniform",), sparsities=(0.5,), windw=32)


def test_write_grid_records_the_settings_in_both_sidecars(tiny, corpus_file, tmp_path):
    settings = RunSettings(model=tiny, tokens=64, window=32, corpus=corpus_file, progress=False, seed=3,
                           calibration_tokens=128)
    runs = evaluate_grid(strategies=("uniform",), sparsities=(0.5,), settings=settings)
    path = write_grid(runs, tmp_path / "g.csv", settings=settings, command="x", strategies="uniform")
    for side in (tmp_path / "g.csv.json", tmp_path / "g_windows.csv.json"):
        meta = json.loads(side.read_text())
        assert meta["seed"] == 3 and meta["command"] == "x"
        recorded = meta["settings"]
        assert recorded["tokens"] == 64 and recorded["window"] == 32 and recorded["calibration_tokens"] == 128
        assert recorded["model"] == "random:llama-tiny:seed0" and recorded["requested_device"] == "cpu"
        assert recorded["strategies"] == "uniform" and recorded["corpus"] == corpus_file
    assert pd.read_csv(path)["strategy"].tolist() == ["dense", "uniform"]


# --------------------------------------------------------------------------- the command line
def test_cli_evaluate_passes_one_settings_object_and_the_sidecar_records_it(tiny, corpus_file, tmp_path,
                                                                            monkeypatch):
    seen = {}
    real = grid.evaluate_grid

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(grid, "evaluate_grid", spy)
    monkeypatch.setattr(grid, "load_model", lambda *a, **k: tiny)
    out = tmp_path / "res.csv"
    code = main(["evaluate", "--model", "tiny", "--strategies", "uniform", "--sparsities", "0.5", "--tokens", "64",
                 "--window", "32", "--corpus", corpus_file, "--batch-size", "2", "--seed", "5", "--quiet",
                 "--out", str(out)])
    assert code == 0
    settings = seen["settings"]
    assert isinstance(settings, RunSettings) and set(seen) == {"strategies", "sparsities", "settings"}
    assert (settings.tokens, settings.window, settings.batch_size, settings.seed) == (64, 32, 2, 5)
    assert not settings.progress and not settings.log_rows
    meta = json.loads((tmp_path / "res.csv.json").read_text())
    assert meta["seed"] == 5 and meta["settings"]["batch_size"] == 2 and meta["settings"]["model"] == "tiny"
    assert {k: meta["settings"][k] for k in settings.to_dict() if k not in ("seed", "device")} == \
        {k: v for k, v in settings.to_dict().items() if k not in ("seed", "device")}


def test_cli_zeroshot_runs_on_its_settings_and_the_sidecar_records_them(tiny, tmp_path, monkeypatch):
    from acttail_lab.core import models
    from acttail_lab.measure import zeroshot, zeroshot_tasks

    seen = {}

    def fake_evaluate(lm, strategies, sparsities, tasks, limit, seed=0, **kwargs):
        seen.update(lm=lm, seed=seed, **kwargs)
        return pd.DataFrame([dict(strategy="dense", sparsity=0.0, task="piqa", metric="acc", value=0.6, stderr=0.1,
                                  n=limit, realised_sparsity=0.0, wall_s=0.1, cached=False, data="local")])

    monkeypatch.setattr(models, "load_model", lambda *a, **k: tiny)
    monkeypatch.setattr(zeroshot, "evaluate_zeroshot", fake_evaluate)
    monkeypatch.setattr(zeroshot_tasks, "task_setup", lambda tasks, data: "setup")
    monkeypatch.setattr(zeroshot_tasks, "lm_eval_version", lambda: "0.0-test")
    out = tmp_path / "z.csv"
    code = main(["zeroshot", "--model", "tiny", "--strategies", "none", "--tasks", "piqa", "--limit", "3",
                 "--data", "local", "--seed", "7", "--batch-size", "8", "--calibration-tokens", "256", "--no-cache",
                 "--quiet", "--out", str(out)])
    assert code == 0
    assert seen["lm"] is tiny and seen["seed"] == 7 and seen["batch_size"] == 8 and seen["setup"] == "setup"
    assert seen["calibration_tokens"] == 256 and seen["cache"] is False and seen["include_dense"] is True
    meta = json.loads((tmp_path / "z.csv.json").read_text())
    recorded = meta["settings"]
    assert meta["seed"] == 7 and recorded["batch_size"] == 8 and recorded["calibration_tokens"] == 256
    assert recorded["model"] == "tiny" and recorded["lm_eval"] == "0.0-test" and recorded["limit"] == 3
    assert not set(PERPLEXITY_FIELDS) & set(recorded)  # zero-shot reads no evaluation windows
