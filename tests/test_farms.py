"""FARMS (estimator=farms): window sampling, pooled ESD, aspect-ratio fairness on synthetic heavy-tailed
matrices, the spectra table's estimator option and its cache key, and allocation on FARMS alphas."""
import numpy as np
import pytest

from acttail_lab.allocation import allocate, parse_strategy
from acttail_lab.core.errors import AllocationError, EstimatorError
from acttail_lab.core.models import projection_table, random_model
from acttail_lab.spectral import farms
from acttail_lab.spectral.farms import (
    check_farms_options,
    farms_esd,
    model_farms_spectra,
    window_offsets,
)
from acttail_lab.spectral.rmt import heavy_tailed_matrix
from acttail_lab.spectral.spectra import FIT_COLUMNS, analyze, esd
from acttail_lab.spectral.tails import fit_power_law


@pytest.fixture(scope="module")
def model():
    return random_model("llama-tiny", seed=0).eval()


def test_grid_and_random_offsets():
    grid = window_offsets((100, 300), rows=40, aspect=2.0, windows=4)
    assert grid.shape == (16, 2) and grid[:, 0].max() == 60 and grid[:, 1].max() == 220 and grid.min() == 0
    assert window_offsets((40, 300), rows=40, windows=4).shape == (4, 2)  # one offset along the short side
    a = window_offsets((100, 300), rows=40, windows=3, sampling="random", seed=7)
    assert a.shape == (9, 2) and np.array_equal(a, window_offsets((100, 300), 40, windows=3, sampling="random",
                                                                  seed=7))
    assert not np.array_equal(a, window_offsets((100, 300), 40, windows=3, sampling="random", seed=8))
    with pytest.raises(EstimatorError, match="does not fit"):
        window_offsets((100, 300), rows=120)
    with pytest.raises(EstimatorError, match="does not fit"):
        window_offsets((100, 300), rows=100, aspect=4.0)


@pytest.mark.parametrize("bad", [{"rows": 1}, {"aspect": 0.5}, {"windows": 0}, {"sampling": "lhs"},
                                 {"seed": -1}, {"size": 3}])
def test_bad_options_name_the_fix(bad):
    with pytest.raises(EstimatorError, match="Fix"):
        check_farms_options(bad)


def test_pooled_esd_is_the_eigenvalues_of_every_window():
    w = np.random.default_rng(0).normal(size=(30, 50))
    eigs = farms_esd(w, rows=10, aspect=1.5, windows=2)
    offsets = window_offsets((30, 50), 10, 1.5, 2)
    expected = np.sort(np.concatenate([np.linalg.svd(w[r:r + 10, c:c + 15], compute_uv=False) ** 2
                                       for r, c in offsets]))
    np.testing.assert_allclose(eigs, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(farms_esd(w.T, rows=10, aspect=1.5, windows=2), eigs)  # orientation-free
    # one window covering the whole matrix is the plain spectrum
    np.testing.assert_allclose(farms_esd(w, rows=30, aspect=50 / 30, windows=1), esd(w), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("rule", ["ks", "median"])
def test_farms_alpha_moves_less_between_aspect_ratios_than_the_plain_fit(rule):
    """Heavy-tailed entries (tail index 3) at 1:1 and 1:2.67: the plain alpha depends on the aspect ratio, the
    FARMS alpha (the same square windows in both) much less. Seeded; means over three draws."""
    plain, fair = [], []
    for seed in range(3):
        square, wide = heavy_tailed_matrix(384, 384, 3.0, seed), heavy_tailed_matrix(384, 1024, 3.0, seed + 100)
        plain.append([fit_power_law(esd(m), rule).alpha for m in (square, wide)])
        fair.append([fit_power_law(farms_esd(m, 128, 1.0, 8), rule).alpha for m in (square, wide)])
    plain_gap = abs(np.subtract(*np.mean(plain, axis=0)))
    fair_gap = abs(np.subtract(*np.mean(fair, axis=0)))
    assert plain_gap > 0.5  # the bias FARMS removes is there
    assert fair_gap < 0.5 * plain_gap


def test_analyze_estimator_option_keeps_the_columns_and_the_default(model, tmp_path, monkeypatch):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path))
    plain = analyze(model, progress=False)
    again = analyze(model, progress=False, estimator="plain")
    assert plain.equals(again) and plain.attrs["estimator"] == "plain"
    fair = analyze(model, progress=False, estimator="farms", farms={"rows": 16, "windows": 3})
    assert list(fair.columns) == list(plain.columns) and set(FIT_COLUMNS) <= set(fair.columns)
    assert fair.attrs["estimator"] == "farms" and '"rows": 16' in fair.attrs["farms"]
    assert (fair["n_eigs"] > plain["n_eigs"]).all() and not np.allclose(fair["alpha"], plain["alpha"])
    with pytest.raises(EstimatorError, match="Unknown alpha estimator"):
        analyze(model, progress=False, estimator="hill")
    with pytest.raises(ValueError, match="only applies with estimator='farms'"):
        analyze(model, progress=False, farms={"rows": 16})


def test_cache_key_includes_estimator_and_options(model, tmp_path, monkeypatch):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path))
    a = model_farms_spectra(model, progress=False, options={"rows": 16, "windows": 2})
    b = model_farms_spectra(model, progress=False, options={"rows": 16, "windows": 3})
    analyze(model, progress=False)  # the plain spectra
    files = sorted((tmp_path / "spectra").glob("*.npz"))
    assert len(files) == 3  # plain, farms(windows=2), farms(windows=3): three keys
    name = next(iter(a))
    assert len(a[name]) < len(b[name])
    calls = []
    monkeypatch.setattr(farms, "farms_esd", lambda *args, **kw: calls.append(1))
    cached = model_farms_spectra(model, progress=False, options={"rows": 16, "windows": 2})
    assert not calls and all(np.array_equal(cached[n], a[n]) for n in a)


def test_default_rows_is_the_narrowest_projection(model):
    table = projection_table(model)
    assert farms.default_rows(model) == int(np.minimum(table["d_out"], table["d_in"]).min())


def test_every_alpha_strategy_takes_the_estimator_and_checks_the_table(model, tmp_path, monkeypatch):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path))
    fair = analyze(model, progress=False, estimator="farms")
    plain = analyze(model, progress=False)
    for text in ("acttail-farms", "acttail-block-farms", "shuffled[estimator=farms]"):
        spec = parse_strategy(text)
        assert spec.resolved["estimator"] == "farms"
        alloc = allocate(fair, spec, 0.5)
        assert set(alloc["estimator"]) == {"farms"}
        w = alloc["n_params"]
        assert np.dot(alloc["sparsity"], w) / w.sum() == pytest.approx(0.5, abs=1e-9)
        with pytest.raises(AllocationError, match="estimator=farms alphas but the table was made with"):
            allocate(plain, spec, 0.5)
    farms_budgets = allocate(fair, "acttail-farms", 0.5)["sparsity"]
    assert not np.allclose(farms_budgets, allocate(plain, "acttail", 0.5)["sparsity"])
    with pytest.raises(AllocationError, match="Unknown option 'estimator'"):
        parse_strategy("uniform[estimator=farms]")
    with pytest.raises(AllocationError, match="not one of"):
        parse_strategy("acttail[estimator=hill]")


def test_cli_spectra_takes_the_estimator(model, tmp_path, monkeypatch, capsys):
    import pandas as pd

    from acttail_lab.cli import main
    from acttail_lab.core.models import LoadedModel
    from acttail_lab.spectral import spectra

    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(spectra, "load_model", lambda name, device="cpu": LoadedModel(model, None, name, "random"))
    out = tmp_path / "farms.csv"
    assert main(["spectra", "--model", "tiny", "--estimator", "farms", "--out", str(out), "--device", "cpu"]) == 0
    table = pd.read_csv(out)
    np.testing.assert_allclose(table["alpha"], analyze(model, estimator="farms", progress=False)["alpha"],
                               rtol=1e-12)
    assert "estimator=farms" in capsys.readouterr().out


def test_grid_computes_one_alpha_table_per_estimator(model, tmp_path, monkeypatch, char_tokenizer):
    from acttail_lab.core.models import LoadedModel
    from acttail_lab.measure.grid import evaluate_grid
    from acttail_lab.spectral import spectra

    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path / "cache"))
    calls = []
    real = spectra.analyze
    monkeypatch.setattr(spectra, "analyze", lambda *a, **kw: calls.append(kw.get("estimator")) or real(*a, **kw))
    lm = LoadedModel(model=model, tokenizer=char_tokenizer(), name="tiny", source="random:tiny")
    corpus = tmp_path / "text.txt"
    corpus.write_text("It is a truth universally acknowledged. " * 60, encoding="utf-8")
    df = evaluate_grid(lm, strategies=("acttail", "acttail-farms", "wina"), sparsities=(0.5,), tokens=256,
                       window=64, corpus=str(corpus), progress=False)
    assert sorted(calls) == ["farms", "plain"]
    ppl = dict(zip(df["strategy"], df["perplexity"]))
    assert ppl["acttail"] != ppl["acttail-farms"]
    assert '"estimator": "farms"' in df.set_index("strategy").loc["acttail-farms", "options"]
    assert df.set_index("strategy").loc["wina", "method"] == "wina"
