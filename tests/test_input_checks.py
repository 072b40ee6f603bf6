"""Bad input is refused before any model loads (seconds here, minutes for a 7B model).

``load_model`` is replaced by a function that fails the test, so each bad input must raise the
project's error (an ActTailError; on the CLI: exit code 2 and the message on stderr) first.
"""
import numpy as np
import pytest

from acttail_lab.cli import main
from acttail_lab.core import corpus as corpus_module
from acttail_lab.core.corpus import check_corpus, check_split, check_window
from acttail_lab.core.errors import (
    ActTailError,
    AllocationError,
    CalibrationError,
    CorpusError,
)
from acttail_lab.core.models import LoadedModel, random_model
from acttail_lab.measure import grid
from acttail_lab.measure.grid import GRID_COLUMNS, check_grid_inputs, evaluate_grid
from acttail_lab.spectral import spectra

TEXT = "It is a truth universally acknowledged, that a single man must be in want of a wife. " * 30


def _no_load(*args, **kwargs):
    raise AssertionError("model loaded")


@pytest.fixture(autouse=True)
def no_model_load(monkeypatch, tmp_path):
    monkeypatch.setattr(grid, "load_model", _no_load)
    monkeypatch.setattr(spectra, "load_model", _no_load)
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "novel.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


@pytest.fixture
def good(corpus_file):
    """Keyword arguments of evaluate_grid that pass every check."""
    return dict(strategies=("uniform",), sparsities=(0.5,), tokens=64, window=32, corpus=corpus_file,
                split="evaluation", protocol="all", progress=False, cache=False)


def cli(argv, capsys):
    """(exit code, stderr) of the CLI; argparse refusals exit through SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------- evaluate_grid
BAD_GRID = [
    (dict(sparsities=()), AllocationError, "sparsities is empty"),
    (dict(sparsities=(1.0,)), AllocationError, r"outside \[0, 1\)"),
    (dict(sparsities=(50,)), AllocationError, r"outside \[0, 1\)"),
    (dict(sparsities=(-0.1,)), AllocationError, r"outside \[0, 1\)"),
    (dict(sparsities=(float("nan"),)), AllocationError, "not a finite number"),
    (dict(sparsities=("0.5",)), AllocationError, "not a finite number"),
    (dict(sparsities="0.5,0.6"), AllocationError, "not a sequence"),
    (dict(strategies=("no-such-strategy",)), AllocationError, "Unknown strategy"),
    (dict(strategies=("uniform[method=magic]",)), AllocationError, "Unknown method 'magic'"),
    (dict(protocol="first_half"), AllocationError, "Unknown protocol 'first_half'"),
    (dict(window=1), CorpusError, "at least 2 tokens"),
    (dict(window=32.0), CorpusError, "integer"),
    (dict(tokens=16, window=32), CorpusError, "fewer than one window"),
    (dict(batch_size=0), AllocationError, "batch_size"),
    (dict(strategies=("teal-threshold",), calibration_tokens=8), CalibrationError, "calibration_tokens=8"),
    (dict(split="train"), CorpusError, "Unknown split 'train'"),
]


@pytest.mark.parametrize("bad, error, fragment", BAD_GRID, ids=[str(b) for b, _, _ in BAD_GRID])
def test_bad_grid_input_fails_before_the_model_loads(good, bad, error, fragment):
    with pytest.raises(error, match=fragment) as info:
        evaluate_grid("a-7b-model-we-must-not-load", **{**good, **bad})
    assert isinstance(info.value, ActTailError) and "Fix:" in str(info.value)


def test_missing_corpus_file_names_the_path_and_the_fix(good, tmp_path):
    missing = tmp_path / "nope" / "novel.txt"
    with pytest.raises(CorpusError) as info:
        evaluate_grid("m", **{**good, "corpus": str(missing)})
    message = str(info.value)
    assert str(missing) in message and "Fix: check the path" in message
    with pytest.raises(CorpusError, match="is a folder"):
        evaluate_grid("m", **{**good, "corpus": str(tmp_path)})
    with pytest.raises(CorpusError, match="not a corpus name"):
        evaluate_grid("m", **{**good, "corpus": ""})


def test_austen_that_cannot_be_fetched_fails_before_the_model_loads(good, monkeypatch, tmp_path):
    monkeypatch.delenv("ACTTAIL_AUSTEN_DEB", raising=False)
    monkeypatch.setattr(corpus_module.shutil, "which", lambda name: None)
    with pytest.raises(CorpusError, match="acttail-lab fetch"):
        evaluate_grid("m", **{**good, "corpus": "austen"})
    monkeypatch.setenv("ACTTAIL_AUSTEN_DEB", str(tmp_path / "missing.deb"))
    with pytest.raises(CorpusError, match="missing.deb does not exist"):
        evaluate_grid("m", **{**good, "corpus": "austen"})


def test_checks_run_in_the_documented_order(good, tmp_path):
    """Sparsities, strategies, protocol, window/tokens, corpus, split: the first bad one is reported."""
    bad = dict(sparsities=(2.0,), strategies=("nope",), protocol="x", window=1, corpus=str(tmp_path / "no.txt"),
               split="train")
    expected = [("sparsities", "outside"), ("strategies", "Unknown strategy"), ("protocol", "Unknown protocol"),
                ("window", "at least 2"), ("corpus", "neither 'austen'"), ("split", "Unknown split")]
    for name, fragment in expected:
        with pytest.raises(ActTailError, match=fragment):
            check_grid_inputs(**{**{k: good[k] for k in ("strategies", "sparsities", "protocol", "window",
                                                          "tokens", "corpus", "split")}, **bad})
        bad.pop(name)
    specs, targets = check_grid_inputs(**{k: good[k] for k in ("strategies", "sparsities", "protocol", "window",
                                                                "tokens", "corpus", "split")})
    assert [s.label for s in specs] == ["uniform"] and targets == [0.5]


def test_check_corpus_reads_no_text(corpus_file, monkeypatch):
    def no_read(*args, **kwargs):
        raise AssertionError("text read")
    monkeypatch.setattr(corpus_module.Path, "read_text", no_read)
    monkeypatch.setattr(corpus_module.Path, "read_bytes", no_read)
    assert check_corpus(corpus_file) == corpus_file
    assert check_split("calibration") == "calibration"
    assert check_window(np.int64(8), 64) == 8


def test_good_input_with_a_loaded_tiny_model_still_runs(good, char_tokenizer):
    lm = LoadedModel(model=random_model("llama-tiny", seed=0), tokenizer=char_tokenizer(),
                     name="llama-tiny-random", source="random:llama-tiny:seed0")
    df = evaluate_grid(lm, **{**good, "sparsities": np.array([0.5])})
    assert list(df.columns)[:len(GRID_COLUMNS)] == list(GRID_COLUMNS)
    assert df["strategy"].tolist() == ["dense", "uniform"] and df["sparsity"].tolist() == [0.0, 0.5]
    assert (df["tokens"] == 2 * 31).all() and np.isfinite(df["perplexity"]).all()
    dense_only = evaluate_grid(lm, **{**good, "strategies": (), "sparsities": ()})
    assert dense_only["strategy"].tolist() == ["dense"]


# --------------------------------------------------------------------------- CLI
BAD_EVALUATE = [
    (["--sparsities", "1.5"], "outside [0, 1)"),
    (["--sparsities", "abc"], "comma-separated list of numbers"),
    (["--strategies", "no-such-strategy"], "Unknown strategy"),
    (["--strategies", "uniform[method=magic]"], "Unknown method"),
    (["--protocol", "first_half"], "invalid choice"),
    (["--window", "1"], "at least 2 tokens"),
    (["--tokens", "16", "--window", "32"], "fewer than one window"),
    (["--batch-size", "0"], "batch_size"),
    (["--split", "train"], "invalid choice"),
]


@pytest.mark.parametrize("bad, fragment", BAD_EVALUATE, ids=[" ".join(b) for b, _ in BAD_EVALUATE])
def test_cli_evaluate_bad_input_exits_2_before_the_model_loads(bad, fragment, corpus_file, tmp_path, capsys):
    argv = ["evaluate", "--model", "big", "--strategies", "uniform", "--sparsities", "0.5", "--tokens", "64",
            "--window", "32", "--corpus", corpus_file, "--quiet", "--out", str(tmp_path / "x.csv")]
    code, err = cli(argv + bad, capsys)
    assert code == 2 and fragment in err
    assert not (tmp_path / "x.csv").exists()


def test_cli_evaluate_missing_corpus_and_folder_out(tmp_path, capsys):
    missing = tmp_path / "no-such.txt"
    code, err = cli(["evaluate", "--model", "big", "--corpus", str(missing), "--out", str(tmp_path / "x.csv")],
                    capsys)
    assert code == 2 and str(missing) in err and "Fix:" in err
    code, err = cli(["evaluate", "--model", "big", "--out", str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in err


def test_cli_evaluate_good_input_runs(corpus_file, tmp_path, monkeypatch, capsys, char_tokenizer):
    lm = LoadedModel(model=random_model("llama-tiny", seed=0), tokenizer=char_tokenizer(),
                     name="llama-tiny-random", source="random:llama-tiny:seed0")
    monkeypatch.setattr(grid, "load_model", lambda *a, **k: lm)
    code, _ = cli(["evaluate", "--model", "tiny", "--strategies", "uniform", "--sparsities", "0.5", "--tokens", "64",
                   "--window", "32", "--corpus", corpus_file, "--quiet", "--no-cache",
                   "--out", str(tmp_path / "x.csv")], capsys)
    assert code == 0 and (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("bad, fragment", [(["--n-boot", "1", "--robust"], "--n-boot must be at least 2"),
                                           (["--xmin", "-1"], "--xmin must be positive"),
                                           (["--robust-method", "jackknife"], "invalid choice")])
def test_cli_spectra_bad_input_exits_2_before_the_model_loads(bad, fragment, tmp_path, capsys):
    code, err = cli(["spectra", "--model", "big", "--out", str(tmp_path / "a.csv")] + bad, capsys)
    assert code == 2 and fragment in err


def test_cli_spectra_folder_out_and_analyze_n_boot(tmp_path, capsys):
    code, err = cli(["spectra", "--model", "big", "--out", str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in err and "Fix:" in err
    with pytest.raises(ValueError, match="n_boot=1"):
        spectra.analyze("big", robust=True, n_boot=1)
