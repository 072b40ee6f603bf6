"""Published reference data: LLaMA shapes, AlphaPruning alphas, TEAL budgets."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from acttail_lab.allocation import weighted_mean
from acttail_lab.core.errors import AllocationError, ModelNotFoundError
from acttail_lab.core.models import PROJECTIONS, projection_table
from acttail_lab.core.reference import (
    MODEL_SHAPES,
    PUBLISHED_ALPHAS_DIR,
    TEAL_ATTRIBUTION,
    TEAL_LLAMA2_7B_50,
    published_alphas,
    shape_table,
)

SHARED_COPY = Path(__file__).resolve().parents[2] / "shared" / "reference" / "published-alphas"


@pytest.mark.parametrize("key", ["llama2-7b", "llama2-70b", "llama-30b"])
def test_shape_table_matches_a_real_llama_of_that_config(key):
    """Same rows and schema as models.projection_table on a (meta-device, 2-layer) model of that config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = MODEL_SHAPES[key]
    config = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate, num_hidden_layers=2,
                         num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, vocab_size=32)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    expected = projection_table(model)
    ours = shape_table(key)
    assert list(ours.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(ours[ours.layer < 2].reset_index(drop=True), expected, check_dtype=False)


def test_shape_table_sizes():
    table = shape_table("llama2-7b")
    assert len(table) == 32 * 7
    assert tuple(table.projection[:7]) == PROJECTIONS
    assert int(table.n_params.sum()) == 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008) == 6_476_005_376
    gqa = shape_table("llama2-70b").set_index(["layer", "projection"])
    assert (gqa.loc[(0, "k"), "d_out"], gqa.loc[(0, "k"), "d_in"]) == (1024, 8192)
    assert (gqa.loc[(79, "down"), "d_out"], gqa.loc[(79, "down"), "d_in"]) == (8192, 28672)
    assert len(shape_table("llama2-7b-hf")) == 224  # AlphaPruning's folder spelling is accepted


def test_unknown_model_key_names_the_known_ones():
    with pytest.raises(ModelNotFoundError, match="llama2-7b"):
        shape_table("mistral-7b")


@pytest.mark.parametrize("key", sorted(MODEL_SHAPES))
def test_every_published_file_matches_its_shapes(key):
    table = published_alphas(key)
    assert len(table) == MODEL_SHAPES[key].layers * 7
    assert np.isfinite(table.alpha).all() and (table.alpha > 1).all()
    assert table.attrs["xmin_rule"] == "xmin_peak"
    assert "AlphaPruning" in table.attrs["attribution"]


def test_llama2_7b_alphas_match_method_md():
    table = published_alphas("llama2-7b")
    by_kind = table.groupby("projection").alpha.mean()
    expected = dict(q=2.36, k=2.41, v=3.52, o=4.00, gate=3.41, up=4.34, down=4.17)
    for kind, value in expected.items():
        assert by_kind[kind] == pytest.approx(value, abs=0.006), kind
    block = table.groupby("layer").alpha.mean()
    assert block[0] == pytest.approx(2.14, abs=0.006)
    assert block[31] == pytest.approx(3.48, abs=0.006)
    assert table.alpha.iloc[0] == pytest.approx(1.3480712175, abs=1e-9)  # layer 0 q_proj


def test_published_alphas_from_another_folder(tmp_path):
    with pytest.raises(ModelNotFoundError, match="editable"):
        published_alphas("llama2-7b", folder=tmp_path)
    np.save(tmp_path / "llama2-7b-hf.alpha_peak.npy", np.arange(10.0))
    with pytest.raises(AllocationError, match="10 alphas"):
        published_alphas("llama2-7b", folder=tmp_path)


@pytest.mark.skipif(not SHARED_COPY.exists(), reason="no shared copy of the published alphas here")
def test_shared_copy_is_identical():
    for path in PUBLISHED_ALPHAS_DIR.glob("*.npy"):
        np.testing.assert_array_equal(np.load(path), np.load(SHARED_COPY / path.name))


def test_teal_budgets_average_to_about_half_on_llama2_7b():
    table = shape_table("llama2-7b")
    mean = weighted_mean(table.projection.map(TEAL_LLAMA2_7B_50), table.n_params)
    assert mean == pytest.approx(0.50227, abs=1e-4)
    assert set(TEAL_LLAMA2_7B_50) == set(PROJECTIONS)
    assert min(TEAL_LLAMA2_7B_50, key=TEAL_LLAMA2_7B_50.get) == "up"
    assert "FasterDecoding/TEAL" in TEAL_ATTRIBUTION
