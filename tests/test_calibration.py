"""Calibration statistics: histograms, thresholds read from them, the token count checks and the disk cache."""
import numpy as np
import pytest
import torch
from calibrated_model import TEXT, eval_windows, model, stats, windows  # noqa: F401 (pytest fixtures)

from acttail_lab.core.errors import CalibrationError
from acttail_lab.core.models import LoadedModel
from acttail_lab.sparsify import calibration as calib
from acttail_lab.sparsify.calibration import activation_stats, collect_stats

# TEXT and the module-scoped fixtures model / windows / stats / eval_windows


# --------------------------------------------------------------------------- calibration statistics
def test_histogram_threshold_matches_exact_quantile(model, windows, stats):
    captured = []
    module = model.model.layers[1].mlp.down_proj
    handle = module.register_forward_pre_hook(lambda m, a: captured.append(a[0].detach().abs().reshape(-1)))
    with torch.no_grad():
        model(windows)
    handle.remove()
    values = torch.cat(captured).numpy()
    for s in (0.3, 0.5, 0.8, 0.95):
        t = stats.threshold(1, "down", s)
        assert np.mean(values < t) == pytest.approx(s, abs=0.01)


def test_stats_cover_every_site_and_count_tokens(stats, windows, model):
    n_layers = model.config.num_hidden_layers
    assert set(stats.sites) == {(layer, site) for layer in range(n_layers) for site in calib.SITES}
    assert all(st.tokens == windows.numel() for st in stats.sites.values())
    assert stats.site(0, "down").d == model.config.intermediate_size
    summary = stats.summary()
    assert len(summary) == n_layers * len(calib.SITES)
    assert (summary["threshold_80"] > summary["threshold_50"]).all()


def test_too_little_calibration_text_is_a_clear_error(model, windows, char_tokenizer):
    short = collect_stats(model, windows[:1, :32], moments=True, progress=False)
    with pytest.raises(CalibrationError, match="at least 64"):
        short.threshold(0, "down", 0.5)
    with pytest.raises(CalibrationError, match="rank-deficient"):
        short.second_moment(0, "down")  # 32 tokens for a 160-dim input
    with pytest.raises(CalibrationError, match="too short"):
        activation_stats(LoadedModel(model, char_tokenizer(), "t", "t"), corpus=_write(TEXT[:40]), tokens=512,
                         window=64, cache=False)
    no_moments = collect_stats(model, windows[:2], moments=False, progress=False)
    with pytest.raises(CalibrationError, match="moments"):
        no_moments.second_moment(0, "o")


def _write(text):
    import tempfile

    handle = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8")
    handle.write(text)
    handle.close()
    return handle.name


def test_histogram_cache_round_trip_and_corrupt_file_ignored(model, windows, tmp_path, monkeypatch):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path))
    monkeypatch.setattr(calib, "_MEMORY", {})
    first = activation_stats(model, windows=windows, progress=False)
    files = list((tmp_path / "calibration").glob("*.pt"))
    assert len(files) == 1
    monkeypatch.setattr(calib, "_MEMORY", {})
    again = activation_stats(model, windows=windows, progress=False)
    assert again.threshold(0, "o", 0.5) == first.threshold(0, "o", 0.5)
    files[0].write_bytes(b"not a torch file")
    monkeypatch.setattr(calib, "_MEMORY", {})
    calls = []
    real = calib.collect_stats
    monkeypatch.setattr(calib, "collect_stats", lambda *a, **k: calls.append(1) or real(*a, **k))
    rebuilt = activation_stats(model, windows=windows, progress=False)
    assert calls == [1] and rebuilt.threshold(0, "o", 0.5) == first.threshold(0, "o", 0.5)
