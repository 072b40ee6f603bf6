"""core.corpus.check_text_file: a corpus file that is not text is refused, with the fix, before a model loads."""
import os

import pytest

from acttail_lab.core.corpus import check_corpus, check_text_file
from acttail_lab.core.errors import CorpusError
from acttail_lab.measure.grid import check_grid_inputs


def test_random_bytes_are_not_a_corpus(tmp_path):
    path = tmp_path / "noise.txt"
    path.write_bytes(os.urandom(20_000))
    with pytest.raises(CorpusError, match=r"does not look like text: \d+% .*Fix: pass a plain UTF-8 text file"):
        check_corpus(str(path))
    with pytest.raises(CorpusError, match="does not look like text"):  # the grid's pre-load check refuses it too
        check_grid_inputs(["uniform"], [0.5], "all", 64, 128, str(path), "evaluation")


def test_plain_text_passes_and_reports_its_share(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("It is a truth universally acknowledged — café, naïve, 日本語.\n\tIndented.\r\n" * 500,
                    encoding="utf-8")
    assert check_text_file(path) == 0.0
    assert check_corpus(str(path)) == str(path)


def test_other_encodings_and_empty_files_name_the_fix(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(("Ça été là où l'été déjà fut ô combien châtié. " * 200).encode("latin-1"))
    with pytest.raises(CorpusError, match="iconv -t UTF-8"):
        check_corpus(str(latin))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(CorpusError, match="is empty"):
        check_corpus(str(empty))
