"""Second moments streamed a group of layers at a time: the same rotations, never every layer's moments at once."""
import pytest
import torch
from calibrated_model import model, windows  # noqa: F401 (pytest fixtures)

from acttail_lab.core.errors import CalibrationError
from acttail_lab.core.models import decoder_layers, random_model
from acttail_lab.sparsify import calibration as calib
from acttail_lab.sparsify import moment_stream, rotation
from acttail_lab.sparsify.calibration import ActivationStats, activation_stats, collect_stats
from acttail_lab.sparsify.rotation import rotations_for


def _deferred(model, windows, key):
    rotation._MEMO.clear()
    hist = collect_stats(model, windows, moments=False, progress=False, key=key)
    return ActivationStats(sites=hist.sites, tokens=hist.tokens, key=key, has_moments=True, windows=windows)


def test_layer_groups_fit_the_budget_at_llama2_7b_shapes():
    with torch.device("meta"):
        big = random_model("llama2-7b")  # no memory: meta tensors carry the shapes only
    per_layer = moment_bytes = moment_stream.moment_bytes(big)
    assert moment_bytes[0] == 8 * (3 * 4096 ** 2 + 11008 ** 2)  # q/k/v, o, gate/up inputs + down input
    groups = moment_stream.layer_groups(big)
    assert [len(g) for g in groups][:10] == [3] * 10 and sum(groups, []) == list(range(32))
    assert all(sum(per_layer[i] for i in g) <= moment_stream.MOMENT_BUDGET_BYTES for g in groups)
    assert moment_stream.layer_groups(big, budget_bytes=1) == [[i] for i in range(32)]  # one layer at least


def test_streamed_rotations_equal_the_all_at_once_rotations(model, windows, monkeypatch):
    rotation._MEMO.clear()
    eager = rotations_for(model, collect_stats(model, windows, moments=True, progress=False, key="eager"),
                          progress=False)
    monkeypatch.setattr(moment_stream, "MOMENT_BUDGET_BYTES", 1)  # one layer per group
    streamed = rotations_for(model, _deferred(model, windows, "streamed"), progress=False)
    assert sorted(streamed) == sorted(eager)
    for key, q in eager.items():
        assert torch.equal(streamed[key], q), key


def test_each_group_is_rotated_and_freed_before_the_next_is_collected(model, windows, monkeypatch):
    monkeypatch.setattr(moment_stream, "MOMENT_BUDGET_BYTES", 1)  # one layer per group
    events, calls = [], {i: 0 for i in range(len(decoder_layers(model)))}
    real_group, real_rot = moment_stream.group_moments, rotation.rotations_from_stats

    def group(model_, windows_, layers, **kw):
        stats = real_group(model_, windows_, layers, **kw)
        assert {layer for layer, _ in stats.sites} == set(layers)  # only this group's sites are kept
        events.append(("collect", tuple(layers), stats.moments_held))
        return stats

    def rot(stats, layers, **kw):
        out = real_rot(stats, layers, **kw)
        events.append(("rotate", tuple(layers), stats.moments_held))
        return out

    monkeypatch.setattr(moment_stream, "group_moments", group)
    monkeypatch.setattr(rotation, "rotations_from_stats", rot)
    stats = _deferred(model, windows, "order")  # its histogram pass is not counted below
    handles = [layer.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, layer in enumerate(decoder_layers(model))]
    try:
        rotations_for(model, stats, progress=False)
    finally:
        for handle in handles:
            handle.remove()
    n_batches = len(windows.split(4))
    assert events == [("collect", (0,), 4), ("rotate", (0,), 0), ("collect", (1,), 4), ("rotate", (1,), 0)]
    assert calls == {0: 2 * n_batches, 1: n_batches}  # the pass for layer 0 stops before layer 1


def test_activation_stats_defers_the_moments_and_says_how_to_get_them(model, windows, monkeypatch, tmp_path):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path))
    monkeypatch.setattr(calib, "_MEMORY", {})
    stats = activation_stats(model, windows=windows, moments=True, progress=False)
    assert stats.has_moments and stats.windows is not None and stats.moments_held == 0
    with pytest.raises(CalibrationError, match="deferred"):
        stats.second_moment(0, "down")
    assert stats.threshold(0, "o", 0.5) > 0  # the histograms are there
    rotation._MEMO.clear()
    rotations = rotations_for(model, stats, progress=False)
    assert len(rotations) == 4 * len(decoder_layers(model)) and stats.rotations is rotations
