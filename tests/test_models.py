import pytest
import torch
from torch import nn

from acttail_lab.core.errors import (
    DeviceError,
    ModelNotFoundError,
    UnsupportedArchitectureError,
)
from acttail_lab.core.models import (
    PROJECTIONS,
    check_supported,
    load_model,
    projection_table,
    random_model,
    resolve_device,
)


def test_projection_table_tiny(tiny_model):
    table = projection_table(tiny_model)
    cfg = tiny_model.config
    assert len(table) == cfg.num_hidden_layers * 7
    assert list(table.columns) == ["layer", "projection", "name", "d_out", "d_in", "n_params"]
    assert tuple(table.projection[:7]) == PROJECTIONS
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    row = table.set_index(["layer", "projection"])
    assert row.loc[(0, "k"), "d_out"] == cfg.num_key_value_heads * head_dim
    assert row.loc[(1, "down"), "d_in"] == cfg.intermediate_size
    assert (table.n_params == table.d_out * table.d_in).all()
    assert table.name[0] == "model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize("family", ["mistral", "qwen2", "qwen3", "gemma3_text", "llama"])
def test_other_families_are_supported(family):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(family, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, vocab_size=128, head_dim=8)
    model = AutoModelForCausalLM.from_config(cfg)
    table = projection_table(model)
    assert len(table) == 14
    assert set(table.projection) == set(PROJECTIONS)


def test_multimodal_gemma3_finds_the_language_model_not_the_vision_tower():
    """Gemma-3 4B/12B/27B checkpoints are Gemma3ForConditionalGeneration: a SigLIP vision tower
    (layers with self_attn + mlp.fc1/fc2) comes first in named_modules, then the text decoder."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=300, head_dim=8)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    model = Gemma3ForConditionalGeneration(cfg)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ModuleList)]
    assert "vision" in names[0]  # the vision tower's layers come first
    table = projection_table(model)
    assert len(table) == 14 and set(table.projection) == set(PROJECTIONS)
    assert "vision" not in table.name[0] and table.name[0].endswith("layers.0.self_attn.q_proj")
    assert table.set_index(["layer", "projection"]).loc[(0, "down"), "d_in"] == 64


def test_unsupported_architecture_lists_what_was_found():
    model = random_model("llama-tiny")
    model.model.layers[1].mlp.gate_proj = nn.Identity()
    with pytest.raises(UnsupportedArchitectureError, match="gate") as info:
        check_supported(model)
    assert "mlp.up_proj" in str(info.value)  # lists the linear modules it did find


def test_model_without_decoder_layers():
    with pytest.raises(UnsupportedArchitectureError, match="No decoder layers"):
        projection_table(nn.Sequential(nn.Linear(2, 2)))


def test_unknown_model_path_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="Fix"):
        load_model("no-such-org/no-such-model-xyz")
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))


def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="no GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.real
def test_real_default_model(real_model):
    table = projection_table(real_model.model)
    assert len(table) == 210
    assert table.n_params.sum() == 30 * (2 * 576 * 576 + 2 * 192 * 576 + 3 * 576 * 1536)
    assert next(real_model.model.parameters()).dtype == torch.float32
