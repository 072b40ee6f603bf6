"""Spectra of projections: Gram route vs SVD, bad weights, the content-keyed cache, the alpha table, the CLI."""
import numpy as np
import pandas as pd
import pytest
import torch

from acttail_lab.cli import main
from acttail_lab.core.errors import (
    BadWeightsError,
    DegenerateSpectrumError,
    DeviceError,
)
from acttail_lab.core.models import LoadedModel, projection_table, random_model
from acttail_lab.spectral import spectra
from acttail_lab.spectral.spectra import (
    FIT_COLUMNS,
    ROBUST_COLUMNS,
    analyze,
    esd,
    model_spectra,
    spectra_key,
)

BASE_COLUMNS = ["layer", "projection", "name", "d_out", "d_in", "n_params"]


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "spectra"


@pytest.fixture
def count_esd(monkeypatch):
    """Count the matrices whose spectrum is actually computed."""
    calls = []
    real = spectra.esd

    def counting(weight, *args, **kwargs):
        calls.append(kwargs.get("name"))
        return real(weight, *args, **kwargs)

    monkeypatch.setattr(spectra, "esd", counting)
    return calls


# --------------------------------------------------------------------------- one matrix
@pytest.mark.parametrize("shape", [(48, 80), (80, 48), (64, 64)])
def test_gram_route_equals_fp64_svd_squared(shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.1, 3, shape[1])
    ref = np.sort(torch.linalg.svdvals(w.double()).numpy() ** 2)
    eigs = esd(w)
    assert eigs.shape == (min(shape),) and eigs.dtype == np.float64
    np.testing.assert_allclose(eigs, ref, rtol=1e-10, atol=1e-12 * ref.max())
    eigs32 = esd(w, dtype=torch.float32)
    np.testing.assert_allclose(eigs32[-10:], ref[-10:], rtol=1e-4)
    np.testing.assert_array_equal(esd(w.numpy()), eigs)  # numpy input
    assert (np.diff(eigs) >= 0).all()


def test_gpu_route_agrees_on_cpu_tensors():
    # the cuda branch of esd is torch mm + eigvalsh; check that arithmetic where no GPU is present
    for shape in [(40, 24), (24, 40)]:
        w = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        via_torch = torch.linalg.eigvalsh(spectra._gram_torch(w)).numpy()
        np.testing.assert_allclose(via_torch, esd(w), rtol=1e-10, atol=1e-12 * via_torch.max())


def test_rank_deficient_matrix_has_no_negative_eigenvalues():
    a, b = torch.randn(30, 1, dtype=torch.float64), torch.randn(1, 50, dtype=torch.float64)
    eigs = esd(a @ b)  # rank one: 29 roundoff "zeros", some of them negative before clamping
    assert (eigs >= 0).all() and eigs[-1] == pytest.approx(float((a ** 2).sum() * (b ** 2).sum()))
    assert eigs[:-1].max() < 1e-10 * eigs[-1]


def test_half_precision_weights_are_upcast():
    w = torch.randn(32, 40, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(esd(w.bfloat16()), esd(w.bfloat16().float()), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("shape", [(8, 12), (12, 8)])
def test_bad_weights_name_the_matrix(bad, shape):
    w = torch.randn(*shape)
    w[7, 4] = bad
    with pytest.raises(BadWeightsError, match=r"model\.layers\.0\.mlp\.up_proj .*1 NaN/inf") as info:
        esd(w, name="model.layers.0.mlp.up_proj")
    assert "Fix:" in str(info.value)
    with pytest.raises(BadWeightsError, match="2-D"):
        esd(torch.randn(8))
    with pytest.raises(ValueError, match="float64 or float32"):
        esd(torch.randn(8, 8), dtype=torch.float16)


def test_overflowing_weights_are_reported():
    w = torch.full((6, 10), 1e30)
    with pytest.raises(BadWeightsError, match="overflow torch.float32"):
        esd(w, dtype=torch.float32)
    assert np.isfinite(esd(w, dtype=torch.float64)).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(DeviceError, match="device='cpu'"):
        esd(torch.randn(8, 8), device="cuda")


# --------------------------------------------------------------------------- the cache
def test_model_spectra_shapes_and_cache_hit(tmp_cache, count_esd):
    model = random_model("llama-tiny")
    first = model_spectra(model, device="cpu", progress=False)
    table = projection_table(model)
    assert list(first) == list(table["name"])
    assert [len(v) for v in first.values()] == list(np.minimum(table["d_out"], table["d_in"]))
    assert len(count_esd) == 14
    second = model_spectra(model, device="cpu", progress=False)
    assert len(count_esd) == 14  # nothing recomputed
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert len(list(tmp_cache.glob("*.npz"))) == 1
    assert not list(tmp_cache.glob(".*"))  # no temporary file left behind


def test_cache_key_follows_weights_and_dtype(tmp_cache, count_esd):
    model = random_model("llama-tiny")
    key = spectra_key(model)
    assert spectra_key(random_model("llama-tiny")) == key  # same seed, same weights
    assert spectra_key(model, torch.float32) != key
    before = model_spectra(model, device="cpu", progress=False)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 1e-3
    assert spectra_key(model) != key
    after = model_spectra(model, device="cpu", progress=False)
    assert len(count_esd) == 28
    name = "model.layers.1.mlp.down_proj"
    assert not np.array_equal(before[name], after[name])
    assert np.array_equal(before["model.layers.0.self_attn.q_proj"], after["model.layers.0.self_attn.q_proj"])


def test_corrupt_or_partial_cache_files_are_never_trusted(tmp_cache, count_esd):
    model = random_model("llama-tiny")
    good = model_spectra(model, device="cpu", progress=False)
    path = spectra.spectra_cache().path(spectra_key(model))  # <key>.<stamp>.npz
    # an interrupted writer leaves only a temporary file: it must be ignored
    (tmp_cache / f".{path.name}.abc123.tmp").write_bytes(b"PK\x03\x04 half a zip")
    path.write_bytes(path.read_bytes()[:100])  # a truncated final file: recomputed and replaced
    again = model_spectra(model, device="cpu", progress=False)
    assert len(count_esd) == 28
    assert all(np.array_equal(good[k], again[k]) for k in good)
    assert spectra._read_cache(spectra_key(model), list(good)) is not None


# --------------------------------------------------------------------------- the alpha table
def test_analyze_random_model_columns(tmp_cache):
    model = random_model("llama-tiny")
    table = analyze(model, xmin="ks", device="cpu", progress=False)
    assert list(table.columns) == BASE_COLUMNS + FIT_COLUMNS
    assert len(table) == 14 and table["xmin_rule"].eq("ks").all()
    assert table["alpha"].gt(1).all() and np.isfinite(table["alpha"]).all()
    assert (table["n_eigs"] == np.minimum(table["d_out"], table["d_in"])).all()
    assert (table["tail_ok"] == (table["n_tail"] >= 10)).all()
    assert table.attrs["xmin"] == "ks" and table.attrs["dtype"] == "torch.float64"
    peak = analyze(model, xmin="peak", device="cpu", progress=False)
    assert not np.allclose(peak["alpha"], table["alpha"])


def test_analyze_robust_adds_interval(tmp_cache):
    table = analyze(random_model("llama-tiny"), robust=True, n_boot=20, robust_method="perturb",
                    device="cpu", progress=False)
    assert list(table.columns) == BASE_COLUMNS + FIT_COLUMNS + ROBUST_COLUMNS
    assert (table["alpha_lo"] <= table["alpha_hi"]).all()
    assert table["fragile"].dtype == bool


def test_analyze_checks_options_before_computing(tmp_cache, count_esd):
    model = random_model("llama-tiny")
    with pytest.raises(ValueError, match="Unknown xmin rule"):
        analyze(model, xmin="mean", progress=False)
    with pytest.raises(ValueError, match="robust_method"):
        analyze(model, robust=True, robust_method="jackknife", progress=False)
    assert count_esd == []


def test_analyze_names_the_degenerate_projection(tmp_cache):
    model = random_model("llama-tiny")
    with torch.no_grad():
        model.model.layers[0].self_attn.k_proj.weight.zero_()
    with pytest.raises(DegenerateSpectrumError, match=r"model\.layers\.0\.self_attn\.k_proj: Only 0 positive"):
        analyze(model, device="cpu", progress=False)


# --------------------------------------------------------------------------- command line
def test_cli_writes_the_table(tmp_cache, tmp_path, monkeypatch, capsys):
    model = random_model("llama-tiny")
    monkeypatch.setattr(spectra, "load_model",
                        lambda name, device="cpu": LoadedModel(model, None, name, "random weights"))
    out = tmp_path / "alphas.csv"
    assert main(["spectra", "--model", "tiny", "--xmin", "peak", "--out", str(out), "--device", "cpu"]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == BASE_COLUMNS + FIT_COLUMNS and len(table) == 14
    expected = analyze(model, xmin="peak", device="cpu", progress=False)
    np.testing.assert_allclose(table["alpha"], expected["alpha"], rtol=1e-12)
    assert "wrote 14 rows" in capsys.readouterr().out
    out2 = tmp_path / "robust.csv"
    assert main(["spectra", "--model", "tiny", "--out", str(out2), "--robust", "--n-boot", "10",
                 "--device", "cpu", "--dtype", "float32"]) == 0
    assert list(pd.read_csv(out2).columns)[-4:] == ROBUST_COLUMNS
    with pytest.raises(SystemExit):
        main(["spectra", "--model", "tiny", "--out", str(out), "--xmin", "mean"])


# --------------------------------------------------------------------------- the real model
@pytest.mark.real
def test_real_smollm2_alphas():
    table = analyze("smollm2-135m", xmin="ks", device="cpu", progress=False)
    assert len(table) == 210 and list(table.columns) == BASE_COLUMNS + FIT_COLUMNS
    assert table["layer"].nunique() == 30
    assert (table["n_eigs"] == np.minimum(table["d_out"], table["d_in"])).all()  # 576, or 192 for k/v
    assert np.isfinite(table["alpha"]).all() and table["alpha"].gt(1).all()
    peak = analyze("smollm2-135m", xmin="peak", device="cpu", progress=False)
    assert np.isfinite(peak["alpha"]).all() and peak["alpha"].gt(1).all()
    assert peak["alpha"].median() < table["alpha"].median()  # the peak window excludes the shortest tails
