import pytest
import torch

from acttail_lab.core.corpus import (
    _ar_members,
    bos_id,
    corpus_text,
    load_corpus,
    token_windows,
)
from acttail_lab.core.errors import CorpusError


def test_windows_without_bos(char_tokenizer):
    tok = char_tokenizer()
    w = token_windows(tok, "abcdefghij" * 10, window=8)
    assert w.shape == (12, 8)
    assert w[0, 0].item() == ord("a") % 250 + 1


def test_windows_with_bos_prepend_each_window(char_tokenizer):
    tok = char_tokenizer(bos=0)
    assert bos_id(tok) == 0
    w = token_windows(tok, "x" * 70, window=8, n_tokens=24)
    assert w.shape == (3, 8)
    assert (w[:, 0] == 0).all() and (w[:, 1:] != 0).all()


def test_text_too_short_is_a_clear_error(char_tokenizer):
    with pytest.raises(CorpusError, match="too short"):
        token_windows(char_tokenizer(), "abc", window=8)


def test_local_text_file_split(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("A" * 50 + "B" * 50)
    assert corpus_text(str(path), "calibration") == "A" * 50
    assert corpus_text(str(path), "evaluation") == "B" * 50
    with pytest.raises(CorpusError, match="split"):
        corpus_text(str(path), "train")


def test_missing_corpus_and_bad_deb(tmp_path):
    with pytest.raises(CorpusError, match="neither"):
        load_corpus(str(tmp_path / "nope.txt"))
    with pytest.raises(CorpusError, match="ar header"):
        _ar_members(b"not a deb")


def test_missing_corpus_package_without_apt(tmp_path, monkeypatch):
    import acttail_lab.core.corpus as corpus

    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path))
    monkeypatch.delenv("ACTTAIL_AUSTEN_DEB", raising=False)
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    with pytest.raises(CorpusError, match="ACTTAIL_AUSTEN_DEB"):
        corpus.fetch_austen()


@pytest.mark.real
def test_austen_splits_are_distinct_novels():
    novels = load_corpus("austen")
    assert set(novels) == {"emma", "mansfieldpark", "northangerabbey", "persuasion",
                           "prideprejudice", "sensesensibility"}
    assert sum(len(t) for t in novels.values()) > 3_900_000
    evaluation = corpus_text("austen", "evaluation")
    assert evaluation.startswith("PRIDE AND PREJUDICE")
    assert corpus_text("austen", "calibration").startswith("SENSE AND SENSIBILITY")


@pytest.mark.real
def test_real_tokenizer_windows(real_model):
    w = token_windows(real_model.tokenizer, corpus_text("austen", "evaluation"), window=512, n_tokens=4096)
    assert w.shape == (8, 512) and w.dtype == torch.long
    assert bos_id(real_model.tokenizer) is None  # docs/notes.md, "SmolLM2 adds no BOS"
