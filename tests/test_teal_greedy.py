"""TEAL's block-wise greedy allocation (acttail_lab.measure.teal_greedy) on a tiny random LLaMA."""
import numpy as np
import pandas as pd
import pytest
import torch

from acttail_lab.allocation import allocate
from acttail_lab.allocation.greedy_path import teal_greedy_allocation
from acttail_lab.core.errors import AllocationError
from acttail_lab.core.models import (
    LoadedModel,
    decoder_layers,
    iter_projections,
    projection_table,
    random_model,
)
from acttail_lab.measure import sensitivity, teal_greedy
from acttail_lab.measure.teal_greedy import block_inputs, greedy_path, layer_forward
from acttail_lab.sparsify.topk import TopKSparsifier

DELTA, MAX_TARGET = 0.025, 0.5


@pytest.fixture(scope="module")
def model():
    return random_model("llama-tiny", seed=0)


@pytest.fixture(scope="module")
def windows():
    return torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def path(model, windows):
    return greedy_path(model, windows, delta=DELTA, max_target=MAX_TARGET, progress=False, cache=False)


def _weighted(frame):
    return np.average(frame["sparsity"], weights=frame["n_params"])


def test_path_block_sparsity_equals_each_recorded_target(path):
    targets = np.round(np.arange(0, MAX_TARGET + DELTA / 2, DELTA), 12)
    for layer, rows in path.groupby("layer"):
        assert np.allclose(sorted(rows["block_target"].unique()), targets)
        for target, block in rows.groupby("block_target"):
            assert len(block) == 7
            assert abs(_weighted(block) - target) < 1e-12
            assert (block["sparsity"] <= 0.99).all()
        errors = rows.drop_duplicates("block_target").sort_values("block_target")["block_error"].to_numpy()
        assert errors[0] == 0.0 and (errors[1:] > 0).all()
        assert errors[-1] > errors[1]  # more sparsity, more error (end to end, not per step)


def _dense_and_sparse_block_output(model, windows, layer, allocation):
    """Output of decoder layer ``layer`` in a full-model forward, via TopKSparsifier (independent route)."""
    outputs = []
    handle = decoder_layers(model)[layer].register_forward_hook(
        lambda module, args, out: outputs.append(out[0] if isinstance(out, tuple) else out))
    try:
        with torch.no_grad():
            model(windows, use_cache=False)
            with TopKSparsifier(model, allocation, record=False):
                model(windows, use_cache=False)
    finally:
        handle.remove()
    return outputs


def test_one_step_is_the_argmin_by_brute_force(model, windows, path):
    layer, j = 1, 6
    rows = path[path["layer"] == layer]
    before = rows[np.isclose(rows["block_target"], j * DELTA)].set_index("name")
    after = rows[np.isclose(rows["block_target"], (j + 1) * DELTA)].set_index("name")
    n_params = before["n_params"].astype(float)
    step = DELTA * n_params.sum() / n_params
    names = list(projection_table(model)["name"])
    errors = {}
    for name in before.index:
        trial = before["sparsity"].copy()
        trial[name] += step[name]
        if trial[name] > 0.99:
            continue
        alloc = {n: 0.0 for n in names}
        alloc.update(trial.to_dict())
        dense, sparse = _dense_and_sparse_block_output(model, windows, layer, alloc)
        errors[name] = float(torch.linalg.vector_norm(sparse - dense) / torch.linalg.vector_norm(dense))
    chosen = (after["sparsity"] - before["sparsity"]).idxmax()
    assert len(errors) >= 2
    assert min(errors, key=errors.get) == chosen
    assert errors[chosen] == pytest.approx(after["block_error"].iloc[0], rel=1e-4)
    moved = (after["sparsity"] - before["sparsity"]).abs() > 1e-12
    assert moved.sum() == 1  # exactly one projection per step


def test_dense_layer_forward_reproduces_the_model(model, windows):
    inputs = block_inputs(model, windows)
    with torch.no_grad():
        hidden = model(windows, output_hidden_states=True, use_cache=False).hidden_states
    layers = decoder_layers(model)
    assert len(inputs) == len(layers)
    torch.testing.assert_close(inputs[0].hidden_states, hidden[0])
    rows = [(r, m) for r, m in iter_projections(model) if r["layer"] == 0]
    block = teal_greedy._SparseBlock(layers[0], [r for r, _ in rows], [m for _, m in rows], inputs[0])
    try:
        torch.testing.assert_close(block.dense, hidden[1])  # hooks at sparsity 0 change nothing
        torch.testing.assert_close(layer_forward(layers[0], inputs[0]), hidden[1])
        assert block.error([0.0] * 7) == 0.0
        assert block.error([0.5] * 7) > 1e-3
    finally:
        block.close()
    for module in layers[0].modules():
        assert not module._forward_pre_hooks  # hooks removed


def test_allocation_meets_target_exactly_and_interpolates(path):
    lo, hi = 0.3, 0.325
    alloc = teal_greedy_allocation(path, 0.3125)
    assert abs(_weighted(alloc) - 0.3125) < 1e-9
    for layer, block in alloc.groupby("layer"):
        assert abs(_weighted(block) - 0.3125) < 1e-9
    rows = path.set_index(["block_target", "name"])["sparsity"]
    mid = 0.5 * (rows.loc[lo] + rows.loc[hi])
    np.testing.assert_allclose(alloc.set_index("name")["sparsity"].loc[mid.index], mid, atol=1e-12)
    exact = teal_greedy_allocation(path, hi).set_index("name")["sparsity"]
    np.testing.assert_allclose(exact.loc[rows.loc[hi].index], rows.loc[hi], atol=1e-12)
    assert set(alloc["strategy"]) == {"teal-greedy"} and set(alloc["label"]) == {"teal-greedy"}
    assert list(alloc.columns) == ["layer", "projection", "name", "n_params", "ratio", "sparsity",
                                   "label", "strategy", "target"]
    with pytest.raises(AllocationError, match="max_target"):
        teal_greedy_allocation(path, 0.7)


def test_default_windows_come_from_the_calibration_split(model, monkeypatch, char_tokenizer):
    seen = []

    def fake_corpus_text(name="austen", split="evaluation"):
        seen.append(split)
        return "calibration text " * 50

    monkeypatch.setattr(sensitivity, "corpus_text", fake_corpus_text)
    loaded = LoadedModel(model=model, tokenizer=char_tokenizer(), name="tiny", source="random")
    inputs = block_inputs(loaded, max_tokens=32)
    assert inputs[0].hidden_states.shape[:2] == (1, 32)
    greedy_path(loaded, delta=0.1, max_target=0.2, max_tokens=32, progress=False, cache=False)
    assert seen == ["calibration", "calibration"]


def test_cache_hit_on_second_call(model, windows, monkeypatch, tmp_path):
    first = greedy_path(model, windows, delta=0.1, max_target=0.3, progress=False)
    assert len(list((tmp_path / "cache" / "teal_greedy").glob("path-*.csv"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("recomputed despite a cache hit")

    monkeypatch.setattr(teal_greedy, "block_inputs", boom)
    second = greedy_path(model, windows, delta=0.1, max_target=0.3, progress=False)
    pd.testing.assert_frame_equal(first, second)
    with pytest.raises(AssertionError, match="recomputed"):  # another delta: a new key
        greedy_path(model, windows, delta=0.05, max_target=0.3, progress=False)


def test_an_interrupted_path_resumes_from_the_layers_it_finished(model, windows, monkeypatch, tmp_path):
    whole = greedy_path(model, windows, delta=0.1, max_target=0.3, progress=False, cache=False)
    real, calls = teal_greedy._layer_path, []

    def dies_on_the_second_layer(layer, *args, **kwargs):
        calls.append(layer)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(layer, *args, **kwargs)

    monkeypatch.setattr(teal_greedy, "_layer_path", dies_on_the_second_layer)
    with pytest.raises(KeyboardInterrupt):
        greedy_path(model, windows, delta=0.1, max_target=0.3, progress=False)
    layer_files = list((tmp_path / "cache" / "teal_greedy").glob("path-*-layer*.csv"))
    assert len(layer_files) == 1  # the first layer survived the interruption
    calls.clear()
    resumed = greedy_path(model, windows, delta=0.1, max_target=0.3, progress=False)
    n_layers = len(decoder_layers(model))
    assert len(calls) == n_layers - 1  # only the unfinished layers were computed again
    pd.testing.assert_frame_equal(resumed, whole)
    assert not list((tmp_path / "cache" / "teal_greedy").glob("path-*-layer*.csv"))  # folded into the path


def test_allocate_reads_the_path_and_names_the_fix_without_one(model, path):
    table = projection_table(model).iloc[::-1].reset_index(drop=True)
    with pytest.raises(AllocationError, match=r"greedy_path=.*greedy_path\(model\)"):
        allocate(table, "teal-greedy", 0.4)
    out = allocate(table, "teal-greedy", 0.4, greedy_path=path)
    assert list(out["name"]) == list(table["name"])
    assert abs(_weighted(out) - 0.4) < 1e-9
    assert set(out["strategy"]) == {"teal-greedy"} and (out["s_max"] == 0.99).all()
    with pytest.raises(AllocationError, match="s_max"):  # path computed with a looser cap
        allocate(table, "teal-greedy[s_max=0.5]", 0.4, greedy_path=path)


# --------------------------------------------------------------------------- fine steps
@pytest.fixture(scope="module")
def fine_path(model, windows):
    return greedy_path(model, windows, max_target=MAX_TARGET, progress=False, cache=False, steps="fine")


def test_fine_steps_move_one_projection_by_at_most_the_fine_step(fine_path):
    for layer, rows in fine_path.groupby("layer"):
        wide = rows.pivot_table(index="block_target", columns="name", values="sparsity").sort_index()
        moves = wide.diff().iloc[1:]
        assert ((moves.abs() > 1e-12).sum(axis=1) == 1).all()  # one projection per step
        assert moves.max().max() <= teal_greedy.FINE_STEP + 1e-12 and moves.min().min() >= -1e-12
        for target, block in rows.groupby("block_target"):
            assert abs(_weighted(block) - target) < 1e-9  # the recorded target is the block's weighted sparsity
        assert wide.index.max() >= MAX_TARGET - 1e-12
    # small projections take values between 0 and the coarse jump (TEAL's steps move k/v by several tenths)
    kv = fine_path[fine_path["projection"].isin(["k", "v"])]["sparsity"]
    assert ((kv > 0.01) & (kv < 0.2)).any()


def test_fine_step_is_the_best_error_per_gained_sparsity(model, windows, fine_path):
    layer = 0
    rows = fine_path[fine_path["layer"] == layer]
    targets = sorted(rows["block_target"].unique())
    before = rows[rows["block_target"] == targets[3]].set_index("name")
    after = rows[rows["block_target"] == targets[4]].set_index("name")
    weight = before["n_params"].astype(float) / before["n_params"].sum()
    names = list(projection_table(model)["name"])
    dense, _ = _dense_and_sparse_block_output(model, windows, layer, {n: 0.0 for n in names})
    score = {}
    for name in before.index:
        trial = before["sparsity"].copy()
        trial[name] = min(trial[name] + teal_greedy.FINE_STEP, 0.99)
        alloc = {n: 0.0 for n in names}
        alloc.update(trial.to_dict())
        _, sparse = _dense_and_sparse_block_output(model, windows, layer, alloc)
        error = float(torch.linalg.vector_norm(sparse - dense) / torch.linalg.vector_norm(dense))
        score[name] = (error - before["block_error"].iloc[0]) / (weight[name] * (trial[name] - before["sparsity"][name]))
    chosen = (after["sparsity"] - before["sparsity"]).idxmax()
    assert min(score, key=score.get) == chosen


def test_teal_greedy_fine_preset_reads_a_fine_path(model, fine_path):
    from acttail_lab.allocation import STRATEGY_PRESETS

    spec = STRATEGY_PRESETS["teal-greedy-fine"]
    assert spec.entry.inputs(spec.resolved) == {"greedy_path": {"s_max": 0.99, "steps": "fine"}}
    assert STRATEGY_PRESETS["teal-greedy"].entry.inputs(STRATEGY_PRESETS["teal-greedy"].resolved) == {
        "greedy_path": {"s_max": 0.99}}
    alloc = allocate(projection_table(model), spec, 0.4, greedy_path=fine_path)
    assert abs(_weighted(alloc) - 0.4) < 1e-9 and (alloc["label"] == "teal-greedy-fine").all()
    with pytest.raises(AllocationError, match="steps='coarse' is not one of"):
        greedy_path(model, steps="coarse")
