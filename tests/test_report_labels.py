"""A run's label is a function of its settings: KS rows read acttail-ks / ...[xmin=ks] in every table, and no
label of any committed table stands for two settings."""
import glob
from pathlib import Path

import pandas as pd
import pytest

from acttail_lab.report import labels, results

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"


def test_the_rule_options_method_and_kinds_enter_the_label():
    assert labels.display_label("acttail", "ks") == "acttail-ks"
    assert labels.display_label("acttail", "peak") == "acttail"
    assert labels.display_label("acttail", None, '{"epsilon": 0.3, "xmin": "ks"}') == "acttail-ks"
    assert labels.display_label("rotated-acttail", "ks", '{"epsilon": 0.3}') == "rotated-acttail[xmin=ks]"
    assert labels.display_label("acttail-threshold", "ks") == "acttail-threshold[xmin=ks]"
    assert labels.display_label("acttail-block[xmin=ks]", "ks") == "acttail-block[xmin=ks]"  # says it already
    assert labels.display_label("acttail", "peak", '{"epsilon": 0.1}') == "acttail[epsilon=0.1]"
    assert labels.display_label("acttail", None, None, "wina") == "acttail[method=wina]"
    assert labels.display_label("uniform", None, None, "topk", "gate+up+down") == "uniform[kinds=gate+up+down]"
    assert labels.display_label("ffn-topk", None, None, "topk", "gate+up+down") == "ffn-topk"
    assert labels.display_label("uniform", "ks") == "uniform"  # no alphas, no rule
    assert labels.display_label("dense") == "dense" and labels.display_label("my-old-name", "ks") == "my-old-name"


def test_two_different_settings_never_share_a_label():
    a = pd.DataFrame(dict(strategy=["acttail", "acttail"], xmin_rule=["peak", "ks"], options=["{}", "{}"],
                          method=["topk", "topk"]))
    assert labels.row_labels(a).tolist() == ["acttail", "acttail-ks"]
    assert labels.shared_labels(a) == {}
    # a table that spells one setting two ways is fine; two settings under one name are not possible
    every = []
    for path in sorted(glob.glob(str(RESULTS / "*.csv"))):
        table = pd.read_csv(path)
        if "strategy" not in table.columns:
            continue
        assert labels.shared_labels(table) == {}, path
        every.append(table[[c for c in ("strategy", "xmin_rule", "options", "method", "kinds") if c in table]])
    assert len(every) > 5
    pooled = pd.concat(every, ignore_index=True)
    assert labels.shared_labels(pooled) == {}
    # the old labelling (the strategy column) gave one label two settings: acttail on peak and on KS alphas
    old = pooled[pooled["strategy"] != "dense"].assign(setting=labels.row_settings(pooled))
    assert old.groupby("strategy")["setting"].nunique().max() > 1


def test_the_related_grid_reads_by_its_rule_everywhere():
    runs = results.load_results(RESULTS / "perplexity_related_smollm2-135m.csv")
    shown = set(results.run_labels(runs))
    assert {"acttail-ks", "rotated-acttail[xmin=ks]", "acttail-threshold[xmin=ks]"} <= shown
    assert not {"acttail", "rotated-acttail", "acttail-threshold"} & shown
    assert "acttail-ks" in set(results.relative_to_uniform(runs)["label"])
    sentence = labels.relabel_sentence(runs)
    assert "acttail -> acttail-ks" in sentence and "ks xmin rule" in sentence
    main = results.load_perplexity("smollm2-135m")
    assert results.run_labels(main).tolist() == main["strategy"].astype(str).tolist()  # already said everything


@pytest.mark.parametrize("strategy,rule", [("acttail", "ks"), ("shuffled", "ks"), ("acttail-rev", "ks"),
                                           ("acttail-block", "ks")])
def test_the_label_names_the_same_setting_as_the_current_grids(strategy, rule):
    label = labels.display_label(strategy, rule)
    assert labels.setting_key(label) == labels.setting_key(strategy, rule)
