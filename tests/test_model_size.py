"""core.model_size: shapes and parameter counts from file headers, without loading a model."""
import numpy as np
import pytest
import torch

from acttail_lab.core.model_size import (forward_parameters, parameter_count, projection_shapes, spectra_flops,
                                         tensor_shapes)


@pytest.fixture
def tiny_gguf(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((10, 4), np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((4, 4), np.float32))
    writer.add_tensor("blk.0.attn_output.weight", np.zeros((4, 4), np.float32))
    writer.add_tensor("blk.0.ffn_down.weight", np.zeros((4, 6), np.float32))
    writer.add_tensor("blk.0.attn_norm.weight", np.zeros(4, np.float32))
    writer.add_tensor("output.weight", np.zeros((10, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_counts_come_from_the_header(tiny_gguf):
    assert parameter_count(tiny_gguf) == 40 + 16 + 16 + 24 + 4 + 40
    shapes = tensor_shapes(tiny_gguf)
    # attn_output is a projection, output (the head) and token_embd are not
    assert sorted(projection_shapes(shapes)) == sorted([(4, 4), (4, 4), (6, 4)])
    assert forward_parameters(shapes) == 16 + 16 + 24 + 40
    assert spectra_flops(shapes) == sum(2 * (2 * m * n * min(m, n) + 4 * min(m, n) ** 3 / 3) for m, n in
                                        [(4, 4), (4, 4), (6, 4)])


def test_safetensors_folder_and_tied_head(tmp_path):
    from safetensors.torch import save_file

    save_file({"model.embed_tokens.weight": torch.zeros(10, 4), "model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4)},
              str(tmp_path / "a.safetensors"))
    save_file({"model.layers.0.mlp.down_proj.weight": torch.zeros(4, 6)}, str(tmp_path / "b.safetensors"))
    assert parameter_count(tmp_path) == 40 + 16 + 24
    assert forward_parameters(tensor_shapes(tmp_path)) == 16 + 24 + 40  # no lm_head: the embedding is the head


def test_unknown_sources_give_none(tmp_path):
    assert parameter_count("owner/not-downloaded") is None and parameter_count(tmp_path) is None


def test_the_default_model_matches_its_committed_spectra():
    import pandas as pd
    from pathlib import Path

    if tensor_shapes("smollm2-135m") is None:
        pytest.skip("smollm2-135m is not fetched")
    spectra = pd.read_csv(Path(__file__).resolve().parents[1] / "data/results/smollm2-135m_spectra_peak.csv")
    shapes = projection_shapes(tensor_shapes("smollm2-135m"))
    assert len(shapes) == len(spectra) == 210
    assert sum(m * n for m, n in shapes) == int(spectra["n_params"].sum())
