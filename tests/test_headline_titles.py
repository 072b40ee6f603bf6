"""Computed titles and sentences of the headline figure never read "nan": a grid where nothing collapses,
one where one run does, and the committed grids (notebook 10's four panels)."""
import pandas as pd
import pytest

from acttail_lab.report import headline
from acttail_lab.report.cross_model import load_grids


def _grid(ppl_acttail_08: float = 140.0) -> pd.DataFrame:
    rows = [dict(strategy="dense", sparsity=0.0, perplexity=20.0)]
    for s, (u, a, t) in {0.5: (30.0, 32.0, 28.0), 0.8: (120.0, ppl_acttail_08, 90.0)}.items():
        rows += [dict(strategy="uniform", sparsity=s, perplexity=u), dict(strategy="acttail", sparsity=s, perplexity=a),
                 dict(strategy="teal-greedy", sparsity=s, perplexity=t)]
    return pd.DataFrame(rows).assign(model="gemma3-270m", tokens=8176, xmin_rule="peak")


def test_title_where_nothing_collapses_names_no_collapse_and_no_nan():
    runs = _grid()
    assert not headline.collapsed(runs).any()
    title = headline.finding_title(runs)
    assert "nan" not in title.lower()
    assert "collapse" not in title
    assert title == "lowest perplexity: teal-greedy (0.5, 0.8)"
    assert headline.first_collapse(runs).empty
    assert not any("nan" in s.lower() for s in headline.headline_sentences(runs, "Gemma 3 270M"))


def test_title_names_the_first_collapse_of_the_focus():
    runs = _grid(ppl_acttail_08=70000.0)  # >= a quarter of Gemma's 262,144 vocabulary
    title = headline.finding_title(runs)
    assert title.endswith("; acttail collapses from 0.8")
    assert headline.first_collapse(runs).to_dict() == {"acttail": 0.8}


def test_committed_grids_titles_have_no_nan():
    grids = load_grids()
    if not grids:
        pytest.skip("no committed grids")
    for (model, text), (runs, _) in grids.items():
        title = headline.finding_title(runs)
        assert "nan" not in title.lower(), (model, text, title)
