"""core.model_files: a truncated or corrupt GGUF / safetensors file is refused with "re-fetch" before it loads."""
import numpy as np
import pytest
import torch

from acttail_lab.core.errors import CorruptModelFileError
from acttail_lab.core.model_files import check_gguf, check_model_files, check_safetensors
from acttail_lab.core.models import load_model


@pytest.fixture
def gguf_file(tmp_path):
    """A real GGUF file written by the gguf package: metadata (a string array too) and F32 + Q8_0 tensors."""
    import gguf

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_token_list(["<s>", "a", "b"])
    writer.add_tensor("a", np.arange(64, dtype=np.float32).reshape(2, 32))
    q = gguf.quants.quantize(np.ones((4, 64), dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("b", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_intact_gguf_is_accounted_for_to_its_last_byte(gguf_file):
    assert check_gguf(gguf_file) <= gguf_file.stat().st_size
    check_model_files(gguf_file)


@pytest.mark.parametrize("cut", ["half", "last byte of data"])
def test_a_truncated_gguf_says_re_fetch(gguf_file, cut):
    data = gguf_file.read_bytes()
    keep = len(data) // 2 if cut == "half" else check_gguf(gguf_file) - 1  # (trailing alignment padding is no data)
    gguf_file.write_bytes(data[:keep])
    with pytest.raises(CorruptModelFileError, match="truncated.*Fix: re-fetch"):
        check_gguf(gguf_file)


def test_a_gguf_cut_inside_its_header_or_not_gguf_at_all(gguf_file):
    gguf_file.write_bytes(gguf_file.read_bytes()[:40])
    with pytest.raises(CorruptModelFileError, match="ends inside its header.*re-fetch"):
        check_gguf(gguf_file)
    gguf_file.write_bytes(b"not a model at all" * 10)
    with pytest.raises(CorruptModelFileError, match="not a GGUF file"):
        check_gguf(gguf_file)


def test_load_model_refuses_a_truncated_gguf_before_loading(gguf_file, monkeypatch):
    import acttail_lab.core.models as models

    gguf_file.write_bytes(gguf_file.read_bytes()[:-100])
    monkeypatch.setattr(models, "_load_gguf", lambda *a: pytest.fail("must not load"))
    with pytest.raises(CorruptModelFileError, match="re-fetch"):
        load_model(str(gguf_file))


def test_safetensors_intact_truncated_and_garbage(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(16, 16), "b": torch.zeros(16)}, str(path))
    assert check_safetensors(path) == path.stat().st_size
    full = path.read_bytes()
    path.write_bytes(full[:-10])
    with pytest.raises(CorruptModelFileError, match="truncated: its header describes 2 tensors.*re-fetch"):
        check_model_files(tmp_path)  # a folder: every shard is checked
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(CorruptModelFileError, match="declares a header"):
        check_safetensors(path)
